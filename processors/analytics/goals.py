"""Goals and commerce: conversions per channel / campaign, revenue per visitor, cart abandonment.

Goal page views carry `goal` (rule name from processing.goals) and `goal_value`.
A session converts for a goal when it has at least one page view with that goal;
its channel and campaign are those of its first page view. Bots are left out.
"""
from __future__ import annotations

from typing import Any

from processors.analytics.common import ALL_TIME, TS, AnalyticsError, History, TimeRange, num, pageviews_source

BREAKDOWNS = ("channel", "utm_campaign", "utm_source", "utm_medium", "referrer_host", "device")


def _sessions(rng: TimeRange) -> str:
    """One row per human session: first channel / campaign, converted goals, revenue."""
    src = pageviews_source([TS, "session_id", "visitor_id"] + list(BREAKDOWNS) + ["goal", "goal_value"], rng.sql())
    firsts = ", ".join(f"argMin({c}, {TS}) AS s_{c}" for c in BREAKDOWNS)
    return (f"(SELECT session_id, any(visitor_id) AS s_visitor, {firsts}, groupUniqArray(goal) AS s_goals, "
            "sumIf(goal_value, goal = %(purchase)s) AS s_revenue "
            f"FROM {src} GROUP BY session_id)")


def conversions(store: History, goal: str, by: str = "channel", rng: TimeRange = ALL_TIME,
                purchase_goal: str = "purchase", limit: int = 50) -> list[dict[str, Any]]:
    """Sessions, converted sessions, conversion rate and revenue per value of `by`."""
    if by not in BREAKDOWNS:
        raise AnalyticsError(f"unknown breakdown {by!r}; use one of {', '.join(BREAKDOWNS)}")
    rows = store.query(
        f"SELECT s_{by} AS k, count() AS sessions, countIf(has(s_goals, %(goal)s)) AS converted, "
        f"sum(s_revenue) AS revenue, uniqExact(s_visitor) AS visitors FROM {_sessions(rng)} "
        f"GROUP BY k ORDER BY converted DESC, sessions DESC, k LIMIT {int(limit)}",
        {"goal": goal, "purchase": purchase_goal, **rng.params()})
    out = []
    for r in rows:
        sessions, converted = int(num(r["sessions"])), int(num(r["converted"]))
        out.append({by: r["k"], "sessions": sessions, "converted": converted,
                    "conversion_rate": round(converted / sessions, 4) if sessions else 0.0,
                    "visitors": int(num(r["visitors"])), "revenue": round(num(r["revenue"]), 2)})
    return out


def commerce_summary(store: History, rng: TimeRange = ALL_TIME, purchase_goal: str = "purchase",
                     cart_goal: str = "add_to_cart") -> dict[str, Any]:
    """Totals: sessions, visitors, purchases, revenue, revenue per visitor, cart abandonment."""
    rows = store.query(
        "SELECT count() AS sessions, uniqExact(s_visitor) AS visitors, "
        "countIf(has(s_goals, %(purchase)s)) AS purchase_sessions, sum(s_revenue) AS revenue, "
        "countIf(has(s_goals, %(cart)s)) AS cart_sessions, "
        "countIf(has(s_goals, %(cart)s) AND NOT has(s_goals, %(purchase)s)) AS abandoned "
        f"FROM {_sessions(rng)}", {"purchase": purchase_goal, "cart": cart_goal, **rng.params()})
    r = rows[0] if rows else {}
    visitors, carts = int(num(r.get("visitors"))), int(num(r.get("cart_sessions")))
    abandoned, revenue = int(num(r.get("abandoned"))), num(r.get("revenue"))
    return {
        "sessions": int(num(r.get("sessions"))),
        "visitors": visitors,
        "purchase_sessions": int(num(r.get("purchase_sessions"))),
        "revenue": round(revenue, 2),
        "revenue_per_visitor": round(revenue / visitors, 4) if visitors else 0.0,
        "cart_sessions": carts,
        "abandoned_carts": abandoned,
        "cart_abandonment_rate": round(abandoned / carts, 4) if carts else 0.0,
    }


def goal_counts(store: History, rng: TimeRange = ALL_TIME) -> list[dict[str, Any]]:
    """Conversions (goal page views), converting sessions and value per goal name."""
    src = pageviews_source(["session_id", "goal", "goal_value", TS], f"{rng.sql()} AND goal != ''")
    rows = store.query(f"SELECT goal, count() AS conversions, uniqExact(session_id) AS sessions, "
                       f"sum(goal_value) AS value FROM {src} GROUP BY goal ORDER BY conversions DESC, goal",
                       rng.params())
    return [{"goal": r["goal"], "conversions": int(num(r["conversions"])), "sessions": int(num(r["sessions"])),
             "value": round(num(r["value"]), 2)} for r in rows]
