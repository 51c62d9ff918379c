"""The Customers / Products / Funnels screens' read models against a generated shop history with known
ground truth, on embedded chdb and the ClickHouse 18.16 server: the member list (filter, search, sort,
pages), a member's and a visitor's activity, and funnels filtered by channel, device and member status."""
from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

from sinks.reads import customers, funnels, recommendations, rfm
from sinks.reads.common import TimeRange, pattern_regex
from sinks.reads.goal_events import GoalConfig
from sinks.testing import fresh_history
from sinks.testing.events import generate, visits

pytestmark = pytest.mark.integration

DS = generate(seed=13)
HUMAN = DS.human_pageviews
GOALS = DS.human_goals
CFG = GoalConfig.from_settings()
SEG = rfm.SegmentConfig.from_settings()
FUNNEL = ["/product/{product_id}", "/cart", "/checkout", "/order/complete"]


@pytest.fixture(scope="module")
def store(history_place):
    with fresh_history(history_place, "cu", rows=DS) as st:
        yield st


OWNER = DS.owners()
MEMBERS = sorted({m for m in OWNER.values() if m})


def orders_of(member):
    return [g for g in GOALS if g["goal"] == "purchase" and OWNER[g["event_id"]] == member]


def test_member_list_is_every_member_with_its_orders_and_revenue(store):
    got = customers.member_list(store, CFG, SEG, TimeRange(None, DS.now), limit=None)
    assert got["total"] == got["members"] == len(MEMBERS) == len(got["rows"])
    assert sum(got["sizes"].values()) == len(MEMBERS)
    by_id = {r["member_id"]: r for r in got["rows"]}
    for m in MEMBERS:
        assert by_id[m]["orders"] == len(orders_of(m))
        assert by_id[m]["revenue"] == pytest.approx(sum(g["goal_value"] for g in orders_of(m)), abs=0.01)
    # the list and the segment report score the same way
    scored = {s["member_id"]: s["segment"] for s in rfm.compute_rfm(store, DS.now, TimeRange(None, DS.now), CFG, SEG)}
    assert {m: r["segment"] for m, r in by_id.items()} == scored
    # sorted by revenue, highest first, member id breaking ties
    assert [r["member_id"] for r in got["rows"]] == sorted(by_id, key=lambda m: (-by_id[m]["revenue"], m))


def test_member_list_filters_searches_sorts_and_pages(store):
    rng = TimeRange(None, DS.now)
    whole = customers.member_list(store, CFG, SEG, rng, limit=None)["rows"]
    segment = Counter(r["segment"] for r in whole).most_common(1)[0][0]
    only = customers.member_list(store, CFG, SEG, rng, segment=segment, limit=None)
    assert only["total"] == only["sizes"][segment] and {r["segment"] for r in only["rows"]} == {segment}
    needle = MEMBERS[3][-3:].upper()  # a member-id substring, case-insensitive
    found = customers.member_list(store, CFG, SEG, rng, search=needle, limit=None)["rows"]
    assert {r["member_id"] for r in found} == {m for m in MEMBERS if needle.lower() in m}
    by_visits = customers.member_list(store, CFG, SEG, rng, sort="visits", desc=False, limit=None)["rows"]
    assert [r["visits"] for r in by_visits] == sorted(r["visits"] for r in whole)
    week = customers.member_list(store, CFG, SEG, rng, active_since=DS.now - 7 * 86400, limit=None)["rows"]
    last = defaultdict(float)
    for e in HUMAN + GOALS:
        if OWNER[e["event_id"]]:
            last[OWNER[e["event_id"]]] = max(last[OWNER[e["event_id"]]], e["ts"])
    assert {r["member_id"] for r in week} == {m for m, t in last.items() if t >= DS.now - 7 * 86400}
    assert 0 < len(week) < len(MEMBERS)
    second = customers.member_list(store, CFG, SEG, rng, limit=5, offset=5)["rows"]
    assert [r["member_id"] for r in second] == [r["member_id"] for r in whole[5:10]]
    for bad, message in ((dict(segment="whales"), "segment must be one of"), (dict(sort="shoe_size"), "sort must be")):
        with pytest.raises(Exception, match=message):
            customers.member_list(store, CFG, SEG, rng, **bad)


def _top(counts, n=20):
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def test_member_activity_is_what_the_member_did(store):
    member = max(MEMBERS, key=lambda m: (len(orders_of(m)), m))
    got = customers.member_activity(store, member, CFG, min_support=2)
    mine = [p for p in HUMAN if OWNER[p["event_id"]] == member]
    by = visits(mine)
    assert len(got["visits"]) == min(20, len(by))
    first = max(by.values(), key=lambda s: s[0]["ts"])  # newest visit first
    assert got["visits"][0]["pageviews"] == len(first) and got["visits"][0]["entry_page"] == first[0]["path"]
    assert got["visits"][0]["exit_page"] == first[-1]["path"]
    assert [(p["name"], p["views"]) for p in got["pages"]] == _top(Counter(p["path"] for p in mine))
    want_products = Counter(p["product_id"] for p in mine if p["product_id"])
    assert [(p["name"], p["views"]) for p in got["products"]] == _top(want_products)
    assert sorted(round(o["value"], 2) for o in got["orders"]) == sorted(round(g["goal_value"], 2)
                                                                         for g in orders_of(member))
    assert not {r["product_id"] for r in got["recommendations"]} & set(want_products)
    assert customers.member_activity(store, "nobody", CFG, 2) is None


def test_visitor_activity_covers_every_page_view_of_the_id(store):
    vid = Counter(p["visitor_id"] for p in DS.pageviews).most_common(1)[0][0]
    got = customers.visitor_activity(store, vid, CFG, min_support=2, limit=200)
    pvs = [p for p in DS.pageviews if p["visitor_id"] == vid]
    assert sum(v["pageviews"] for v in got["visits"]) == len(pvs)
    assert len(got["visits"]) == len({p["session_id"] for p in pvs})
    assert len(got["goals"]) == sum(1 for g in DS.goals if g["visitor_id"] == vid)


def _reaches(paths, steps):
    it = iter(paths)
    return all(any(re.match(pattern_regex(s), p) for p in it) for s in steps)


@pytest.mark.parametrize("filters", [{"device": "mobile"}, {"member": "member"}, {"member": "anonymous"},
                                     {"channel": "search", "member": "anonymous"}])
def test_funnel_filters_keep_the_matching_sessions(store, filters):
    pv_sessions = visits(HUMAN)

    def keep(sid):
        pvs = pv_sessions[sid]
        facts = {"device": pvs[0]["device"], "channel": pvs[0]["channel"],
                 "member": "member" if any(p["member_id"] for p in pvs) else "anonymous"}
        return all(facts[k] == v for k, v in filters.items())

    paths = [[e["path"] for e in s] for sid, s in visits(HUMAN + GOALS).items()
             if sid in pv_sessions and keep(sid)]
    want = [sum(1 for ps in paths if _reaches(ps, FUNNEL[:k])) for k in range(1, len(FUNNEL) + 1)]
    got = funnels.funnel(store, "purchase", FUNNEL, filters=filters)
    assert [s["sessions"] for s in got["steps"]] == want and want[0] > 0
    assert got["filters"] == filters
    with pytest.raises(Exception, match="unknown funnel filter"):
        funnels.funnel(store, "purchase", FUNNEL, filters={"colour": "red"})


def test_one_members_page_views_read_from_its_visitor_ids_are_the_same_rows(store):
    from sinks.reads.members import member_pageviews

    everyone, params = member_pageviews(TimeRange())
    rows = store.query(f"SELECT a_member, event_id FROM {everyone}", params)
    want = defaultdict(set)
    for r in rows:
        want[r["a_member"]].add(r["event_id"])
    for m in MEMBERS:
        one, params = member_pageviews(TimeRange(), member=m)
        assert {r["event_id"] for r in store.query(f"SELECT event_id FROM {one}", params)} == want[m]


def _top_of(rows, key, n):
    """(name, count, last ts) of the non-empty values of `key`, most frequent first, then by name."""
    count, last = Counter(), {}
    for p in rows:
        if p[key]:
            count[p[key]] += 1
            last[p[key]] = max(last.get(p[key], 0.0), p["ts"])
    return [(k, c, last[k]) for k, c in sorted(count.items(), key=lambda kv: (-kv[1], kv[0]))][:n]


def test_every_members_profile_and_activity_are_the_truth(store):
    """Each figure of the profile and of the activity, every member: both are read in one query each
    (sinks/reads/one_person.py), which folds sessions, values and goals apart from the SQL that gave them."""
    from sinks.reads import profiles

    checked = recommended = 0
    for m in MEMBERS:
        mine = [p for p in HUMAN if OWNER[p["event_id"]] == m]
        goals = sorted((g for g in GOALS if OWNER[g["event_id"]] == m), key=lambda g: -g["ts"])
        prof = profiles.member_profile(store, m, cfg=CFG, now=DS.now)
        act = customers.member_activity(store, m, CFG, min_support=2)
        if not mine:
            assert prof is None and act is None, m
            continue
        checked += 1
        by = visits(mine)
        spans = {s: (v[0]["ts"], v[-1]["ts"]) for s, v in by.items()}
        orders = [g for g in goals if g["goal"] == CFG.purchase]
        assert prof["visitor_ids"] == sorted({p["visitor_id"] for p in mine}), m
        assert (prof["first_seen"], prof["last_seen"]) == (min(p["ts"] for p in mine), max(p["ts"] for p in mine))
        assert (prof["visits"], prof["pageviews"]) == (len(by), len(mine)), m
        assert prof["total_time_s"] == pytest.approx(round(sum(b - a for a, b in spans.values()), 3), abs=1e-3)
        assert (prof["goals"], prof["purchases"]) == (len(goals), len(orders)), m
        assert prof["revenue"] == pytest.approx(round(sum(g["goal_value"] for g in orders), 2), abs=0.005), m
        assert [(s["name"], s["count"]) for s in prof["favourite_sections"]] == \
            [(k, c) for k, c, _ in _top_of(mine, "section", 5)], m
        devices = Counter(v[0]["device"] for v in by.values() if v[0]["device"])
        assert [(d["name"], d["count"]) for d in prof["devices"]] == \
            sorted(devices.items(), key=lambda kv: (-kv[1], kv[0]))[:5], m

        newest = sorted(by, key=lambda s: (-spans[s][0], s))[:20]
        assert [(v["session_id"], v["start"], v["end"], v["pageviews"], v["entry_page"], v["exit_page"], v["device"],
                 v["channel"]) for v in act["visits"]] == \
            [(s, *spans[s], len(by[s]), by[s][0]["path"], by[s][-1]["path"], by[s][0]["device"], by[s][0]["channel"])
             for s in newest], m
        for key, column in (("pages", "path"), ("products", "product_id"), ("categories", "category"),
                            ("menus", "menu")):
            assert [(r["name"], r["views"], r["last"]) for r in act[key]] == _top_of(mine, column, 20), (m, key)
        assert sorted((g["ts"], g["goal"], g["value"]) for g in act["goals"]) == \
            sorted((g["ts"], g["goal"], round(g["goal_value"], 2)) for g in goals[:100]), m
        assert sorted((o["ts"], o["value"]) for o in act["orders"]) == \
            sorted((g["ts"], round(g["goal_value"], 2)) for g in orders), m
        seen = [k for k, _, _ in _top_of(mine, "product_id", None)]
        scores, because = Counter(), defaultdict(list)
        for pid in seen[:10]:  # the rule: each of its 10 most viewed products' also_viewed, seen ones left out
            for r in recommendations.also_viewed(store, pid, 2, 30):
                if r["product_id"] not in seen:
                    scores[r["product_id"]] += r["support"]
                    because[r["product_id"]].append(pid)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        assert act["recommendations"] == [{"product_id": p, "score": n, "because_of": because[p]} for p, n in ranked]
        recommended += bool(ranked)
    assert checked > 10 and recommended > 5
