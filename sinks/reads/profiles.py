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

import math
from typing import Any

from sinks.reads.common import (ALL_TIME, PAGEVIEWS_BY_VISITOR, TS, History, TimeRange, links_source, num,
                                pageviews_source)
from sinks.reads import one_person
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
    """Profile of one visitor id (bots included: a profile shows what the id did), or None when it was never seen."""
    cfg = cfg or default_config()
    goals_sql, gparams = goal_hits(cfg, rng, "visitor_id = %(v)s", by_visitor=True)
    src = pageviews_source([TS + " AS t", "session_id", "section", "device"], f"visitor_id = %(v)s AND {rng.sql()}",
                           humans_only=False, table=PAGEVIEWS_BY_VISITOR)
    person = one_person.read(store, src, ("section", "device"), one_person.goal_totals(goals_sql),
                             {"v": visitor_id, **gparams, **rng.params()})
    prof = _profile(person, now if now is not None else rng.now(), cfg)
    if prof is not None:
        prof = {"visitor_id": visitor_id, "members": linked_members(store, visitor_id), **prof}
    return prof


def member_profile(store: History, member_id: str, rng: TimeRange = ALL_TIME, now: float | None = None,
                   cfg: GoalConfig | None = None) -> dict[str, Any] | None:
    """Profile of a member over the requests that belong to it, pre-login start of its visits included."""
    cfg = cfg or default_config()
    pvs, params = member_pageviews(rng, ("section", "device"), member=member_id)  # from its own visitor ids alone
    goals_sql, gparams = member_goals(cfg, rng, member_id)  # both this member's alone
    person = one_person.read(store, pvs, ("visitor_id", "section", "device"), one_person.goal_totals(goals_sql),
                             {**params, **gparams})
    prof = _profile(person, now if now is not None else rng.now(), cfg)
    if prof is None:
        return None
    return {"member_id": member_id, "visitor_ids": person.names("visitor_id"), **prof}


def _profile(person: one_person.Person, now: float, cfg: GoalConfig) -> dict[str, Any] | None:
    if not person.sessions:
        return None
    first, last, pageviews, total_time = person.span()
    visits = len(person.sessions)
    span_weeks = max(1.0, (last - first) / WEEK_S)
    purchases = [g for g in person.goals if g["name"] == cfg.purchase]
    return {
        "first_seen": first,
        "last_seen": last,
        "visits": visits,
        "pageviews": pageviews,
        "total_time_s": round(total_time, 3),
        "visits_per_week": round(visits / span_weeks, 3),
        "recency_days": round(max(0.0, now - last) / DAY_S, 3),
        "goals": sum(g["n"] for g in person.goals),
        "purchases": sum(g["n"] for g in purchases),
        "revenue": round(math.fsum(g["value"] for g in purchases), 2),
        # sections counted per page view, devices per visit
        "favourite_sections": [{"name": r["name"], "count": r["n"]} for r in person.top("section", 5)],
        "devices": [{"name": r["name"], "count": r["sessions"]} for r in person.top("device", 5, by="sessions")],
    }


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
