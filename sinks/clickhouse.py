"""History store on a ClickHouse server through clickhouse-driver (native protocol, port 9000).

Inserts are columnar (`INSERT INTO t (cols) VALUES` + column lists): never inline VALUES in
the SQL text (ClickHouse 18.16 hangs on it). Network failures become SinkUnavailable and drop
the connection; the next call reconnects, so a restarted server is picked up by itself.
"""
from __future__ import annotations

import datetime
import decimal
import ipaddress
import logging
import threading
import uuid
from typing import Any, Sequence

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from sinks.base import HistoryError, SinkUnavailable
from sinks.history_columns import Column
from sinks.history_store import HistoryStore
from sinks.insert_process import InsertProcess, SchemaMaybeGone

log = logging.getLogger(__name__)
# The driver logs every failed connect with a traceback; our SinkUnavailable says it in one line.
logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)

# Errors that mean "the server is away", not "your SQL is wrong".
_NETWORK_ERRORS = (ch_errors.NetworkError, ch_errors.SocketTimeoutError, EOFError, ConnectionError, OSError)
# Server codes worth a retry: too many parts/queries, memory limit, timeouts, unknown db after restart.
_RETRYABLE_CODES = {159, 160, 164, 202, 209, 210, 241, 252, 394}
# Unknown database on insert: it was dropped, or the server came back empty; migrations go with it.
_SCHEMA_GONE_CODES = {81}


def json_value(v: Any) -> Any:
    """clickhouse-driver values -> what chdb's JSONEachRow gives for the same column."""
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (uuid.UUID, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    return v


class ClickHouseHistory(HistoryStore):
    def __init__(self, url: str, host: str, port: int, user: str, password: str, database: str,
                 tls: dict | None = None, **batching: Any):
        super().__init__(url, **batching)
        self.host, self.port, self.user, self.database = host, port, user, database
        self._password = password
        self.tls = dict(tls or {})  # clickhouse-driver's secure / verify / ca_certs
        self._client: Client | None = None
        self._db_lock = threading.RLock()  # one client, used from the loop and a flush thread
        self._writer: InsertProcess | None = None  # event batches, written by a child process

    def __repr__(self) -> str:  # never show the password
        return f"ClickHouseHistory({self.host}:{self.port}/{self.database})"

    def _connect(self) -> Client:
        if self._client is None:
            # The database may not exist yet: connect to `default`, create it, then use it.
            boot = Client(self.host, port=self.port, user=self.user, password=self._password, database="default",
                          connect_timeout=3, send_receive_timeout=30, **self.tls)
            try:
                boot.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            finally:
                boot.disconnect()
            self._client = Client(self.host, port=self.port, user=self.user, password=self._password,
                                  database=self.database, connect_timeout=3, send_receive_timeout=30, **self.tls)
        return self._client

    def _run(self, fn, writing: bool = False):
        with self._db_lock:
            try:
                return fn(self._connect())
            except _NETWORK_ERRORS as e:
                self._drop_client()
                self._schema_ready = False  # a server that comes back empty needs the schema again
                raise SinkUnavailable(f"ClickHouse at {self.host}:{self.port} is unreachable "
                                      f"({type(e).__name__}: {e}); "
                                      "start the server or fix history.url / --clickhouse") from e
            except ch_errors.ServerException as e:
                if writing and e.code in _SCHEMA_GONE_CODES:
                    self._drop_client()
                    self._schema_ready = False  # the retry re-creates it
                    raise SinkUnavailable(f"ClickHouse at {self.host}:{self.port} lost the history database "
                                          f"({_first_line(e)}); re-creating them on the next try") from e
                if e.code in _RETRYABLE_CODES:
                    self._drop_client()
                    raise SinkUnavailable(f"ClickHouse at {self.host}:{self.port} refused for now: "
                                          f"{_first_line(e)}") from e
                raise HistoryError(f"ClickHouse error: {_first_line(e)}") from e

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.disconnect()
            except Exception:  # already broken; nothing to release
                pass
            self._client = None

    def _execute(self, sql: str) -> None:
        self._run(lambda c: c.execute(sql))

    def _insert(self, table: str, columns: Sequence[Column], data: list[list[Any]]) -> None:
        names = ", ".join(f"`{c.name}`" for c in columns)
        self._run(lambda c: c.execute(f"INSERT INTO {table} ({names}) VALUES", data, columnar=True,
                                      types_check=False), writing=True)

    def prepare(self) -> None:
        """Start the writer process now: it takes a second or two to start, which the first flush
        of a worker should not wait for."""
        self._writer_process().start()

    def _writer_process(self) -> InsertProcess:
        if self._writer is None:
            self._writer = InsertProcess({"url": self.url, "host": self.host, "port": self.port, "user": self.user,
                                          "password": self._password, "database": self.database, "tls": self.tls})
        return self._writer

    def write(self, table: str, rows: Sequence[Any]) -> None:
        """Event batches are converted, encoded and sent by a child process (sinks/insert_process.py):
        that CPU work then runs on another core than the processors."""
        if not rows:
            return
        self._ensure_schema()
        try:
            self.rows_dropped += self._writer_process().write(table, rows)
        except SchemaMaybeGone:
            with self._db_lock:  # as after an in-process failure: reconnect (creating the database) and
                self._drop_client()  # apply the schema again before the retry
                self._schema_ready = False
            raise

    def _select(self, sql: str, settings: dict | None = None) -> list[dict]:
        limit = self.result_limit(settings)
        if limit:
            return self._run(lambda c: self._bounded_rows(c, sql, settings, limit))
        rows, cols = self._run(lambda c: c.execute(sql, with_column_types=True, settings=settings))
        names = [n for n, _ in cols]
        return [{n: json_value(v) for n, v in zip(names, row)} for row in rows]

    def _bounded_rows(self, client: Client, sql: str, settings: dict, limit: int) -> list[dict]:
        """Rows block by block, stopped once their text passes `limit` bytes (strings by length, others 8)."""
        stream = client.execute_iter(sql, with_column_types=True, settings=settings)
        names = [n for n, _ in next(stream)]
        out, size = [], 0
        for row in stream:
            size += sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)
            if size > limit:
                self._drop_client()  # the rest of the stream is not read: the connection is closed instead
                raise self.result_too_large(size, limit)
            out.append({n: json_value(v) for n, v in zip(names, row)})
        return out

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._writer is not None:
                self._writer.close()
            with self._db_lock:
                self._drop_client()


def _first_line(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e)
    return msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
