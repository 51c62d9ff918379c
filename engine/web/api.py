"""The JSON API handlers (documented in engine/web/openapi.py).

Handlers find their collaborators on the application (`request.app[...]`, set by
create_web_app): "settings", "live" (LiveStateReader), "history" (HistoryStore),
"hub" (LiveHub). Blocking Redis / history calls run in the default thread
executor so the event loop - and the Faust worker sharing it - keeps running.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web

from engine.sql_policy import QueryRefused, police, query_limits, run_policed, store_database
from engine.web.alerting import rule_alerts
from engine.web.live_commerce import add_commerce
from engine.web.live_stream import call_maybe_async
from sinks.base import SinkUnavailable
from sinks.reads import stats as hs

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS),
                        status=status, content_type="application/json")


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def _history(request: web.Request):
    store = request.app.get("history")
    if store is None:
        raise web.HTTPServiceUnavailable(
            text=orjson.dumps({"error": "no history store configured: start the engine with history.url set"}).decode(),
            content_type="application/json")
    return store


async def _in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# -- live -------------------------------------------------------------------------------------
def add_alerts(snapshot: dict, settings) -> dict:
    """Attach the alert thresholds and which are crossed, judged on the current minute or, when it has
    only just begun and has no traffic yet, the previous one (series: see LiveStateReader.snapshot)."""
    rate_limit, p95_limit = settings.web.alert_error_rate, settings.web.alert_p95_ms
    alerts = []
    series = snapshot.get("series") or {}
    hits = series.get("hits") or []
    rates = series.get("error_rate") or []
    p95 = series.get("p95_ms") or []
    back = 1 if hits and hits[-1] else 2  # an empty current minute says nothing yet
    if len(hits) >= back and hits[-back]:
        rate = rates[-back] if len(rates) >= back else 0
        if rate and rate > rate_limit:
            alerts.append({"kind": "error_rate", "value": rate, "limit": rate_limit, "minute": series["minutes"][-back]
                           if len(series.get("minutes") or []) >= back else None,
                           "message": f"error rate {rate:.1%} is above {rate_limit:.1%}"})
        if len(p95) >= back and p95[-back] is not None and p95[-back] > p95_limit:
            alerts.append({"kind": "latency_p95", "value": p95[-back], "limit": p95_limit,
                           "minute": series["minutes"][-back] if len(series.get("minutes") or []) >= back else None,
                           "message": f"p95 latency {p95[-back]:.0f} ms is above {p95_limit:.0f} ms"})
    alerts += rule_alerts(snapshot, settings.web.alert_rules)
    return {**snapshot, "thresholds": {"error_rate": rate_limit, "p95_ms": p95_limit}, "alerts": alerts,
            "server_time": time.time()}


def _minutes(request: web.Request) -> int:
    raw = request.query.get("minutes", "60")
    try:
        minutes = int(raw)
    except ValueError:
        raise hs.StatsError(f"minutes={raw!r} must be an integer 1..240") from None
    if not 1 <= minutes <= 240:
        raise hs.StatsError(f"minutes={minutes} must be 1..240")
    return minutes


async def live_payload(app: web.Application, minutes: int = 60) -> dict:
    live = app.get("live")
    if live is None:
        raise LookupError("no live state reader configured")
    snapshot = await call_maybe_async(live.snapshot, minutes)
    snapshot["startup"] = startup_state(app)
    return add_alerts(add_commerce(snapshot, app["settings"]), app["settings"])


def startup_state(app: web.Application) -> dict:
    """{"state": "running"}, or what the engine is still doing before capture is live (the screen's banner)."""
    startup = app.get("startup")
    return (startup() if startup is not None else None) or {"state": "running"}


@routes.get("/api/live")
async def get_live(request: web.Request) -> web.Response:
    minutes = _minutes(request)
    if request.app.get("live") is None:
        return error(503, "no live state: the engine runs without Redis (set redis.url)")
    return json_response(await live_payload(request.app, minutes))


@routes.get("/api/live/stream")
async def live_stream(request: web.Request) -> web.StreamResponse:
    if request.app.get("live") is None:
        return error(503, "no live state: the engine runs without Redis (set redis.url)")
    hub = request.app["hub"]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    queue = hub.subscribe()
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            data = await queue.get()
            if data is None:
                break
            await response.write(data)
    except ConnectionResetError:
        pass  # the screen went away
    finally:
        hub.unsubscribe(queue)
    return response


# -- history ----------------------------------------------------------------------------------
@routes.get("/api/stats")
async def get_stats(request: web.Request) -> web.Response:
    req = hs.parse_stats_request(dict(request.query))
    store = _history(request)
    return json_response(await _in_thread(hs.compute_stats, store.query, req, True, store))


@routes.get("/api/visitors/{visitor_id}")
async def get_visitor(request: web.Request) -> web.Response:
    visitor_id = hs.check_visitor_id(request.match_info["visitor_id"])
    store = _history(request)
    try:
        return json_response(await _in_thread(hs.visitor_profile, store.query, visitor_id))
    except hs.NotFound as e:
        return error(404, str(e))


@routes.post("/api/query")
async def post_query(request: web.Request) -> web.Response:
    try:
        body = await request.json(loads=orjson.loads)
    except web.HTTPRequestEntityTooLarge:
        return error(413, "request body too large (the limit is 1 MiB): send the SQL alone")
    except Exception:
        return error(400, 'body must be JSON {"sql": "SELECT ..."}')
    if not isinstance(body, dict):
        return error(400, 'body must be a JSON object {"sql": "SELECT ..."}')
    store = _history(request)
    try:
        sql = police(body.get("sql"), database=store_database(store))
    except QueryRefused as e:
        return error(400, str(e))
    try:
        rows = await _in_thread(run_policed, store, sql, query_limits(request.app["settings"]))
    except SinkUnavailable:
        raise
    except Exception as e:
        # A bad query is the caller's mistake: say what the store said.
        return error(400, f"query failed: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
    return json_response({"rows": rows})


@routes.get("/api/health")
async def get_health(request: web.Request) -> web.Response:
    return json_response({"ok": True, "live": request.app.get("live") is not None,
                          "history": request.app.get("history") is not None,
                          "startup": startup_state(request.app),
                          "stream_pushes": request.app["hub"].pushes if request.app.get("hub") else 0})


@routes.get("/api/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    from engine.web.openapi import openapi_document

    return json_response(openapi_document(request.app))
