"""The demo crowd: deterministic plans, and real HTTP visitors against the real demo shop."""
from __future__ import annotations

from collections import Counter

import json

from engine.crowd import BOTS, Crowd, plan_crowd
from engine.demo_shop import PRODUCTS_BY_ID, TRUTH_FIELDS, DemoShop


def test_same_seed_gives_the_same_visit_plan():
    assert plan_crowd(11, 40, 60) == plan_crowd(11, 40, 60)
    assert plan_crowd(11, 40, 60) != plan_crowd(12, 40, 60)


def test_plan_has_the_mix_the_dashboard_needs():
    plan = plan_crowd(7, 60, 60)
    steps = [s for vp in plan for v in vp.visits for s in v.steps]
    assert sum(vp.is_bot for vp in plan) >= 1
    assert any(vp.member_key for vp in plan)
    sources = {v.source for vp in plan if not vp.is_bot for v in vp.visits}
    assert sources >= {"direct", "google", "facebook", "newsletter"}
    paths = Counter(s.path.split("?")[0] for s in steps)
    assert paths["/order/complete"] > 0 and paths["/cart/add"] > 0 and paths["/login"] > 0
    assert any("utm_campaign=" in s.path for s in steps)
    # visits start inside the round and a visitor's visits are in time order
    for vp in plan:
        starts = [v.start_s for v in vp.visits]
        assert starts == sorted(starts) and all(0 <= t < 60 for t in starts)


def test_crowd_visits_the_shop_with_cookies_logins_and_orders(tmp_path):
    with DemoShop(truth=str(tmp_path / "truth.jsonl"), bot_agents=BOTS) as shop:
        crowd = Crowd(shop.url, seed=3, visitors=25, round_s=4, repeat=False, think_scale=0.02)
        crowd.start()
        assert crowd.wait(60)
        served = shop.counters
    stats = crowd.stats
    assert stats.failures == 0
    # every request reached the shop (303 redirects after POSTs are followed as the client's own GETs)
    assert stats.requests == sum(v for k, v in served.items() if k.startswith("status_")) - served["status_303"]
    assert stats.statuses[200] > 50 and stats.statuses[404] + stats.statuses[500] > 0
    assert stats.orders == served["orders"] and stats.orders > 0
    assert stats.logins > 0
    humans = [vp for vp in crowd.plan(0) if not vp.is_bot]
    bot_requests = sum(len(v.steps) for vp in crowd.plan(0) if vp.is_bot for v in vp.visits)
    # Humans keep their cookie jar: one new _vw_id per human; bots never send it back.
    assert served["new_visitor_cookies"] == len(humans) + bot_requests

    # The shop's truth log: one line per request served, with who made it and what was bought.
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert len(truth) == sum(v for k, v in served.items() if k.startswith("status_"))
    assert all(set(t) == set(TRUTH_FIELDS) for t in truth)
    assert sum(t["bot"] for t in truth) == bot_requests and all(not t["visitor"] for t in truth if t["bot"])
    orders = [t for t in truth if t["order"]]
    assert len(orders) == served["orders"]
    for t in orders:
        assert round(sum(n * PRODUCTS_BY_ID[p].price for p, n, _ in t["order"]["items"]), 2) == t["order"]["amount"]
    members = {vp.member_key for vp in humans if vp.member_key}
    logins = [t for t in truth if t["path"] == "/login" and t["method"] == "POST"]
    assert len(logins) == stats.logins and {t["member"] for t in logins} <= members
    assert {t["member"] for t in truth} - {""} == {t["member"] for t in logins}  # a member only after a login
