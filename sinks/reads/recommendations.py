"""Item-to-item co-visitation: "visitors who viewed X also viewed Y".

support(X, Y) = number of human sessions that viewed both products X and Y (a session
counts once however often it viewed them). Pairs below analytics.recommendation_min_support
are not recommended, nor is an item itself. Computed on demand from the history store
(`also_viewed`, `for_visitor`) and, for the worker's scheduled refresh (processors/analytics/recompute.py),
as a full pair table (`pairs_sql`) stored in `recommendations` (see config/migrations/0100_analytics.sql),
read back here (`recommend`, `stored_recommendations`).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from sinks.reads.common import ALL_TIME, PAGEVIEWS_BY_VISITOR, TS, History, TimeRange, num, pageviews_source


def _product_sessions(rng: TimeRange, where: str = "1") -> str:
    return pageviews_source(["session_id", "product_id"], f"{rng.sql()} AND product_id != '' AND ({where})")


def also_viewed(store: History, product_id: str, min_support: int = 3, limit: int = 10,
                rng: TimeRange = ALL_TIME) -> list[dict[str, Any]]:
    """Products viewed in the same sessions as `product_id`, by support."""
    rows = store.query(
        "SELECT product_id, uniqExact(session_id) AS support FROM "
        f"{_product_sessions(rng, 'product_id != %(p)s')} "
        f"WHERE session_id IN (SELECT session_id FROM {_product_sessions(rng, 'product_id = %(p)s')}) "
        "GROUP BY product_id HAVING support >= %(min)s ORDER BY support DESC, product_id LIMIT %(limit)s",
        {"p": product_id, "min": int(min_support), "limit": int(limit), **rng.params()})
    return [{"product_id": r["product_id"], "support": int(num(r["support"]))} for r in rows]


def also_viewed_each(store: History, products: Sequence[str], min_support: int = 3, limit: int = 10,
                     rng: TimeRange = ALL_TIME) -> dict[str, list[dict[str, Any]]]:
    """also_viewed of each of `products`, in one query: one scan of the product views instead of one a product
    (a member's activity asks for up to 10: each scan of 10M page views took 0.78 s on chdb)."""
    if not products:
        return {}
    # the sessions that viewed one of them, each with the products it viewed: a pair per (basis, other). No
    # DISTINCT on event_id: IN and groupUniqArray ignore a row read twice, and event_id was most of the bytes read.
    human = f"NOT is_bot AND {rng.sql()} AND product_id != ''"
    rows = store.query(
        "SELECT basis, product_id, count() AS support FROM (SELECT items, basis FROM "
        "(SELECT session_id, groupUniqArray(product_id) AS items FROM pageviews "
        f"WHERE {human} AND session_id IN (SELECT session_id FROM pageviews WHERE {human} "
        "AND has(%(ps)s, product_id)) GROUP BY session_id) "
        "ARRAY JOIN arrayFilter(x -> has(%(ps)s, x), items) AS basis) ARRAY JOIN items AS product_id "
        "WHERE product_id != basis "
        "GROUP BY basis, product_id HAVING support >= %(min)s ORDER BY basis, support DESC, product_id "
        "LIMIT %(limit)s BY basis",
        {"ps": list(products), "min": int(min_support), "limit": int(limit), **rng.params()})
    out: dict[str, list[dict[str, Any]]] = {p: [] for p in products}
    for r in rows:
        out[r["basis"]].append({"product_id": r["product_id"], "support": int(num(r["support"]))})
    return out


_PAIRS_SQL = (
    "SELECT pr.1 AS product_id, pr.2 AS recommended_id, count() AS support FROM ("
    "SELECT session_id, groupUniqArray(product_id) AS items "
    "FROM {source} GROUP BY session_id HAVING length(items) > 1) "
    "ARRAY JOIN arrayFilter(x -> x.1 != x.2, "
    "arrayReduce('groupArray', arrayJoin(arrayMap(i -> arrayMap(j -> (i, j), items), items)))) AS pr "
    "GROUP BY product_id, recommended_id HAVING support >= %(min)s")


def pairs_sql(rng: TimeRange = ALL_TIME) -> str:
    """The query of every (product_id, recommended_id, support) pair with support >= %(min)s."""
    return _PAIRS_SQL.format(source=_product_sessions(rng))


def co_visitation(store: History, min_support: int = 3, rng: TimeRange = ALL_TIME) -> list[dict[str, Any]]:
    """All (product, recommended, support) pairs with support >= min_support, both directions."""
    rows = store.query(pairs_sql(rng) +
                       " ORDER BY product_id, support DESC, recommended_id", {"min": int(min_support), **rng.params()})
    return [{"product_id": r["product_id"], "recommended_id": r["recommended_id"], "support": int(num(r["support"]))}
            for r in rows]


def recent_products(store: History, visitor_id: str, limit: int = 10) -> list[str]:
    """The visitor's most recently viewed distinct products, newest first."""
    src = pageviews_source([TS, "product_id", "visitor_id"], "visitor_id = %(v)s AND product_id != ''",
                           humans_only=False, table=PAGEVIEWS_BY_VISITOR)
    rows = store.query(f"SELECT product_id, max({TS}) AS last FROM {src} GROUP BY product_id "
                       "ORDER BY last DESC, product_id LIMIT %(limit)s", {"v": visitor_id, "limit": int(limit)})
    return [r["product_id"] for r in rows]


def for_visitor(store: History, visitor_id: str, min_support: int = 3, limit: int = 10,
                recent: int = 10) -> dict[str, Any]:
    """Recommendations from the visitor's recent views: support summed over them, viewed items excluded."""
    seen = recent_products(store, visitor_id, recent)
    scores: dict[str, int] = defaultdict(int)
    sources: dict[str, list[str]] = defaultdict(list)
    each = also_viewed_each(store, seen, min_support, limit=max(limit * 3, 30))
    for pid in seen:
        for rec in each[pid]:
            if rec["product_id"] not in seen:
                scores[rec["product_id"]] += rec["support"]
                sources[rec["product_id"]].append(pid)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return {"visitor_id": visitor_id, "recent_products": seen,
            "recommendations": [{"product_id": p, "score": s, "because_of": sources[p]} for p, s in ranked]}


def latest_refresh(store: History) -> float | None:
    """computed_at of the stored generation, None when never refreshed."""
    rows = store.query("SELECT count() AS n, max(computed_at) AS at FROM recommendations")
    return num(rows[0]["at"]) if rows and int(num(rows[0]["n"])) else None


def recommend(store: History, product_id: str, min_support: int = 3, limit: int = 10,
              rng: TimeRange = ALL_TIME) -> dict[str, Any]:
    """The refreshed table when there is one and no time range is asked for, else computed now."""
    at = latest_refresh(store) if rng == ALL_TIME else None
    if at is not None:
        recs = [r for r in stored_recommendations(store, product_id, limit * 2) if r["support"] >= min_support]
        return {"product_id": product_id, "min_support": min_support, "source": "refreshed", "computed_at": at,
                "recommendations": recs[:limit]}
    return {"product_id": product_id, "min_support": min_support, "source": "computed now", "computed_at": None,
            "recommendations": also_viewed(store, product_id, min_support, limit, rng)}


def stored_recommendations(store: History, product_id: str, limit: int = 10) -> list[dict[str, Any]]:
    """From the latest refreshed generation (empty if never refreshed)."""
    rows = store.query(
        "SELECT recommended_id, max(support) AS support FROM recommendations WHERE product_id = %(p)s "
        "AND computed_at = (SELECT max(computed_at) FROM recommendations) GROUP BY recommended_id "
        "ORDER BY support DESC, recommended_id LIMIT %(limit)s", {"p": product_id, "limit": int(limit)})
    return [{"product_id": r["recommended_id"], "support": int(num(r["support"]))} for r in rows]
