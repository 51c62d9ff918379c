"""Tables of figures per closed UTC day kept beside the raw rows (member_days, host_days): a day is computed once,
stamped with what it came from (the rows inserted into it, counted per day by the materialized views of migration
0220, and whatever else its figures depend on), and marked done in `<table>_done` once its rows are stored. A read
takes only rows whose stamp is the day's current one, so an insert into a kept day (a late or replayed row) moves
the stamp and the day is computed again at the next read."""
from __future__ import annotations

import collections
import threading
from typing import Callable

from sinks.reads.common import History, num

# Page views and hits one refresh query reads at most (whole days; a day over it goes alone): the first read after
# an upgrade computed 90 days of 10M page views in one query, which needed 3.8 GiB on the server (limit 3.7).
REFRESH_ROWS = 2_000_000
# one refresh of a table at a time in a process (the screen's requests run in threads)
_refresh_locks: collections.defaultdict[str, threading.Lock] = collections.defaultdict(threading.Lock)


def day_counts(store: History, until_day: int) -> dict[tuple[str, int], int]:
    """(source, day) -> rows inserted into pageviews / hits of that day, for the days up to `until_day`."""
    rows = store.query("SELECT source, day, sum(rows) AS n FROM day_rows WHERE day <= %(before)s GROUP BY source, day",
                       {"before": until_day})
    return {(r["source"], int(num(r["day"]))): int(num(r["n"])) for r in rows}


def refresh(store: History, table: str, key: str, fields: tuple[str, ...], stamps: dict[int, str],
            figures: Callable[[int, int], tuple[str, dict]], figures_key: str | None = None) -> int:
    """Computes the days of `stamps` (day -> stamp) whose stamp has no complete rows in `table` yet: one query per
    run of days holding at most REFRESH_ROWS rows, each run marked done once stored. `figures(first, last)` gives
    the SELECT of (day, key, *fields) over those days and its parameters; `figures_key`: its name for the key
    column when not `key`. Returns how many days were stale."""
    if not stamps:
        return 0
    with _refresh_locks[table]:
        done = {(int(num(r["day"])), r["stamp"]) for r in store.query(
            f"SELECT DISTINCT day, stamp FROM {table}_done WHERE day >= %(a)s AND day <= %(b)s",
            {"a": min(stamps), "b": max(stamps)})}
        stale = sorted(d for d, s in stamps.items() if (d, s) not in done)
        if not stale:
            return 0
        counts = day_counts(store, stale[-1])
        for first, last in _spans(stale, lambda d: counts.get(("pageviews", d), 0) + counts.get(("hits", d), 0)):
            span = list(range(first, last + 1))
            keys = {"days": span, "stamps": [stamps.get(d, "") for d in span]}
            sql, params = figures(first, last)
            store.query(f"INSERT INTO {table} (day, stamp, {key}, {', '.join(fields)}) "
                        f"SELECT day, transform(day, %(days)s, %(stamps)s, '') AS stamp, {figures_key or key}, "
                        f"{', '.join(fields)} FROM ({sql})", {**params, **keys})
            store.query(f"INSERT INTO {table}_done (day, stamp, computed_at) "
                        "SELECT day, transform(day, %(days)s, %(stamps)s, '') AS stamp, toFloat64(now()) FROM "
                        "(SELECT arrayJoin(%(days)s) AS day)", keys)
        return len(stale)


def _spans(stale: list[int], rows) -> list[tuple[int, int]]:
    """(first, last) runs of days from the first stale day to the last, each holding at most REFRESH_ROWS
    rows (`rows(day)`) or one day, keeping only runs with a stale day."""
    spans: list[tuple[int, int]] = []
    first, total = stale[0], 0
    for d in range(stale[0], stale[-1] + 1):
        if d > first and total + rows(d) > REFRESH_ROWS:
            spans.append((first, d - 1))
            first, total = d, 0
        total += rows(d)
    spans.append((first, stale[-1]))
    wanted = set(stale)
    return [(a, b) for a, b in spans if wanted.intersection(range(a, b + 1))]
