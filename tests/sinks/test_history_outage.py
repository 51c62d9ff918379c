"""ClickHouse goes away mid-stream: writes fail loudly, rows stay buffered, nothing is lost or doubled."""
from __future__ import annotations

import pytest

from engine.services import free_port, start_clickhouse
from sinks.base import SinkUnavailable
from sinks.history import open_history
from sinks.reads import queries as hq
from sinks.testing.events import make_hits

pytestmark = pytest.mark.integration


def test_killed_server_keeps_rows_and_writes_them_after_restart(tmp_path):
    port, workdir = free_port(), str(tmp_path / "clickhouse")
    svc = start_clickhouse(port=port, workdir=workdir)
    store = open_history(svc.url, flush_interval_s=0.05, retry_backoff_s=(0.05, 0.05))
    try:
        hits = make_hits(300, seed=11)
        store.add("hits", hits[:100])
        assert store.flush() == 100

        svc.kill()
        store.add("hits", hits[100:])
        with pytest.raises(SinkUnavailable, match="unreachable.*start the server"):
            store.flush()
        assert store.pending() == 200  # kept, in order, for the next try
        with pytest.raises(SinkUnavailable):
            store.write("hits", hits[:1])  # direct writes say so too

        svc = start_clickhouse(port=port, workdir=workdir)  # same port and data: reconnects by itself
        assert store.flush() == 200
        assert store.pending() == 0
        counts = hq.event_counts(store)
        assert counts["hits"] == 300
        per_minute = hq.hits_per_interval(store, min(h["ts"] for h in hits), max(h["ts"] for h in hits) + 1)
        assert sum(r["hits"] for r in per_minute) == 300
    finally:
        store.close()
        svc.stop()


def test_server_back_empty_gets_the_schema_again(tmp_path):
    # A replacement server with a fresh data directory: the store re-creates the tables before writing.
    port = free_port()
    svc = start_clickhouse(port=port, workdir=str(tmp_path / "a"))
    store = open_history(svc.url, flush_interval_s=0.05, retry_backoff_s=())
    try:
        store.add("hits", make_hits(10, seed=12))
        store.flush()
        svc.kill()
        store.add("hits", make_hits(20, seed=13))
        with pytest.raises(SinkUnavailable):
            store.flush()
        svc = start_clickhouse(port=port, workdir=str(tmp_path / "b"))
        assert store.flush() == 20
        assert hq.event_counts(store)["hits"] == 20
    finally:
        store.close()
        svc.stop()


def test_dropped_database_is_recreated_on_the_next_write(clickhouse_server):
    url = clickhouse_server.url.rsplit("/", 1)[0] + "/dropped_db"
    store = open_history(url, flush_interval_s=0.05, retry_backoff_s=(0.05,))
    try:
        store.add("hits", make_hits(10, seed=14))
        store.flush()
        store._execute("DROP DATABASE dropped_db")
        store.add("hits", make_hits(15, seed=15))
        assert store.flush() == 15  # first try fails, the retry re-creates the schema
        assert hq.event_counts(store)["hits"] == 15
    finally:
        store.close()
