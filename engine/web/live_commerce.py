"""Orders, cart adds, revenue and conversion of the live snapshot, named by the configured goals.

The live state counts conversions per goal name and minute (goals_by_name); which goal is
an order and which a cart add is configuration (analytics.purchase_goal / cart_goal), so the
figures are picked here, beside the other settings-dependent parts of the payload.
"""
from __future__ import annotations


def add_commerce(snapshot: dict, settings) -> dict:
    """series.orders / series.carts per minute, and a `commerce` summary of the snapshot's minutes:
    orders, cart adds, revenue, sessions started and conversion = orders / sessions started."""
    a = settings.analytics
    series = snapshot.get("series") or {}
    minutes = len(series.get("minutes") or [])
    by_goal = snapshot.get("goals_by_name") or {}
    orders = list(by_goal.get(a.purchase_goal) or [0] * minutes)
    carts = list(by_goal.get(a.cart_goal) or [0] * minutes)
    sessions = sum(series.get("sessions") or [])
    n_orders = sum(orders)
    commerce = {
        "purchase_goal": a.purchase_goal, "cart_goal": a.cart_goal, "minutes": minutes,
        "orders": n_orders, "carts": sum(carts), "revenue": round(sum(series.get("revenue") or []), 2),
        "sessions": sessions,
        "conversion_rate": round(n_orders / sessions, 4) if sessions else None,
    }
    return {**snapshot, "series": {**series, "orders": orders, "carts": carts}, "commerce": commerce}
