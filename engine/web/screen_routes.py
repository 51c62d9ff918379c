"""The Customers screen's API: the member list (JSON pages or CSV) and a member's or visitor's activity.

  GET /api/customers?segment=&q=&sort=revenue&order=desc&limit=100&offset=0[&active_within_s=300]
                   [&format=csv][&from=&to=]
  GET /api/profiles/member/{member_id}/activity     visits, pages, products, categories, menus, goals,
  GET /api/profiles/visitor/{visitor_id}/activity   orders and recommendations
  GET /api/funnels?channel=&device=&member=         every configured funnel's steps (the Funnels tab)
  GET /api/annotations?from=&to=                    notes on the timeline, oldest first
  POST /api/annotations {"ts": epoch, "text": ...}  a new note (201); DELETE /api/annotations/{id}

Bad parameters -> 400 {"error": ...}; a member or visitor without page views in the range -> 404.
"""
from __future__ import annotations

import csv
import io

import orjson
from aiohttp import web

from engine.web.analytics_routes import _funnel_filters, _handler, _int, _not_found, _range, _store
from sinks.reads import annotations, customers, funnels, rfm
from sinks.reads.common import AnalyticsError
from sinks.reads.goal_events import GoalConfig

routes = web.RouteTableDef()
CSV_MAX_ROWS = 1_000_000


@routes.get("/api/customers")
@_handler
def member_list(request: web.Request):
    """Members with segment, R/F/M, visits, orders, revenue, first and last visit."""
    store, rng, settings = _store(request), _range(request), request.app["settings"]
    q = request.query
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        raise AnalyticsError(f"format must be json or csv (got {fmt!r})")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise AnalyticsError(f"order must be asc or desc (got {order!r})")
    limit = None if fmt == "csv" else _int(request, "limit", 100, 1, 1000)
    offset = _int(request, "offset", 0, 0, CSV_MAX_ROWS)
    cfg = GoalConfig.from_settings(settings)
    active = _int(request, "active_within_s", 0, 0, 10 * 365 * 86400)
    args = dict(segment=q.get("segment", ""), search=q.get("q", "")[:128], sort=q.get("sort", "revenue"),
                desc=order == "desc", limit=limit, offset=offset,
                active_since=rng.now() - active if active else None)

    def work():
        result = customers.member_list(store, cfg, rfm.SegmentConfig.from_settings(settings), rng, **args)
        return _csv(result["rows"], args["segment"]) if fmt == "csv" else result
    return work


def _csv(rows: list[dict], segment: str) -> web.Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=customers.LIST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    name = f"members-{segment}.csv" if segment else "members.csv"
    return web.Response(text=out.getvalue(), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _activity(kind: str, read):
    """GET handler of one member's or visitor's activity (`read`: customers.member_activity / visitor_activity)."""

    @_handler
    def handler(request: web.Request):
        store, rng, settings = _store(request), _range(request), request.app["settings"]
        who, limit = request.match_info[f"{kind}_id"], _int(request, "limit", 20, 1, 200)
        cfg = GoalConfig.from_settings(settings)

        def work():
            found = read(store, who, cfg, settings.analytics.recommendation_min_support, rng, limit)
            return found if found is not None else _not_found(f"{kind} {who!r} has no page views in the range")
        return work
    handler.__doc__ = f"One {kind}'s visits, pages, products, categories, menus, goals, orders and recommendations."
    return handler


routes.get("/api/profiles/member/{member_id}/activity")(_activity("member", customers.member_activity))
routes.get("/api/profiles/visitor/{visitor_id}/activity")(_activity("visitor", customers.visitor_activity))


@routes.get("/api/funnels")
@_handler
def all_funnels(request: web.Request):
    """Every configured funnel (analytics.funnels), with the same filters as /api/funnels/{name}."""
    store, rng, settings = _store(request), _range(request), request.app["settings"]
    cfg, filters = GoalConfig.from_settings(settings), _funnel_filters(request)
    configured = settings.analytics.funnels
    return lambda: {"funnels": [funnels.funnel(store, name, steps, rng, cfg, filters)
                                for name, steps in configured.items()]}


@routes.get("/api/annotations")
@_handler
def list_annotations(request: web.Request):
    """Notes on the timeline in ?from=&to=, oldest first."""
    store, rng = _store(request), _range(request)
    return lambda: {"annotations": annotations.annotations(store, rng)}


@routes.post("/api/annotations")
async def add_annotation(request: web.Request) -> web.Response:
    """A note about a moment: {"ts": epoch seconds, "text": "newsletter sent"} -> 201 with its id."""
    try:
        body = await request.json(loads=orjson.loads)
    except Exception:
        return _json_error(400, 'body must be JSON {"ts": epoch seconds, "text": "..."}')
    if not isinstance(body, dict):
        return _json_error(400, 'body must be a JSON object {"ts": epoch seconds, "text": "..."}')

    @_handler
    def run(_request):
        store = _store(request)
        return lambda: annotations.add_annotation(store, body.get("ts"), body.get("text"))
    response = await run(request)
    if response.status == 200:
        response.set_status(201)
    return response


@routes.delete("/api/annotations/{annotation_id}")
@_handler
def delete_annotation(request: web.Request):
    """Delete a note."""
    store, aid = _store(request), request.match_info["annotation_id"]

    def work():
        if not annotations.delete_annotation(store, aid):
            return _not_found(f"no annotation {aid!r}")
        return {"deleted": aid}
    return work


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
