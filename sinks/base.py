"""The one small interface every sink implements.

A sink receives batches of rows for one table and writes them in one go.
`BatchingSink` does the buffering: rows are added as they arrive and handed to
`write(table, rows)` at most about once per `flush_interval_s` per table (or when
`max_batch_rows` is reached), and always on `flush()` / `close()`.

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
from itertools import chain
from typing import Any, Iterable, Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

Row = Mapping[str, Any]


class Columns(Sequence):
    """Rows kept as columns (field -> values, all of one length), as the processors already have them:
    a columnar store inserts them without turning every row into a dict and back. Reads as a
    sequence of dict rows where a caller wants rows."""

    __slots__ = ("_n", "columns")

    def __init__(self, columns: Mapping[str, Sequence[Any]], n: int):
        self.columns = dict(columns)
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return Columns({f: v[i] for f, v in self.columns.items()}, len(range(*i.indices(self._n))))
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return {f: v[i] for f, v in self.columns.items()}

    def __iter__(self) -> Iterator[dict]:
        names = list(self.columns)
        return (dict(zip(names, values)) for values in zip(*self.columns.values()))

    def column(self, field: str) -> list:
        """The field's values (None for every row when the field is absent)."""
        values = self.columns.get(field)
        return [None] * self._n if values is None else values if type(values) is list else list(values)

    @staticmethod
    def concat(parts: Sequence[Columns]) -> Columns:
        """One Columns of parts with the same fields, in order (a JsonColumns when every part is one)."""
        names = list(parts[0].columns)
        columns = {f: list(chain.from_iterable(p.columns[f] for p in parts)) for f in names}
        n = sum(len(p) for p in parts)
        if all(type(p) is JsonColumns for p in parts):
            return JsonColumns(columns, n, [text for p in parts for text in p.texts])
        return Columns(columns, n)


class JsonColumns(Columns):
    """Columns that keep the JSON text they were decoded from: `texts`, each a JSON array of columns
    `[[field 0 of each row], [field 1 ...], ...]` in the order of `columns`, for consecutive rows.

    Pickled, they travel as that text (a few bytes objects) instead of a Python object per value, and
    the receiving process decodes it again: for the ClickHouse writer child, that moves most of the
    cost of handing over a batch out of the worker's process."""

    __slots__ = ("texts",)

    def __init__(self, columns: Mapping[str, Sequence[Any]], n: int, texts: list[bytes]):
        super().__init__(columns, n)
        self.texts = texts

    def __reduce__(self) -> tuple:
        return _columns_from_json, (tuple(self.columns), self.texts, self._n)


def _columns_from_json(names: Sequence[str], texts: Sequence[bytes], n: int) -> Columns:
    import orjson

    parts = [orjson.loads(text) for text in texts]
    return Columns({f: list(chain.from_iterable(p[i] for p in parts)) for i, f in enumerate(names)}, n)


class EncodedRows(list):
    """Dict rows together with each row's JSON (`texts`, e.g. as already encoded for a Kafka topic).
    Pickled, they travel as that JSON, and the receiving process decodes it into dict rows again."""

    __slots__ = ("texts",)

    def __init__(self, rows: Iterable[Row], texts: list[bytes]):
        super().__init__(rows)
        self.texts = texts

    def __reduce__(self) -> tuple:
        return _rows_from_json, (self.texts,)


def _rows_from_json(texts: Sequence[bytes]) -> list[dict]:
    import orjson

    return list(map(orjson.loads, texts))


def merge_rows(parts: Sequence[Sequence[Row]]) -> Sequence[Row]:
    """The rows of several added parts as one sequence: columns stay columns when every part has the same fields,
    encoded rows stay encoded rows."""
    if parts and all(isinstance(p, Columns) for p in parts) and \
            all(p.columns.keys() == parts[0].columns.keys() for p in parts):
        return Columns.concat(parts)
    if parts and all(type(p) is EncodedRows for p in parts):
        return EncodedRows(chain.from_iterable(parts), [t for p in parts for t in p.texts])
    return list(chain.from_iterable(parts))


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


class BatchingSink(ABC):
    def __init__(self, flush_interval_s: float = 1.0, max_batch_rows: int = 100_000,
                 retry_backoff_s: Sequence[float] = (0.2, 0.5, 1, 2, 5)):
        self.flush_interval_s = flush_interval_s
        self.max_batch_rows = max_batch_rows
        self.retry_backoff_s = tuple(retry_backoff_s)
        self._buffers: dict[str, list[Sequence[Row]]] = defaultdict(list)  # table -> parts as added
        self._last_flush: dict[str, float] = defaultdict(time.monotonic)
        self._lock = threading.Lock()
        self.rows_written = 0
        self.write_failures = 0

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

    def pending(self) -> int:
        with self._lock:
            return sum(len(p) for parts in self._buffers.values() for p in parts)

    def due(self) -> bool:
        """True when some table's buffer is old or big enough to write now."""
        now = time.monotonic()
        with self._lock:
            return any(parts and (sum(map(len, parts)) >= self.max_batch_rows
                                  or now - self._last_flush[t] >= self.flush_interval_s)
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
        return written

    def _write_with_retry(self, table: str, rows: Sequence[Row], retry: bool) -> None:
        delays = self.retry_backoff_s if retry else ()
        for attempt in range(len(delays) + 1):
            try:
                if len(rows) <= self.max_batch_rows:  # the usual flush: no slice (a copy of every column)
                    self.write(table, rows)
                    return
                for start in range(0, len(rows), self.max_batch_rows):
                    self.write(table, rows[start:start + self.max_batch_rows])
                return
            except SinkUnavailable as e:
                self.write_failures += 1
                if attempt == len(delays):
                    raise
                log.warning("sink %s: %s unavailable (%s); retrying in %.1fs",
                            type(self).__name__, table, e, delays[attempt])
                time.sleep(delays[attempt])


class ListSink(BatchingSink):
    """A testing sink: keeps what was written, per table (mirrors a testing source)."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.tables: dict[str, list[Row]] = defaultdict(list)

    def write(self, table: str, rows: Sequence[Row]) -> None:
        self.tables[table].extend(rows)
