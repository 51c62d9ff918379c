"""Page / product / menu usage and page transitions.

For every human page view we know its place in its session (sessions are rebuilt from
page views ordered by time, then event_id), which gives:
- time on page = next page view's ts - this ts in the same session (the last page of
  a session has no next view and is left out of the average, as usual in web analytics);
- entry (first of its session) and exit (last of its session); rates are per view.
"""
from __future__ import annotations

from typing import Any

from sinks.reads.common import ALL_TIME, TS, AnalyticsError, History, TimeRange, num, pageviews_source

# Dimensions a usage report can group by (all page view fields filled by URL rules or the request).
DIMENSIONS = ("path", "product_id", "category", "section", "menu", "page_group")


def _positioned(rng: TimeRange, key: str, extra: str = "") -> str:
    """Subquery: one row per human page view with key, ts gap to the next view, entry/exit flags."""
    src = pageviews_source([TS, "session_id", "visitor_id", key] + ([extra] if extra else []), rng.sql())
    tuple_extra = f", {extra}" if extra else ""
    return (
        f"(SELECT session_id, e.3 AS vid, e.4 AS k{', e.5 AS x' if extra else ''}, "
        "if(i < length(seq), seq[i + 1].1 - e.1, -1.0) AS gap, i = 1 AS is_entry, i = length(seq) AS is_exit FROM ("
        f"SELECT session_id, arraySort(groupArray(({TS}, event_id, visitor_id, {key}{tuple_extra}))) AS seq "
        f"FROM {src} GROUP BY session_id) ARRAY JOIN seq AS e, arrayEnumerate(seq) AS i)")


def usage(store: History, dimension: str = "product_id", rng: TimeRange = ALL_TIME, limit: int = 50) -> list[dict]:
    """Views, unique visitors, average time on page, entry and exit rates per value of `dimension`."""
    if dimension not in DIMENSIONS:
        raise AnalyticsError(f"unknown usage dimension {dimension!r}; use one of {', '.join(DIMENSIONS)}")
    extra = "category" if dimension == "product_id" else ""
    rows = store.query(
        "SELECT k, count() AS views, uniqExact(vid) AS visitors, sumIf(gap, gap >= 0) AS time_sum, "
        "countIf(gap >= 0) AS timed, sum(is_entry) AS entries, sum(is_exit) AS exits"
        f"{', max(x) AS category' if extra else ''} "
        f"FROM {_positioned(rng, dimension, extra)} WHERE k != '' GROUP BY k "
        f"ORDER BY views DESC, k LIMIT {int(limit)}", rng.params())
    out = []
    for r in rows:
        views, timed = int(num(r["views"])), int(num(r["timed"]))
        row: dict[str, Any] = {dimension: r["k"]}
        if extra:
            row["category"] = r["category"]
        row.update({
            "views": views,
            "visitors": int(num(r["visitors"])),
            "avg_time_s": round(num(r["time_sum"]) / timed, 3) if timed else None,
            "entries": int(num(r["entries"])),
            "exits": int(num(r["exits"])),
            "entry_rate": round(num(r["entries"]) / views, 4) if views else 0.0,
            "exit_rate": round(num(r["exits"]) / views, 4) if views else 0.0,
        })
        out.append(row)
    return out


def transitions(store: History, page: str, rng: TimeRange = ALL_TIME, limit: int = 20) -> dict[str, Any]:
    """Where visitors came from before `page` (a path) and went to next, counted per page view.

    '(entrance)' / '(exit)' stand for the start / end of the session.
    """
    if not page or not page.startswith("/"):
        raise AnalyticsError(f"page must be a path starting with '/', e.g. /cart (got {page!r})")
    src = pageviews_source([TS, "session_id", "path"], rng.sql())
    inner = (
        "SELECT if(i = 1, '(entrance)', seq[i - 1].3) AS prev, if(i = length(seq), '(exit)', seq[i + 1].3) AS next "
        f"FROM (SELECT session_id, arraySort(groupArray(({TS}, event_id, path))) AS seq FROM {src} "
        "GROUP BY session_id) ARRAY JOIN seq AS e, arrayEnumerate(seq) AS i WHERE e.3 = %(page)s")
    params = {"page": page, **rng.params()}
    prev = store.query(f"SELECT prev AS page, count() AS n FROM ({inner}) GROUP BY prev "
                       f"ORDER BY n DESC, page LIMIT {int(limit)}", params)
    nxt = store.query(f"SELECT next AS page, count() AS n FROM ({inner}) GROUP BY next "
                      f"ORDER BY n DESC, page LIMIT {int(limit)}", params)
    views = sum(int(num(r["n"])) for r in store.query(f"SELECT count() AS n FROM ({inner})", params))
    return {
        "page": page,
        "views": views,
        "previous": [{"page": r["page"], "count": int(num(r["n"]))} for r in prev],
        "next": [{"page": r["page"], "count": int(num(r["n"]))} for r in nxt],
    }
