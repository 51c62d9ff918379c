"""One typed settings object for every room.

Precedence (highest first): explicit keyword overrides (CLI flags) >
environment (`VISITWIRE_<SECTION>__<KEY>`, e.g. `VISITWIRE_REDIS__URL`) >
TOML file (`--config FILE` or `VISITWIRE_CONFIG`) > defaults below.
Bad values fail at start with a message naming the key and what to do.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class SettingsError(Exception):
    """Configuration is invalid; the message says which key and how to fix it."""


class _Section(BaseModel):
    """A config section: a misspelt key (`processing.url_rulez`) is an error, not silently ignored."""
    model_config = ConfigDict(extra="forbid")


# Methods a goal may name: an allowlist, so a typo ("FETCH") stops the start instead of never matching.
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def http_method(v: str, empty_means_any: bool = False) -> str:
    """The method upper-cased; a ValueError naming the allowed ones for anything else (goal rules: "" = any)."""
    if (v or not empty_means_any) and v.upper() not in HTTP_METHODS:
        raise ValueError(f"method {v!r} is not an HTTP method; use one of {', '.join(HTTP_METHODS)}"
                         + (" or leave it empty for any" if empty_means_any else ""))
    return v.upper()


# A URL pattern: literal path characters and {name} placeholders (and `*` in funnel steps); no query,
# fragment, space or stray brace: a pattern is matched against the path alone, so '?' never matches.
_PATTERN_PART = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z0-9._~!$&'()+,;=:@%/-]+")


def check_pattern(pattern: str, wildcard: bool = False) -> str:
    """The pattern itself when it is a valid URL path pattern, else ValueError saying how to fix it."""
    if not pattern.startswith("/"):
        raise ValueError(f"pattern {pattern!r} must start with '/', e.g. '/product/{{product_id}}'")
    rest = pattern.replace("*", "") if wildcard else pattern
    pos = 0
    for m in _PATTERN_PART.finditer(rest):
        if m.start() != pos:
            break
        pos = m.end()
    if pos != len(rest):
        bad = rest[pos]
        hint = (" (a goal or funnel step matches the path only: take a value from the query with value_param; "
                "URL rules may end in ?param={name})" if bad == "?" else "")
        raise ValueError(f"pattern {pattern!r} has {bad!r} at a place a URL path pattern cannot{hint}; use "
                         "literal path characters and {name} placeholders for one path segment"
                         + (" ('*' for anything)" if wildcard else ""))
    return pattern


_QUERY_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")
_QUERY_VALUE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z0-9_.~+\-]{1,128}")


def check_rule_pattern(pattern: str) -> str:
    """A URL rule pattern: a path pattern, then optionally `?name={capture}` / `?name=value` pairs joined
    by '&' (e.g. '/goods/view.do?goodsNo={product_id}'); ValueError saying how to fix it."""
    path, q, query = pattern.partition("?")
    check_pattern(path)
    if not q:
        return pattern
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if not eq or not _QUERY_NAME.fullmatch(name) or not _QUERY_VALUE.fullmatch(value):
            raise ValueError(f"pattern {pattern!r}: query part {part!r} must be name={{capture}} or name=value, "
                             "joined by '&', e.g. '/goods/view.do?goodsNo={product_id}'")
    return pattern


class UrlRule(_Section):
    """Maps a URL path pattern to page metadata, e.g. '/product/{product_id}' -> product page.

    `{name}` captures one path segment; captured names product_id/category/section/menu
    fill the page view fields of the same name. After '?', `param={name}` captures a query
    parameter (the rule needs it present) and `param=value` needs that value:
    '/goods/view.do?goodsNo={product_id}'.
    """
    pattern: str
    group: str
    section: str = ""
    category: str = ""
    menu: str = ""

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, v: str) -> str:
        return check_rule_pattern(v)


class GoalRule(_Section):
    """A request that counts as a conversion, e.g. POST /order/complete -> purchase."""
    name: str
    pattern: str  # same syntax as UrlRule.pattern
    method: str = ""  # empty = any
    status: list[int] = Field(default_factory=lambda: [200, 201, 302, 303])
    value_param: str = ""  # query parameter with the goal value
    value_header: str = ""  # or a captured response/request header (see capture.extra_headers)
    # What the request is about (products): a query parameter naming one product and its quantity
    # (POST /cart/add?product=3&qty=2), or an order's items "id:qty:unit_price,..." (qty and price
    # optional) from a query parameter or a captured header (X-Order-Items: 3:2:45.95,7:1:12.95).
    product_param: str = ""
    qty_param: str = ""
    items_param: str = ""
    items_header: str = ""

    @field_validator("name")
    @classmethod
    def _named(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v):
            raise ValueError(f"goal name {v!r} must be 1-64 letters, digits, '_', '.' or '-'")
        return v

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, v: str) -> str:
        return check_pattern(v)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return http_method(v, empty_means_any=True)


class BodyRule(_Section):
    """Opt-in: the named fields of small request bodies on one path (application/x-www-form-urlencoded or a
    JSON object), e.g. POST /cart/add with product_id=...&qty=...; the event carries them in extra as
    "body:<field>" (never the raw body), where goal rules' *_param names find them as they find query ones."""
    path: str  # the request's path exactly, no query: "/cart/add"
    fields: list[str]
    method: str = "POST"

    @field_validator("path")
    @classmethod
    def _plain_path(cls, v: str) -> str:
        if not v.startswith("/") or any(c in v for c in "?#{} \t"):
            raise ValueError(f"path {v!r} must be a plain path starting with '/', no query, braces or spaces")
        return v

    @field_validator("fields")
    @classmethod
    def _field_names(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if not re.fullmatch(r"[A-Za-z0-9_.\[\]-]{1,64}", f)]
        if bad or not v:
            raise ValueError(f"fields are 1-64 letters, digits, '_', '.', '-', '[' or ']', and not empty; got {v}")
        return v

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return http_method(v)


class CaptureSettings(_Section):
    iface: str = ""
    ports: list[int] = Field(default_factory=lambda: [80, 8080])
    visitor_cookies: list[str] = Field(default_factory=lambda: ["_vw_id", "_ga", "visitor_id"])
    # Unless visitor_cookies is set: learn the site's own visitor cookie from the traffic (long-lived, set by
    # the server, sent back unchanged per client) and keep it in {data_dir}/capture-state.json.
    learn_visitor_cookie: bool = True
    member_cookie: str = "member"
    member_param: str = ""
    member_header: str = "x-member-id"
    # Real client IP behind a proxy (e.g. the TLS terminator in front of the captured app servers): when the
    # packet comes from a trusted proxy, the right-most address of the first of these headers that is not a
    # trusted proxy itself (the left-most ones are whatever the client wrote). Empty trusted_proxies = trust
    # nothing: always the packet's source address.
    client_ip_headers: list[str] = Field(default_factory=lambda: ["forwarded", "x-forwarded-for", "x-real-ip"])
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # Key of the visitor/member id hashes. Empty: a random salt per install, kept 0600 in {data_dir}/salt.json
    # (capture/install_salt.py), replaced every salt_rotation_days when that is > 0 (ids change then).
    salt: str = ""
    salt_rotation_days: float = Field(0.0, ge=0)
    # client_ip in events: "off" (as seen), "truncate" (IPv4 /24: last octet 0; IPv6 /48), "hash" (salted hash,
    # hex). Visitor ids still tell clients apart (they hash the full address). Costs the numba event writer:
    # every event is built in Python.
    client_ip_anonymization: Literal["off", "truncate", "hash"] = "off"
    # Query parameters are removed from uri, query and referrer when their names look like secrets (token, key,
    # secret, pass, auth, session, sig... see capture/sensitive.py); these names are removed too, and
    # allowed_params never are.
    sensitive_params: list[str] = Field(default_factory=list)
    allowed_params: list[str] = Field(default_factory=list)
    # Header names (request or response) whose values are copied into event.extra.
    extra_headers: list[str] = Field(default_factory=lambda: ["x-order-amount", "x-order-items"])
    # Request bodies are never read, except the named fields of these paths' bodies of at most max_body_bytes
    # (a longer or chunked one is a counted drop: bodies_dropped); at most max_body_bytes are kept per flow.
    request_bodies: list[BodyRule] = Field(default_factory=list)
    max_body_bytes: int = Field(4096, gt=0, le=65536)
    transaction_timeout_s: float = Field(30.0, gt=0)
    flow_idle_timeout_s: float = Field(120.0, gt=0)
    max_flow_buffer_bytes: int = Field(1 << 20, gt=0)
    max_total_buffer_bytes: int = Field(256 << 20, gt=0)
    max_pending_requests: int = Field(64, gt=0)
    # Open TCP flows followed at once; beyond, the least recently seen are ended early (counted, flows_evicted).
    # Each costs about 6 KB (benchmarks/flow_table_bench.py), so the default bounds flow state near 600 MB.
    max_flows: int = Field(50_000, gt=0)
    # While Kafka is away, at most this many events wait in memory; the oldest beyond are dropped and counted.
    max_buffered_events: int = Field(200_000, gt=0)
    # `visitwire capture` started as root: after opening the capture socket, continue as this user
    # (name or uid; empty = stay). The container image sets "visitwire".
    run_as: str = ""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not an address or network, e.g. 10.0.0.5 or 10.0.0.0/8") from None
        return v

    @field_validator("client_ip_headers")
    @classmethod
    def _header_names(cls, v: list[str]) -> list[str]:
        bad = [h for h in v if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", h)]
        if bad:
            raise ValueError(f"header names are letters, digits and '-', got {bad}")
        return [h.lower() for h in v]

    @field_validator("ports")
    @classmethod
    def _valid_ports(cls, v: list[int]) -> list[int]:
        bad = [p for p in v if not 0 < p < 65536]
        if bad or not v:
            raise ValueError(f"ports must be 1..65535 and not empty, got {v}")
        return v


class KafkaSettings(_Section):
    # Empty = start the embedded tansu broker.
    bootstrap: str = ""
    partitions: int = Field(4, gt=0)
    app_id: str = "visitwire"
    session_timeout_s: float = Field(30.0, gt=0)
    # How long a produced batch may wait for the broker before it counts as not delivered (the flush
    # then fails, offsets stay uncommitted and the records are sent again).
    producer_request_timeout_s: float = Field(30.0, gt=0)
    # Security of every Kafka client (config/kafka_security.py): TLS (SSL, SASL_SSL) with ssl_cafile (and
    # ssl_certfile / ssl_keyfile for client certificates); SASL (SASL_PLAINTEXT, SASL_SSL) with
    # sasl_mechanism, sasl_username and the password in sasl_password_file (or sasl_password).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = ""
    sasl_password_file: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    @model_validator(mode="after")
    def _security_complete(self) -> "KafkaSettings":
        if self.sasl_password_file:
            self.sasl_password = _read_secret("kafka.sasl_password_file", self.sasl_password_file)
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username and "
                             "sasl_password_file (or sasl_password)")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together (a client certificate and its key)")
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                raise ValueError(f"{key}: {path} is not a file")
        return self


class RedisSettings(_Section):
    # Empty = start an embedded redis-server child process.
    url: str = ""
    key_prefix: str = "vw:"
    # A file holding the password (e.g. a container secret): it goes into the URL, which is never shown
    # unmasked. TLS: a rediss:// URL (?ssl_ca_certs=/path/ca.pem&ssl_cert_reqs=required).
    password_file: str = ""


class HistorySettings(_Section):
    # clickhouse://user:pass@host:9000/db or chdb:///path (embedded; unset: chdb://{data_dir}/chdb)
    url: str = "chdb:///var/lib/visitwire/chdb"
    flush_interval_s: float = Field(1.0, gt=0)
    max_batch_rows: int = Field(100_000, gt=0)
    # At a low rate a flush waits past flush_interval_s for min_batch_rows rows, up to max_flush_delay_s: each
    # flush is one insert per table, and chdb's memory and parts follow the inserts (README, memory in a long run)
    min_batch_rows: int = Field(2_000, ge=0)
    max_flush_delay_s: float = Field(3.0, gt=0)
    # Embedded chdb: writes stop (offsets uncommitted) below this much free space; chdb reserves ~41 MiB
    # per insert, so less than a few inserts' worth fails mid-write. 0 turns the check off.
    min_free_mb: int = Field(256, ge=0)
    # ClickHouse: a file holding the password of the URL's user (a container secret). TLS: port 9440 and
    # ?secure=True&ca_certs=/path/ca.pem in the URL.
    password_file: str = ""

    def batching(self) -> dict:
        """The history store's batching arguments (sinks/base.py BatchingSink)."""
        return {"flush_interval_s": self.flush_interval_s, "max_batch_rows": self.max_batch_rows,
                "min_batch_rows": self.min_batch_rows, "max_flush_delay_s": self.max_flush_delay_s}

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not re.match(r"^(clickhouse|chdb)://", v):
            raise ValueError("history.url must start with clickhouse:// (server) or chdb:// (embedded), "
                             "e.g. chdb:///var/lib/visitwire/chdb or clickhouse://default:@127.0.0.1:9000/visitwire")
        return v


class ProcessingSettings(_Section):
    session_idle_s: float = Field(1800.0, gt=0)
    session_max_s: float = Field(4 * 3600.0, gt=0)
    # An open session is written (history `sessions`, topic visitwire.sessions, close_reason "open") when
    # it starts, when its second page view ends the bounce, on a goal, and at most this often otherwise.
    session_update_s: float = Field(60.0, gt=0)
    split_at_midnight: bool = True
    visitors_now_window_s: int = Field(300, gt=0)
    feed_length: int = Field(100, gt=0)
    batch_size: int = Field(5000, gt=0)
    batch_timeout_s: float = Field(0.2, gt=0)
    use_numba: bool = True
    # How `visitwire worker` takes the hits: "bulk" (aiokafka fetches on the partitions Faust's group
    # assigns) or "stream" (a Faust agent, one message at a time: about ten times slower).
    intake: Literal["bulk", "stream"] = "bulk"
    site_hosts: list[str] = Field(default_factory=list)  # hosts counted as 'internal' referrers
    static_extensions: list[str] = Field(default_factory=lambda: [
        ".css", ".js", ".mjs", ".map", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".webp",
        ".woff", ".woff2", ".ttf", ".eot", ".mp4", ".webm", ".mp3", ".pdf", ".zip", ".txt", ".xml", ".json"])
    static_content_types: list[str] = Field(default_factory=lambda: [
        "text/css", "application/javascript", "text/javascript", "image/", "font/", "video/", "audio/",
        "application/font", "application/json"])
    search_hosts: list[str] = Field(default_factory=lambda: [
        "google.", "bing.com", "duckduckgo.com", "yahoo.", "baidu.com", "yandex.", "naver.com", "daum.net",
        "ecosia.org"])
    social_hosts: list[str] = Field(default_factory=lambda: [
        "facebook.com", "t.co", "twitter.com", "x.com", "instagram.com", "linkedin.com", "reddit.com",
        "youtube.com", "pinterest.", "tiktok.com", "kakao", "line.me"])
    # A MaxMind City / GeoLite2-City database (.mmdb) for the city of each page view; the country needs
    # none (processors/geo.py). Empty: no city.
    geoip_city_db: str = ""
    # utm_medium (lower-cased) -> channel; a tagged link's medium says more than its referrer
    # (a newsletter opened in a web mail has none, or the mail host's).
    medium_channels: dict[str, list[str]] = Field(default_factory=lambda: {
        "email": ["email", "e-mail", "e_mail", "mail", "newsletter"],
        "cpc": ["cpc", "ppc", "paid", "paidsearch", "paid-search", "paid_search", "sem"],
        "social": ["social", "social-media", "social_media", "socialmedia", "social-network", "sm"],
        "affiliate": ["affiliate", "affiliates", "partner"],
        "display": ["display", "banner", "cpm"],
    })
    url_rules: list[UrlRule] = Field(default_factory=lambda: [
        UrlRule(pattern="/product/{product_id}", group="product", section="shop"),
        UrlRule(pattern="/category/{category}", group="category", section="shop"),
        UrlRule(pattern="/cart", group="cart", section="checkout"),
        UrlRule(pattern="/checkout", group="checkout", section="checkout"),
        UrlRule(pattern="/order/complete", group="order_complete", section="checkout"),
        UrlRule(pattern="/login", group="login", section="account"),
        UrlRule(pattern="/", group="home", section="home"),
    ])
    goals: list[GoalRule] = Field(default_factory=lambda: [
        GoalRule(name="purchase", pattern="/order/complete", method="POST", value_header="x-order-amount",
                 items_header="x-order-items"),
        GoalRule(name="add_to_cart", pattern="/cart/add", method="POST", product_param="product", qty_param="qty"),
        GoalRule(name="login", pattern="/login", method="POST"),
    ])


    @field_validator("geoip_city_db")
    @classmethod
    def _readable_city_db(cls, v: str) -> str:
        if v:
            import os

            if not os.path.isfile(v) or not os.access(v, os.R_OK):
                raise ValueError(f"{v!r} is not a readable file: give the path of a MaxMind City database "
                                 "(.mmdb), or leave it empty for countries only")
        return v


class SegmentRule(_Section):
    """A member segment the shop defines: absolute thresholds, first matching rule wins.

    Orders, revenue and visits count over the last analytics.segment_window_days whole UTC days
    (today included); days since a visit are whole UTC days. Both move only at UTC midnight or with
    the member's own activity, so a re-score every few seconds never flips a member back and forth.
    `match = "all"` needs every condition set, `"any"` one of them."""
    name: str
    match: Literal["all", "any"] = "all"
    min_orders: int | None = Field(None, ge=0)
    min_revenue: float | None = Field(None, ge=0)
    min_visits: int | None = Field(None, ge=0)
    min_lifetime_orders: int | None = Field(None, ge=0)
    min_days_since_visit: int | None = Field(None, ge=0)
    max_days_since_visit: int | None = Field(None, ge=0)
    max_days_since_first_seen: int | None = Field(None, ge=0)

    @field_validator("name")
    @classmethod
    def _named(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]{1,32}", v):
            raise ValueError(f"segment name {v!r} must be 1-32 lowercase letters, digits or '_'")
        return v

    @model_validator(mode="after")
    def _has_a_condition(self) -> "SegmentRule":
        if not self.conditions():
            raise ValueError(f"segment {self.name!r} has no condition; set e.g. min_orders = 3 or "
                             "min_days_since_visit = 30 (members no rule matches get analytics.default_segment)")
        return self

    def conditions(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump(exclude={"name", "match"}).items() if v is not None}


def default_segments() -> list[SegmentRule]:
    """Sensible on a new install: a buyer is a customer at once, a big or frequent buyer a VIP."""
    return [
        SegmentRule(name="vip", match="any", min_revenue=500.0, min_orders=3),
        SegmentRule(name="at_risk", min_lifetime_orders=1, min_days_since_visit=30),
        SegmentRule(name="lost", min_days_since_visit=90),
        SegmentRule(name="loyal", min_visits=4),
        SegmentRule(name="customer", min_orders=1),
        SegmentRule(name="new", max_days_since_first_seen=30),
    ]


class AnalyticsSettings(_Section):
    funnels: dict[str, list[str]] = Field(default_factory=lambda: {
        "purchase": ["/product/{product_id}", "/cart", "/checkout", "/order/complete"]})
    recommendation_min_support: int = Field(3, gt=0)
    rfm_interval_s: float = Field(3600.0, gt=0)
    profile_ttl_s: int = Field(7 * 86400, gt=0)
    max_live_profiles: int = Field(100_000, gt=0)
    # Goal names (processing.goals) that mean "bought" (its goal_value is revenue) and "added to cart".
    purchase_goal: str = "purchase"
    cart_goal: str = "add_to_cart"
    # Member segments, first matching rule wins (see SegmentRule); members no rule matches get
    # default_segment. Quintile R, F, M scores are computed beside them.
    segments: list[SegmentRule] = Field(default_factory=default_segments)
    default_segment: str = "regular"
    segment_window_days: int = Field(90, gt=0)
    recommendation_refresh_s: float = Field(3600.0, gt=0)
    # The first RFM scoring and recommendation refresh run this long after a worker starts, then
    # every rfm_interval_s / recommendation_refresh_s (a fresh start does not wait an interval).
    first_run_after_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _segment_names_unique(self) -> "AnalyticsSettings":
        names = [r.name for r in self.segments] + [self.default_segment]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"analytics.segments: segment name(s) {', '.join(twice)} used twice (default_segment "
                             "included); give each segment its own name")
        return self

    @field_validator("funnels")
    @classmethod
    def _valid_funnels(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, steps in v.items():
            if not steps:
                raise ValueError(f"funnel {name!r} has no steps; list URL patterns, "
                                 f"e.g. {name} = ['/cart', '/checkout']")
            for step in steps:
                try:
                    check_pattern(step, wildcard=True)
                except ValueError as e:
                    raise ValueError(f"funnel {name!r}: {e}") from None
        return v


class AlertRule(_Section):
    """[[web.alert_rules]]: a live figure above or below a limit (per-minute figures: the last complete
    minute; conversion_rate: the hour's), shown on the screen and sent to web.alert_webhook."""
    name: str
    metric: Literal["visitors_now", "members_now", "bots_now", "pageviews", "sessions", "orders", "carts", "revenue",
                    "error_rate", "p95_ms", "conversion_rate"]
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> "AlertRule":
        if (self.above is None) == (self.below is None):
            raise ValueError(f"alert rule {self.name!r}: give exactly one of above = N or below = N")
        return self


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8787, gt=0, lt=65536)
    # Required when host is not loopback; `visitwire demo` generates one.
    token: str = ""
    token_file: str = ""  # or read it from this file (a container secret)
    alert_error_rate: float = Field(0.05, ge=0, le=1)
    alert_p95_ms: float = Field(1000.0, gt=0)
    alert_rules: list[AlertRule] = Field(default_factory=list)
    # Gets a JSON POST when an alert (the two above or a rule) starts and when it ends; empty: none.
    alert_webhook: str = ""
    alert_check_s: float = Field(10.0, gt=0)

    @field_validator("alert_webhook")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL, e.g. https://hooks.example.com/visitwire")
        return v

    # Limits of POST /api/query and `visitwire query`, applied by the server; callers cannot change them.
    query_timeout_s: int = Field(30, ge=1, le=3600)
    query_max_rows: int = Field(100_000, ge=1)
    query_max_memory_mb: int = Field(2048, ge=64)
    # the answer's size: the engine holds it ~7 times over while it encodes the JSON (a 300 MB answer
    # took its RSS up by 2.0 GB), so a few thousand 1 MB strings would exhaust the machine
    query_max_result_mb: int = Field(64, ge=1)


class MetricsSettings(_Section):
    """The /metrics and /health listener of `visitwire worker` and `visitwire capture` (the web server
    serves both on its own port). Port 0 = no listener."""
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, lt=65536)
    # What `visitwire status` asks besides Kafka, Redis, the history store and a running engine:
    # the metrics listeners of workers and capture agents, e.g. ["http://10.0.0.7:9187"].
    targets: list[str] = Field(default_factory=list)


class Settings(BaseModel):
    # defaults validated too, as pydantic-settings did (its import alone cost 0.1 cpu-s of every start)
    model_config = ConfigDict(extra="forbid", validate_default=True)

    def __init__(self, **values: Any) -> None:
        # the sources in order of precedence: these values (CLI flags), VISITWIRE_* variables, the TOML file
        super().__init__(**_merged(_merged(_toml_values(), _env_values(os.environ)), values))

    data_dir: str = "/var/lib/visitwire"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "json": one JSON object per log line (time, level, logger, message) for a log shipper
    log_format: Literal["text", "json"] = "text"
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    processing: ProcessingSettings = Field(default_factory=ProcessingSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @model_validator(mode="after")
    def _goals_defined(self) -> "Settings":
        names = [g.name for g in self.processing.goals]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"processing.goals: goal name(s) {', '.join(twice)} defined twice; give each goal "
                             "its own name")
        for key in ("purchase_goal", "cart_goal"):
            ref = getattr(self.analytics, key)
            if ref and ref not in names:
                raise ValueError(f"analytics.{key}: {ref!r} names no goal in processing.goals (defined: "
                                 f"{', '.join(names) or 'none'}); add a [[processing.goals]] entry with "
                                 f"name = {ref!r} or set analytics.{key} to one of those")
        return self

    @model_validator(mode="after")
    def _one_data_dir(self) -> "Settings":
        # every command (run, query, report, db init...) resolves its paths here, the same way: the data
        # directory is absolute, and the embedded history lives inside it unless history.url is set
        self.data_dir = os.path.abspath(self.data_dir)
        if "url" not in self.history.model_fields_set:
            self.history.url = f"chdb://{os.path.join(self.data_dir, 'chdb')}"
        return self

    @model_validator(mode="after")
    def _secrets_from_files(self) -> "Settings":
        # secrets kept in files (container secrets) instead of the environment or the config file
        if self.web.token_file:
            self.web.token = _read_secret("web.token_file", self.web.token_file)
        if self.redis.password_file:
            self.redis.url = _with_password("redis", self.redis.url,
                                            _read_secret("redis.password_file", self.redis.password_file))
        if self.history.password_file:
            self.history.url = _with_password("history", self.history.url,
                                              _read_secret("history.password_file", self.history.password_file))
        return self

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> "Settings":
        metrics_host = self.metrics.host if self.metrics.port else "127.0.0.1"  # port 0: no listener
        for key, host in (("web.host", self.web.host), ("metrics.host", metrics_host)):
            if host not in ("127.0.0.1", "localhost", "::1") and not self.web.token:
                raise ValueError(f"web.token is required when {key} listens beyond loopback "
                                 f"({host}); set VISITWIRE_WEB__TOKEN or web.token in the config file")
        return self


def _read_secret(key: str, path: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as e:
        raise ValueError(f"{key}: cannot read {path} ({e.strerror}); check the path and its permissions") from None
    if not value:
        raise ValueError(f"{key}: {path} is empty")
    return value


def _with_password(section: str, url: str, password: str) -> str:
    """The URL with its password set (percent-encoded); the user stays as the URL names it."""
    from urllib.parse import quote, urlsplit, urlunsplit

    if not url or url.startswith("chdb://"):
        raise ValueError(f"{section}.password_file needs a {section}.url of a server to log in to")
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = quote(parts.username or ("default" if section == "history" else ""), safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


ENV_PREFIX = "visitwire_"  # matched in any case, like the keys after it
ENV_NESTED = "__"


def _env_values(environ: dict[str, str]) -> dict[str, Any]:
    """VISITWIRE_<SECTION>__<KEY> (any case) as nested values; a list, table or section given whole is JSON.
    Variables naming no top-level setting (VISITWIRE_CONFIG) are not settings; a misspelt key inside a
    section reaches validation, which names it."""
    found: dict[str, Any] = {}
    paths = [(k.lower()[len(ENV_PREFIX):].split(ENV_NESTED), k, v) for k, v in environ.items()
             if k.lower().startswith(ENV_PREFIX)]
    for path, env_key, value in sorted(paths, key=lambda p: len(p[0])):  # a whole section, then keys inside it
        if path[0] not in Settings.model_fields:
            continue
        node: dict[str, Any] = found
        model: Any = Settings
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
            model = _section_model(model, part)
        field = model.model_fields.get(path[-1]) if model is not None else None
        node[path[-1]] = _env_decoded(env_key, value, field.annotation) if field is not None else value
    return found


def _section_model(model: Any, name: str) -> type[BaseModel] | None:
    field = model.model_fields.get(name) if model is not None else None
    ann = field.annotation if field is not None else None
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _env_decoded(env_key: str, value: str, annotation: Any) -> Any:
    """A value for a list, table or section is JSON; any other stays a string for validation to convert."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    complex_ = any(get_origin(a) in (list, dict, tuple, set) or a in (list, dict, tuple, set) or
                   (isinstance(a, type) and issubclass(a, BaseModel)) for a in options)
    if not value or not complex_:
        return value
    try:
        return json.loads(value)
    except ValueError as e:
        if str in options:
            return value
        key = env_key.upper()
        if any(get_origin(a) in (list, tuple, set) for a in options):
            raise SettingsError(f"environment variable {key}: {e}; a list is set as a JSON array, e.g. "
                                f"{key}='[80, 8080]' or '[\"a\", \"b\"]'") from None
        raise SettingsError(f"environment variable {key}: {e}; a section set as a whole must be JSON, e.g. "
                            f"{key}='{{\"key\": 1}}', or set one key with {key}__KEY") from None


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, tables merged key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _toml_values() -> dict[str, Any]:
    """The TOML file named by VISITWIRE_CONFIG (set by `--config`)."""
    path = os.environ.get("VISITWIRE_CONFIG", "")
    if not path:
        return {}
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SettingsError(f"config file {path} not found: fix --config / VISITWIRE_CONFIG") from None
    except IsADirectoryError:
        raise SettingsError(f"config file {path} is a directory: give --config / VISITWIRE_CONFIG "
                            "the path of a TOML file") from None
    except (PermissionError, UnicodeDecodeError) as e:
        raise SettingsError(f"config file {path} cannot be read ({e.__class__.__name__}): "
                            "fix its permissions or encoding (UTF-8 TOML)") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"config file {path} is not valid TOML: {e}") from None


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Build and validate settings; raises SettingsError with a readable message."""
    if config_file:
        os.environ["VISITWIRE_CONFIG"] = config_file
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = [_error_line(err) for err in e.errors()]
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)
                            + "\nfix the config file or the VISITWIRE_* environment variable named above") from None


def _error_line(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        known = _known_keys(err["loc"][:-1])
        return (f"  {key}: unknown key; known keys here: {', '.join(known)} "
                "(check the spelling, or remove it)")
    msg = err["msg"].removeprefix("Value error, ")
    if not key:  # a rule across sections: the message names its keys
        return f"  {msg}"
    return f"  {key}: {msg} (got {err.get('input')!r})"


def _known_keys(loc: tuple) -> list[str]:
    """The field names of the (sub)section at `loc` (list indexes skipped)."""
    model: Any = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        model = inner[0] if inner and isinstance(inner[0], type) else ann
    return sorted(getattr(model, "model_fields", {}))
