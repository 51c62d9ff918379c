"""The segment rules and RFM quintiles scored over every member at once (sinks/reads/scoring.py) equal the
rules as rfm.py's docstring writes them, member by member, on random members with many ties and values
exactly at the thresholds."""
from __future__ import annotations

import bisect
import random

from config.settings import SegmentRule
from sinks.reads import rfm, scoring
from sinks.reads.member_columns import MemberColumns

DAY = 86400
NOW = 1_796_601_600 + 13 * 3600.0


def _members(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        last = NOW - rnd.choice([0, 1, 29, 30, 31, 89, 90, 91, 200]) * DAY - rnd.random() * DAY
        first = last - rnd.choice([0, 5, 30, 300]) * DAY
        orders = rnd.choice([0, 0, 1, 2, 3, 5])
        w_orders = min(orders, rnd.choice([0, 1, 3]))
        revenue = round(rnd.choice([0.0, 10.005, 499.99, 500.0, 1234.5]) * orders, 2)
        out.append({"member_id": f"m{i:04d}", "first_seen": first, "last_seen": last,
                    "visits": rnd.choice([1, 3, 4, 4, 9]), "orders": orders, "revenue": revenue,
                    "window_visits": rnd.choice([0, 3, 4]), "window_orders": w_orders,
                    "window_revenue": revenue if w_orders else 0.0})
    return out


def _rule_holds(rule: SegmentRule, m: dict, now: float) -> bool:
    today = int(now // DAY)
    since_visit, since_first = today - int(m["last_seen"] // DAY), today - int(m["first_seen"] // DAY)
    checks = []
    for cond, limit in rule.conditions().items():
        value = {"min_orders": m["window_orders"], "min_revenue": m["window_revenue"],
                 "min_visits": m["window_visits"], "min_lifetime_orders": m["orders"],
                 "min_days_since_visit": since_visit, "max_days_since_visit": since_visit,
                 "max_days_since_first_seen": since_first}[cond]
        checks.append(value >= limit if cond.startswith("min_") else value <= limit)
    return all(checks) if rule.match == "all" else any(checks)


def _segment(seg: rfm.SegmentConfig, m: dict, now: float) -> str:
    return next((r.name for r in seg.rules if _rule_holds(r, m, now)), seg.default)


def test_segments_are_the_first_matching_rule_member_by_member():
    members = _members(3000, seed=5)
    shops = [rfm.SegmentConfig.from_settings(),
             rfm.SegmentConfig((SegmentRule(name="whale", match="all", min_revenue=500.0, min_orders=3),
                                SegmentRule(name="sleeping", match="any", min_days_since_visit=31,
                                            max_days_since_first_seen=0),
                                SegmentRule(name="browser", min_visits=4)), "rest", 30)]
    for seg in shops:
        for now in (NOW, NOW + 30 * DAY):
            scored = rfm.score_members(members, now, seg)
            assert [s["segment"] for s in scored] == [_segment(seg, m, now) for m in members]
            assert len({s["segment"] for s in scored}) >= 3


def test_quintiles_count_the_members_strictly_below():
    members = _members(2000, seed=9)
    population = _members(500, seed=10)
    for key in ("last_seen", "visits", "revenue"):
        among = sorted(p[key] for p in population)
        want = [min(5, 1 + 5 * bisect.bisect_left(among, m[key]) // len(among)) for m in members]
        assert scoring.quintile_scores([m[key] for m in members], among).tolist() == want
    assert scoring.quintile_scores([3.0, 1.0], []).tolist() == [1, 1]
    scored = rfm.score_members(members, NOW, population=population)
    assert [s["f"] for s in scored] == scoring.quintile_scores([m["visits"] for m in members],
                                                               [p["visits"] for p in population]).tolist()


def test_columns_round_as_member_stats_and_merge_a_days_figures():
    figures = {"b": dict.fromkeys(("first_seen", "last_seen", "visits", "orders", "window_visits",
                                   "window_orders"), 2.0) | {"revenue": 2.675, "window_revenue": 0.125},
               "a": dict.fromkeys(("first_seen", "last_seen", "visits", "orders", "revenue", "window_visits",
                                   "window_orders", "window_revenue"), 1.0)}
    cols = MemberColumns.from_figures(figures)
    done = cols.finished.stats_rows()
    assert [m["member_id"] for m in done] == ["a", "b"]
    assert (done[1]["revenue"], done[1]["window_revenue"]) == (round(2.675, 2), round(0.125, 2))
    assert isinstance(done[1]["visits"], int)
    today = MemberColumns.from_figures({"c": figures["a"], "b": {**figures["a"], "first_seen": 0.5,
                                                                 "last_seen": 9.0}})
    both = {m["member_id"]: m for m in cols.merged(today).stats_rows()}
    assert list(both) == ["a", "b", "c"]
    assert (both["b"]["first_seen"], both["b"]["last_seen"], both["b"]["visits"]) == (0.5, 9.0, 3.0)
    assert both["c"] == {"member_id": "c", **figures["a"]}
