"""ClickHouse event writes in a child process.

Turning event rows into insert columns and encoding them for the native protocol (clickhouse-driver)
is CPU work that holds the GIL: in the worker's process it took the core the processors need, while
the machine's other core sat mostly idle. `InsertProcess` hands each batch of rows (a list of dicts
or config.rows.Columns) to a child Python process (`python -m sinks.insert_process`) through its
stdin/stdout as length-prefixed pickles (config/child_pipe.py); the worker's flush thread just waits
for the answer. The child writes with its own `ClickHouseHistory.write_here`, so bad rows are dropped
and errors are classified and worded exactly as in-process (SinkUnavailable when the server is away,
the schema flagged for re-creation when it came back empty, HistoryError otherwise).

The child exits when its stdin closes (the parent closed it or died); a child that died is started
again by the next insert.
"""
from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from typing import Any, BinaryIO, Sequence

from config.child_pipe import receive, send, start_child
from config.heap import tune_for_batches
from sinks.base import HistoryError, SinkUnavailable

OK, UNAVAILABLE, ERROR = "ok", "unavailable", "error"


class SchemaMaybeGone(SinkUnavailable):
    """The server went away or lost the database: create the schema again before the next insert."""


class InsertProcess:
    """Event batches written by a child process; `write` blocks (GIL released) until it answers."""

    def __init__(self, connection: dict[str, Any]):
        self._connection = connection  # ClickHouseHistory arguments; sent over the pipe, never on a command line
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()  # one insert at a time (the flush thread, or a direct write)

    def write(self, table: str, rows: Sequence[Any]) -> int:
        """Write in the child; returns the rows dropped as bad input. Raises SinkUnavailable
        (SchemaMaybeGone when the schema must be created again) or HistoryError, as in-process."""

        with self._lock:
            try:
                proc = self._child()
                send(proc.stdin, (table, rows))
                kind, message, schema_lost, dropped = receive(proc.stdout)
            except (OSError, EOFError, pickle.PickleError) as e:
                self._stop_child()
                raise SinkUnavailable(f"the ClickHouse writer process failed ({type(e).__name__}: {e}); "
                                      "starting a new one on the next try") from e
        if kind == UNAVAILABLE:
            raise (SchemaMaybeGone if schema_lost else SinkUnavailable)(message)
        if kind == ERROR:
            raise HistoryError(message)
        return dropped

    def start(self) -> None:
        """Start the child now rather than at the first write."""
        with self._lock:
            self._child()

    def _child(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = start_child("sinks.insert_process")
            send(self._proc.stdin, self._connection)
        return self._proc

    def _stop_child(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # the child's cue to exit
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(5)
        finally:
            proc.stdout.close()

    def close(self) -> None:
        with self._lock:
            self._stop_child()


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child: write what arrives until stdin closes; answer each batch with
    (kind, message, schema_lost, rows dropped)."""
    from sinks.clickhouse import ClickHouseHistory

    # A batch unpickles into hundreds of thousands of objects (page view dicts among them): with CPython's
    # default threshold the collector rescanned them every 700 allocations, ~10% of this process's time;
    # and glibc handed the batch's memory back after each write, to fault it in again for the next
    tune_for_batches()
    store = ClickHouseHistory(**receive(stdin))
    try:
        while True:
            try:
                table, rows = receive(stdin)
            except EOFError:
                return
            store._schema_ready = True  # the parent keeps the schema; this only notices when it is gone
            try:
                answer = (OK, "", False, store.write_here(table, rows))
            except SinkUnavailable as e:
                answer = (UNAVAILABLE, str(e), not store._schema_ready, 0)
            except HistoryError as e:
                answer = (ERROR, str(e), False, 0)
            send(stdout, answer)
    finally:
        store.close()


if __name__ == "__main__":
    from config.logs import configure_helper_logging

    configure_helper_logging("history-writer")
    serve(sys.stdin.buffer, sys.stdout.buffer)
