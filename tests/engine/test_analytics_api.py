"""The analytics JSON API, served by the real web app (engine/web/app.py) over a chdb history
holding the generated shop history."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.settings import load_settings
from engine.web.app import create_web_app
from sinks.testing import fresh_history
from sinks.testing.events import generate

pytestmark = pytest.mark.integration

DS = generate(seed=5)
HUMAN = DS.human_pageviews


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with fresh_history(str(tmp_path_factory.mktemp("api-chdb")), rows=DS) as st:
        yield st


@pytest.fixture(scope="module")
def get(store):
    settings = load_settings(analytics={"recommendation_min_support": 2})
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(create_web_app(settings, None, store)), loop=loop)
    loop.run_until_complete(client.start_server())

    def fetch(path: str):
        async def go():
            resp = await client.get(path)
            return resp.status, await resp.json()
        return loop.run_until_complete(go())
    yield fetch
    loop.run_until_complete(client.close())
    loop.close()


def test_member_profile_and_visitor_profile(get):
    status, body = get("/api/profiles/member/m000")
    assert status == 200
    visitors = {p["visitor_id"] for p in DS.pageviews if p["member_id"] == "m000"}
    assert set(body["visitor_ids"]) == visitors
    assert body["pageviews"] == sum(1 for p in DS.pageviews if p["visitor_id"] in visitors)
    vid = sorted(visitors)[0]
    status, body = get(f"/api/profiles/visitor/{vid}")
    assert status == 200 and body["members"] == ["m000"]
    assert body["visits"] == len({p["session_id"] for p in DS.pageviews if p["visitor_id"] == vid})
    status, body = get("/api/profiles/member/no-such-member")
    assert status == 404 and "never logged in" in body["error"]


def test_products_transitions_goals(get):
    status, body = get("/api/products?limit=1000")
    assert status == 200
    assert {r["product_id"]: r["views"] for r in body["rows"]} == dict(Counter(p["product_id"] for p in HUMAN
                                                                                if p["product_id"]))
    status, body = get("/api/products?by=category&limit=2")
    assert status == 200 and len(body["rows"]) == 2 and "category" in body["rows"][0]
    status, body = get("/api/transitions?page=/checkout")
    assert status == 200 and body["views"] == sum(1 for p in HUMAN if p["path"] == "/checkout")
    status, body = get("/api/goals?goal=purchase&by=utm_campaign")
    assert status == 200
    purchases = [g for g in DS.goals if g["goal"] == "purchase" and not g["is_bot"]]
    assert sum(r["converted"] for r in body["rows"]) == len({g["session_id"] for g in purchases})
    assert body["summary"]["revenue"] == pytest.approx(sum(g["goal_value"] for g in purchases))


def test_funnel_segments_cohorts(get):
    status, body = get("/api/funnels/purchase")
    assert status == 200 and [s["step"] for s in body["steps"]] == [1, 2, 3, 4]
    assert body["steps"][-1]["sessions"] == len({g["session_id"] for g in DS.goals
                                                 if g["path"] == "/order/complete" and not g["is_bot"]})
    status, body = get("/api/funnels/nope")
    assert status == 404 and "purchase" in body["error"]
    status, body = get(f"/api/segments?to={DS.now}")
    assert status == 200
    assert sum(s["members"] for s in body["sizes"]) == len({h["member_id"] for h in DS.hits if h["member_id"]})
    status, body = get("/api/cohorts?who=members&weeks=4")
    assert status == 200 and all(len(c["retained"]) == 5 for c in body["cohorts"])


def test_recommendations(get):
    status, body = get("/api/recommendations/p00")
    assert status == 200 and body["recommendations"][0]["product_id"] == "p01"
    vid = next(p["visitor_id"] for p in HUMAN if p["product_id"] == "p00")
    status, body = get(f"/api/recommendations/visitor/{vid}")
    assert status == 200 and "p00" in body["recent_products"]
    assert not {r["product_id"] for r in body["recommendations"]} & set(body["recent_products"])


@pytest.mark.parametrize("path, fragment", [
    ("/api/products?from=yesterday", "neither an ISO"),
    ("/api/products?limit=0", "limit must be between"),
    ("/api/products?limit=many", "whole number"),
    ("/api/products?by=colour", "by must be one of"),
    ("/api/transitions", "give the page path"),
    ("/api/transitions?page=cart", "starting with '/'"),
    ("/api/cohorts?who=robots", "who must be"),
    ("/api/products?from=2026-10-10&to=2026-10-01", "must be before"),
])
def test_bad_parameters_are_400_with_a_message(get, path, fragment):
    status, body = get(path)
    assert status == 400 and fragment in body["error"]


def test_visitor_profile_carries_the_live_redis_profile(store, redis_server):
    import types

    import redis

    from processors.analytics.live import LiveProfiles

    settings = load_settings(redis={"key_prefix": "apitest:"})
    client = redis.Redis.from_url(redis_server.url)
    live = LiveProfiles(client, "apitest:")
    live.apply(sorted(DS.pageviews, key=lambda p: (p["ts"], p["event_id"])))
    vid = HUMAN[-1]["visitor_id"]
    loop = asyncio.new_event_loop()
    app = create_web_app(settings, types.SimpleNamespace(client=client), store)
    http = TestClient(TestServer(app), loop=loop)

    async def go():
        await http.start_server()
        try:
            resp = await http.get(f"/api/profiles/visitor/{vid}")
            member = await (await http.get("/api/profiles/member/m000")).json()
            return resp.status, await resp.json(), member
        finally:
            await http.close()
    try:
        status, body, member = loop.run_until_complete(go())
    finally:
        loop.close()
        client.close()
    assert status == 200
    assert body["live"]["pageviews"] == body["pageviews"] == sum(1 for p in DS.pageviews if p["visitor_id"] == vid)
    assert body["live"]["visits"] == body["visits"]
    assert member["live_visitor_ids"] == sorted({p["visitor_id"] for p in DS.pageviews if p["member_id"] == "m000"})


def test_without_a_history_store_the_api_says_what_to_configure():
    loop = asyncio.new_event_loop()
    http = TestClient(TestServer(create_web_app(load_settings(), None, None)), loop=loop)

    async def go():
        await http.start_server()
        try:
            resp = await http.get("/api/products")
            return resp.status, await resp.json()
        finally:
            await http.close()
    try:
        status, body = loop.run_until_complete(go())
    finally:
        loop.close()
    assert status == 503 and "history.url" in body["error"]


def test_products_bought_and_recommendations_per_member(get):
    orders = [h for h in DS.hits if "x-order-items" in h["extra"]]
    status, body = get("/api/products/sales?limit=1000")
    assert status == 200
    assert sum(r["revenue"] for r in body["rows"]) == pytest.approx(
        sum(float(h["extra"]["x-order-amount"]) for h in orders))
    assert sum(r["units"] for r in body["rows"]) == sum(h["extra"]["x-order-items"].count(",") + 1 for h in orders)
    top = body["rows"][0]["product_id"]
    status, body = get(f"/api/recommendations/bought/{top}")
    assert status == 200 and body["product_id"] == top
    assert all(r["product_id"] == top and r["support"] >= 2 for r in body["bought_together"])
    status, body = get("/api/recommendations/member/m000")
    assert status == 200 and body["bought"] and not {r["product_id"] for r in body["recommendations"]} & \
        set(body["bought"])
