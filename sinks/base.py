"""The one small interface every sink implements.

A sink receives batches of rows for one table and writes them in one go.
`BatchingSink` does the buffering: rows are added as they arrive and handed to
`write(table, rows)` when `flush_due`: once `max_batch_rows` are in; after `flush_interval_s` once
`min_batch_rows` are in; after `max_flush_delay_s` whatever is in; and always on `flush()` / `close()`.
At a low rate the minimum makes each write carry more rows: every write of the history is one insert
per table, and chdb's memory and data parts follow the number of inserts, not of rows.

`write` must be idempotent for a replayed batch (history sinks deduplicate on
event_id / session_id) and must raise `SinkUnavailable` when the backend is
away, leaving the rows buffered: callers only commit Kafka offsets after a
successful `flush()`, so unwritten events are redelivered, never lost.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from typing import Iterable, Iterator, Sequence

from config.rows import Columns, Row, merge_rows
from config.stats import ROW_BOUNDS, SECOND_BOUNDS, LastError, Tally

log = logging.getLogger(__name__)


def _chunks(parts: Sequence[Sequence[Row]], max_rows: int) -> Iterator[Sequence[Row]]:
    """The parts merged into writes of at most about max_rows rows, cut between parts: a slice of merged
    rows would lose the compact form of JsonColumns / EncodedRows (they pickle as their JSON text, a
    slice as a Python object per value). A single part larger than max_rows is sliced by the writer."""
    chunk: list[Sequence[Row]] = []
    n = 0
    for part in parts:
        if chunk and n + len(part) > max_rows:
            yield merge_rows(chunk)
            chunk, n = [], 0
        chunk.append(part)
        n += len(part)
    if chunk:
        yield merge_rows(chunk)


class SinkUnavailable(Exception):
    """The backend cannot take writes right now; retry later (rows stay buffered)."""


class HistoryError(Exception):
    """A history store problem the caller cannot retry away (bad URL, bad SQL); message says what to do."""


class BatchingSink(ABC):
    def __init__(self, flush_interval_s: float = 1.0, max_batch_rows: int = 100_000, min_batch_rows: int = 0,
                 max_flush_delay_s: float | None = None, retry_backoff_s: Sequence[float] = (0.2, 0.5, 1, 2, 5)):
        self.flush_interval_s = flush_interval_s
        self.max_batch_rows = max_batch_rows
        self.min_batch_rows = min_batch_rows
        self.max_flush_delay_s = max(flush_interval_s, max_flush_delay_s or 0.0)
        self.retry_backoff_s = tuple(retry_backoff_s)
        self._buffers: dict[str, list[Sequence[Row]]] = defaultdict(list)  # table -> parts as added
        self._last_flush: dict[str, float] = defaultdict(time.monotonic)
        self._lock = threading.Lock()
        self.rows_written = 0
        self.write_failures = 0
        # per table: rows per write and seconds per write (engine/metrics.py exports them)
        self.batch_rows: dict[str, Tally] = defaultdict(lambda: Tally(ROW_BOUNDS))
        self.write_seconds: dict[str, Tally] = defaultdict(lambda: Tally(SECOND_BOUNDS))
        self.last_error = LastError()
        self.last_flush_at = 0.0  # wall time of the last flush that wrote everything, 0 = never

    # -- what a concrete sink implements -------------------------------------------------
    @abstractmethod
    def write(self, table: str, rows: Sequence[Row]) -> None:
        """Write one batch to `table`; raise SinkUnavailable when the backend is away."""

    def prepare(self) -> None:
        """Get ready to write before the first rows arrive (e.g. start a helper process); optional."""

    def close(self) -> None:
        """Flush everything; subclasses release connections after calling super().close()."""
        self.flush()

    # -- buffering --------------------------------------------------------------------------
    def add(self, table: str, rows: Iterable[Row]) -> None:
        part = rows if isinstance(rows, (list, Columns)) else list(rows)
        if part:
            with self._lock:
                self._buffers[table].append(part)
                self._last_flush.setdefault(table, time.monotonic())  # a new table's clock starts with its rows

    def pending(self) -> int:
        with self._lock:
            return sum(len(p) for parts in self._buffers.values() for p in parts)

    def flush_due(self, rows: int, age_s: float) -> bool:
        """Is a buffer of `rows` rows, `age_s` seconds after the last write, to be written now?"""
        return rows > 0 and (rows >= self.max_batch_rows or age_s >= self.max_flush_delay_s
                             or (age_s >= self.flush_interval_s and rows >= self.min_batch_rows))

    def due(self) -> bool:
        """True when some table's buffer is old or big enough to write now (flush_due)."""
        now = time.monotonic()
        with self._lock:
            return any(self.flush_due(sum(map(len, parts)), now - self._last_flush[t])
                       for t, parts in self._buffers.items())

    def flush(self, retry: bool = True) -> int:
        """Write all buffered rows. Retries with backoff; raises SinkUnavailable if it still fails
        (the rows stay buffered). Returns the number of rows written."""
        written = 0
        with self._lock:
            tables = [t for t, parts in self._buffers.items() if parts]
        for table in tables:
            with self._lock:
                parts = self._buffers[table]
                self._buffers[table] = []
            try:
                for rows in _chunks(parts, self.max_batch_rows):
                    self._write_with_retry(table, rows, retry)
            except Exception:
                # Any failure (backend away or a permanent error) keeps the rows: the caller
                # has not committed their offsets, and nothing accepted may be dropped silently.
                # (Chunks already written are written again: the history store dedups by id.)
                with self._lock:  # put them back in front, order kept
                    self._buffers[table] = parts + self._buffers[table]
                raise
            self._last_flush[table] = time.monotonic()
            written += sum(map(len, parts))
        self.rows_written += written
        self.last_flush_at = time.time()
        return written

    def _write_with_retry(self, table: str, rows: Sequence[Row], retry: bool) -> None:
        delays = self.retry_backoff_s if retry else ()
        for attempt in range(len(delays) + 1):
            try:
                if len(rows) <= self.max_batch_rows:  # the usual flush: no slice (a copy of every column)
                    self._timed_write(table, rows)
                    return
                for start in range(0, len(rows), self.max_batch_rows):
                    self._timed_write(table, rows[start:start + self.max_batch_rows])
                return
            except Exception as e:
                self.last_error.record(e)
                if not isinstance(e, SinkUnavailable):
                    raise
                self.write_failures += 1
                if attempt == len(delays):
                    raise
                log.warning("sink %s: %s unavailable (%s); retrying in %.1fs",
                            type(self).__name__, table, e, delays[attempt])
                time.sleep(delays[attempt])

    def _timed_write(self, table: str, rows: Sequence[Row]) -> None:
        t0 = time.perf_counter()
        self.write(table, rows)
        self.write_seconds[table].observe(time.perf_counter() - t0)
        self.batch_rows[table].observe(len(rows))
