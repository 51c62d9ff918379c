"""History store embedded in this process with chdb (ClickHouse as a library).

Rows go in as Arrow tables (`INSERT ... SELECT * FROM Python(tbl)`, ~1M rows/s; text formats
are 10x slower). chdb serves ONE data directory per process, and only the process holding it
can read it: the engine that writes also answers queries (`visitwire query` goes through its
`/api/query` when it runs, see engine/query.py). Stores on the same path in one process share
one session; a second path while one is open is refused with a clear message.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Sequence

import orjson
import pyarrow as pa

from sinks.base import HistoryError
from sinks.disk_space import check_free_space
from sinks.history_columns import BOOL, FLOAT, INT, OPT_FLOAT, OPT_INT, STR, TIME, Column
from sinks.history_store import HistoryStore

log = logging.getLogger(__name__)

_ARROW_TYPES = {
    STR: pa.string(), INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.uint8(), OPT_INT: pa.int64(),
    OPT_FLOAT: pa.float64(), TIME: pa.uint32(), "keys": pa.list_(pa.string()), "values": pa.list_(pa.string()),
}

# MergeTree settings of every table (the <merge_tree> section of a config file chdb starts with). Each insert
# makes a part in its table and in each materialized view's, and merges leave the old parts to a cleanup thread
# that backs off to every 300 s when it finds little to do: at the soak's ~150 inserts a minute chdb held up to
# 1,230 merged-away parts and its allocator's figure grew 35 -> 79 MB in 10 min; cleaned every 5-17 s instead:
# at most 110 held, 40 -> 46 MB (benchmarks/chdb_insert_memory.py --bare, then without it).
MERGE_TREE_SETTINGS: dict[str, int] = {"cleanup_delay_period": 5, "max_cleanup_delay_period": 10,
                                       "cleanup_delay_period_random_add": 2}
# Server settings: chdb's read caches default to what a dedicated server would take (the mark cache 5 GiB,
# the skip-index mark cache 5 GiB; max_server_memory_usage 90% of RAM) and fill as the screen reads. The engine
# shares its host with the capture and the web servers, so they are bounded; a mark is ~48 B a column per 8,192
# rows, so 256 MiB covers the marks of billions of rows (visitwire's tables have no skip indexes).
SERVER_SETTINGS: dict[str, int] = {"mark_cache_size": 256 << 20, "index_mark_cache_size": 64 << 20}
CONFIG_FILE = "visitwire-chdb.xml"  # in the data directory


def _config_file(path: str) -> str:
    """Write chdb's config file into the data directory; its path."""
    server = "".join(f"<{k}>{v}</{k}>" for k, v in SERVER_SETTINGS.items())
    merge_tree = "".join(f"<{k}>{v}</{k}>" for k, v in MERGE_TREE_SETTINGS.items())
    config = os.path.join(path, CONFIG_FILE)
    with open(config, "w") as f:
        f.write(f"<clickhouse>{server}<merge_tree>{merge_tree}</merge_tree></clickhouse>\n")
    return config

# path -> [session, users, lock]; chdb cannot hold two data directories in one process.
_sessions: dict[str, list] = {}
_registry_lock = threading.Lock()


def _acquire(path: str) -> tuple[Any, threading.RLock]:
    from chdb import session as chdb_session

    with _registry_lock:
        if path in _sessions:
            entry = _sessions[path]
            entry[1] += 1
            return entry[0], entry[2]
        if _sessions:
            other = next(iter(_sessions))
            raise HistoryError(f"chdb already holds {other} in this process and allows one data directory per "
                               f"process: use the same history.url (chdb://{other}) or close that store first")
        try:
            os.makedirs(path, exist_ok=True)
            config = _config_file(path)
        except OSError as e:
            raise HistoryError(f"cannot create chdb data directory {path} ({e.strerror}): "
                               "fix history.url / --clickhouse or the directory's permissions") from None
        try:
            sess = chdb_session.Session(f"{path}?config-file={config}")
        except RuntimeError as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise HistoryError(f"cannot open chdb data directory {path} ({detail}); most likely another process "
                               "(a running `visitwire run`/`demo`) holds it: chdb allows one process per directory, "
                               "so stop that process or query through it (`visitwire query` does)") from None
        # Plain JSON numbers for 64-bit integers, like the ClickHouse backend returns them.
        sess.query("SET output_format_json_quote_64bit_integers = 0")
        sess.query("SET session_timezone = 'UTC'")
        lock = threading.RLock()
        _sessions[path] = [sess, 1, lock]
        return sess, lock


def _release(path: str) -> None:
    with _registry_lock:
        entry = _sessions.get(path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _sessions[path]
            entry[0].close()


def _setting_literal(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


class ChdbHistory(HistoryStore):
    def __init__(self, url: str, path: str, min_free_mb: int = 0, **batching: Any):
        super().__init__(url, **batching)
        self.path = os.path.abspath(path)
        self.min_free_mb = min_free_mb
        self._session, self._db_lock = _acquire(self.path)
        self._open = True

    def __repr__(self) -> str:
        return f"ChdbHistory({self.path})"

    def _query(self, sql: str, fmt: str = "CSV"):
        if not self._open:
            raise HistoryError(f"history store {self.path} is closed")
        with self._db_lock:
            try:
                return self._session.query(sql, fmt)
            except RuntimeError as e:
                raise HistoryError(f"chdb error: {str(e).strip().splitlines()[0]}") from e

    def _execute(self, sql: str) -> None:
        self._query(sql)

    def _insert(self, table: str, columns: Sequence[Column], data: list[list[Any]]) -> None:
        check_free_space(self.path, self.min_free_mb)  # before chdb reserves its ~41 MiB for the insert
        # The name `arrow_rows` is what Python(...) looks up in this frame.
        arrow_rows = pa.table({c.name: pa.array(values, _ARROW_TYPES[c.kind])  # noqa: F841
                               for c, values in zip(columns, data)})
        names = ", ".join(f"`{c.name}`" for c in columns)
        self._query(f"INSERT INTO {table} ({names}) SELECT * FROM Python(arrow_rows)")

    def _select(self, sql: str, settings: dict | None = None) -> list[dict]:
        if settings:  # on a line of its own: a trailing "-- comment" cannot swallow it
            sql = sql + "\nSETTINGS " + ", ".join(f"{k} = {_setting_literal(v)}" for k, v in settings.items())
        res = self._query(sql, "JSONEachRow")
        raw = res.bytes() if hasattr(res, "bytes") else bytes(res)
        limit = self.result_limit(settings)
        if limit and len(raw) > limit:  # before decoding it: the rows take several times the text's size
            raise self.result_too_large(len(raw), limit)
        return [orjson.loads(line) for line in raw.splitlines() if line.strip()]

    def close(self) -> None:
        if not self._open:
            return
        try:
            super().close()
        finally:
            self._open = False
            _release(self.path)
