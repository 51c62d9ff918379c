"""Products bought: per product views, cart adds, orders, units, revenue and view -> buy conversion;
"bought together" pairs; and what to offer a member next from what it bought.

Items come from the goal requests (goal_events.goal_items): an order's lines from its items header /
parameter ("id:qty:unit_price,..."), a cart add's product and quantity from its query parameters
(processing.goals product_param / qty_param / items_param / items_header). Views are human product
page views. Conversion = visitors who viewed the product and bought it / visitors who viewed it.
A member's purchases are the orders that belong to it (sinks/reads/members.py).
"""
from __future__ import annotations

from typing import Any

from sinks.reads.common import ALL_TIME, History, TimeRange, num, pageviews_source
from sinks.reads.goal_events import GoalConfig, default_config, goal_items
from sinks.reads.members import member_goals


def product_sales(store: History, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
    """One row per product viewed, put in a cart or bought, most revenue first."""
    cfg = cfg or default_config()
    views = {r["product_id"]: r for r in store.query(
        "SELECT product_id, count() AS views, uniqExact(visitor_id) AS viewers FROM "
        f"{pageviews_source(['product_id', 'visitor_id'], f'{rng.sql()} AND product_id != %(empty)s')} "
        "GROUP BY product_id", {**rng.params(), "empty": ""})}
    carts_sql, cparams = goal_items(cfg, rng, cfg.cart)
    carts = {r["product_id"]: r for r in store.query(
        f"SELECT product_id, count() AS carts, sum(qty) AS cart_units FROM {carts_sql} GROUP BY product_id",
        cparams)}
    orders_sql, oparams = goal_items(cfg, rng, cfg.purchase)
    orders = {r["product_id"]: r for r in store.query(
        "SELECT product_id, uniqExact(event_id) AS orders, sum(qty) AS units, sum(qty * price) AS revenue, "
        f"uniqExact(visitor_id) AS buyers FROM {orders_sql} GROUP BY product_id", oparams)}
    converted = {r["product_id"]: int(num(r["n"])) for r in store.query(
        "SELECT product_id, count() AS n FROM (SELECT DISTINCT visitor_id, product_id FROM "
        f"{pageviews_source(['product_id', 'visitor_id'], f'{rng.sql()} AND product_id != %(empty)s')}) AS v "
        f"ALL INNER JOIN (SELECT DISTINCT visitor_id, product_id FROM {orders_sql}) AS b "
        "USING (visitor_id, product_id) GROUP BY product_id", {**oparams, "empty": ""})}
    out = []
    for pid in set(views) | set(carts) | set(orders):
        v, c, o = views.get(pid, {}), carts.get(pid, {}), orders.get(pid, {})
        viewers = int(num(v.get("viewers")))
        out.append({"product_id": pid, "views": int(num(v.get("views"))), "viewers": viewers,
                    "carts": int(num(c.get("carts"))), "cart_units": int(num(c.get("cart_units"))),
                    "orders": int(num(o.get("orders"))), "units": int(num(o.get("units"))),
                    "revenue": round(num(o.get("revenue")), 2), "buyers": int(num(o.get("buyers"))),
                    "view_to_buy": round(converted.get(pid, 0) / viewers, 4) if viewers else 0.0})
    out.sort(key=lambda r: (-r["revenue"], -r["units"], -r["views"], r["product_id"]))
    return out[:int(limit)]


_PAIRS = (
    "SELECT pr.1 AS product_id, pr.2 AS recommended_id, count() AS support FROM ("
    "SELECT event_id, groupUniqArray(product_id) AS items FROM {source} GROUP BY event_id HAVING length(items) > 1) "
    "ARRAY JOIN arrayFilter(x -> x.1 != x.2, "
    "arrayReduce('groupArray', arrayJoin(arrayMap(i -> arrayMap(j -> (i, j), items), items)))) AS pr "
    "GROUP BY product_id, recommended_id HAVING support >= %(min)s")


def bought_together(store: History, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None,
                    min_support: int = 2, product_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """(product, recommended, support = orders holding both) pairs, both directions; one product's if given."""
    cfg = cfg or default_config()
    orders_sql, params = goal_items(cfg, rng, cfg.purchase)
    where = "WHERE product_id = %(p)s " if product_id is not None else ""
    rows = store.query(f"SELECT * FROM ({_PAIRS.format(source=orders_sql)}) {where}"
                       "ORDER BY support DESC, product_id, recommended_id LIMIT %(limit)s",
                       {**params, "min": int(min_support), "p": product_id or "", "limit": int(limit)})
    return [{"product_id": r["product_id"], "recommended_id": r["recommended_id"], "support": int(num(r["support"]))}
            for r in rows]


def for_member(store: History, member_id: str, rng: TimeRange = ALL_TIME, cfg: GoalConfig | None = None,
               min_support: int = 2, limit: int = 10) -> dict[str, Any]:
    """What the member bought (its own orders) and what was bought together with those, not bought yet."""
    cfg = cfg or default_config()
    mine, mparams = member_goals(cfg, rng)
    orders_sql, oparams = goal_items(cfg, rng, cfg.purchase)
    bought = [r["product_id"] for r in store.query(
        f"SELECT product_id, sum(qty) AS units FROM {orders_sql} WHERE event_id IN "
        f"(SELECT event_id FROM {mine} WHERE a_member = %(m)s AND goal = %(purchase)s) "
        "GROUP BY product_id ORDER BY units DESC, product_id",
        {**mparams, **oparams, "m": member_id, "purchase": cfg.purchase})]
    scores: dict[str, int] = {}
    because: dict[str, list[str]] = {}
    for pid in bought:
        for pair in bought_together(store, rng, cfg, min_support, product_id=pid, limit=max(limit * 3, 30)):
            rec = pair["recommended_id"]
            if rec not in bought:
                scores[rec] = scores.get(rec, 0) + pair["support"]
                because.setdefault(rec, []).append(pid)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:int(limit)]
    return {"member_id": member_id, "bought": bought,
            "recommendations": [{"product_id": p, "score": s, "because_of": because[p]} for p, s in ranked]}
