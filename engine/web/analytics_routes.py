"""Visitor relationship analytics API (JSON), included by engine/web/app.py when present.

Handlers find the history store in `request.app["history"]` and settings in
`request.app["settings"]` (agreed with the web room) and run the blocking queries in the
default executor so the event loop (shared with the Faust worker) keeps running.
Common query parameters: `from` / `to` (ISO date/time or epoch seconds), `host` (one site: the figures read
from its page views and hits only), `limit` (1..1000).
Bad parameters -> 400 {"error": ...}; unknown visitor / member / funnel -> 404 {"error": ...}.

  GET /api/profiles/visitor/{visitor_id}          profile of one visitor id (+ "live": its Redis profile)
  GET /api/profiles/member/{member_id}            profile over the requests that belong to the member
  GET /api/products?by=product_id|category|section|menu|path|page_group
  GET /api/transitions?page=/cart                 previous / next pages of a page
  GET /api/funnels/{name}                         steps of a funnel from analytics.funnels
                                                  (?channel=&device=&member=member|anonymous)
  GET /api/goals?goal=purchase&by=channel         conversions per channel / campaign + commerce totals
  GET /api/segments                               RFM segment sizes, top members, stored movement
  GET /api/recommendations/{product_id}           "viewed together" products (the table the refresh
                                                  timer stores; computed now before the first refresh
                                                  or with from / to)
  GET /api/recommendations/visitor/{visitor_id}   from the visitor's recent product views
  GET /api/products/sales                         per product views, carts, orders, units, revenue, conversion
  GET /api/recommendations/bought/{product_id}    "bought together" products
  GET /api/recommendations/member/{member_id}     what the member bought, and what to offer it next
  GET /api/cohorts?who=visitors|members&weeks=12  weekly retention
"""
from __future__ import annotations

import asyncio
import functools
import time

import orjson
import redis
from aiohttp import web

from sinks.reads import cohorts, funnels, goals, profiles, recommendations, rfm, usage
from sinks.reads import products as sales
from sinks.reads.common import AnalyticsError, TimeRange
from sinks.reads.goal_events import GoalConfig
from processors.analytics.live import LiveProfiles
from sinks.reads.reports import build_report

routes = web.RouteTableDef()


def _json(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                         content_type="application/json")


def _fail(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _store(request: web.Request):
    store = request.app.get("history")
    if store is None:
        raise AnalyticsUnavailable("no history store configured: start the engine with history.url set")
    return store


class AnalyticsUnavailable(Exception):
    pass


def _range(request: web.Request) -> TimeRange:
    """?from=&to= and the site filter ?host= (only that site's page views and hits count)."""
    return TimeRange.parse(request.query.get("from"), request.query.get("to"), request.query.get("host"))


def _int(request: web.Request, name: str, default: int, lo: int = 1, hi: int = 1000) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AnalyticsError(f"{name} must be a whole number between {lo} and {hi} (got {raw!r})") from None
    if not lo <= value <= hi:
        raise AnalyticsError(f"{name} must be between {lo} and {hi} (got {value})")
    return value


def _handler(fn):
    """Parse-and-query handlers: AnalyticsError -> 400, no store -> 503; the query runs in a thread."""

    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.Response:
        try:
            work = fn(request)  # parses parameters, returns a blocking callable
            result = await asyncio.get_running_loop().run_in_executor(None, work)
        except AnalyticsError as e:
            return _fail(400, str(e))
        except AnalyticsUnavailable as e:
            return _fail(503, str(e))
        if isinstance(result, web.Response):
            return result
        return _json(result)
    return wrapper


def _not_found(what: str) -> web.Response:
    return _fail(404, what)


def _live_profiles(request: web.Request) -> LiveProfiles | None:
    """Live profiles read through the dashboard's Redis client, when the engine has Redis."""
    client = getattr(request.app.get("live"), "client", None)
    if client is None:
        return None
    s = request.app["settings"]
    return LiveProfiles(client, s.redis.key_prefix, s.analytics.profile_ttl_s, s.analytics.max_live_profiles)


@routes.get("/api/profiles/visitor/{visitor_id}")
@_handler
def visitor_profile(request: web.Request):
    """Profile of one visitor id (history) with its live Redis profile; ?from=&to=."""
    store, rng, vid = _store(request), _range(request), request.match_info["visitor_id"]
    cfg = GoalConfig.from_settings(request.app["settings"])
    live = _live_profiles(request)

    def work():
        prof = profiles.visitor_profile(store, vid, rng, cfg=cfg)
        recent = None
        if live is not None:
            try:
                recent = live.visitor(vid, time.time())
            except redis.RedisError as e:  # live data is a bonus: the history answer still stands
                recent = {"error": f"live profile unavailable: {e}"}
        if prof is None and not (recent and "error" not in recent):
            return _not_found(f"visitor {vid!r} has no page views in the range")
        return {**(prof or {"visitor_id": vid}), "live": recent}
    return work


@routes.get("/api/profiles/member/{member_id}")
@_handler
def member_profile(request: web.Request):
    """Profile of a member over the requests that belong to it (pre-login start of its visits included); ?from=&to=."""
    store, rng, mid = _store(request), _range(request), request.match_info["member_id"]
    cfg = GoalConfig.from_settings(request.app["settings"])
    live = _live_profiles(request)

    def work():
        prof = profiles.member_profile(store, mid, rng, cfg=cfg)
        if prof is None:
            return _not_found(f"member {mid!r} has no page views in the history "
                              "(never logged in, or not in this range)")
        if live is not None:
            try:  # visitor ids linked live (Redis), e.g. a login seconds ago not yet in the history
                prof["live_visitor_ids"] = live.member_visitors(mid)
            except redis.RedisError as e:
                prof["live_visitor_ids"] = {"error": f"live links unavailable: {e}"}
        return prof
    return work


@routes.get("/api/products")
@_handler
def products(request: web.Request):
    """Usage per product (or ?by=category|section|menu|path|page_group): views, visitors, time on page, entry/exit."""
    store, rng, limit = _store(request), _range(request), _int(request, "limit", 50)
    by = request.query.get("by", "product_id")
    if by not in usage.DIMENSIONS:
        raise AnalyticsError(f"by must be one of {', '.join(usage.DIMENSIONS)} (got {by!r})")
    return lambda: {"by": by, "rows": usage.usage(store, by, rng, limit)}


@routes.get("/api/transitions")
@_handler
def transitions(request: web.Request):
    """Previous and next pages of ?page=/path."""
    store, rng, limit = _store(request), _range(request), _int(request, "limit", 20)
    page = request.query.get("page", "")
    if not page:
        raise AnalyticsError("give the page path: /api/transitions?page=/cart")
    if not page.startswith("/"):
        raise AnalyticsError(f"page must be a path starting with '/', e.g. /cart (got {page!r})")
    return lambda: usage.transitions(store, page, rng, limit)


@routes.get("/api/funnels/{name}")
@_handler
def funnel(request: web.Request):
    """Steps of a configured funnel (analytics.funnels) with drop-off; ?from=&to=&channel=&device=&member=."""
    store, rng, name = _store(request), _range(request), request.match_info["name"]
    configured = request.app["settings"].analytics.funnels
    if name not in configured:
        known = ", ".join(sorted(configured)) or "none (configure analytics.funnels)"
        return lambda: _not_found(f"unknown funnel {name!r}; configured funnels: {known}")
    steps = funnels.funnel_steps(configured, name)
    cfg = GoalConfig.from_settings(request.app["settings"])
    filters = _funnel_filters(request)
    return lambda: funnels.funnel(store, name, steps, rng, cfg, filters)


def _funnel_filters(request: web.Request) -> dict[str, str]:
    filters = {k: request.query.get(k, "") for k in funnels.FILTERS}
    if filters["member"] not in ("", "member", "anonymous"):
        raise AnalyticsError(f"member must be 'member' or 'anonymous' (got {filters['member']!r})")
    return filters


@routes.get("/api/goals")
@_handler
def goal_conversions(request: web.Request):
    """Conversions of ?goal= per ?by=channel|utm_campaign|..., goal counts, commerce totals."""
    store, rng, limit = _store(request), _range(request), _int(request, "limit", 50)
    a = request.app["settings"].analytics
    cfg = GoalConfig.from_settings(request.app["settings"])
    goal, by = request.query.get("goal", a.purchase_goal), request.query.get("by", "channel")
    if by not in goals.BREAKDOWNS:
        raise AnalyticsError(f"by must be one of {', '.join(goals.BREAKDOWNS)} (got {by!r})")
    return lambda: {"goal": goal, "by": by,
                    "rows": goals.conversions(store, goal, by, rng, cfg, limit),
                    "goals": goals.goal_counts(store, rng, cfg),
                    "summary": goals.commerce_summary(store, rng, cfg)}


@routes.get("/api/segments")
@_handler
def segments(request: web.Request):
    """RFM segment sizes (scored now), top members, stored segment movement."""
    store, rng, limit = _store(request), _range(request), _int(request, "limit", 20)
    settings = request.app["settings"]

    def work():
        report = build_report(store, settings, "segments", rng, limit).as_json()
        report["stored_sizes"] = rfm.segment_sizes(store, rng.until, rfm.SegmentConfig.from_settings(settings).names)
        return report
    return work


@routes.get("/api/products/sales")
@_handler
def product_sales(request: web.Request):
    """Per product: views, viewers, cart adds, orders, units, revenue, view -> buy conversion."""
    store, rng, limit = _store(request), _range(request), _int(request, "limit", 50)
    cfg = GoalConfig.from_settings(request.app["settings"])
    return lambda: {"rows": sales.product_sales(store, rng, cfg, limit)}


def _sales_query(request: web.Request, id_name: str) -> tuple:
    """(store, range, limit, goal config, the path's id, min support) of the per-product / per-member sales routes."""
    settings = request.app["settings"]
    return (_store(request), _range(request), _int(request, "limit", 10), GoalConfig.from_settings(settings),
            request.match_info[id_name], settings.analytics.recommendation_min_support)


@routes.get("/api/recommendations/bought/{product_id}")
@_handler
def bought_together(request: web.Request):
    """Products bought in the same orders as a product (support = orders holding both)."""
    store, rng, limit, cfg, pid, support = _sales_query(request, "product_id")
    return lambda: {"product_id": pid, "bought_together": sales.bought_together(store, rng, cfg, support, pid,
                                                                                    limit)}


@routes.get("/api/recommendations/member/{member_id}")
@_handler
def member_recommendations(request: web.Request):
    """What a member bought and what was bought together with it that it has not bought yet."""
    store, rng, limit, cfg, mid, support = _sales_query(request, "member_id")
    return lambda: sales.for_member(store, mid, rng, cfg, support, limit)


@routes.get("/api/recommendations/visitor/{visitor_id}")
@_handler
def visitor_recommendations(request: web.Request):
    """Recommendations from a visitor's recent product views."""
    store, limit = _store(request), _int(request, "limit", 10)
    vid = request.match_info["visitor_id"]
    support = request.app["settings"].analytics.recommendation_min_support
    return lambda: recommendations.for_visitor(store, vid, support, limit)


@routes.get("/api/recommendations/{product_id}")
@_handler
def product_recommendations(request: web.Request):
    """Products viewed together with a product (co-visitation support)."""
    store, rng, limit = _store(request), _range(request), _int(request, "limit", 10)
    pid = request.match_info["product_id"]
    support = request.app["settings"].analytics.recommendation_min_support
    return lambda: recommendations.recommend(store, pid, support, limit, rng)


@routes.get("/api/cohorts")
@_handler
def cohort_table(request: web.Request):
    """Weekly retention cohorts of ?who=visitors|members."""
    store, rng, weeks = _store(request), _range(request), _int(request, "weeks", 12, 1, 104)
    who = request.query.get("who", "visitors")
    if who not in ("visitors", "members"):
        raise AnalyticsError(f"who must be 'visitors' or 'members' (got {who!r})")
    return lambda: {"who": who, "cohorts": cohorts.cohorts(store, who, rng, weeks)}
