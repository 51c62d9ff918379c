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

import functools
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from sinks.reads import member_days, scoring
from sinks.reads.common import ALL_TIME, TS, History, TimeRange, num
from sinks.reads.goal_events import GoalConfig, default_config
from sinks.reads.member_columns import MemberColumns
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


def member_stats(store: History, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None,
                 window_since: float | None = None, members: Sequence[str] | None = None) -> list[dict]:
    """first / last visit, visits, orders and revenue per member (member_id order), from the requests that
    belong to it (members.py: the member logged in at that moment, plus the pre-login part of its visits); the
    same since `window_since` as window_visits / window_orders / window_revenue. `members`: only these
    (read from their own visitor ids). member_columns' figures, as dicts."""
    return member_columns(store, rng, cfg, window_since, members).stats_rows()


def member_columns(store: History, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None,
                   window_since: float | None = None, members: Sequence[str] | None = None) -> MemberColumns:
    """member_stats' figures as columns (finished: counts int, money rounded to cents).

    For every member, the whole days of the range are read from member_days (kept per closed day, the same
    figures) and only the unfinished last day from the raw tables, when the range and window start at UTC
    midnights (or at the beginning), the range has an end and is not one site's, and the store can keep
    member_days; else all from the raw tables."""
    cfg = cfg or default_config()
    w = float(window_since) if window_since is not None else -1.0  # before any event
    members = tuple(members) if members is not None else None
    if (members is not None or rng.until is None or rng.host is not None or not member_days.kept(store)
            or (rng.since is not None and rng.since % DAY_S) or (w >= 0 and w % DAY_S)):
        return MemberColumns.from_figures(_raw_stats(store, rng, cfg, w, members)).finished
    first_day = int(rng.since // DAY_S) if rng.since is not None else 0
    return member_days.member_figures(store, cfg, first_day, rng.until, int(max(w, 0) // DAY_S)).finished


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


def score_members(stats: Sequence[dict], now: float, seg: SegmentConfig | None = None,
                  population: Sequence[dict] | None = None) -> list[dict]:
    """Adds r, f, m (quintiles among `population`, default `stats`), recency_days and the rule-based segment
    to each member's stats (member_stats' dicts), in their order."""
    seg = seg or SegmentConfig.from_settings()
    cols = MemberColumns.from_stats(stats)
    pop = None if population is None else MemberColumns.from_stats(
        {"first_seen": 0.0, "orders": 0, "window_visits": 0, "window_orders": 0, "window_revenue": 0.0, **p}
        for p in population)
    scored = scoring.score(cols, now, seg, pop)
    return [{**s, **{k: row[k] for k in ("recency_days", "r", "f", "m", "segment")}}
            for s, row in zip(stats, scored.rows(np.arange(len(cols)), now))]


def compute_rfm(store: History, now: float | None = None, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None,
                seg: SegmentConfig | None = None) -> list[dict]:
    """Every member's stats with recency_days, r, f, m and segment (scored_members as dicts)."""
    now = now if now is not None else rng.now()
    scored = scored_members(store, now, rng, cfg, seg)
    return scored.rows(np.arange(len(scored)), now)


_last_scored: tuple = (None, None, None, None)  # (figures, day, seg, Scored) of the last whole-population score
_scored_lock = threading.Lock()


def scored_members(store: History, now: float, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None,
                   seg: SegmentConfig | None = None) -> scoring.Scored:
    """Every member of the range scored at `now` (as columns). While the figures are the same snapshot
    (member_days' closed days, no row yet today) and it is the same UTC day, the last scores are reused: the
    Customers tab's list, its segment sizes and each page of it read one scoring."""
    global _last_scored
    seg = seg or SegmentConfig.from_settings()
    cols = member_columns(store, rng, cfg, seg.window_since(now))
    day = int(now // DAY_S)
    with _scored_lock:
        figures, at, rules, scored = _last_scored
        if figures is cols and at == day and rules == seg:
            return scored
    scored = scoring.score(cols, now, seg)
    with _scored_lock:
        _last_scored = (cols, day, seg, scored)
    return scored


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
    where, params = (f"{TS} <= %(at)s", {"at": float(at)}) if at is not None else ("1", {})
    counts = {r["segment"]: int(num(r["members"])) for r in store.query(  # counted in the store: 100k members
        f"SELECT segment, count() AS members FROM (SELECT member_id, argMax(segment, {TS}) AS segment "
        f"FROM segments WHERE {where} GROUP BY member_id) GROUP BY segment", params)}
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
