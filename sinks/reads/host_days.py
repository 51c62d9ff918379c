"""Each site's (host's) page views, hits and errors per UTC day, kept in `host_days` (migration 0240), so the Site
list (/api/stats?by=host over 90 days) reads a few rows a host and day instead of every page view.

A day's figures come from the stats API's own SQL over that day (sinks/reads/stats.py: one row per event_id, bots
left out of page views), given here as `figures_sql(first_day, last_day)`. Each computed day is stamped with the
rows inserted into its page views and hits (day_rows, counted per day by materialized views, migration 0220): an
insert into the day (a late or replayed row) moves the stamp and the day is computed again at the next read. The
stamp is read before the day is computed, so rows landing in between are in the figures of an already stale
stamp. These counts add up over days because an event lies in one day; distinct visitors do not, so the stats
API reads those from the raw rows.
"""
from __future__ import annotations

from typing import Callable

from sinks.reads import day_tables, member_days
from sinks.reads.common import History, num
from sinks.sql_bind import bind

FIELDS = ("pageviews", "hits", "errors")
TYPES = dict.fromkeys(FIELDS, "UInt64")  # their columns in host_days
VERSION = "1"  # in every stamp: a change of what a day's figures mean makes the kept ones stale


def kept(store: History | None) -> bool:
    """Whether host_days may be kept through this store: one this process writes (not a read-only query API)."""
    return store is not None and member_days.kept(store)


def day_stamps(store: History, first_day: int, last_day: int) -> dict[int, str]:
    """day -> stamp of every day first_day..last_day that holds page views or hits."""
    counts = day_tables.day_counts(store, last_day)
    days = {d for _, d in counts if first_day <= d <= last_day}
    return {d: f"{counts.get(('pageviews', d), 0)}.{counts.get(('hits', d), 0)}.{VERSION}" for d in days}


def refresh(store: History, figures_sql: Callable[[int, int], str], stamps: dict[int, str]) -> int:
    """Computes the days whose stamp has no complete figures yet (sinks/reads/day_tables.py); returns how many."""
    return day_tables.refresh(store, "host_days", "host", FIELDS, stamps,
                              lambda first, last: (figures_sql(first, last), {}), figures_key="key")


def figures(store: History, figures_sql: Callable[[int, int], str], first_day: int, last_day: int,
            host: str | None = None) -> dict[str, dict[str, int]]:
    """host -> {pageviews, hits, errors} summed over the days first_day..last_day (stale days computed first);
    `host`: only that site's row."""
    stamps = day_stamps(store, first_day, last_day)
    if not stamps:
        return {}
    days, _ = day_tables.current_rows(store, "host_days", "host", TYPES, stamps,
                                      lambda first, last: (figures_sql(first, last), {}), figures_key="key")
    where = " WHERE host = %(host)s" if host is not None else ""
    # bound before the rows go in: a literal of theirs is never taken for a placeholder
    rows = store.query(bind(f"SELECT host, {', '.join(f'sum({f}) AS {f}' for f in FIELDS)} FROM (ROWS){where} "
                            "GROUP BY host", {"host": host or ""}).replace("(ROWS)", f"({days})", 1))
    return {r["host"]: {f: int(num(r[f])) for f in FIELDS} for r in rows}
