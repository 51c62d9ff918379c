"""RFM scoring of members and named segments.

Per member, over the requests that belong to it (sinks/reads/members.py; human page views only):
- R(ecency): time of the last visit; F(requency): number of visits (sessions);
  M(onetary): sum of the purchase goal's values (analytics.purchase_goal; goal requests
  are read from `hits` with the goal rules, see goal_events.py).
Each becomes a quintile score 1..5 among all members (5 = most recent / most visits /
most spent): score = 1 + floor(5 * (#members with a strictly smaller value) / #members),
so equal values always get equal scores and the smallest value scores 1.

Named segments are the shop's rules (analytics.segments, config/settings.py SegmentRule):
absolute thresholds on orders / revenue / visits over the last analytics.segment_window_days
whole UTC days, lifetime orders, and whole UTC days since the last / first visit; the first
rule that matches wins, else analytics.default_segment. With the defaults:
  vip       revenue >= 500 or orders >= 3 in the window
  at_risk   bought once or more, no visit for 30 days
  lost      no visit for 90 days
  loyal     4 visits or more in the window
  customer  an order in the window
  new       first seen less than 30 days ago
  regular   everything else
The inputs change only with the member's own activity or at UTC midnight, so scoring again
(every rfm_interval_s, and right after a purchase) never moves a member back and forth; the
quintiles r, f, m are recorded beside the segment but do not decide it.

The worker (processors/analytics/recompute.py) stores only changes in the `segments` history
table (member_id, ts, segment, previous_segment, r, f, m), so that table is the segment
history: sizes at any time and movement between segments are read from it here, and the
same change rows are announced on the `visitwire.segments` topic by the Faust agent.
"""
from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from typing import Any, Sequence

from sinks.reads import member_days
from sinks.reads.common import ALL_TIME, TS, History, TimeRange, num
from sinks.reads.goal_events import GoalConfig, default_config
from sinks.reads.members import member_goals, member_pageviews

DAY_S = 86400.0


@dataclass(frozen=True)
class SegmentConfig:
    rules: tuple = ()  # config.settings.SegmentRule, in order
    default: str = "regular"
    window_days: int = 90

    @classmethod
    def from_settings(cls, settings: Any = None) -> "SegmentConfig":
        if settings is None:
            from config.settings import AnalyticsSettings

            a = AnalyticsSettings()
        else:
            a = settings.analytics
        return cls(tuple(a.segments), a.default_segment, a.segment_window_days)

    @functools.cached_property
    def checks(self) -> tuple[tuple[str, str, tuple[tuple[str, float], ...]], ...]:
        """(name, match, ((condition, limit), ...)) of each rule, read once: a rule's conditions() per member
        (a pydantic model_dump) took 1.4 cpu-s of the 2 spent scoring 100k members."""
        return tuple((r.name, r.match, tuple(r.conditions().items())) for r in self.rules)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules) + (self.default,)

    def window_since(self, now: float) -> float:
        """Start of the window: UTC midnight window_days - 1 days before today's."""
        return (int(now // DAY_S) - self.window_days + 1) * DAY_S


def quintiles(values: Sequence[float], among: Sequence[float] | None = None) -> list[int]:
    """Quintile score 1..5 of each value among all values (default: the values themselves; ties share a
    score)."""
    ordered = sorted(values if among is None else among)
    n = len(ordered)
    return [min(5, 1 + (5 * bisect.bisect_left(ordered, v)) // n) for v in values] if n else [1] * len(values)


def segment_of(stats: dict, seg: SegmentConfig, now: float) -> str:
    """The first rule whose conditions hold for the member's stats (member_stats), else the default."""
    today = int(now // DAY_S)
    since_visit = today - int(stats["last_seen"] // DAY_S)
    values = {"min_orders": stats["window_orders"], "min_revenue": stats["window_revenue"],
              "min_visits": stats["window_visits"], "min_lifetime_orders": stats["orders"],
              "min_days_since_visit": since_visit, "max_days_since_visit": since_visit,
              "max_days_since_first_seen": today - int(stats["first_seen"] // DAY_S)}
    for name, match, conditions in seg.checks:
        checks = [values[k] >= v if k.startswith("min_") else values[k] <= v for k, v in conditions]
        if all(checks) if match == "all" else any(checks):
            return name
    return seg.default


def member_stats(store: History, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None,
                 window_since: float | None = None, members: Sequence[str] | None = None) -> list[dict]:
    """first / last visit, visits, orders and revenue per member, from the requests that belong to it
    (members.py: the member logged in at that moment, plus the pre-login part of its visits); the
    same since `window_since` as window_visits / window_orders / window_revenue. `members`: only these
    (read from their own visitor ids).

    For every member, the whole days of the range are read from member_days (kept per closed day, the same
    figures) and only the unfinished last day from the raw tables, when the range and window start at UTC
    midnights (or at the beginning), the range has an end and is not one site's, and the store can keep
    member_days; else all from the raw tables."""
    cfg = cfg or default_config()
    w = float(window_since) if window_since is not None else -1.0  # before any event
    members = tuple(members) if members is not None else None
    if (members is not None or rng.until is None or rng.host is not None or not member_days.kept(store)
            or (rng.since is not None and rng.since % DAY_S) or (w >= 0 and w % DAY_S)):
        figures = _raw_stats(store, rng, cfg, w, members)
    else:
        first_day = int(rng.since // DAY_S) if rng.since is not None else 0
        figures = member_days.member_figures(store, cfg, first_day, rng.until, int(max(w, 0) // DAY_S))
    return [_finish(mid, f) for mid, f in sorted(figures.items())]


def _raw_stats(store: History, rng: TimeRange, cfg: GoalConfig, w: float,
               members: tuple[str, ...] | None = None) -> dict[str, dict]:
    """member_id -> unrounded figures over the range, read from the raw tables."""
    pvs, params = member_pageviews(rng, member=members)
    rows = {r["member_id"]: r for r in store.query(
        "SELECT a_member AS member_id, min(t) AS first_seen, max(t) AS last_seen, uniqExact(session_id) AS visits, "
        f"uniqExactIf(session_id, t >= %(w)s) AS window_visits FROM {pvs} GROUP BY a_member", {**params, "w": w})}
    goals_sql, gparams = member_goals(cfg, rng, members)
    money = {r["member_id"]: r for r in store.query(
        "SELECT a_member AS member_id, min(t) AS first_t, max(t) AS last_t, countIf(goal = %(purchase)s) AS orders, "
        "sumIf(goal_value, goal = %(purchase)s) AS revenue, countIf(goal = %(purchase)s AND t >= %(w)s) AS w_orders, "
        f"sumIf(goal_value, goal = %(purchase)s AND t >= %(w)s) AS w_revenue FROM {goals_sql} GROUP BY a_member",
        {**gparams, "purchase": cfg.purchase, "w": w})}
    out = {}
    for mid in set(rows) | set(money):
        r, m = rows.get(mid, {}), money.get(mid, {})
        out[mid] = {"first_seen": min(num(x, float("inf")) for x in (r.get("first_seen"), m.get("first_t"))),
                    "last_seen": max(num(x, float("-inf")) for x in (r.get("last_seen"), m.get("last_t"))),
                    "visits": num(r.get("visits")), "orders": num(m.get("orders")), "revenue": num(m.get("revenue")),
                    "window_visits": num(r.get("window_visits")), "window_orders": num(m.get("w_orders")),
                    "window_revenue": num(m.get("w_revenue"))}
    return out


def _finish(member_id: str, f: dict) -> dict:
    return {"member_id": member_id, "first_seen": f["first_seen"], "last_seen": f["last_seen"],
            "visits": int(f["visits"]), "orders": int(f["orders"]), "revenue": round(f["revenue"], 2),
            "window_visits": int(f["window_visits"]), "window_orders": int(f["window_orders"]),
            "window_revenue": round(f["window_revenue"], 2)}


def score_members(stats: Sequence[dict], now: float, seg: SegmentConfig | None = None,
                  population: Sequence[dict] | None = None) -> list[dict]:
    """Adds r, f, m (quintiles among `population`, default `stats`), recency_days and the rule-based segment
    to each member's stats."""
    seg = seg or SegmentConfig.from_settings()
    pop = stats if population is None else population
    rs = quintiles([s["last_seen"] for s in stats], [s["last_seen"] for s in pop])
    fs = quintiles([s["visits"] for s in stats], [s["visits"] for s in pop])
    ms = quintiles([s["revenue"] for s in stats], [s["revenue"] for s in pop])
    out = []
    for s, r, f, m in zip(stats, rs, fs, ms):
        out.append({**s, "recency_days": round(max(0.0, now - s["last_seen"]) / DAY_S, 3), "r": r, "f": f, "m": m,
                    "segment": segment_of(s, seg, now)})
    return out


def compute_rfm(store: History, now: float | None = None, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None,
                seg: SegmentConfig | None = None) -> list[dict]:
    now = now if now is not None else rng.now()
    seg = seg or SegmentConfig.from_settings()
    return score_members(member_stats(store, rng, cfg, seg.window_since(now)), now, seg)


def current_segments(store: History, at: float | None = None, members: Sequence[str] | None = None) -> dict[str, str]:
    """member_id -> latest stored segment (as of `at`; of `members` only when given)."""
    where = f"{TS} <= %(at)s" if at is not None else "1"
    params: dict[str, Any] = {"at": float(at)} if at is not None else {}
    if members is not None:
        where += " AND has(%(members)s, member_id)"
        params["members"] = sorted(members)
    rows = store.query(f"SELECT member_id, argMax(segment, {TS}) AS segment FROM segments WHERE {where} "
                       "GROUP BY member_id", params)
    return {r["member_id"]: r["segment"] for r in rows}


def segment_sizes(store: History, at: float | None = None, names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Members per segment as of `at` (default: now), from the stored segment history: the configured
    segments (`names`, default the default rules) first, then any other name stored earlier."""
    counts: dict[str, int] = {}
    for seg in current_segments(store, at).values():
        counts[seg] = counts.get(seg, 0) + 1
    names = tuple(names) or SegmentConfig.from_settings().names
    return [{"segment": s, "members": counts.get(s, 0)} for s in (*names, *sorted(set(counts) - set(names)))]


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
        f"(SELECT DISTINCT member_id, ts_epoch, segment, previous_segment FROM segments WHERE {rng.times().sql()}) "
        "GROUP BY previous_segment, segment ORDER BY members DESC, previous_segment, segment", rng.times().params())
    return [{"from": r["previous_segment"], "to": r["segment"], "members": int(num(r["members"]))} for r in rows]
