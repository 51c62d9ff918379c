"""The Customers screen's read models: the member list (RFM scored now, searchable, sortable, pages
of it or all of it as CSV) and what one member or visitor did (visits, pages, products,
categories, menus, goals and orders, recommendations).

Member figures come from the requests that belong to the member (sinks/reads/members.py), the
same rule as its profile, RFM and the segment sizes, so the list adds up to what the other
screens show. A visitor's activity is every page view of that visitor id (bots included: a
profile shows what the id did).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from sinks.reads import one_person, recommendations, rfm
from sinks.reads.common import ALL_TIME, PAGEVIEWS_BY_VISITOR, TS, AnalyticsError, History, TimeRange
from sinks.reads.goal_events import GoalConfig, goal_hits
from sinks.reads.members import member_goals, member_pageviews

LIST_COLUMNS = ("member_id", "segment", "r", "f", "m", "visits", "orders", "revenue", "window_orders",
                "window_revenue", "first_seen", "last_seen", "recency_days")
SORTABLE = LIST_COLUMNS
_ACTIVITY_COLUMNS = ("path", "product_id", "category", "menu", "device", "channel")


def member_list(store: History, cfg: GoalConfig, seg: rfm.SegmentConfig, rng: TimeRange = ALL_TIME, segment: str = "",
                search: str = "", sort: str = "revenue", desc: bool = True, limit: int | None = 100,
                offset: int = 0, active_since: float | None = None) -> dict[str, Any]:
    """Members scored now (as /api/segments), filtered by segment, member-id substring and a last visit at
    or after `active_since` (the live screen's "members now" opens the list of them), sorted;
    `total` counts the filtered members, `sizes` all members per segment (configured order)."""
    if segment and segment not in seg.names:
        raise AnalyticsError(f"segment must be one of {', '.join(seg.names)} (got {segment!r})")
    if sort not in SORTABLE:
        raise AnalyticsError(f"sort must be one of {', '.join(SORTABLE)} (got {sort!r})")
    now = rng.now()
    scored = rfm.scored_members(store, now, replace(rng, until=now), cfg, seg)
    keep = np.ones(len(scored), bool)
    if segment:
        keep &= scored.segment == segment
    needle = search.strip().lower()
    if needle:
        keep &= np.fromiter((needle in m for m in scored.cols.lowered), bool, len(scored))
    if active_since is not None:
        keep &= scored.cols.last_seen >= active_since
    at = np.nonzero(keep)[0]  # in member_id order, which breaks ties: pages never repeat or skip a member
    key = scored.column(sort, now)[at]
    at = at[np.argsort(-key if desc else key, kind="stable")]
    page = at[offset:offset + limit] if limit is not None else at[offset:]
    return {"total": len(at), "members": len(scored), "sizes": scored.sizes(), "window_days": seg.window_days,
            "sort": sort, "order": "desc" if desc else "asc", "offset": offset,
            "rows": scored.rows(page, now, LIST_COLUMNS)}


def member_activity(store: History, member_id: str, cfg: GoalConfig, min_support: int, rng: TimeRange = ALL_TIME,
                    limit: int = 20) -> dict[str, Any] | None:
    """What a member did, over the requests that belong to it; None when it has none in the range."""
    pvs, params = member_pageviews(rng, _ACTIVITY_COLUMNS, member=member_id)
    goals, gparams = member_goals(cfg, rng, member_id)  # both this member's alone
    return _activity(store, pvs, goals, {**params, **gparams}, cfg, min_support, limit, {"member_id": member_id})


def visitor_activity(store: History, visitor_id: str, cfg: GoalConfig, min_support: int,
                     rng: TimeRange = ALL_TIME, limit: int = 20) -> dict[str, Any] | None:
    """What one visitor id did (all its page views and goals in the range); None when it has none."""
    cols = ", ".join(["event_id", "session_id", f"{TS} AS t", *_ACTIVITY_COLUMNS])
    src = (f"(SELECT DISTINCT {cols} FROM {PAGEVIEWS_BY_VISITOR} WHERE visitor_id = %(who)s AND ({rng.sql()}))")
    goals, gparams = goal_hits(cfg, rng, "visitor_id = %(who)s", by_visitor=True)
    return _activity(store, src, goals, {**rng.params(), **gparams, "who": visitor_id}, cfg, min_support, limit,
                     {"visitor_id": visitor_id})


_TOPS = ("path", "product_id", "category", "menu")


def _activity(store: History, src: str, goals: str, params: dict, cfg: GoalConfig, min_support: int, limit: int,
              head: dict) -> dict[str, Any] | None:
    # One read of the goals (the latest 5 x limit) and the orders (the latest 1000): the newest `keep` of each
    # goal hold both. A member's goals cost more than its page views (1.2 s of 3.3 on ClickHouse 18.16 at 10M).
    keep = max(1000, int(limit) * 5)
    person = one_person.read(store, src, _TOPS, one_person.latest_goals(goals, keep), params, visit_columns=True)
    if not person.sessions:
        return None
    visits = sorted(person.sessions.items(), key=lambda kv: (-kv[1]["t_min"], kv[0]))[:int(limit)]

    def top(column: str, n: int | None = limit) -> list[dict]:
        return [{"name": r["name"], "views": r["n"], "last": r["t_max"]} for r in person.top(column, n)]

    goal_rows = sorted(person.goals, key=lambda g: -g["t_min"])  # newest first
    goal_list = [{"ts": g["t_min"], "goal": g["name"], "value": round(g["value"], 2)}
                 for g in goal_rows[:int(limit) * 5]]
    order_rows = [g for g in goal_rows if g["name"] == cfg.purchase][:1000]
    seen = [p["name"] for p in top("product_id", None)]
    return {
        **head,
        "visits": [{"session_id": sid, "start": v["t_min"], "end": v["t_max"], "pageviews": v["n"],
                    "entry_page": v["entry_page"], "exit_page": v["exit_page"], "device": v["device"],
                    "channel": v["channel"]} for sid, v in visits],
        "pages": top("path"), "products": top("product_id"), "categories": top("category"), "menus": top("menu"),
        "goals": goal_list,
        "orders": [{"ts": o["t_min"], "value": round(o["value"], 2)} for o in order_rows],
        "recommendations": recommend_after(store, seen[:10], seen, min_support),
    }


def recommend_after(store: History, basis: Sequence[str], seen: Sequence[str], min_support: int,
                    limit: int = 10) -> list[dict]:
    """Products viewed together with the `basis` products (support summed over them), every product
    seen left out: the rule of /api/recommendations/visitor/{id}, over a member's most viewed products."""
    scores: dict[str, int] = defaultdict(int)
    because: dict[str, list[str]] = defaultdict(list)
    seen = set(seen)
    each = recommendations.also_viewed_each(store, list(basis), min_support, limit=max(limit * 3, 30))
    for pid in basis:
        for rec in each[pid]:
            if rec["product_id"] not in seen:
                scores[rec["product_id"]] += rec["support"]
                because[rec["product_id"]].append(pid)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{"product_id": p, "score": s, "because_of": because[p]} for p, s in ranked]
