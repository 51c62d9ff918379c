"""Visitor and member profiles from the history store.

A profile sums up a set of visitor ids: first / last seen, visits (sessions), page
views, total time (sum of session spans), visit frequency (visits per week over the
span between first and last visit, at least one week), recency (days since last
seen), favourite sections and devices, goals and revenue.

A member's profile covers the requests that belong to the member (sinks/reads/members.py):
those made while logged in as it, and the anonymous start of a visit in which it logged
in. Earlier visits of the same visitor id, and what another member did on it, are not
the member's.
"""
from __future__ import annotations

from typing import Any

from sinks.reads.common import (ALL_TIME, PAGEVIEWS_BY_VISITOR, TS, History, TimeRange, links_source, num,
                                pageviews_source)
from sinks.reads.goal_events import GoalConfig, default_config, goal_hits
from sinks.reads.members import member_goals, member_pageviews

WEEK_S = 7 * 86400.0
DAY_S = 86400.0


def linked_members(store: History, visitor_id: str) -> list[str]:
    """Members that ever logged in on this visitor id (a shared device has several)."""
    rows = store.query(f"SELECT member_id FROM {links_source('visitor_id = %(v)s')} ORDER BY member_id",
                       {"v": visitor_id})
    return [r["member_id"] for r in rows]


def visitor_profile(store: History, visitor_id: str, rng: TimeRange = ALL_TIME, now: float | None = None,
                    cfg: GoalConfig | None = None) -> dict[str, Any] | None:
    """Profile of one visitor id, or None when it was never seen."""
    cfg = cfg or default_config()
    goals_sql, gparams = goal_hits(cfg, rng, "visitor_id = %(v)s", by_visitor=True)
    prof = _profile(store, "visitor_id = %(v)s", goals_sql, {"v": visitor_id, **gparams}, rng,
                    now if now is not None else rng.now(), cfg, humans_only=False)
    if prof is not None:
        prof = {"visitor_id": visitor_id, "members": linked_members(store, visitor_id), **prof}
    return prof


def member_profile(store: History, member_id: str, rng: TimeRange = ALL_TIME, now: float | None = None,
                   cfg: GoalConfig | None = None) -> dict[str, Any] | None:
    """Profile of a member over the requests that belong to it, pre-login start of its visits included."""
    cfg = cfg or default_config()
    pvs, params = member_pageviews(rng, member=member_id)  # read from its own visitor ids alone
    mgoals, gparams = member_goals(cfg, rng, member_id)
    rows = store.query(f"SELECT DISTINCT visitor_id FROM {pvs} WHERE a_member = %(m)s ORDER BY visitor_id",
                       {**params, "m": member_id})
    if not rows:
        return None
    goals_sql = f"(SELECT * FROM {mgoals} WHERE a_member = %(m)s)"
    # its visitor ids first: the sort key of the copy the profile reads
    mine = ("visitor_id IN (SELECT visitor_id FROM member_visitor_ids WHERE member_id = %(m)s) "
            f"AND event_id IN (SELECT event_id FROM {pvs} WHERE a_member = %(m)s)")
    prof = _profile(store, mine, goals_sql, {**params, **gparams, "m": member_id}, rng,
                    now if now is not None else rng.now(), cfg)
    if prof is None:
        return None
    return {"member_id": member_id, "visitor_ids": [r["visitor_id"] for r in rows], **prof}


def _profile(store: History, pv_where: str, goals_sql: str, params: dict, rng: TimeRange, now: float,
             cfg: GoalConfig, humans_only: bool = True) -> dict[str, Any] | None:
    where = f"({pv_where}) AND {rng.sql()}"
    params = {**params, **rng.params()}
    src = pageviews_source([TS, "session_id"], where, humans_only=humans_only, table=PAGEVIEWS_BY_VISITOR)
    # Per session first, then over sessions: total time is the sum of session spans.
    rows = store.query(
        "SELECT min(s_first) AS first_seen, max(s_last) AS last_seen, count() AS visits, sum(s_pv) AS pageviews, "
        "sum(s_last - s_first) AS total_time FROM ("
        f"SELECT session_id, min({TS}) AS s_first, max({TS}) AS s_last, count() AS s_pv "
        f"FROM {src} GROUP BY session_id)", params)
    if not rows or not int(num(rows[0]["visits"])):
        return None
    g = store.query("SELECT count() AS goals, countIf(goal = %(purchase)s) AS purchases, "
                    f"sumIf(goal_value, goal = %(purchase)s) AS revenue FROM {goals_sql}",
                    {**params, "purchase": cfg.purchase})
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
        "favourite_sections": _top(store, "section", where, params, humans_only=humans_only),
        "devices": _top(store, "device", where, params, humans_only=humans_only, per="session_id"),
    }


def _top(store: History, column: str, where: str, params: dict, humans_only: bool, per: str = "event_id",
         limit: int = 5) -> list[dict]:
    """Most frequent non-empty values of `column`: counted per page view, or per session for devices."""
    src = pageviews_source([column, "session_id"], f"{where} AND {column} != ''", humans_only=humans_only,
                           table=PAGEVIEWS_BY_VISITOR)
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
