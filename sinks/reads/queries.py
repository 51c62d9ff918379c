"""Ready-made history queries for the API and reports, exact on both backends despite replays.

Rules they follow (see sinks/history.py): events are counted with uniqExact(event_id), sessions
are read FINAL, rollups are read with uniqExactMerge. Times are epoch seconds (UTC); ranges
are [from_ts, to_ts). Queries on per-minute rollups widen the range to whole minutes.
Bots are left out unless `include_bots=True`.
"""
from __future__ import annotations

import math
from typing import Sequence

from sinks.base import HistoryError
from sinks.history_store import HistoryStore

# Page view columns `top` may group by (a whitelist: the name goes into the SQL text).
TOP_DIMENSIONS = ("path", "host", "page_group", "section", "product_id", "category", "menu", "referrer_host",
                  "channel", "utm_source", "utm_medium", "utm_campaign", "browser", "os", "device", "goal",
                  "method", "member_id")


def _minute_range(from_ts: float, to_ts: float) -> dict:
    if to_ts < from_ts:
        raise HistoryError(f"time range ends ({to_ts}) before it starts ({from_ts})")
    # from rounds down, to rounds up: the minute holding `to_ts` (e.g. now) is included.
    return {"f": int(from_ts) // 60 * 60, "t": int(math.ceil(to_ts / 60)) * 60}


def _check_interval(interval: int) -> int:
    interval = int(interval)
    if interval < 60 or interval % 60:
        raise HistoryError(f"interval must be a whole number of minutes in seconds (60, 300, 3600...), got {interval}")
    return interval


def _series(rows: list[dict], from_ts: int, to_ts: int, interval: int, zero: dict) -> list[dict]:
    """One row per interval from from_ts to to_ts, empty intervals as zeros (charts want no gaps)."""
    by_t = {int(r["t"]): r for r in rows}
    start = from_ts // interval * interval
    return [by_t.get(t, {"t": t, **zero}) for t in range(start, to_ts, interval)]


def _host_filter(host: str | None) -> str:
    return " AND host = %(host)s" if host else ""


def pageviews_per_interval(store: HistoryStore, from_ts: float, to_ts: float, interval: int = 60,
                           host: str | None = None, include_bots: bool = False) -> list[dict]:
    """[{"t": interval start, "pageviews": n, "visitors": distinct visitors in that interval}]."""
    iv = _check_interval(interval)
    p = {**_minute_range(from_ts, to_ts), "iv": iv, "host": host or ""}
    rows = store.query(
        "SELECT intDiv(toUInt32(minute), %(iv)s) * %(iv)s AS t, uniqExactMerge(pageviews) AS pageviews, "
        "uniqExactMerge(visitors) AS visitors FROM pageviews_per_minute "
        "WHERE minute >= toDateTime(%(f)s) AND minute < toDateTime(%(t)s)"
        + ("" if include_bots else " AND is_bot = 0") + _host_filter(host) + " GROUP BY t ORDER BY t", p)
    return _series([{"t": int(r["t"]), "pageviews": int(r["pageviews"]), "visitors": int(r["visitors"])} for r in rows],
                   p["f"], p["t"], iv, {"pageviews": 0, "visitors": 0})


def hits_per_interval(store: HistoryStore, from_ts: float, to_ts: float, interval: int = 60,
                      host: str | None = None) -> list[dict]:
    """[{"t", "hits", "errors" (5xx or no response), "error_rate"}] over all requests (pages and assets)."""
    iv = _check_interval(interval)
    p = {**_minute_range(from_ts, to_ts), "iv": iv, "host": host or ""}
    rows = store.query(
        "SELECT t, sum(n) AS hits, sumIf(n, status_class IN (0, 5)) AS errors FROM ("
        " SELECT intDiv(toUInt32(minute), %(iv)s) * %(iv)s AS t, status_class, uniqExactMerge(hits) AS n"
        " FROM hits_per_minute WHERE minute >= toDateTime(%(f)s) AND minute < toDateTime(%(t)s)" + _host_filter(host)
        + " GROUP BY t, status_class) GROUP BY t ORDER BY t", p)
    out = [{"t": int(r["t"]), "hits": int(r["hits"]), "errors": int(r["errors"]),
            "error_rate": int(r["errors"]) / int(r["hits"]) if int(r["hits"]) else 0.0} for r in rows]
    return _series(out, p["f"], p["t"], iv, {"hits": 0, "errors": 0, "error_rate": 0.0})


def latency_quantiles(store: HistoryStore, from_ts: float, to_ts: float, quantiles: Sequence[float] = (0.5, 0.95, 0.99),
                      host: str | None = None) -> dict:
    """{"hits": answered requests, "p50": ms, ...} from the latency histogram rollup.

    A quantile is the upper edge of the bucket holding it, so it errs high by at most ~19%."""
    p = {**_minute_range(from_ts, to_ts), "host": host or ""}
    rows = store.query(
        "SELECT bucket, uniqExactMerge(hits) AS n FROM latency_per_minute "
        "WHERE minute >= toDateTime(%(f)s) AND minute < toDateTime(%(t)s)" + _host_filter(host)
        + " GROUP BY bucket ORDER BY bucket", p)
    total = sum(int(r["n"]) for r in rows)
    out: dict = {"hits": total}
    for q in quantiles:
        key = f"p{q * 100:g}".replace(".", "_")
        if not total:
            out[key] = None
            continue
        rank, seen = max(1, math.ceil(q * total)), 0
        for r in rows:
            seen += int(r["n"])
            if seen >= rank:
                out[key] = round(2 ** (int(r["bucket"]) / 4), 3)
                break
    return out


def top(store: HistoryStore, dimension: str, from_ts: float, to_ts: float, limit: int = 10,
        host: str | None = None, include_bots: bool = False) -> list[dict]:
    """Top values of a page view dimension: [{"value", "pageviews", "visitors"}], most page views first."""
    if dimension not in TOP_DIMENSIONS:
        raise HistoryError(f"cannot rank by {dimension!r}; choose one of {', '.join(TOP_DIMENSIONS)}")
    p = {"f": float(from_ts), "t": float(to_ts), "limit": max(1, int(limit)), "host": host or ""}
    rows = store.query(
        f"SELECT {dimension} AS value, uniqExact(event_id) AS pageviews, uniqExact(visitor_id) AS visitors "
        "FROM pageviews WHERE ts_epoch >= %(f)s AND ts_epoch < %(t)s"
        + ("" if include_bots else " AND is_bot = 0") + _host_filter(host)
        + " GROUP BY value ORDER BY pageviews DESC, value LIMIT %(limit)s", p)
    return [{"value": r["value"], "pageviews": int(r["pageviews"]), "visitors": int(r["visitors"])} for r in rows]


def sessions_summary(store: HistoryStore, from_ts: float, to_ts: float, include_bots: bool = False) -> dict:
    """Sessions started in [from_ts, to_ts): count, bounce rate, averages, goals and revenue (latest version of
    each)."""
    p = {"f": float(from_ts), "t": float(to_ts)}
    rows = store.query(
        "SELECT count() AS sessions, sum(bounce) AS bounces, avg(duration) AS avg_duration, "
        "avg(pageviews) AS avg_pageviews, sum(goals) AS goals, sum(revenue) AS revenue, "
        "uniqExact(visitor_id) AS visitors FROM sessions FINAL "
        "WHERE start_epoch >= %(f)s AND start_epoch < %(t)s" + ("" if include_bots else " AND is_bot = 0"), p)
    r = rows[0] if rows else {}
    n = int(r.get("sessions") or 0)
    return {"sessions": n, "visitors": int(r.get("visitors") or 0),
            "bounce_rate": int(r.get("bounces") or 0) / n if n else 0.0,
            "avg_duration_s": float(r.get("avg_duration") or 0) if n else 0.0,
            "avg_pageviews": float(r.get("avg_pageviews") or 0) if n else 0.0,
            "goals": int(r.get("goals") or 0), "revenue": float(r.get("revenue") or 0)}


def segment_counts(store: HistoryStore) -> dict[str, int]:
    """Members per current segment (each member's latest segment change)."""
    rows = store.query("SELECT segment, count() AS members FROM (SELECT member_id, argMax(segment, ts_epoch) "
                       "AS segment FROM segments GROUP BY member_id) GROUP BY segment ORDER BY segment")
    return {r["segment"]: int(r["members"]) for r in rows}


def newest_hit(store: HistoryStore) -> float | None:
    """Time of the newest stored hit (None when there is none yet): `visitwire status`'s sign of life."""
    rows = store.query("SELECT max(ts_epoch) AS last, count() AS n FROM hits")
    return (float(rows[0]["last"] or 0) or None) if rows else None


def event_counts(store: HistoryStore) -> dict[str, int]:
    """Distinct events per raw table (what was really captured, replays not counted twice)."""
    rows = store.query(
        "SELECT (SELECT uniqExact(event_id) FROM hits) AS hits, "
        "(SELECT uniqExact(event_id) FROM pageviews) AS pageviews, "
        "(SELECT uniqExact(session_id) FROM sessions) AS sessions, "
        "(SELECT uniqExact(member_id, ts_epoch, segment) FROM segments) AS segments")
    return {k: int(v) for k, v in rows[0].items()}


def range_totals(store: HistoryStore, from_ts: float, to_ts: float) -> dict[str, int]:
    """Distinct hits, page views, non-bot visitors (of page views) and sessions started in [from_ts, to_ts):
    the summary of one `visitwire run`."""
    p = {"lo": float(from_ts), "hi": float(to_ts)}
    pv = "FROM pageviews WHERE ts_epoch >= %(lo)s AND ts_epoch < %(hi)s"
    return {
        "hits": int(store.query("SELECT uniqExact(event_id) AS n FROM hits WHERE ts_epoch >= %(lo)s "
                                "AND ts_epoch < %(hi)s", p)[0]["n"]),
        "pageviews": int(store.query(f"SELECT uniqExact(event_id) AS n {pv}", p)[0]["n"]),
        "visitors": int(store.query(f"SELECT uniqExact(visitor_id) AS n {pv} AND is_bot = 0", p)[0]["n"]),
        "sessions": int(store.query("SELECT uniqExact(session_id) AS n FROM sessions WHERE start_epoch >= %(lo)s "
                                    "AND start_epoch < %(hi)s", p)[0]["n"]),
    }
