"""Sinks and stores for tests and benchmarks: ListSink (keeps what is written, in memory) and a fresh history
store of its own (`fresh_history`); the synthetic events to write into them, with their ground truth, are in
`events`."""
from __future__ import annotations

import uuid
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from config.rows import Row
from sinks.base import BatchingSink
from sinks.history import open_history
from sinks.history_store import HistoryStore


class ListSink(BatchingSink):
    """A testing sink: keeps what was written, per table (mirrors a testing source)."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.tables: dict[str, list[Row]] = defaultdict(list)

    def write(self, table: str, rows: Sequence[Row]) -> None:
        self.tables[table].extend(rows)


def fresh_history_url(place: str, name: str = "t") -> str:
    """The URL of a history store nobody else uses. `place`: a ClickHouse server URL (a new database on that
    server) or a directory (a new chdb store in it)."""
    if place.startswith("clickhouse://"):
        return place.rsplit("/", 1)[0] + f"/{name}_{uuid.uuid4().hex[:12]}"
    return f"chdb://{place.rstrip('/')}/{name}_{uuid.uuid4().hex[:8]}"


@contextmanager
def fresh_history(place: str, name: str = "t", rows=None, **batching: Any) -> Iterator[HistoryStore]:
    """A migrated history store of its own (see fresh_history_url), empty or holding `rows` (a dataset of
    sinks.testing.events: its write_to), closed on exit: chdb serves one data directory per process, so the
    next store can only open once this one is closed."""
    store = open_history(fresh_history_url(place, name), **batching)
    try:
        store.init_schema()
        if rows is not None:
            rows.write_to(store)
        yield store
    finally:
        store.close()
