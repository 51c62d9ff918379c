"""Visitor and member profiles from the history store.

A profile sums up a set of visitor ids: first / last seen, visits (sessions), page
views, total time (sum of session spans), visit frequency (visits per week over the
span between first and last visit, at least one week), recency (days since last
seen), favourite sections and devices, goals and revenue.

A member's profile covers every visitor id that was ever logged in as that member
(table `visitor_member`, filled from page views whose member_id is set), including
the page views those visitor ids made *before* logging in: the anonymous history
joins the member.
"""
from __future__ import annotations

from typing import Any

from sinks.reads.common import ALL_TIME, TS, History, TimeRange, links_source, num, pageviews_source
from sinks.reads.goal_events import GoalConfig, default_config, goal_hits

WEEK_S = 7 * 86400.0
DAY_S = 86400.0


def linked_visitors(store: History, member_id: str) -> list[str]:
    rows = store.query(f"SELECT visitor_id FROM {links_source('member_id = %(m)s')} ORDER BY visitor_id",
                       {"m": member_id})
    return [r["visitor_id"] for r in rows]


def linked_members(store: History, visitor_id: str) -> list[str]:
    rows = store.query(f"SELECT member_id FROM {links_source('visitor_id = %(v)s')} ORDER BY member_id",
                       {"v": visitor_id})
    return [r["member_id"] for r in rows]


def visitor_profile(store: History, visitor_id: str, rng: TimeRange = ALL_TIME, now: float | None = None,
                    cfg: GoalConfig | None = None) -> dict[str, Any] | None:
    """Profile of one visitor id, or None when it was never seen."""
    prof = _profile(store, [visitor_id], rng, now if now is not None else rng.now(), cfg or default_config())
    if prof is not None:
        prof = {"visitor_id": visitor_id, "members": linked_members(store, visitor_id), **prof}
    return prof


def member_profile(store: History, member_id: str, rng: TimeRange = ALL_TIME, now: float | None = None,
                   cfg: GoalConfig | None = None) -> dict[str, Any] | None:
    """Profile of a member across all its linked visitor ids (pre-login history included)."""
    visitors = linked_visitors(store, member_id)
    if not visitors:
        return None
    prof = _profile(store, visitors, rng, now if now is not None else rng.now(), cfg or default_config())
    if prof is None:
        return None
    return {"member_id": member_id, "visitor_ids": visitors, **prof}


def _profile(store: History, visitor_ids: list[str], rng: TimeRange, now: float,
             cfg: GoalConfig) -> dict[str, Any] | None:
    where = f"has(%(ids)s, visitor_id) AND {rng.sql()}"
    params = {"ids": list(visitor_ids), **rng.params()}
    src = pageviews_source([TS, "session_id"], where, humans_only=False)
    # Per session first, then over sessions: total time is the sum of session spans.
    rows = store.query(
        "SELECT min(s_first) AS first_seen, max(s_last) AS last_seen, count() AS visits, sum(s_pv) AS pageviews, "
        "sum(s_last - s_first) AS total_time FROM ("
        f"SELECT session_id, min({TS}) AS s_first, max({TS}) AS s_last, count() AS s_pv "
        f"FROM {src} GROUP BY session_id)", params)
    if not rows or not int(num(rows[0]["visits"])):
        return None
    goals_sql, gparams = goal_hits(cfg, rng, "has(%(ids)s, visitor_id)")
    g = store.query("SELECT count() AS goals, countIf(goal = %(purchase)s) AS purchases, "
                    f"sumIf(goal_value, goal = %(purchase)s) AS revenue FROM {goals_sql}",
                    {**params, **gparams, "purchase": cfg.purchase})
    g = g[0] if g else {}
    r = rows[0]
    first, last, visits = num(r["first_seen"]), num(r["last_seen"]), int(num(r["visits"]))
    span_weeks = max(1.0, (last - first) / WEEK_S)
    return {
        "first_seen": first,
        "last_seen": last,
        "visits": visits,
        "pageviews": int(num(r["pageviews"])),
        "total_time_s": round(num(r["total_time"]), 3),
        "visits_per_week": round(visits / span_weeks, 3),
        "recency_days": round(max(0.0, now - last) / DAY_S, 3),
        "goals": int(num(g.get("goals"))),
        "purchases": int(num(g.get("purchases"))),
        "revenue": round(num(g.get("revenue")), 2),
        "favourite_sections": _top(store, "section", where, params, humans_only=False),
        "devices": _top(store, "device", where, params, humans_only=False, per="session_id"),
    }


def _top(store: History, column: str, where: str, params: dict, humans_only: bool, per: str = "event_id",
         limit: int = 5) -> list[dict]:
    """Most frequent non-empty values of `column`: counted per page view, or per session for devices."""
    src = pageviews_source([column, "session_id"], f"{where} AND {column} != ''", humans_only=humans_only)
    rows = store.query(f"SELECT {column} AS value, uniqExact({per}) AS n FROM {src} GROUP BY {column} "
                       f"ORDER BY n DESC, value LIMIT {int(limit)}", params)
    return [{"name": r["value"], "count": int(num(r["n"]))} for r in rows]


def top_visitors(store: History, rng: TimeRange = ALL_TIME, limit: int = 20, now: float | None = None) -> list[dict]:
    """The most active human visitors in the range, one profile-like row each (the `visitors` report)."""
    now = now if now is not None else rng.now()
    src = pageviews_source([TS, "visitor_id", "member_id", "session_id", "section", "device"], rng.sql())
    rows = store.query(
        "SELECT visitor_id, max(v_member) AS member_id, min(s_first) AS first_seen, max(s_last) AS last_seen, "
        "count() AS visits, sum(s_pv) AS pageviews, sum(s_last - s_first) AS total_time, "
        "any(s_device) AS device FROM ("
        f"SELECT visitor_id, session_id, max(member_id) AS v_member, min({TS}) AS s_first, max({TS}) AS s_last, "
        f"count() AS s_pv, any(device) AS s_device FROM {src} GROUP BY visitor_id, session_id) "
        f"GROUP BY visitor_id ORDER BY pageviews DESC, visitor_id LIMIT {int(limit)}", rng.params())
    out = []
    for r in rows:
        first, last, visits = num(r["first_seen"]), num(r["last_seen"]), int(num(r["visits"]))
        out.append({
            "visitor_id": r["visitor_id"], "member_id": r["member_id"], "first_seen": first, "last_seen": last,
            "visits": visits, "pageviews": int(num(r["pageviews"])), "total_time_s": round(num(r["total_time"]), 3),
            "visits_per_week": round(visits / max(1.0, (last - first) / WEEK_S), 3),
            "recency_days": round(max(0.0, now - last) / DAY_S, 3), "device": r["device"],
        })
    return out
