"""RFM scoring of members and named segments.

Per member, over the requests that belong to it (sinks/reads/members.py; human page views only):
- R(ecency): time of the last visit; F(requency): number of visits (sessions);
  M(onetary): sum of the purchase goal's values (analytics.purchase_goal; goal requests
  are read from `hits` with the goal rules, see goal_events.py).
Each becomes a quintile score 1..5 among all members (5 = most recent / most visits /
most spent): score = 1 + floor(5 * (#members with a strictly smaller value) / #members),
so equal values always get equal scores and the smallest value scores 1.

Named segments, first rule that matches wins:
  vip      r >= 4 and f >= 4 and m >= 4      best customers
  new      first visit less than analytics.rfm_new_days ago and at most 2 visits
  loyal    r >= 3 and f >= 4                 come back often
  lost     r == 1 and f <= 2 and m <= 2      gone, little history
  at_risk  r <= 2                            used to come / buy, not lately
  regular  everything else

`recompute_segments` stores only changes in the `segments` history table (member_id,
ts, segment, previous_segment, r, f, m), so that table is the segment history:
sizes at any time and movement between segments come from it, and the same change
rows are announced on the `visitwire.segments` topic by the Faust agent.
"""
from __future__ import annotations

import bisect
import time
from typing import Any, Iterable, Sequence

from sinks.reads.common import ALL_TIME, TS, History, TimeRange, num
from sinks.reads.goal_events import GoalConfig, default_config
from sinks.reads.members import member_goals, member_pageviews

SEGMENTS = ("vip", "loyal", "at_risk", "lost", "new", "regular")
DAY_S = 86400.0


def quintiles(values: Sequence[float]) -> list[int]:
    """Quintile score 1..5 of each value among all values (ties share a score)."""
    ordered = sorted(values)
    n = len(ordered)
    return [min(5, 1 + (5 * bisect.bisect_left(ordered, v)) // n) for v in values] if n else []


def segment_of(r: int, f: int, m: int, first_seen: float, visits: int, now: float, new_days: float) -> str:
    if r >= 4 and f >= 4 and m >= 4:
        return "vip"
    if now - first_seen < new_days * DAY_S and visits <= 2:
        return "new"
    if r >= 3 and f >= 4:
        return "loyal"
    if r == 1 and f <= 2 and m <= 2:
        return "lost"
    if r <= 2:
        return "at_risk"
    return "regular"


def member_stats(store: History, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None) -> list[dict]:
    """first / last visit, visits, orders and revenue per member, from the requests that belong to it
    (members.py: the member logged in at that moment, plus the pre-login part of its visits)."""
    cfg = cfg or default_config()
    pvs, params = member_pageviews(rng)
    rows = {r["member_id"]: r for r in store.query(
        "SELECT a_member AS member_id, min(t) AS first_seen, max(t) AS last_seen, uniqExact(session_id) AS visits "
        f"FROM {pvs} GROUP BY a_member", params)}
    goals_sql, gparams = member_goals(cfg, rng)
    money = {r["member_id"]: r for r in store.query(
        "SELECT a_member AS member_id, min(t) AS first_t, max(t) AS last_t, countIf(goal = %(purchase)s) AS orders, "
        f"sumIf(goal_value, goal = %(purchase)s) AS revenue FROM {goals_sql} GROUP BY a_member",
        {**gparams, "purchase": cfg.purchase})}
    out = []
    for mid in sorted(set(rows) | set(money)):
        r, m = rows.get(mid, {}), money.get(mid, {})
        first = min(num(x, float("inf")) for x in (r.get("first_seen"), m.get("first_t")))
        last = max(num(x, float("-inf")) for x in (r.get("last_seen"), m.get("last_t")))
        out.append({"member_id": mid, "first_seen": first, "last_seen": last,
                    "visits": int(num(r.get("visits"))), "orders": int(num(m.get("orders"))),
                    "revenue": round(num(m.get("revenue")), 2)})
    return out


def score_members(stats: Sequence[dict], now: float, new_days: float = 30.0) -> list[dict]:
    """Adds r, f, m, recency_days and segment to each member's stats."""
    rs = quintiles([s["last_seen"] for s in stats])
    fs = quintiles([s["visits"] for s in stats])
    ms = quintiles([s["revenue"] for s in stats])
    out = []
    for s, r, f, m in zip(stats, rs, fs, ms):
        out.append({**s, "recency_days": round(max(0.0, now - s["last_seen"]) / DAY_S, 3), "r": r, "f": f, "m": m,
                    "segment": segment_of(r, f, m, s["first_seen"], s["visits"], now, new_days)})
    return out


def compute_rfm(store: History, now: float | None = None, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None,
                new_days: float = 30.0) -> list[dict]:
    now = now if now is not None else rng.now()
    return score_members(member_stats(store, rng, cfg), now, new_days)


def current_segments(store: History, at: float | None = None) -> dict[str, str]:
    """member_id -> latest stored segment (as of `at`)."""
    where = f"{TS} <= %(at)s" if at is not None else "1"
    rows = store.query(f"SELECT member_id, argMax(segment, {TS}) AS segment FROM segments WHERE {where} "
                       "GROUP BY member_id", {"at": float(at)} if at is not None else {})
    return {r["member_id"]: r["segment"] for r in rows}


def segment_changes(scored: Iterable[dict], previous: dict[str, str], now: float) -> list[dict]:
    """Rows (config/events.py SEGMENT_FIELDS) for members whose segment is new or different."""
    return [{"member_id": s["member_id"], "ts": now, "segment": s["segment"],
             "previous_segment": previous.get(s["member_id"], ""), "r": s["r"], "f": s["f"], "m": s["m"]}
            for s in scored if previous.get(s["member_id"]) != s["segment"]]


def recompute_segments(store: History, now: float | None = None, cfg: GoalConfig | None = None,
                       new_days: float = 30.0) -> tuple[list[dict], list[dict]]:
    """Scores all members, stores the changes in `segments`; returns (scored members, change rows)."""
    now = now if now is not None else time.time()
    scored = compute_rfm(store, now, TimeRange(None, now), cfg, new_days)
    changes = segment_changes(scored, current_segments(store), now)
    if changes:
        store.write("segments", changes)
    return scored, changes


def segment_sizes(store: History, at: float | None = None) -> list[dict[str, Any]]:
    """Members per segment as of `at` (default: now), from the stored segment history."""
    counts: dict[str, int] = {}
    for seg in current_segments(store, at).values():
        counts[seg] = counts.get(seg, 0) + 1
    return [{"segment": s, "members": counts.get(s, 0)} for s in SEGMENTS]


def segment_timeline(store: History, rng: TimeRange = ALL_TIME, points: int = 8) -> list[dict[str, Any]]:
    """Stored segment sizes at `points` evenly spaced times of the range (default: the stored history)."""
    rows = store.query(f"SELECT count() AS n, min({TS}) AS first, max({TS}) AS last FROM segments")
    if not rows or not int(num(rows[0]["n"])):
        return []
    start = rng.since if rng.since is not None else num(rows[0]["first"])
    end = rng.until if rng.until is not None else num(rows[0]["last"])
    times = [end] if end <= start or points <= 1 else \
        [start + (end - start) * i / (points - 1) for i in range(points)]
    out = []
    for at in times:
        sizes = {r["segment"]: r["members"] for r in segment_sizes(store, at)}
        out.append({"at": at, **sizes})
    return out


def segment_movement(store: History, rng: TimeRange = ALL_TIME) -> list[dict[str, Any]]:
    """How many members moved from one segment to another in the range ('' = first scored)."""
    rows = store.query(
        "SELECT previous_segment, segment, uniqExact(member_id) AS members FROM "
        f"(SELECT DISTINCT member_id, ts_epoch, segment, previous_segment FROM segments WHERE {rng.sql()}) "
        "GROUP BY previous_segment, segment ORDER BY members DESC, previous_segment, segment", rng.params())
    return [{"from": r["previous_segment"], "to": r["segment"], "members": int(num(r["members"]))} for r in rows]
