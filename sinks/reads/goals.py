"""Goals and commerce: conversions per channel / campaign, revenue per visitor, cart abandonment.

Goal conversions come from sinks/reads/goal_events.py (goal rules applied to the
`hits` table, each goal attributed to the human session it happened in). A session
converts for a goal when it holds at least one conversion of it; the session's channel /
campaign are those of its first page view. Revenue = values of the purchase goal
(analytics.purchase_goal); cart abandonment = sessions with the cart goal
(analytics.cart_goal) but no purchase. Bots are left out.
"""
from __future__ import annotations

from typing import Any

from sinks.reads.common import ALL_TIME, TS, AnalyticsError, History, TimeRange, num, pageviews_source
from sinks.reads.goal_events import GoalConfig, attributed_goals, default_config

BREAKDOWNS = ("channel", "utm_campaign", "utm_source", "utm_medium", "referrer_host", "device")


def _sessions(cfg: GoalConfig, rng: TimeRange) -> tuple[str, dict]:
    """One row per human session: first channel / campaign etc., its goals (s_goals) and revenue."""
    src = pageviews_source([TS, "session_id", "visitor_id"] + list(BREAKDOWNS), rng.sql())
    firsts = ", ".join(f"argMin({c}, {TS}) AS s_{c}" for c in BREAKDOWNS)
    goals_sql, params = attributed_goals(cfg, rng)
    cols = ", ".join(f"s_{c}" for c in BREAKDOWNS)
    sql = (f"(SELECT session_id, s_visitor, {cols}, s_goals, s_revenue FROM ("
           f"SELECT session_id, any(visitor_id) AS s_visitor, {firsts} FROM {src} "
           "GROUP BY session_id) AS s ANY LEFT JOIN ("
           "SELECT g_session AS session_id, groupUniqArray(goal) AS s_goals, "
           f"sumIf(goal_value, goal = %(purchase)s) AS s_revenue FROM {goals_sql} GROUP BY g_session"
           ") AS gs USING session_id)")
    return sql, {**params, "purchase": cfg.purchase, **rng.params()}


def conversions(store: History, goal: str, by: str = "channel", rng: TimeRange = ALL_TIME,
                cfg: GoalConfig | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Sessions, converted sessions, conversion rate and revenue per value of `by`."""
    if by not in BREAKDOWNS:
        raise AnalyticsError(f"unknown breakdown {by!r}; use one of {', '.join(BREAKDOWNS)}")
    cfg = cfg or default_config()
    sessions, params = _sessions(cfg, rng)
    rows = store.query(
        f"SELECT s_{by} AS k, count() AS sessions, countIf(has(s_goals, %(goal)s)) AS converted, "
        f"sum(s_revenue) AS revenue, uniqExact(s_visitor) AS visitors FROM {sessions} "
        f"GROUP BY k ORDER BY converted DESC, sessions DESC, k LIMIT {int(limit)}", {"goal": goal, **params})
    out = []
    for r in rows:
        n, converted = int(num(r["sessions"])), int(num(r["converted"]))
        out.append({by: r["k"], "sessions": n, "converted": converted,
                    "conversion_rate": round(converted / n, 4) if n else 0.0,
                    "visitors": int(num(r["visitors"])), "revenue": round(num(r["revenue"]), 2)})
    return out


def commerce_summary(store: History, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None) -> dict[str, Any]:
    """Totals: sessions, visitors, purchases, revenue, revenue per visitor, cart abandonment."""
    cfg = cfg or default_config()
    sessions, params = _sessions(cfg, rng)
    rows = store.query(
        "SELECT count() AS sessions, uniqExact(s_visitor) AS visitors, "
        "countIf(has(s_goals, %(purchase)s)) AS purchase_sessions, sum(s_revenue) AS revenue, "
        "countIf(has(s_goals, %(cart)s)) AS cart_sessions, "
        "countIf(has(s_goals, %(cart)s) AND NOT has(s_goals, %(purchase)s)) AS abandoned "
        f"FROM {sessions}", {"cart": cfg.cart, **params})
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


def goal_counts(store: History, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None) -> list[dict[str, Any]]:
    """Conversions, converting sessions and value per goal name (goals in human sessions)."""
    goals_sql, params = attributed_goals(cfg or default_config(), rng)
    rows = store.query(f"SELECT goal, count() AS conversions, uniqExact(g_session) AS sessions, "
                       f"sum(goal_value) AS value FROM {goals_sql} GROUP BY goal ORDER BY conversions DESC, goal",
                       params)
    return [{"goal": r["goal"], "conversions": int(num(r["conversions"])), "sessions": int(num(r["sessions"])),
             "value": round(num(r["value"]), 2)} for r in rows]
