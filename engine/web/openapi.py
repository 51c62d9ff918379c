"""OpenAPI 3 description of the API, served at GET /api/openapi.json.

Our routes are described by hand below; any other /api route registered on the
app (e.g. the analytics room's) is listed from the router with its handler's
docstring, so the document never silently misses an endpoint.
"""
from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from sinks.reads.stats import DEFAULT_METRICS, DIMENSIONS, INTERVALS, METRICS

ERROR = {"$ref": "#/components/responses/Error"}
UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _q(name: str, description: str, schema: dict | None = None, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


TIME = {"type": "string", "description": "ISO 8601 (e.g. 2026-01-31T12:00:00Z; naive = UTC) or epoch seconds"}
METRIC_DOC = ("pageviews (non-bot), visitors (distinct non-bot visitors with page views), sessions (started in "
              "range, non-bot), hits (all requests incl. bots and static), bounce_rate (0..1), avg_duration "
              "(seconds), errors (hits with status >= 400), error_rate (0..1), latency_p50/p95/p99 (ms). "
              "Every figure counts each event_id / session_id once, however often it was stored.")

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": "number", "nullable": True}
_STARTUP = {
    "type": "object", "required": ["state"],
    "description": "running; starting (capture not live yet); or compiling: the numba kernels were not "
                   "in the cache for this machine and compile before capture starts",
    "properties": {
        "state": {"type": "string", "enum": ["running", "starting", "compiling"]},
        "rooms": {"type": "array", "items": {"type": "string"}, "description": "whose kernels compile"},
        "reason": {"type": "string", "description": "why the cache could not be used"},
        "expected_s": {**_NUM, "description": "expected compile time"},
        "elapsed_s": {**_NUM, "description": "time since the start"}}}

PATHS: dict[str, dict] = {
    "/": {"get": {"summary": "The live monitoring screen (single page; ?wall=1 for the large wall-screen layout, "
                             "?token= once when a token is configured)",
                  "operationId": "screen", "tags": ["screen"],
                  "parameters": [_q("wall", "1 = wall-screen mode"), _q("token", "access token (then a cookie)")],
                  "responses": {"200": {"description": "HTML page", "content": {"text/html": {}}},
                                "302": {"description": "token accepted: cookie set, token dropped from the URL"},
                                "401": UNAUTHORIZED}}},
    "/api/live": {"get": {
        "summary": "Live state from Redis (LiveStateReader.snapshot) plus alert thresholds and crossed alerts",
        "operationId": "getLive", "tags": ["live"],
        "parameters": [_q("minutes", "minutes of per-minute series (1..240, default 60)",
                          {"type": "integer", "minimum": 1, "maximum": 240, "default": 60})],
        "responses": {"200": _json({"$ref": "#/components/schemas/LiveSnapshot"}, "the snapshot"),
                      "400": ERROR, "401": UNAUTHORIZED, "503": ERROR}}},
    "/api/live/stream": {"get": {
        "summary": "Server-Sent Events: `event: snapshot` with the /api/live JSON on every `vw:updates` "
                   "announcement (at most 4/s) and at least once per second; `event: problem` when Redis is away",
        "operationId": "streamLive", "tags": ["live"],
        "parameters": [_q("token", "access token (EventSource cannot send headers)")],
        "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {
            "schema": {"type": "string"}}}}, "401": UNAUTHORIZED, "503": ERROR}}},
    "/api/stats": {"get": {
        "summary": "Figures from the history store: totals, a time series (interval=) or a breakdown (by=)",
        "description": METRIC_DOC + " by=country / by=city: of the client address (page views).",
        "operationId": "getStats", "tags": ["history"],
        "parameters": [
            _q("from", "range start (inclusive); default: `to` minus one hour", TIME),
            _q("to", "range end (exclusive); default: now", TIME),
            _q("metrics", "comma-separated; default " + ",".join(DEFAULT_METRICS),
               {"type": "string", "example": "pageviews,visitors"}),
            _q("by", "breakdown dimension (not together with interval)",
               {"type": "string", "enum": list(DIMENSIONS)}),
            _q("interval", "time-series bucket (not together with by); buckets are UTC-aligned",
               {"type": "string", "enum": list(INTERVALS)}),
            _q("limit", "rows of a breakdown (1..1000, default 10)",
               {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}),
        ],
        "responses": {"200": _json({"$ref": "#/components/schemas/Stats"}, "totals, series or rows"),
                      "400": ERROR, "401": UNAUTHORIZED, "503": ERROR}}},
    "/metrics": {"get": {
        "summary": "Prometheus metrics of this engine's worker and capture (text exposition format)",
        "operationId": "getMetrics", "tags": ["operations"],
        "responses": {"200": {"description": "Prometheus text format 0.0.4",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                      "401": UNAUTHORIZED}}},
    "/health": {"get": {
        "summary": "Health of this engine's components: last flush, held hits, last error, lag per partition",
        "operationId": "getComponentHealth", "tags": ["operations"],
        "responses": {"200": _json({"type": "object"}, "every component healthy"),
                      "503": _json({"type": "object"}, "a component is unhealthy (see components)"),
                      "401": UNAUTHORIZED}}},
    "/api/visitors/{visitor_id}": {"get": {
        "summary": "One visitor's profile from the history store",
        "operationId": "getVisitor", "tags": ["history"],
        "parameters": [{"name": "visitor_id", "in": "path", "required": True, "description": "hashed visitor id",
                        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,128}$"}}],
        "responses": {"200": _json({"$ref": "#/components/schemas/Visitor"}, "the profile"),
                      "400": ERROR, "401": UNAUTHORIZED, "404": ERROR, "503": ERROR}}},
    "/api/query": {"post": {
        "summary": "Run one SELECT over visitwire's tables on the history store, under server-side limits "
                   "(used by `visitwire query` and `report` while the engine holds the embedded chdb)",
        "operationId": "postQuery", "tags": ["history"],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["sql"], "properties": {"sql": {"type": "string"}}}}}},
        "responses": {"200": _json({"type": "object", "required": ["rows"], "properties": {
            "rows": {"type": "array", "items": {"type": "object"}}}}, "result rows"),
            "400": ERROR, "401": UNAUTHORIZED, "413": ERROR, "503": ERROR}}},
    "/api/health": {"get": {
        "summary": "Liveness, which backends are attached, and what the engine still does before capture is live",
        "operationId": "getHealth", "tags": ["meta"],
        "responses": {"200": _json({"type": "object", "required": ["ok", "startup"], "properties": {
            "ok": {"type": "boolean"}, "live": {"type": "boolean"}, "history": {"type": "boolean"},
            "stream_pushes": {"type": "integer"},
            "startup": _STARTUP}}, "status"), "401": UNAUTHORIZED}}},
    "/api/openapi.json": {"get": {
        "summary": "This document", "operationId": "getOpenApi", "tags": ["meta"],
        "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document"), "401": UNAUTHORIZED}}},
}

COMPONENTS = {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                   "description": "settings.web.token, or the engine's own {data_dir}/api_token"}},
    "responses": {
        "Error": _json({"$ref": "#/components/schemas/Error"}, "what went wrong and what to do"),
        "Unauthorized": _json({"$ref": "#/components/schemas/Error"}, "missing or wrong token"),
    },
    "schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "LiveSnapshot": {
            "type": "object", "additionalProperties": True,
            "description": "LiveStateReader.snapshot() (sinks/redis_live.py) plus thresholds, alerts and "
                           "server_time. Series are oldest first, one entry per minute.",
            "properties": {
                "now": {**_NUM, "description": "event-time now, epoch seconds"},
                "minute": {"type": "integer", "description": "start of the current minute, epoch seconds"},
                "window_s": {"type": "integer", "description": "the 'right now' window"},
                "visitors_now": {"type": "integer", "description": "distinct non-bot visitors in the window"},
                "members_now": {"type": "integer"}, "anonymous_now": {"type": "integer"},
                "bots_now": {"type": "integer", "description": "bots, never part of visitors_now"},
                "series": {"type": "object", "description": "minutes (epoch s), pageviews, hits, sessions, "
                           "errors_4xx, errors_5xx, error_rate, p50_ms, p95_ms, p99_ms (null = no traffic), "
                           "bot_hits, member_pageviews, anon_pageviews, goals, revenue, ...",
                           "additionalProperties": {"type": "array", "items": _NUM_OR_NULL}},
                "totals": {"type": "object", "additionalProperties": _NUM},
                "top": {"type": "object", "description": "current / previous minute -> dimension (pages, "
                        "referrers, channels, campaigns, status, browsers, os, devices, products, cart_products and "
                        "order_products: units) -> "
                        "[[value, count], ...]",
                        "properties": {"current": {"type": "object"}, "previous": {"type": "object"}}},
                "feed": {"type": "array", "description": "latest page views, newest first",
                         "items": {"type": "object", "properties": {
                             "ts": _NUM, "path": {"type": "string"}, "visitor": {"type": "string"},
                             "member": {"type": "boolean"}, "referrer_host": {"type": "string"},
                             "channel": {"type": "string"}, "device": {"type": "string"}}}},
                "goals_by_name": {"type": "object", "description": "goal name -> conversions per minute, "
                                  "aligned with series.minutes",
                                  "additionalProperties": {"type": "array", "items": _NUM}},
                "goal_feed": {"type": "array", "description": "latest goal conversions, newest first",
                              "items": {"type": "object", "properties": {
                                  "ts": _NUM, "goal": {"type": "string"}, "value": _NUM, "path": {"type": "string"},
                                  "visitor_id": {"type": "string"}, "member_id": {"type": "string"}}}},
                "commerce": {"type": "object", "description": "the snapshot's minutes: orders (analytics."
                             "purchase_goal), carts (cart_goal), revenue, sessions started and conversion_rate = "
                             "orders / sessions started (null without sessions); series.orders / series.carts "
                             "per minute", "properties": {
                                 "purchase_goal": {"type": "string"}, "cart_goal": {"type": "string"},
                                 "minutes": {"type": "integer"}, "orders": {"type": "integer"},
                                 "carts": {"type": "integer"}, "revenue": _NUM, "sessions": {"type": "integer"},
                                 "conversion_rate": _NUM_OR_NULL}},
                "thresholds": {"type": "object", "properties": {"error_rate": _NUM, "p95_ms": _NUM}},
                "alerts": {"type": "array", "items": {"type": "object", "properties": {
                    "kind": {"type": "string", "enum": ["error_rate", "latency_p95"]}, "value": _NUM,
                    "limit": _NUM, "minute": {"type": "integer", "nullable": True}, "message": {"type": "string"}}}},
                "server_time": _NUM,
                "startup": _STARTUP}},
        "Stats": {"type": "object", "required": ["from", "to", "metrics"], "properties": {
            "from": {"type": "integer"}, "to": {"type": "integer"},
            "metrics": {"type": "array", "items": {"type": "string", "enum": list(METRICS)}},
            "totals": {"type": "object", "additionalProperties": _NUM_OR_NULL},
            "interval": {"type": "string", "enum": list(INTERVALS)},
            "series": {"type": "array", "items": {"type": "object", "properties": {"t": {"type": "integer"}},
                                                  "additionalProperties": _NUM_OR_NULL}},
            "by": {"type": "string"},
            "rows": {"type": "array", "items": {"type": "object", "properties": {"key": {"type": "string"}},
                                                "additionalProperties": True}}}},
        "Visitor": {"type": "object", "properties": {
            "visitor_id": {"type": "string"}, "member_id": {"type": "string"},
            "first_seen": _NUM, "last_seen": _NUM, "visits": {"type": "integer"},
            "closed_sessions": {"type": "integer"}, "total_duration": _NUM,
            "pageviews": {"type": "integer"}, "hits": {"type": "integer"}, "is_bot": {"type": "boolean"},
            "last_pages": {"type": "array", "items": {"type": "object"}}}},
    },
}


def _route_paths(app: web.Application) -> dict[str, dict[str, Any]]:
    """method -> handler per path template, from the live router (static files left out)."""
    found: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if not path or "directory" in info or route.method in ("HEAD", "*", "OPTIONS"):
            continue
        found.setdefault(path, {})[route.method.lower()] = route.handler
    return found


def openapi_document(app: web.Application) -> dict:
    paths = {p: dict(ops) for p, ops in PATHS.items()}
    for path, methods in _route_paths(app).items():
        for method, handler in methods.items():
            if method in paths.get(path, {}):
                continue
            doc = (handler.__doc__ or "").strip()
            params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                      for n in re.findall(r"{(\w+)}", path)]
            op = {"summary": doc.splitlines()[0] if doc else f"{method.upper()} {path}",
                  "operationId": f"{method}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}",
                  "tags": ["analytics"], "responses": {"200": _json({"type": "object"}, "JSON"),
                                                       "400": ERROR, "401": UNAUTHORIZED}}
            if params:
                op["parameters"] = params
            paths.setdefault(path, {})[method] = op
    token = app["settings"].web.token if "settings" in app else ""
    return {
        "openapi": "3.0.3",
        "info": {"title": "visitwire API", "version": "1",
                 "description": "Real-time visitor analytics from the wire: live state (Redis) and history "
                                "(ClickHouse / chdb). Errors are JSON {\"error\": message}; bad parameters "
                                "answer 400."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}] if token else [],
        "paths": paths,
        "components": COMPONENTS,
    }
