"""Tables of figures per closed UTC day kept beside the raw rows (member_days, host_days): a day is computed once,
stamped with what it came from (the rows inserted into it, counted per day by the materialized views of migration
0220, and whatever else its figures depend on), and marked done in `<table>_done` once its rows are stored. A read
takes only rows whose stamp is the day's current one, so an insert into a kept day (a late or replayed row) moves
the stamp and the day is computed again at the next read.

On a replica (README, ClickHouse on a cluster) the stamp can lead the rows: each Replicated table fetches its parts
on its own, so `day_rows` may hold a new insert's counts before `pageviews` holds its rows. A day is therefore kept
only while this server is not behind for the tables its figures read (`behind`); when it is, the read computes the
stale days from the raw rows for that call (`current_rows`) and keeps nothing, and a read after it caught up keeps
them."""
from __future__ import annotations

import collections
import re
import threading
from typing import Callable

from sinks.reads.common import History, num
from sinks.sql_bind import bind

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
    column when not `key`. Returns how many days were stale; none is stored while this server is behind for the
    tables the figures read (`behind`)."""
    return len(_refresh(store, table, key, fields, stamps, figures, figures_key)[0])


def current_rows(store: History, table: str, key: str, fields: dict[str, str], stamps: dict[int, str],
                 figures: Callable[[int, int], tuple[str, dict]], figures_key: str | None = None) -> tuple[str, bool]:
    """(a SELECT with its parameters bound, whether every day came from `table`): the (day, key, *fields) rows of
    every day of `stamps` (not empty), stale days refreshed first. The kept rows of each day's current stamp, and
    the days that could not be kept (this server behind) computed from the raw rows in this very query, so the
    answer is exact either way. `fields`: name -> its type in `table` (18.16's UNION ALL wants the same types)."""
    _, unsaved = _refresh(store, table, key, tuple(fields), stamps, figures, figures_key)
    kept = [d for d in sorted(stamps) if d not in unsaved]
    cols = ", ".join(fields)
    parts = [bind(f"SELECT DISTINCT day, {key}, {cols} FROM {table} WHERE day >= %(a)s AND day <= %(b)s "
                  "AND has(%(days)s, day) AND stamp = transform(day, %(days)s, %(stamps)s, '')",
                  {"a": kept[0], "b": kept[-1], "days": kept, "stamps": [stamps[d] for d in kept]})] if kept else []
    if unsaved:
        days = sorted(unsaved)
        counts = day_counts(store, days[-1])
        casts = ", ".join(f"CAST({f} AS {t}) AS {f}" for f, t in fields.items())
        for first, last in _spans(days, lambda d: counts.get(("pageviews", d), 0) + counts.get(("hits", d), 0)):
            sql, params = figures(first, last)
            parts.append(bind(f"SELECT toUInt32(day) AS day, toString({figures_key or key}) AS {key}, {casts} "
                              f"FROM ({sql}) WHERE has(%(unsaved)s, day)", {**params, "unsaved": days}))
    return " UNION ALL ".join(parts), not unsaved


def _refresh(store: History, table: str, key: str, fields: tuple[str, ...], stamps: dict[int, str],
             figures: Callable[[int, int], tuple[str, dict]], figures_key: str | None) -> tuple[list[int], set[int]]:
    """refresh's work: (the stale days, those of them not stored because this server is behind)."""
    if not stamps:
        return [], set()
    with _refresh_locks[table]:
        done = {(int(num(r["day"])), r["stamp"]) for r in store.query(
            f"SELECT DISTINCT day, stamp FROM {table}_done WHERE day >= %(a)s AND day <= %(b)s",
            {"a": min(stamps), "b": max(stamps)})}
        stale = sorted(d for d, s in stamps.items() if (d, s) not in done)
        if not stale:
            return [], set()
        # checked after the stamps were read: rows of an insert `day_rows` counted are in the replication log
        # before its day_rows part (the insert writes the table first, then its views)
        if behind(store, figures(stale[0], stale[-1])[0]):
            return stale, set(stale)
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
        return stale, set()


_WORD = re.compile(r"[A-Za-z_]\w*")


def behind(store: History, sql: str) -> bool:
    """Whether this server may lack rows of a Replicated table that `sql` names (any word of it that is a table of
    the current database in system.replicas): its ZooKeeper session is lost, or the replication log holds entries
    it has not copied into its queue yet (log_pointer, the next one to copy, is not past log_max_index), or its
    queue still holds fetches (every insert is a fetch in the log; a part whose fetch the queue dropped is inside
    a bigger part it has). Merges in the queue are not counted: they move rows between parts, and the writers'
    leader assigns them all the time. Not replicated (chdb, one server): one query that reads nothing."""
    words = sorted(set(_WORD.findall(sql)))
    replicas = store.query(
        "SELECT zookeeper_path, is_readonly, is_session_expired, inserts_in_queue, log_pointer, log_max_index "
        "FROM system.replicas WHERE database = currentDatabase() AND has(%(words)s, table)", {"words": words})
    for r in replicas:
        if num(r["is_readonly"]) or num(r["is_session_expired"]) or num(r["inserts_in_queue"]):
            return True
        pointer, top = int(num(r["log_pointer"])), int(num(r["log_max_index"]))
        if pointer <= top and (pointer or top or _log_entries(store, r["zookeeper_path"])):
            return True  # (0, 0): an empty log, or one whose only entry (log-0000000000) is not copied yet
    # 18.16 reads the queue (from memory) before log_pointer (from ZooKeeper), and a log pull writes ZooKeeper
    # before memory: the queue read again after the pointer sees what a pull that moved the pointer queued
    return bool(replicas) and any(num(r["inserts_in_queue"]) for r in store.query(
        "SELECT inserts_in_queue FROM system.replicas WHERE database = currentDatabase() AND has(%(words)s, table)",
        {"words": words}))


def _log_entries(store: History, zookeeper_path: str) -> int:
    return int(num(store.query("SELECT count() AS n FROM system.zookeeper WHERE path = %(p)s",
                               {"p": zookeeper_path + "/log"})[0]["n"]))


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
