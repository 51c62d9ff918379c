"""Hit -> page view enrichment: what kind of request is it, who sent it, where from.

Every hit is classified (static asset, redirect, error, bot, page view); only page
views are enriched further (User-Agent, referrer channel, UTM, URL rules, goals).
Rules come from `settings.processing`. All functions here are pure; the batch path
(processors/agents.py HitProcessor) checks and classifies a batch's hits from its columns
(`valid_columns`, `Enricher.classify_all`) and enriches page views one at a time.

Page view = GET, 2xx, text/html (or no content type), not a static asset, not a bot.
A POST that matches a goal rule is not a page view, but its goal still counts:
`Classified.goal` / `goal_value` are filled for any method, and the sessionizer adds
them to the visitor's session (goals, revenue).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache, reduce
from operator import itemgetter, or_
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

from ua_parser import parse as _ua_parse

from config.events import BODY_FIELD_PREFIX, HIT_FIELDS
from config.settings import GoalRule, ProcessingSettings, UrlRule
from processors.geo import Geo
from processors.hit_columns import INTEGER, NON_EMPTY, NULL, NUMBER, OBJECT, PRESENT, STRING, ColumnDecoder

# Substrings (lower-case) of User-Agents that are automated clients even when
# ua-parser does not call them 'Spider'.
BOT_KEYWORDS: tuple[str, ...] = (
    "bot", "crawl", "spider", "slurp", "curl/", "wget/", "python-requests", "python-urllib", "aiohttp",
    "httpclient", "java/", "go-http-client", "okhttp", "headlesschrome", "phantomjs", "scrapy",
    "facebookexternalhit", "monitor", "pingdom", "uptime", "lighthouse", "preview")

PAGE_CONTENT_TYPES = ("", "text/html", "application/xhtml+xml")
DESKTOP_OS = ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "FreeBSD", "Debian", "macOS")

KIND_PAGEVIEW = "pageview"
KIND_STATIC = "static"
KIND_REDIRECT = "redirect"
KIND_ERROR = "error"          # 4xx / 5xx / no response
KIND_BOT = "bot"
KIND_OTHER = "other"          # non-GET, non-HTML 2xx, ...


@dataclass(frozen=True)
class Agent:
    browser: str
    os: str
    device: str   # desktop | mobile | tablet | bot | other
    is_bot: bool


@lru_cache(maxsize=20_000)
def parse_user_agent(ua: str) -> Agent:
    """Browser / OS / device class of a User-Agent string; cached because UA strings repeat."""
    if not ua:
        return Agent("", "", "other", False)
    low = ua.lower()
    r = _ua_parse(ua)
    browser = r.user_agent.family if r.user_agent else "Other"
    os_family = r.os.family if r.os else "Other"
    dev_family = r.device.family if r.device else "Other"
    is_bot = dev_family == "Spider" or any(k in low for k in BOT_KEYWORDS)
    if is_bot:
        device = "bot"
    elif dev_family == "iPad" or "tablet" in low or (os_family == "Android" and "mobile" not in low):
        device = "tablet"
    elif "mobi" in low or os_family in ("iOS", "Android"):
        device = "mobile"
    elif os_family in DESKTOP_OS:
        device = "desktop"
    else:
        device = "other"
    return Agent(browser, os_family, device, is_bot)


def _host_matches(host: str, pattern: str) -> bool:
    # 'google.' / 'kakao' are substrings; 't.co' must be the host or a parent domain.
    if pattern.endswith(".") or "." not in pattern:
        return pattern in host
    return host == pattern or host.endswith("." + pattern)


def referrer_host(referrer: str) -> str:
    if not referrer:
        return ""
    try:
        host = urlsplit(referrer if "//" in referrer else "//" + referrer).hostname or ""
    except ValueError:
        return ""
    return host.lower()


def referrer_channel(referrer: str, request_host: str, settings: ProcessingSettings) -> tuple[str, str]:
    """(channel, referrer_host); channel is direct | internal | search | social | other."""
    host = referrer_host(referrer)
    if not host:
        return "direct", ""
    if host == request_host or host in settings.site_hosts:
        return "internal", host
    if any(_host_matches(host, p) for p in settings.search_hosts):
        return "search", host
    if any(_host_matches(host, p) for p in settings.social_hosts):
        return "social", host
    return "other", host


UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_NO_UTM = dict.fromkeys(UTM_KEYS, "")


def utm_fields(query: str) -> dict[str, str]:
    if "utm_" not in query:
        return dict(_NO_UTM)
    out = dict(_NO_UTM)
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k in out and not out[k]:
            out[k] = v[:200]
    return out


def query_param(query: str, name: str) -> str:
    if not name or name not in query:
        return ""
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k == name:
            return v
    return ""


def request_param(query: str, extra: Any, name: str) -> str:
    """A named request parameter: from the query, else from the request body's named fields (capture.request_bodies,
    in extra as "body:<name>")."""
    v = query_param(query, name)
    if not v and name and isinstance(extra, dict):
        v = str(extra.get(BODY_FIELD_PREFIX + name, ""))
    return v


def compile_pattern(pattern: str) -> re.Pattern:
    """'/product/{product_id}' -> regex with a named group per `{name}` (one path segment)."""
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    body = "".join(out).rstrip("/") if pattern != "/" else ""
    return re.compile("^" + body + "/?$")


def compile_rule(pattern: str) -> tuple[re.Pattern, tuple[tuple[str, str, bool], ...]]:
    """A URL rule pattern -> (path regex, query specs (param, capture name or required value, is_capture))."""
    path, _, query = pattern.partition("?")
    specs = []
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        cap = re.fullmatch(r"\{(\w+)\}", value)
        specs.append((name, cap.group(1) if cap else value, bool(cap)))
    return compile_pattern(path), tuple(specs)


MAX_CAPTURED = 128  # a value taken from a query parameter is an id, not a text


@dataclass(frozen=True)
class Classified:
    kind: str
    is_bot: bool
    goal: str = ""
    goal_value: float = 0.0


class Enricher:
    """Classifies hits and builds PageView records, with rules compiled once from settings."""

    def __init__(self, settings: ProcessingSettings):
        self.settings = settings
        self._static_ext = frozenset(e.lower() for e in settings.static_extensions)
        self._static_ct = tuple(settings.static_content_types)
        self._rules: list[tuple[re.Pattern, tuple, UrlRule]] = [(*compile_rule(r.pattern), r)
                                                                for r in settings.url_rules]
        self._rules_read_query = any(specs for _, specs, _ in self._rules)
        self.geo = Geo(settings.geoip_city_db)
        self._goal_rules = {}
        for g in settings.goals:
            self._goal_rules.setdefault(g.name, g)
        self._medium_channel = {m.lower(): ch for ch, media in settings.medium_channels.items() for m in media}
        self._goals: list[tuple[re.Pattern, GoalRule]] = [(compile_pattern(g.pattern), g) for g in settings.goals]
        # literal part of each goal pattern before its first '{': most hits match none of them
        self._goal_prefixes = tuple(g.pattern.split("{", 1)[0].rstrip("/") or "/" for g in settings.goals)
        # per-value caches: paths, referrers and queries repeat a lot within and across batches
        self.page_meta = lru_cache(maxsize=50_000)(self._page_meta)
        self._channel = lru_cache(maxsize=20_000)(lambda ref, host: referrer_channel(ref, host, settings))
        self._utm = lru_cache(maxsize=20_000)(utm_fields)
        # hits repeat the same (User-Agent, status, path, content type, method) over and over
        self._plain_class = lru_cache(maxsize=50_000)(self._class_of)
        self.template = lru_cache(maxsize=50_000)(self._template)

    # -- per hit ----------------------------------------------------------------------------
    def classify(self, hit: Mapping[str, Any]) -> Classified:
        c = self._plain_class(hit.get("user_agent"), hit.get("status"), hit.get("path"), hit.get("content_type"),
                              hit.get("method"))
        return self._with_goal(c, hit)

    def classify_all(self, hits: Sequence[Mapping[str, Any]], columns: Mapping[str, Sequence[Any]]) -> list[Classified]:
        """classify() of each hit, from the batch's columns (columns_of): one cached lookup per hit, and the
        goal rules only for hits whose path may match one (`hits[row]` is only read for those)."""
        classes = list(map(self._plain_class, columns["user_agent"], columns["status"], columns["path"],
                           columns["content_type"], columns["method"]))
        if self._goals:
            prefixes = self._goal_prefixes
            for row, path in enumerate(columns["path"]):
                if (path or "/").startswith(prefixes):
                    classes[row] = self._with_goal(classes[row], hits[row])
        return classes

    def _with_goal(self, c: Classified, hit: Mapping[str, Any]) -> Classified:
        goal, value = self.goal_of(hit)
        return Classified(c.kind, c.is_bot, goal, value) if goal else c

    def _class_of(self, user_agent: str | None, status: int | None, path: str | None, ct: str | None,
                  method: str | None) -> Classified:
        """Kind of a request without its goal (cached per distinct request by `_plain_class`)."""
        agent = parse_user_agent(user_agent or "")
        path, ct = path or "/", ct or ""
        if agent.is_bot:
            kind = KIND_BOT
        elif status is None or status >= 400:
            kind = KIND_ERROR
        elif 300 <= status < 400:
            kind = KIND_REDIRECT
        elif self._is_static(path, ct):
            kind = KIND_STATIC
        elif method == "GET" and 200 <= status < 300 and ct in PAGE_CONTENT_TYPES:
            kind = KIND_PAGEVIEW
        else:
            kind = KIND_OTHER
        return Classified(kind, agent.is_bot)

    def _is_static(self, path: str, ct: str) -> bool:
        low = path.lower()
        dot = low.rfind(".")
        if dot > low.rfind("/") and low[dot:] in self._static_ext:
            return True
        return bool(ct) and ct.startswith(self._static_ct)

    def goal_of(self, hit: Mapping[str, Any]) -> tuple[str, float]:
        """(goal name, value) of the first goal rule the hit matches, else ('', 0.0)."""
        path = hit.get("path") or "/"
        if not self._goals or not path.startswith(self._goal_prefixes):
            return "", 0.0
        method = hit.get("method") or ""
        status = hit.get("status")
        for rx, g in self._goals:
            if g.method and g.method != method:
                continue
            if status not in g.status or not rx.match(path):
                continue
            raw = request_param(hit.get("query") or "", hit.get("extra"), g.value_param) if g.value_param else ""
            if not raw and g.value_header:
                raw = str((hit.get("extra") or {}).get(g.value_header, ""))
            try:
                value = float(raw) if raw else 0.0
            except ValueError:
                value = 0.0  # a malformed amount still counts as a conversion, worth 0
            return g.name, value if value == value and abs(value) < 1e12 else 0.0
        return "", 0.0

    def goal_items(self, goal: str, query: str, extra: Any) -> list[tuple[str, int]]:
        """(product id, units) a goal request is about, read as sinks/reads/goal_events.goal_items reads
        them: an order's "id:qty:unit_price,..." from the rule's items parameter or captured header (at most
        100 items, ids up to 128 characters, a quantity outside 1..10000 counts 1), else one product from
        its product parameter."""
        rule = self._goal_rules.get(goal)
        if rule is None:
            return []
        raw = ""
        if rule.items_param or rule.items_header:
            raw = request_param(query, extra, rule.items_param) if rule.items_param else ""
            if not raw and rule.items_header and isinstance(extra, dict):
                raw = str(extra.get(rule.items_header, ""))
        elif rule.product_param:
            pid = request_param(query, extra, rule.product_param)
            raw = f"{pid}:{request_param(query, extra, rule.qty_param) if rule.qty_param else ''}:" if pid else ""
        out = []
        for item in raw.split(",")[:100]:
            f = item.split(":")
            if not f[0] or len(f[0]) > 128:
                continue
            qty = int(f[1]) if len(f) >= 2 and f[1].isdigit() and 1 <= int(f[1]) <= 10_000 else 1
            out.append((f[0], qty))
        return out

    def _page_meta(self, path: str, query: str = "") -> dict[str, str]:
        """URL-rule fields of a path and query (cached by `page_meta`; callers copy, never mutate)."""
        meta = {"page_group": "", "section": "", "product_id": "", "category": "", "menu": ""}
        params: dict[str, str] | None = None
        for rx, specs, rule in self._rules:
            m = rx.match(path)
            if m:
                caps = m.groupdict()
                if specs:
                    if params is None:
                        params = {}
                        for k, v in parse_qsl(query, keep_blank_values=True):
                            params.setdefault(k, v)  # the first occurrence, as query_param
                    if not _query_matches(specs, params, caps):
                        continue
                meta["page_group"] = rule.group
                meta["section"] = caps.get("section") or rule.section
                meta["category"] = caps.get("category") or rule.category
                meta["menu"] = caps.get("menu") or rule.menu
                meta["product_id"] = caps.get("product_id", "")
                break
        return meta

    def pageview(self, hit: Mapping[str, Any], c: Classified, session_id: str = "") -> dict[str, Any]:
        """The PageView record (config/events.py PAGEVIEW_FIELDS) of a hit classified as a page view."""
        return self.pageview_at({name: (hit.get(name),) for name in _PAGEVIEW_SOURCES}, 0, c, session_id)

    def pageview_at(self, columns: Mapping[str, Sequence[Any]], row: int, c: Classified,
                    session_id: str = "") -> dict[str, Any]:
        """pageview() of the hit at `row` of a batch's columns (columns_of), without a dict for the hit."""
        pv = self.pageviews_at(columns, [row], {row: c})[0]
        pv["session_id"] = session_id
        return pv

    def pageviews_at(self, columns: Mapping[str, Sequence[Any]], rows: Sequence[int],
                     classes: Sequence[Classified] | Mapping[int, Classified]) -> list[dict[str, Any]]:
        """The PageView records of the hits at `rows` (page views; `classes[row]` their classification), with
        session_id empty: each a copy of the cached template of its (User-Agent, referrer, host, query, path)
        with the fields of its hit set in place (a dict copy keeps the template's key order and costs far
        less than building the record key by key)."""
        template = self.template
        user_agent, referrer, host, query, path = (columns[name] for name in ("user_agent", "referrer", "host",
                                                                              "query", "path"))
        event_id, ts, visitor_id, member_id, method, status, latency_ms = (
            columns[name] for name in ("event_id", "ts", "visitor_id", "member_id", "method", "status", "latency_ms"))
        places = self.geo.locate_all([columns["client_ip"][row] for row in rows])
        out = []
        for row, (country, city) in zip(rows, places):
            pv = template(user_agent[row] or "", referrer[row] or "", host[row] or "", query[row] or "",
                          path[row] or "/").copy()
            pv["event_id"] = event_id[row]
            pv["ts"] = float(ts[row])
            pv["visitor_id"] = visitor_id[row] or ""
            pv["member_id"] = member_id[row] or ""
            pv["method"] = method[row] or ""
            pv["status"] = int(status[row] or 0)
            pv["latency_ms"] = latency_ms[row]
            pv["country"], pv["city"] = country, city
            c = classes[row]
            if c.goal:
                pv["goal"] = c.goal
                pv["goal_value"] = c.goal_value
            out.append(pv)
        return out

    def _template(self, user_agent: str, referrer: str, host: str, query: str, path: str) -> dict[str, Any]:
        """A PageView record with every field that follows from User-Agent, referrer, host, query and path
        filled, the hit's own fields empty (cached per combination by `template`, which page views repeat;
        callers copy, never mutate)."""
        agent = parse_user_agent(user_agent)
        channel, ref_host = self._channel(referrer, host)
        utm = self._utm(query) if query else _NO_UTM
        channel = self._medium_channel.get(utm["utm_medium"].lower(), channel) if utm["utm_medium"] else channel
        pv: dict[str, Any] = {
            "event_id": "", "ts": 0.0, "visitor_id": "", "member_id": "", "session_id": "",
            "host": host, "path": path, "query": query, "method": "", "status": 0, "latency_ms": None,
            "referrer": referrer, "referrer_host": ref_host, "channel": channel}
        pv.update(utm)
        pv.update(browser=agent.browser, os=agent.os, device=agent.device, is_bot=agent.is_bot)
        pv.update(self.page_meta(path, query if self._rules_read_query else ""))
        pv.update(goal="", goal_value=0.0, country="", city="")
        return pv


def _query_matches(specs: tuple, params: dict[str, str], caps: dict[str, str]) -> bool:
    """Whether the query has what a rule's query part asks; captured values go into `caps`."""
    for name, value, is_capture in specs:
        got = params.get(name, "")
        if is_capture:
            if not got or len(got) > MAX_CAPTURED:
                return False
            caps[value] = got
        elif got != value:
            return False
    return True


# the hit fields a page view is made of
_PAGEVIEW_SOURCES = ("event_id", "ts", "visitor_id", "member_id", "host", "path", "query", "method", "status",
                     "latency_ms", "referrer", "user_agent", "client_ip")
_STR_FIELDS = ("method", "host", "path", "query", "referrer", "user_agent", "content_type", "member_id")
_NONE = type(None)
# The exact types validate_hit accepts for each field it checks (resp_bytes must be present here).
_COLUMN_TYPES = (("event_id", {str}), ("ts", {int, float}), ("visitor_id", {str}), ("status", {_NONE, int}),
                 ("latency_ms", {_NONE, int, float}), ("resp_bytes", {int, float}),
                 *((name, {_NONE, str}) for name in _STR_FIELDS), ("extra", {_NONE, dict}))
CHECKED_FIELDS = tuple(name for name, _ in _COLUMN_TYPES)
# Every field of a hit, checked ones first: the batch's columns serve the checks, the processors and the
# history "hits" table alike.
# The columns the processors read: the checked ones and client_ip (geo). The others (ports, server_ip, uri,
# http_version, no_response) go to the history only, so the worker does not decode them (column_decoder).
PROCESSED_COLUMNS = CHECKED_FIELDS + ("client_ip",)
HIT_COLUMNS = PROCESSED_COLUMNS + tuple(f.name for f in HIT_FIELDS if f.name not in PROCESSED_COLUMNS)
_hit_values = itemgetter(*HIT_COLUMNS)

def validate_hit(hit: Any) -> str:
    """'' when the hit has what processing needs, else why it is dropped."""
    if not isinstance(hit, dict):
        return "not a JSON object"
    eid = hit.get("event_id")
    if not isinstance(eid, str) or not eid:
        return "missing event_id"
    ts = hit.get("ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not 0 < ts < 1e11:
        return "missing or bad ts"
    if not isinstance(hit.get("visitor_id"), str):
        return "missing visitor_id"
    st = hit.get("status")
    if st is not None and (not isinstance(st, int) or isinstance(st, bool)):
        return "bad status"
    lat = hit.get("latency_ms")
    if lat is not None and (not isinstance(lat, (int, float)) or isinstance(lat, bool)):
        return "bad latency_ms"
    rb = hit.get("resp_bytes", 0)
    if not isinstance(rb, (int, float)) or isinstance(rb, bool):
        return "bad resp_bytes"
    get = hit.get
    for name in _STR_FIELDS:
        v = get(name)
        if v is not None and type(v) is not str:
            return f"bad {name}"
    extra = hit.get("extra")
    if extra is not None and not isinstance(extra, dict):
        return "bad extra"
    return ""


def columns_of(hits: Sequence[Mapping[str, Any]]) -> dict[str, Sequence[Any]]:
    """HIT_COLUMNS of the hits as columns (None where a hit lacks the field)."""
    return {name: [h.get(name) for h in hits] for name in HIT_COLUMNS}


def valid_columns(hits: Sequence[Any]) -> dict[str, Sequence[Any]] | None:
    """columns_of(hits) when validate_hit passes every hit, checked a column at a time in C loops (several
    times cheaper than hit by hit); None when some hit may be bad: validate each to find which and why."""
    if not all(type(h) is dict for h in hits):
        return None
    try:
        rows = list(map(_hit_values, hits))
    except KeyError:  # a field is missing (allowed for most): left to validate_hit
        return None
    columns = dict(zip(HIT_COLUMNS, zip(*rows))) if rows else columns_of(())
    for name, types in _COLUMN_TYPES:
        if not {*map(type, columns[name])} <= types:
            return None
    return columns if ts_in_range(columns["ts"]) and all(columns["event_id"]) else None


def ts_in_range(ts: Sequence[int | float]) -> bool:
    """Every ts is a finite epoch time (the ts rule of validate_hit, for a column of numbers)."""
    try:  # a finite sum: no NaN / inf among them, so min and max are exact
        return not ts or (math.isfinite(sum(ts)) and min(ts) > 0 and max(ts) < 1e11)
    except OverflowError:  # an int too large for a float
        return False


def column_decoder() -> ColumnDecoder:
    """Raw hit JSON straight into HIT_COLUMNS, with the type rules of validate_hit checked on the wire
    (processors/hit_columns.py); the ts range is left to ts_in_range."""
    kinds = {str: STRING, int: INTEGER, float: NUMBER, _NONE: NULL, dict: OBJECT}
    accept = {name: reduce(or_, (kinds[t] for t in types)) for name, types in _COLUMN_TYPES}
    return ColumnDecoder(HIT_COLUMNS, accept, required={"event_id": NON_EMPTY, "ts": PRESENT, "visitor_id": PRESENT},
                         head=len(PROCESSED_COLUMNS))


__all__: Sequence[str] = ("Enricher", "Classified", "parse_user_agent", "referrer_channel", "utm_fields",
                          "compile_pattern", "validate_hit", "valid_columns", "KIND_PAGEVIEW", "KIND_STATIC",
                          "KIND_REDIRECT", "KIND_ERROR", "KIND_BOT", "KIND_OTHER")
