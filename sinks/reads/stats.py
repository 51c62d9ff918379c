"""GET /api/stats and GET /api/visitors/{id}: SQL over the history store, exact under replays.

Rows may be stored twice (at-least-once delivery, a replayed pcap), so every
figure is computed over one row per event_id / session_id: a subquery groups by
the id first (`any(col)` per event id, `argMax(col, end_epoch)` per session so
its latest version wins - see sinks/history.py), the outer query aggregates.
The SQL is the portable subset that runs on ClickHouse 18.16 and chdb alike
(no CTEs). The raw tables are read rather than the rollups because breakdowns
by referrer/device/... and bounce/duration need columns the rollups do not keep; by=host (the Site
list) reads page views, hits and errors of whole days from host_days (sinks/reads/host_days.py).

Validation lives here too, so every bad parameter becomes a `StatsError` (HTTP 400)
with a message saying what is accepted.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from config.timeparse import parse_epoch
from sinks.reads import host_days
from sinks.reads.common import HOST_NAME, History

Query = Callable[[str], list[dict]]


class StatsError(ValueError):
    """A request parameter is invalid; the message says what is accepted."""


class NotFound(LookupError):
    pass


DAY_S = 86400
INTERVALS = {"minute": 60, "hour": 3600, "day": DAY_S}
MAX_POINTS = 20_000
DEFAULT_RANGE_S = 3600


@dataclass(frozen=True)
class Table:
    name: str
    id_col: str
    time_col: str  # DateTime('UTC') column (whole seconds; the float twin is <col>_epoch)
    where: str  # filter applied before dedup (bots stay out of visitor figures)
    pick: str  # how one stored copy is chosen per id: events are immutable, a session's latest version wins

    def one(self, expr: str) -> str:
        return self.pick.format(expr)


PAGEVIEWS = Table("pageviews", "event_id", "ts", "is_bot = 0", "any({})")
SESSIONS = Table("sessions", "session_id", "start", "is_bot = 0", "argMax({}, end_epoch)")
HITS = Table("hits", "event_id", "ts", "1 = 1", "any({})")


@dataclass(frozen=True)
class Metric:
    table: Table
    columns: tuple[str, ...]  # raw columns the outer expression needs (as c_<name>)
    expr: str  # aggregate over the deduplicated rows
    digits: int | None = None  # rounding of the result; None = integer
    rollup: str = ""  # the per-minute rollup that can answer it without a breakdown (see ROLLUP_SQL)


# A request with no response (status NULL) is no error; on ClickHouse 18.16 countIf over only NULL conditions is
# NULL, so a site whose requests all went unanswered showed errors null on the server and 0 on chdb.
_ERRORS = "countIf(ifNull(c_status, 0) >= 400)"
METRICS: dict[str, Metric] = {
    "pageviews": Metric(PAGEVIEWS, (), "count()", rollup="pageviews_per_minute"),
    "visitors": Metric(PAGEVIEWS, ("visitor_id",), "uniqExact(c_visitor_id)", rollup="pageviews_per_minute"),
    "sessions": Metric(SESSIONS, (), "count()"),
    "bounce_rate": Metric(SESSIONS, ("bounce",), "if(count() = 0, 0, countIf(c_bounce != 0) / count())", 4),
    "avg_duration": Metric(SESSIONS, ("duration",), "if(count() = 0, 0, avg(c_duration))", 1),
    "hits": Metric(HITS, (), "count()", rollup="hits_per_minute"),
    "errors": Metric(HITS, ("status",), _ERRORS, rollup="hits_per_minute"),
    "error_rate": Metric(HITS, ("status",), f"if(count() = 0, 0, {_ERRORS} / count())", 4,
                         rollup="hits_per_minute"),
    "latency_p50": Metric(HITS, ("latency_ms",), "quantileExact(0.5)(c_latency_ms)", 1),
    "latency_p95": Metric(HITS, ("latency_ms",), "quantileExact(0.95)(c_latency_ms)", 1),
    "latency_p99": Metric(HITS, ("latency_ms",), "quantileExact(0.99)(c_latency_ms)", 1),
}
DEFAULT_METRICS = ("pageviews", "visitors", "sessions", "hits", "bounce_rate", "avg_duration", "errors")

# A visitor id is a member in a range when it was logged in during it (a member page view), and all its
# rows go to that side: per row, a visitor who logs in half-way was counted on both, members + anonymous
# came to more than the visitors (132 + 190 for 190).
_MEMBER = ("if(visitor_id IN (SELECT visitor_id FROM pageviews WHERE member_id != '' AND is_bot = 0 "
           "AND ts >= toDateTime({start}) AND ts < toDateTime({end})), 'member', 'anonymous')")
# Dimension -> column expression per table; a metric whose table lacks the dimension is a 400.
DIMENSIONS: dict[str, dict[str, str]] = {
    "page": {"pageviews": "path", "sessions": "entry_page", "hits": "path"},
    # the site's own hosts (channel internal: processing.site_hosts or the request's host) are no referrer
    "referrer": {"pageviews": "if(channel = 'internal', '', referrer_host)",
                 "sessions": "if(channel = 'internal', '', referrer_host)"},
    "channel": {"pageviews": "channel", "sessions": "channel"},
    "campaign": {"pageviews": "utm_campaign", "sessions": "utm_campaign"},
    "device": {"pageviews": "device", "sessions": "device"},
    "browser": {"pageviews": "browser", "sessions": "browser"},
    "os": {"pageviews": "os", "sessions": "os"},
    "status": {"pageviews": "toString(status)", "hits": "toString(ifNull(status, 0))"},
    "member": {"pageviews": _MEMBER, "sessions": _MEMBER, "hits": _MEMBER},
    "entry": {"sessions": "entry_page"},
    "exit": {"sessions": "exit_page"},
    "keyword": {"pageviews": None},  # KEYWORD below
    "host": {"pageviews": "host", "hits": "host"},
    "country": {"pageviews": "country"},  # ISO code of the client address, '' unknown (processors/geo.py)
    "city": {"pageviews": "city"},  # with processing.geoip_city_db
}
# The search words a search engine's referrer carries (q, p, query, text, wd, ...; most engines now send none:
# '' is "not provided"), for page views that came from a search (or a paid search click).
_WORD = "extractURLParameter(referrer, '{}')"
KEYWORD_PARAMS = ("q", "p", "query", "text", "wd", "word", "k", "search")
DIMENSIONS["keyword"]["pageviews"] = (
    "if(channel IN ('search', 'cpc'), lower(decodeURLComponent(replaceAll(multiIf("
    + ", ".join(f"{_WORD.format(k)} != '', {_WORD.format(k)}" for k in KEYWORD_PARAMS)
    + ", ''), '+', ' '))), '')")



# -- parameters --------------------------------------------------------------------------------
def parse_time(value: str, name: str) -> float:
    """ISO 8601 (naive = UTC) or epoch seconds -> epoch seconds."""
    try:
        return parse_epoch(value)
    except ValueError:
        raise StatsError(f"{name}={value!r} is not a time: use ISO 8601 (2026-01-31T12:00:00Z) "
                         "or epoch seconds") from None


@dataclass(frozen=True)
class StatsRequest:
    start: int
    end: int
    metrics: tuple[str, ...]
    by: str | None
    interval: str | None
    limit: int
    host: str | None = None  # one site: only its page views, sessions and hits


def parse_stats_request(q: dict[str, str], now: float | None = None) -> StatsRequest:
    now = time.time() if now is None else now
    unknown = set(q) - {"from", "to", "metrics", "by", "interval", "limit", "host", "token"}
    if unknown:
        raise StatsError(f"unknown parameter(s) {', '.join(sorted(unknown))}: "
                         "accepted are from, to, metrics, by, interval, limit, host")
    host = q.get("host") or None
    if host is not None and not HOST_NAME.match(host):
        raise StatsError(f"host={host[:80]!r} is not a host name: letters, digits, '.', '-' and ':' only")
    end = parse_time(q["to"], "to") if q.get("to") else now
    start = parse_time(q["from"], "from") if q.get("from") else end - DEFAULT_RANGE_S
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        raise StatsError("from/to must be finite times after 1970")
    if end <= start:
        raise StatsError(f"'to' must be after 'from' (got from={start:.0f}, to={end:.0f} epoch seconds)")
    metrics = tuple(m.strip() for m in q.get("metrics", ",".join(DEFAULT_METRICS)).split(",") if m.strip())
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise StatsError(f"unknown metric(s) {', '.join(bad) or '(none given)'}: choose from {', '.join(METRICS)}")
    by = q.get("by") or None
    if by is not None:
        if by not in DIMENSIONS:
            raise StatsError(f"unknown by={by!r}: choose from {', '.join(DIMENSIONS)}")
        missing = [m for m in metrics if METRICS[m].table.name not in DIMENSIONS[by]]
        if missing:
            raise StatsError(f"metric(s) {', '.join(missing)} cannot be broken down by {by}; "
                             f"available by {by}: "
                             + ", ".join(m for m, d in METRICS.items() if d.table.name in DIMENSIONS[by]))
    interval = q.get("interval") or None
    if interval is not None and interval not in INTERVALS:
        raise StatsError(f"unknown interval={interval!r}: choose from {', '.join(INTERVALS)}")
    if by and interval:
        raise StatsError("give either by= (a breakdown) or interval= (a time series), not both")
    start_i, end_i = int(math.floor(start)), int(math.ceil(end))
    if interval and (end_i - start_i) / INTERVALS[interval] > MAX_POINTS:
        raise StatsError(f"range too long for interval={interval} (over {MAX_POINTS} points): "
                         "use a larger interval or a shorter range")
    try:
        limit = int(q.get("limit", "10"))
    except ValueError:
        raise StatsError(f"limit={q.get('limit')!r} must be an integer 1..1000") from None
    if not 1 <= limit <= 1000:
        raise StatsError(f"limit={limit} must be 1..1000")
    return StatsRequest(start_i, end_i, metrics, by, interval, limit, host.lower() if host else None)


# -- queries -----------------------------------------------------------------------------------
def _table_sql(table: Table, metrics: list[str], req: StatsRequest, per_day: bool = False) -> str:
    cols = sorted({c for m in metrics for c in METRICS[m].columns})
    inner = [f"`{table.id_col}`", f"{table.one(f'toUInt32(`{table.time_col}`)')} AS c_t"]
    inner += [f"{table.one(f'`{c}`')} AS c_{c}" for c in cols]
    group = ""
    outer_keys: list[str] = []
    if req.by:
        key = DIMENSIONS[req.by][table.name].format(start=req.start, end=req.end)
        inner.append(f"{table.one(key)} AS c_key")
        outer_keys.append("c_key AS key")
        group = " GROUP BY key"
        if per_day:  # the Site list's days (host_days): the same rows and figures, one row per key and day
            outer_keys.append(f"intDiv(c_t, {DAY_S}) AS day")
            group += ", day"
    elif req.interval:
        step = INTERVALS[req.interval]
        outer_keys.append(f"intDiv(c_t, {step}) * {step} AS bucket")
        group = " GROUP BY bucket"
    exprs = outer_keys + [f"{METRICS[m].expr} AS `{m}`" for m in metrics]
    t = f"`{table.time_col}`"
    return (f"SELECT {', '.join(exprs)} FROM (SELECT {', '.join(inner)} FROM {table.name} "
            f"WHERE {t} >= toDateTime({req.start}) AND {t} < toDateTime({req.end}) AND {table.where}"
            f"{_host_filter(table, req)} GROUP BY `{table.id_col}`){group}")


def _host_filter(table: Table, req: StatsRequest) -> str:
    """AND-fragment keeping one site (host checked by HOST_NAME, so quoting it is safe); sessions have no host
    column: theirs is the host of their page views (within a visit's day of the range)."""
    if not req.host:
        return ""
    if table.name == "sessions":
        return (f" AND session_id IN (SELECT session_id FROM pageviews WHERE host = '{req.host}' AND "
                f"ts >= toDateTime({req.start}) AND ts < toDateTime({req.end + 86400}))")
    return f" AND host = '{req.host}'"


def _clean(value: Any, digits: int | None) -> Any:
    if value is None:
        return None
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        return None
    return int(round(v)) if digits is None else round(v, digits)


def _zero(metric: str) -> Any:
    # Latency of an empty bucket is unknown, not 0 ms.
    return None if metric.startswith("latency_") else 0


# The per-minute rollups (config/migrations/0001_base.sql) hold uniqExact states of ids, so
# merging them is as exact as the raw tables and several times faster (benchmarks/web_stats_bench.py).
# They can only answer whole minutes and have no breakdown columns beyond path/status class.
ROLLUP_SQL = {
    "pageviews_per_minute": (
        "SELECT {key}uniqExactMerge(pageviews) AS pageviews, uniqExactMerge(visitors) AS visitors "
        "FROM pageviews_per_minute WHERE minute >= toDateTime({start}) AND minute < toDateTime({end}) "
        "AND is_bot = 0{host}{group}"),
    "hits_per_minute": (
        "SELECT {outer_key}sum(n) AS hits, sumIf(n, status_class IN (4, 5)) AS errors, "
        "if(sum(n) = 0, 0, sumIf(n, status_class IN (4, 5)) / sum(n)) AS error_rate FROM ("
        "SELECT {key}status_class, uniqExactMerge(hits) AS n FROM hits_per_minute "
        "WHERE minute >= toDateTime({start}) AND minute < toDateTime({end}){host} GROUP BY {inner_group}status_class)"
        "{group}"),
}


def _rollup_sql(name: str, req: StatsRequest) -> str:
    if req.interval:
        step = INTERVALS[req.interval]
        key, group = f"intDiv(toUInt32(minute), {step}) * {step} AS bucket, ", " GROUP BY bucket"
        outer_key, inner_group = "bucket, ", "bucket, "
    else:
        key = group = outer_key = inner_group = ""
    return ROLLUP_SQL[name].format(key=key, group=group, outer_key=outer_key, inner_group=inner_group,
                                   start=req.start, end=req.end,
                                   host=f" AND host = '{req.host}'" if req.host else "")


# by=host: the counts that add up over days (an event lies in one day) come from host_days for the whole days of
# the range; distinct visitors and latency quantiles do not add up and are read from the raw rows.
SITE_DAY_METRICS = ("pageviews", "hits", "errors", "error_rate")


def _site_day_figures_sql(first_day: int, last_day: int) -> str:
    """SELECT (day, key, pageviews, hits, errors) per host over the days first_day..last_day: the raw by=host
    SQL of _table_sql, grouped per day as well."""
    req = StatsRequest(first_day * DAY_S, (last_day + 1) * DAY_S, ("pageviews",), "host", None, 1000)
    pv = _table_sql(PAGEVIEWS, ["pageviews"], req, per_day=True)
    hits = _table_sql(HITS, ["hits", "errors"], req, per_day=True)
    return ("SELECT day, key, sum(n_pv) AS pageviews, sum(n_hits) AS hits, sum(n_err) AS errors FROM ("
            f"SELECT day, key, toUInt64(pageviews) AS n_pv, toUInt64(0) AS n_hits, toUInt64(0) AS n_err FROM ({pv}) "
            "UNION ALL SELECT day, key, toUInt64(0) AS n_pv, toUInt64(hits) AS n_hits, toUInt64(errors) AS n_err "
            f"FROM ({hits})) GROUP BY day, key")


def _site_rows(query: Query, store: History, req: StatsRequest, metrics: list[str], now: float) -> list[dict]:
    """by=host rows of SITE_DAY_METRICS: the whole days before today from host_days, the partial days at the
    range's ends and today from the raw rows (the same SQL); as the raw query's rows."""
    first, last = -(-req.start // DAY_S), min(req.end // DAY_S, int(now // DAY_S))  # whole days first..last-1
    totals: dict[str, dict[str, int]] = {}
    raw = [(req.start, req.end)]
    if last > first:
        totals = host_days.figures(store, _site_day_figures_sql, first, last - 1, req.host)
        raw = [(req.start, first * DAY_S), (last * DAY_S, req.end)]
    want_pv, want_hits = "pageviews" in metrics, any(m != "pageviews" for m in metrics)
    for start, end in raw:
        if end <= start:
            continue
        part = dataclasses.replace(req, start=start, end=end)
        for table, names, wanted in ((PAGEVIEWS, ["pageviews"], want_pv), (HITS, ["hits", "errors"], want_hits)):
            for row in query(_table_sql(table, names, part)) if wanted else ():
                slot = totals.setdefault(row.get("key") or "", dict.fromkeys(host_days.FIELDS, 0))
                for name in names:
                    slot[name] += int(row[name])
    # a key is listed when the tables of the asked metrics have rows for it, as in the raw query
    return [{"key": k, **t, "error_rate": t["errors"] / t["hits"] if t["hits"] else 0}
            for k, t in totals.items() if (want_pv and t["pageviews"]) or (want_hits and t["hits"])]


def compute_stats(query: Query, req: StatsRequest, prefer_rollups: bool = True, days: History | None = None,
                  now: float | None = None) -> dict:
    """Run the request; whole-minute ranges without a breakdown read the rollups, and by=host reads host_days
    through `days` (a store this process writes) for the whole days before `now` (prefer_rollups=False: raw)."""
    use_rollups = prefer_rollups and req.by is None and req.start % 60 == 0 and req.end % 60 == 0
    use_days = prefer_rollups and req.by == "host" and host_days.kept(days)
    by_source: dict[str, list[str]] = {}
    for m in req.metrics:
        d = METRICS[m]
        source = "host_days" if use_days and m in SITE_DAY_METRICS else \
            d.rollup if use_rollups and d.rollup else d.table.name
        by_source.setdefault(source, []).append(m)
    tables = {t.name: t for t in (PAGEVIEWS, SESSIONS, HITS)}
    result: dict[str, Any] = {"from": req.start, "to": req.end, "metrics": list(req.metrics)}
    merged: dict[Any, dict[str, Any]] = {}
    for name, metrics in by_source.items():
        if name == "host_days":
            rows = _site_rows(query, days, req, metrics, time.time() if now is None else now)
        else:
            rows = query(_rollup_sql(name, req) if name in ROLLUP_SQL else _table_sql(tables[name], metrics, req))
        for row in rows:
            key = row.get("key") if req.by else int(row["bucket"]) if req.interval else None
            if req.by and key is None:
                key = ""
            slot = merged.setdefault(key, {})
            for m in metrics:
                slot[m] = _clean(row.get(m), METRICS[m].digits)
    if req.by:
        rows = [{"key": str(k), **{m: v.get(m, _zero(m)) for m in req.metrics}} for k, v in merged.items()]
        first = req.metrics[0]
        rows.sort(key=lambda r: (-(r[first] or 0), r["key"]))
        result.update(by=req.by, rows=rows[:req.limit])
    elif req.interval:
        step = INTERVALS[req.interval]
        first_bucket = req.start // step * step
        series = []
        for b in range(first_bucket, req.end, step):
            slot = merged.get(b, {})
            series.append({"t": b, **{m: slot.get(m, _zero(m)) for m in req.metrics}})
        result.update(interval=req.interval, series=series)
    else:
        slot = merged.get(None, {})
        result["totals"] = {m: slot.get(m, _zero(m)) for m in req.metrics}
    return result


# -- visitor profile ---------------------------------------------------------------------------
_VISITOR_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def check_visitor_id(visitor_id: str) -> str:
    if not _VISITOR_ID.match(visitor_id):
        raise StatsError("visitor_id must be 1..128 characters of letters, digits, '_', '.', ':' or '-' "
                         "(the hashed id shown in the visit log)")
    return visitor_id


def visitor_profile(query: Query, visitor_id: str, last_pages: int = 10) -> dict:
    """First/last seen, visits, page views, last pages and member id of one visitor; NotFound if unknown."""
    vid = check_visitor_id(visitor_id)  # validated above, so inlining it is safe
    pv = (f"SELECT event_id, any(ts_epoch) AS c_ts, any(session_id) AS c_session, any(member_id) AS c_member, "
          f"any(path) AS c_path, any(referrer_host) AS c_ref, any(device) AS c_device, any(is_bot) AS c_bot "
          f"FROM pageviews WHERE visitor_id = '{vid}' GROUP BY event_id")
    summary = query(
        "SELECT count() AS pageviews, uniqExact(c_session) AS visits, min(c_ts) AS first_seen, max(c_ts) AS last_seen, "
        f"argMaxIf(c_member, c_ts, c_member != '') AS member_id, max(c_bot) AS is_bot FROM ({pv})")
    hits = query("SELECT count() AS hits, min(c_ts) AS first_seen, max(c_ts) AS last_seen, "
                 "argMaxIf(c_member, c_ts, c_member != '') AS member_id FROM "
                 f"(SELECT event_id, any(ts_epoch) AS c_ts, any(member_id) AS c_member FROM hits "
                 f"WHERE visitor_id = '{vid}' GROUP BY event_id)")
    s = summary[0] if summary else {}
    h = hits[0] if hits else {}
    n_pv, n_hits = int(s.get("pageviews") or 0), int(h.get("hits") or 0)
    if n_pv == 0 and n_hits == 0:
        raise NotFound(f"visitor {visitor_id} is not in the history store")
    seen = ([float(s["first_seen"]), float(s["last_seen"])] if n_pv else []) + \
           ([float(h["first_seen"]), float(h["last_seen"])] if n_hits else [])
    sessions = query("SELECT count() AS closed, sum(c_duration) AS total, sum(c_pv) AS pv FROM "
                     "(SELECT session_id, argMax(duration, end_epoch) AS c_duration, "
                     "argMax(pageviews, end_epoch) AS c_pv "
                     "FROM sessions "
                     f"WHERE visitor_id = '{vid}' GROUP BY session_id)")
    pages = query(f"SELECT c_ts AS ts, c_path AS path, c_ref AS referrer_host, c_device AS device FROM ({pv}) "
                  f"ORDER BY c_ts DESC LIMIT {int(last_pages)}")
    ss = sessions[0] if sessions else {}
    return {
        "visitor_id": visitor_id,
        "member_id": (s.get("member_id") or h.get("member_id") or ""),
        "first_seen": min(seen) if seen else None,
        "last_seen": max(seen) if seen else None,
        "visits": int(s.get("visits") or 0),
        "closed_sessions": int(ss.get("closed") or 0),
        "total_duration": round(float(ss.get("total") or 0), 1),
        "pageviews": n_pv,
        "hits": n_hits,
        "is_bot": bool(s.get("is_bot") or 0),
        "last_pages": [{"ts": float(p["ts"]), "path": p["path"], "referrer_host": p["referrer_host"],
                        "device": p["device"]} for p in pages],
    }
