"""The base of both history backends: a BatchingSink that converts event rows to columns and inserts
them, `query` for readers, and the schema migrated on first use. Backends implement three primitives
(`_execute`, `_insert`, `_select`); see sinks/history.py for the tables and how to query them exactly."""
from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from typing import Any, Sequence

from config.rows import Row
from sinks.base import BatchingSink, HistoryError
from sinks.history_columns import Column, to_columns, without_empty_arrays
from sinks.migrations import MIGRATION_COLUMNS, MIGRATIONS_TABLE_DDL, added_column, migration_files
from sinks.sql_bind import bind

log = logging.getLogger(__name__)

class HistoryStore(BatchingSink):
    """A BatchingSink writing event rows to the history tables, plus `query` for readers."""

    url: str

    def __init__(self, url: str, **batching: Any):
        super().__init__(**batching)
        self.url = url
        self.rows_dropped = 0
        self._schema_ready = False
        self._schema_lock = threading.Lock()  # the loop and a query thread may both trigger it

    # backend primitives
    @abstractmethod
    def _execute(self, sql: str) -> None:
        """Run one statement; raise SinkUnavailable when the backend is away."""

    @abstractmethod
    def _insert(self, table: str, columns: Sequence[Column], data: list[list[Any]]) -> None:
        """Columnar insert of len(data[0]) rows."""

    @abstractmethod
    def _select(self, sql: str, settings: dict | None = None) -> list[dict]:
        """Rows of a bound query as JSON-friendly dicts; `settings` are server settings for this query."""

    @staticmethod
    def result_limit(settings: dict | None) -> int:
        """The answer's byte limit the caller set (max_result_bytes), 0 = none. The server applies it too, but
        to materialized columns only: a constant (`repeat('a', 1000000)` on every row) passes it."""
        return int((settings or {}).get("max_result_bytes") or 0)

    @staticmethod
    def result_too_large(size: int, limit: int) -> HistoryError:
        return HistoryError(f"the answer is over {size / 2**20:.0f} MB, more than the limit of "
                            f"{limit / 2**20:.0f} MB (web.query_max_result_mb): select fewer rows or shorter columns")

    # public API
    def query(self, sql: str, params: dict | None = None, settings: dict | None = None) -> list[dict]:
        self._ensure_schema()
        return self._select(bind(sql, params), settings)

    def write(self, table: str, rows: Sequence[Row]) -> None:
        dropped = self.write_here(table, rows)
        self.rows_dropped += dropped  # only once the batch is through: a retried batch is not counted twice

    def write_here(self, table: str, rows: Sequence[Row]) -> int:
        """Convert and insert the rows in this process; returns how many were dropped as bad input."""
        cols, data, dropped = to_columns(table, rows)
        if data[0]:
            self._ensure_schema()
            self._insert(table, *without_empty_arrays(cols, data))
        return dropped

    def init_schema(self) -> list[str]:
        """Apply pending migrations; returns the names applied (none the second time)."""
        self._execute(MIGRATIONS_TABLE_DDL)
        done = {r["version"] for r in self._select("SELECT DISTINCT version FROM schema_migrations")}
        applied = []
        for version, name, statements in migration_files():
            if version in done:
                continue
            for stmt in statements:
                if (add := added_column(stmt)) and self._has_column(*add):
                    continue  # applied before an interruption: the rest of the migration still runs
                self._execute(stmt)
            self._insert("schema_migrations", MIGRATION_COLUMNS, [[version], [name], [int(time.time())]])
            log.info("history: applied migration %s", name)
            applied.append(name)
        self._schema_ready = True
        return applied

    def pending_migrations(self) -> list[str]:
        """Names of the migrations not applied yet, read without creating or changing anything (`visitwire
        status` must not upgrade a store: upgrades are `db init`'s, in the README's order)."""
        known = self._select("SELECT count() AS n FROM system.tables WHERE database = currentDatabase() "
                             "AND name = 'schema_migrations'")
        done = set()
        if known and int(known[0]["n"]):
            done = {r["version"] for r in self._select("SELECT DISTINCT version FROM schema_migrations")}
        return [name for version, name, _ in migration_files() if version not in done]

    def _has_column(self, table: str, column: str) -> bool:
        rows = self._select("SELECT count() AS n FROM system.columns WHERE database = currentDatabase() "
                            f"AND table = '{table}' AND name = '{column}'")  # names: \w+ from our own files
        return bool(rows and int(rows[0]["n"]))

    def _ensure_schema(self) -> None:
        # Lazily, so a store opened while the server is away starts working once it is back.
        if not self._schema_ready:
            with self._schema_lock:
                if not self._schema_ready:
                    self.init_schema()
