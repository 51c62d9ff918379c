"""Analytics queries against a generated shop history with known ground truth, on both backends.

The ground truth is computed here in plain Python from the generated rows; the same
assertions run on embedded chdb and on the real ClickHouse 18.16 server, so the SQL is
proven portable. The whole dataset is then written a second time (at-least-once
delivery) and every answer must stay the same.
"""
from __future__ import annotations

import re
import time
from collections import Counter, defaultdict

import pytest

from processors.analytics import recompute
from sinks.reads import cohorts, funnels, goals, profiles, recommendations, rfm, usage
from sinks.reads.common import TimeRange, pattern_regex
from sinks.reads.goal_events import GoalConfig
from sinks.testing import fresh_history
from sinks.testing.events import generate, visits

pytestmark = pytest.mark.integration

FUNNEL = ["/product/{product_id}", "/cart", "/checkout", "/order/complete"]
DS = generate(seed=11)
HUMAN = DS.human_pageviews
GOALS = DS.human_goals


@pytest.fixture(scope="module")
def store(history_place):
    with fresh_history(history_place, "an", rows=DS) as st:
        yield st


# -- ground truth ---------------------------------------------------------------------------------
def truth_profile(visitor_ids):
    pvs = [p for p in DS.pageviews if p["visitor_id"] in visitor_ids]
    by = visits(pvs)
    return {
        "first_seen": min(p["ts"] for p in pvs), "last_seen": max(p["ts"] for p in pvs), "visits": len(by),
        "pageviews": len(pvs), "total_time_s": round(sum(s[-1]["ts"] - s[0]["ts"] for s in by.values()), 3),
        "revenue": sum(g["goal_value"] for g in DS.goals if g["visitor_id"] in visitor_ids and g["goal"] == "purchase"),
        "sections": Counter(p["section"] for p in pvs if p["section"]),
    }


OWNER = DS.owners()


def truth_member(member):
    pvs = [p for p in HUMAN if OWNER[p["event_id"]] == member]
    times = [e["ts"] for e in HUMAN + GOALS if OWNER[e["event_id"]] == member]
    by = visits(pvs)
    return {
        "visitor_ids": {p["visitor_id"] for p in pvs}, "first_seen": min(times),
        "last_seen": max(times), "visits": len(by), "pageviews": len(pvs),
        "total_time_s": round(sum(s[-1]["ts"] - s[0]["ts"] for s in by.values()), 3),
        "orders": sum(1 for g in GOALS if g["goal"] == "purchase" and OWNER[g["event_id"]] == member),
        "revenue": sum(g["goal_value"] for g in GOALS if g["goal"] == "purchase" and OWNER[g["event_id"]] == member),
    }


def reaches(paths, steps):
    it = iter(paths)  # subsequence test: each step must match after the previous one
    return all(any(re.match(pattern_regex(s), p) for p in it) for s in steps)


def member_visitors(member):
    return {p["visitor_id"] for p in DS.pageviews if p["member_id"] == member}


# -- tests ------------------------------------------------------------------------------------------
def test_visitor_profile_matches_ground_truth(store):
    vid = Counter(p["visitor_id"] for p in HUMAN).most_common(1)[0][0]
    got = profiles.visitor_profile(store, vid, now=DS.now)
    want = truth_profile({vid})
    for key in ("first_seen", "last_seen", "visits", "pageviews", "total_time_s", "revenue"):
        assert got[key] == pytest.approx(want[key], abs=1e-3), key
    assert got["favourite_sections"][0]["name"] == want["sections"].most_common(1)[0][0]
    assert got["favourite_sections"][0]["count"] == want["sections"].most_common(1)[0][1]
    assert got["recency_days"] == pytest.approx((DS.now - want["last_seen"]) / 86400, abs=1e-3)
    assert profiles.visitor_profile(store, "never-seen-visitor") is None


def test_member_profile_is_what_the_member_did_with_its_pre_login_start(store):
    assert len(member_visitors("m000")) == 2  # the generator gives m000 a second device
    # a member with anonymous visits on its device before the visit it logged in: those are not its own
    late = next(m for m in sorted(set(OWNER.values()) - {""}) if truth_member(m)["pageviews"]
                and truth_member(m)["pageviews"] < truth_profile(truth_member(m)["visitor_ids"])["pageviews"])
    for mid in ("m000", late):
        got = profiles.member_profile(store, mid, now=DS.now)
        want = truth_member(mid)
        assert set(got["visitor_ids"]) == want["visitor_ids"]
        logged_in = sum(1 for p in DS.pageviews if p["member_id"] == mid)
        assert want["pageviews"] > logged_in, "dataset must have anonymous pre-login page views"
        for key in ("pageviews", "visits", "last_seen", "total_time_s", "revenue"):
            assert got[key] == pytest.approx(want[key], abs=1e-3), (mid, key)
        assert got["purchases"] == want["orders"]
    assert profiles.member_profile(store, "nobody") is None


def test_member_figures_add_up_to_at_most_the_totals(store):
    scored = {m["member_id"]: m for m in rfm.compute_rfm(store, now=DS.now)}
    members = {m for m in OWNER.values() if m}
    assert set(scored) == members
    for mid in members:
        want = truth_member(mid)
        got = scored[mid]
        assert (got["visits"], got["orders"]) == (want["visits"], want["orders"]), mid
        assert (got["first_seen"], got["last_seen"]) == pytest.approx((want["first_seen"], want["last_seen"])), mid
        assert got["revenue"] == pytest.approx(want["revenue"]), mid
    total = sum(g["goal_value"] for g in GOALS if g["goal"] == "purchase")
    assert sum(m["revenue"] for m in scored.values()) <= total + 1e-6


def test_product_usage_counts_views_visitors_and_time_on_page(store):
    rows = {r["product_id"]: r for r in usage.usage(store, "product_id", limit=1000)}
    views = Counter(p["product_id"] for p in HUMAN if p["product_id"])
    assert {k: r["views"] for k, r in rows.items()} == dict(views)
    pid = views.most_common(1)[0][0]
    assert rows[pid]["visitors"] == len({p["visitor_id"] for p in HUMAN if p["product_id"] == pid})
    gaps, exits = [], 0
    for s in visits(HUMAN).values():
        for i, p in enumerate(s):
            if p["product_id"] == pid:
                if i + 1 < len(s):
                    gaps.append(s[i + 1]["ts"] - p["ts"])
                else:
                    exits += 1
    assert rows[pid]["avg_time_s"] == pytest.approx(sum(gaps) / len(gaps), abs=1e-3)
    assert rows[pid]["exits"] == exits
    # bots crawl the bot-only pair: their views are not counted
    assert views[DS.bot_only_pair[0]] == rows.get(DS.bot_only_pair[0], {"views": 0})["views"]


def test_transitions_into_and_out_of_cart(store):
    got = usage.transitions(store, "/cart")
    nxt = Counter()
    for s in visits(HUMAN).values():
        for i, p in enumerate(s):
            if p["path"] == "/cart":
                nxt[s[i + 1]["path"] if i + 1 < len(s) else "(exit)"] += 1
    assert {r["page"]: r["count"] for r in got["next"]} == dict(nxt)
    assert got["views"] == sum(nxt.values())
    with pytest.raises(ValueError, match="must be a path"):
        usage.transitions(store, "cart")


def test_funnel_step_counts_and_drop_off(store):
    got = funnels.funnel(store, "purchase", FUNNEL)
    # a session's path: its page views and its goal requests (POST /order/complete is a step)
    paths = [[p["path"] for p in s] for s in visits(HUMAN + GOALS).values()]
    want = [sum(1 for ps in paths if reaches(ps, FUNNEL[:k])) for k in range(1, len(FUNNEL) + 1)]
    assert [s["sessions"] for s in got["steps"]] == want
    assert [s["drop_off"] for s in got["steps"]] == [0] + [a - b for a, b in zip(want, want[1:])]
    assert want[-1] > 0 and want[0] > want[-1]


def test_conversions_per_channel_and_cart_abandonment(store):
    by = visits(HUMAN)
    goals_of = defaultdict(set)
    for g in GOALS:
        goals_of[g["session_id"]].add(g["goal"])
    conv = Counter(s[0]["channel"] for sid, s in by.items() if "purchase" in goals_of[sid])
    got = {r["channel"]: r for r in goals.conversions(store, "purchase", "channel")}
    assert {k: r["converted"] for k, r in got.items() if r["converted"]} == dict(conv)
    assert {k: r["sessions"] for k, r in got.items()} == dict(Counter(s[0]["channel"] for s in by.values()))
    carts = [sid for sid in by if "add_to_cart" in goals_of[sid]]
    abandoned = [sid for sid in carts if "purchase" not in goals_of[sid]]
    summary = goals.commerce_summary(store)
    assert summary["cart_sessions"] == len(carts)
    assert summary["abandoned_carts"] == len(abandoned) > 0
    # the bots' purchases have no human session: not revenue
    assert any(g["is_bot"] and g["goal"] == "purchase" for g in DS.goals)
    revenue = sum(g["goal_value"] for g in GOALS if g["goal"] == "purchase")
    assert summary["revenue"] == pytest.approx(revenue)
    assert summary["revenue_per_visitor"] == pytest.approx(revenue / len({p["visitor_id"] for p in HUMAN}), abs=1e-3)


def test_goal_rules_come_from_the_configuration(store):
    """Another site: its own goal names, patterns, value parameter - no code change."""
    from config.settings import GoalRule

    cfg = GoalConfig(rules=(GoalRule(name="order", pattern="/order/{step}", method="POST",
                                     value_header="x-order-amount"),
                            GoalRule(name="basket", pattern="/cart/add", method="GET")),  # never GET here
                     purchase="order", cart="basket")
    got = {g["goal"]: g for g in goals.goal_counts(store, cfg=cfg)}
    purchases = [g for g in GOALS if g["goal"] == "purchase"]
    assert set(got) == {"order"}
    assert got["order"]["conversions"] == len(purchases)
    assert got["order"]["value"] == pytest.approx(sum(g["goal_value"] for g in purchases))
    assert goals.commerce_summary(store, cfg=cfg)["cart_sessions"] == 0


def truth_segment(member, now, window_days=90):
    """The default segment rules (config/settings.py default_segments) written out over the truth."""
    day = 86400
    since = (int(now // day) - window_days + 1) * day
    mine = [e for e in HUMAN + GOALS if OWNER[e["event_id"]] == member]
    orders = [g for g in GOALS if g["goal"] == "purchase" and OWNER[g["event_id"]] == member]
    w_orders = [g for g in orders if g["ts"] >= since]
    w_visits = {p["session_id"] for p in HUMAN if OWNER[p["event_id"]] == member and p["ts"] >= since}
    since_visit = int(now // day) - int(max(e["ts"] for e in mine) // day)
    since_first = int(now // day) - int(min(e["ts"] for e in mine) // day)
    if sum(g["goal_value"] for g in w_orders) >= 500 or len(w_orders) >= 3:
        return "vip"
    if orders and since_visit >= 30:
        return "at_risk"
    if since_visit >= 90:
        return "lost"
    if len(w_visits) >= 4:
        return "loyal"
    if w_orders:
        return "customer"
    return "new" if since_first <= 30 else "regular"


def test_segments_follow_the_shops_rules(store):
    for now in (DS.now, DS.now + 40 * 86400, DS.now + 120 * 86400):  # members drift to at_risk, then lost
        scored = {m["member_id"]: m for m in rfm.compute_rfm(store, now=now)}
        assert set(scored) == set(OWNER.values()) - {""}
        assert {m: s["segment"] for m, s in scored.items()} == {m: truth_segment(m, now) for m in scored}, now
    scored = {m["member_id"]: m for m in rfm.compute_rfm(store, now=DS.now)}
    vip = scored["m000"]  # most visits, most recent, the biggest spender by construction
    assert (vip["r"], vip["f"], vip["m"], vip["segment"]) == (5, 5, 5, "vip")
    assert len(set(m["segment"] for m in scored.values())) >= 3
    # a shop's own rules: one order makes a buyer, everyone else is a browser
    from config.settings import SegmentRule

    seg = rfm.SegmentConfig((SegmentRule(name="buyer", min_orders=1),), "browser", 365)
    own = {m["member_id"]: m["segment"] for m in rfm.compute_rfm(store, now=DS.now, seg=seg)}
    assert own == {m: "buyer" if truth_member(m)["orders"] else "browser" for m in own}


def test_recompute_segments_stores_only_changes(store):
    scored, changes = recompute.recompute_segments(store, now=DS.now)
    assert len(changes) == len(scored)  # first run: every member gets its first segment
    assert all(c["previous_segment"] == "" for c in changes)
    for later in (1, 30, 600, 3600):  # scored again and again the same day: nothing flips back and forth
        _, again = recompute.recompute_segments(store, now=DS.now + later)
        assert again == []  # nothing changed, nothing stored or announced
    sizes = {r["segment"]: r["members"] for r in rfm.segment_sizes(store) if r["members"]}
    assert sizes == dict(Counter(m["segment"] for m in scored))
    moves = rfm.segment_movement(store)
    assert sum(m["members"] for m in moves) == len(scored) and all(m["from"] == "" for m in moves)
    timeline = rfm.segment_timeline(store, TimeRange(DS.now - 86400, DS.now + 10), points=3)
    assert [sum(v for k, v in t.items() if k != "at") for t in timeline] == [0, 0, len(scored)]


def test_a_purchase_rescore_scores_only_its_buyers_as_the_full_run_would(store):
    now = DS.now + 40 * 86400  # members have moved on (at_risk) since any stored run
    full = {m["member_id"]: m for m in rfm.compute_rfm(store, now=now)}
    population = [{k: m[k] for k in recompute.POPULATION_KEYS} for m in full.values()]
    buyers = sorted(full)[:3]
    offered: list[dict] = []
    scored, changes = recompute.rescore_members(store, buyers, population, now,
                                          claim=lambda c: offered.extend(c) or [])  # claims none: stores none
    assert {m["member_id"]: m for m in scored} == {b: full[b] for b in buyers}
    assert offered and {c["member_id"] for c in offered} <= set(buyers)
    assert changes == []


def test_recommendations_follow_co_visitation(store):
    sessions = [{p["product_id"] for p in s if p["product_id"]} for s in visits(HUMAN).values()]
    support = sum(1 for s in sessions if {"p00", "p01"} <= s)
    assert support >= 3
    got = recommendations.also_viewed(store, "p00", min_support=3)
    assert got[0] == {"product_id": "p01", "support": support}
    assert all(r["product_id"] != "p00" for r in got)
    a, b = DS.bot_only_pair
    assert not any({a, b} <= s for s in sessions)  # only bots view them together ...
    assert b not in [r["product_id"] for r in recommendations.also_viewed(store, a, min_support=1, limit=100)]
    pairs = {(r["product_id"], r["recommended_id"]): r["support"] for r in recommendations.co_visitation(store, 3)}
    assert pairs[("p00", "p01")] == pairs[("p01", "p00")] == support
    assert (a, b) not in pairs and min(pairs.values()) >= 3


def test_also_viewed_of_several_products_at_once_is_each_ones(store):
    """A member's activity and a visitor's recommendations ask also_viewed of up to 10 products in one query."""
    products = sorted({p["product_id"] for p in DS.pageviews if p["product_id"]})
    a, b = DS.bot_only_pair
    for support, limit in ((1, 100), (2, 30), (3, 5)):
        got = recommendations.also_viewed_each(store, products, support, limit)
        assert got == {p: recommendations.also_viewed(store, p, support, limit) for p in products}
        assert sum(map(len, got.values())) > len(products) // 2
        assert b not in [r["product_id"] for r in got[a]]
    assert recommendations.also_viewed_each(store, [], 2) == {}


def test_refreshed_recommendations_match_the_on_demand_ones(store):
    before = recommendations.recommend(store, "p00", 3)
    n = recompute.refresh_recommendations(store, 3, now=DS.now)
    assert n == len(recommendations.co_visitation(store, 3))
    after = recommendations.recommend(store, "p00", 3)
    assert after["source"] == "refreshed" and after["computed_at"] == DS.now
    assert after["recommendations"] == recommendations.also_viewed(store, "p00", 3)
    if before["source"] == "computed now":
        assert before["recommendations"] == after["recommendations"]
    recompute.refresh_recommendations(store, 3, now=DS.now + 60)  # the older generation is dropped
    assert recommendations.latest_refresh(store) == DS.now + 60
    deadline = time.monotonic() + 20  # ALTER ... DELETE is a background mutation on a server
    while True:
        gens = [g["computed_at"] for g in store.query("SELECT DISTINCT computed_at FROM recommendations")]
        if gens == [DS.now + 60] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert gens == [DS.now + 60]


def test_visitor_recommendations_exclude_what_they_saw(store):
    last_product = {p["visitor_id"]: p["product_id"] for p in sorted(HUMAN, key=lambda p: p["ts"]) if p["product_id"]}
    vid = next(v for v, pid in sorted(last_product.items()) if pid == "p00")  # p00 among its recent views
    got = recommendations.for_visitor(store, vid, min_support=2)
    assert "p00" in got["recent_products"]
    recs = [r["product_id"] for r in got["recommendations"]]
    assert recs and not set(recs) & set(got["recent_products"])


def test_weekly_cohorts(store):
    first_week, active = {}, defaultdict(set)
    for p in HUMAN:
        week = int((p["ts"] - 1788739200) // (7 * 86400))  # weeks since Monday 2026-09-07
        active[p["visitor_id"]].add(week)
    for v, weeks in active.items():
        first_week[v] = min(weeks)
    got = cohorts.cohorts(store, "visitors")
    assert sum(c["size"] for c in got) == len(active)
    c0 = got[0]
    members0 = [v for v, w in first_week.items() if w == 0]
    assert c0["cohort"] == "2026-09-07" and c0["size"] == len(members0)
    assert c0["retained"][1] == sum(1 for v in members0 if 1 in active[v])
    mc = cohorts.cohorts(store, "members")
    assert sum(c["size"] for c in mc) == len({p["member_id"] for p in DS.pageviews if p["member_id"]})


def test_time_range_limits_what_is_counted(store):
    mid = DS.now - 14 * 86400
    rng = TimeRange(since=mid)
    rows = {r["product_id"]: r["views"] for r in usage.usage(store, "product_id", rng, limit=1000)}
    assert rows == dict(Counter(p["product_id"] for p in HUMAN if p["product_id"] and p["ts"] >= mid))


def test_duplicate_delivery_changes_nothing(store):
    before = (profiles.member_profile(store, "m000", now=DS.now), usage.usage(store, "product_id", limit=1000),
              funnels.funnel(store, "purchase", FUNNEL), goals.commerce_summary(store),
              recommendations.co_visitation(store, 3), cohorts.cohorts(store, "members"),
              rfm.compute_rfm(store, now=DS.now))
    DS.write_to(store)  # at-least-once delivery: the same rows again
    after = (profiles.member_profile(store, "m000", now=DS.now), usage.usage(store, "product_id", limit=1000),
             funnels.funnel(store, "purchase", FUNNEL), goals.commerce_summary(store),
             recommendations.co_visitation(store, 3), cohorts.cohorts(store, "members"),
             rfm.compute_rfm(store, now=DS.now))
    assert store.query("SELECT count() AS n FROM pageviews")[0]["n"] >= len(DS.pageviews)
    assert after == before


def test_views_for_ad_hoc_queries(store):
    """The migration's views give the same figures as the analytics functions."""
    views = {r["product_id"]: (int(r["views"]), int(r["visitors"]))
             for r in store.query("SELECT product_id, views, visitors FROM product_usage")}
    assert views == {r["product_id"]: (r["views"], r["visitors"]) for r in usage.usage(store, "product_id", limit=1000)}
    top = profiles.top_visitors(store, limit=3, now=DS.now)
    rows = {r["visitor_id"]: r for r in store.query("SELECT * FROM visitor_profiles WHERE has(%(ids)s, visitor_id)",
                                                    {"ids": [t["visitor_id"] for t in top]})}
    for t in top:
        assert int(rows[t["visitor_id"]]["pageviews"]) == t["pageviews"]
        assert int(rows[t["visitor_id"]]["visits"]) == t["visits"]
    links = store.query("SELECT DISTINCT visitor_id FROM visitor_member WHERE member_id = 'm000'")
    assert {r["visitor_id"] for r in links} == member_visitors("m000")


def _truth_items(goal_path):
    """(hit, [(product, qty, price)]) of the human cart adds / orders, read from the raw rows."""
    out = []
    for h in DS.hits:
        if h["path"] != goal_path or h["user_agent"].startswith("Mozilla/5.0 (compatible; Googlebot"):
            continue
        if goal_path == "/cart/add":  # in the query, or the named fields of a form body
            q = dict(kv.split("=") for kv in h["query"].split("&")) if h["query"] else \
                {k.removeprefix("body:"): v for k, v in h["extra"].items()}
            out.append((h, [(q["product"], int(q["qty"]), 0.0)]))
        elif "x-order-items" in h["extra"]:
            out.append((h, [(p, int(n), float(price)) for p, n, price in
                            (item.split(":") for item in h["extra"]["x-order-items"].split(","))]))
    return out


def test_products_bought_views_carts_orders_units_revenue_conversion(store):
    from sinks.reads import products

    got = {r["product_id"]: r for r in products.product_sales(store, limit=1000)}
    orders, carts = _truth_items("/order/complete"), _truth_items("/cart/add")
    assert orders and carts
    assert {bool(h["query"]) for h, _ in carts} == {True, False}  # cart items from queries and from bodies
    buyers = defaultdict(set)
    for h, items in orders:
        for p, _, _ in items:
            buyers[p].add(h["visitor_id"])
    viewers = defaultdict(set)
    for p in HUMAN:
        if p["product_id"]:
            viewers[p["product_id"]].add(p["visitor_id"])
    for pid in set(viewers) | set(buyers):
        row = got[pid]
        assert row["views"] == sum(1 for p in HUMAN if p["product_id"] == pid), pid
        assert row["carts"] == sum(1 for _, items in carts if items[0][0] == pid), pid
        assert row["orders"] == sum(1 for _, items in orders if any(p == pid for p, _, _ in items)), pid
        assert row["units"] == sum(n for _, items in orders for p, n, _ in items if p == pid), pid
        assert row["revenue"] == pytest.approx(sum(n * c for _, items in orders for p, n, c in items if p == pid)), pid
        want = len(viewers[pid] & buyers[pid]) / len(viewers[pid]) if viewers[pid] else 0.0
        assert row["view_to_buy"] == pytest.approx(want, abs=1e-4), pid
    assert sum(r["revenue"] for r in got.values()) == pytest.approx(sum(h_value for h_value in (
        float(h["extra"]["x-order-amount"]) for h, _ in orders)))


def test_bought_together_and_what_a_member_gets_next(store):
    from sinks.reads import products

    pairs = Counter()
    for _, items in _truth_items("/order/complete"):
        ids = sorted({p for p, _, _ in items})
        for a in ids:
            for b in ids:
                if a != b:
                    pairs[(a, b)] += 1
    got = {(r["product_id"], r["recommended_id"]): r["support"]
           for r in products.bought_together(store, min_support=2, limit=10_000)}
    assert got == {k: n for k, n in pairs.items() if n >= 2} and got
    member = "m000"
    mine = {p for h, items in _truth_items("/order/complete") if OWNER.get(h["event_id"]) == member
            for p, _, _ in items}
    rec = products.for_member(store, member, min_support=1)
    assert set(rec["bought"]) == mine and mine
    recs = [r["product_id"] for r in rec["recommendations"]]
    assert recs and not set(recs) & mine
    assert all(any(pairs[(b, r)] for b in mine) for r in recs)  # each was bought with something it bought
