"""Insert throughput of the history store, per backend, against a peer way of inserting the same rows.

    python benchmarks/history_bench.py [--rows 100000] [--batch 20000]

visitwire path: HistoryStore.add + flush (row dicts -> columns -> columnar insert; chdb via Arrow),
i.e. what the processors pay, including the conversion, and the materialized views fill the rollups.
Peers on the same rows and the same tables:
  ClickHouse: clickhouse-driver row-wise insert (list of tuples), the way most code calls it;
  chdb:       `INSERT ... FORMAT JSONEachRow` with the rows as JSON text (the obvious embedded way).
Prints rows/s per backend and the ratio to the peer.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from engine.services import start_clickhouse
from sinks.history import open_history
from sinks.history_columns import TABLES, to_columns
from sinks.testing.events import make_hits

console = Console(stderr=True)


def _fresh(url: str):
    store = open_history(url)
    store.init_schema()
    return store


def ours(url: str, hits: list[dict], batch: int, label: str, progress: Progress) -> dict:
    """End to end through HistoryStore.add + flush, plus where the time goes (convert vs insert)."""
    store = _fresh(url)
    store.max_batch_rows = batch
    task = progress.add_task(f"{label}: visitwire", total=len(hits))
    t0 = time.perf_counter()
    for start in range(0, len(hits), batch):
        store.add("hits", hits[start:start + batch])
        store.flush()
        progress.advance(task, min(batch, len(hits) - start))
    total = time.perf_counter() - t0
    n = int(store.query("SELECT uniqExact(event_id) AS n FROM hits")[0]["n"])
    store.close()
    assert n == len(hits), f"{label}: wrote {n} of {len(hits)}"
    t0 = time.perf_counter()
    for start in range(0, len(hits), batch):
        to_columns("hits", hits[start:start + batch])
    convert = time.perf_counter() - t0
    return {"rows_s": len(hits) / total, "convert_rows_s": len(hits) / convert,
            "insert_rows_s": len(hits) / max(total - convert, 1e-9)}


def peer_clickhouse_rowwise(url: str, hits: list[dict], batch: int, progress: Progress) -> float:
    """Same conversion, then the driver's row-wise insert (list of tuples)."""
    store = _fresh(url)
    names = ", ".join(f"`{c.name}`" for c in TABLES["hits"])
    task = progress.add_task("clickhouse: peer row-wise", total=len(hits))
    t0 = time.perf_counter()
    for start in range(0, len(hits), batch):
        _, data, _ = to_columns("hits", hits[start:start + batch])
        rows = list(zip(*data))
        store._run(lambda c: c.execute(f"INSERT INTO hits ({names}) VALUES", rows))
        progress.advance(task, len(rows))
    elapsed = time.perf_counter() - t0
    store.close()
    return len(hits) / elapsed


def peer_chdb_json(url: str, hits: list[dict], batch: int, progress: Progress) -> float:
    """Same conversion, then the rows as JSON text: INSERT ... FORMAT JSONEachRow."""
    store = _fresh(url)
    names = [c.name for c in TABLES["hits"]]
    task = progress.add_task("chdb: peer JSONEachRow", total=len(hits))
    t0 = time.perf_counter()
    for start in range(0, len(hits), batch):
        _, data, _ = to_columns("hits", hits[start:start + batch])
        text = b"\n".join(orjson.dumps(dict(zip(names, row))) for row in zip(*data)).decode()
        store._execute(f"INSERT INTO hits FORMAT JSONEachRow {text}")
        progress.advance(task, len(data[0]))
    elapsed = time.perf_counter() - t0
    store.close()
    return len(hits) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=20_000)
    args = ap.parse_args()
    hits = make_hits(args.rows, seed=99, minutes=60)
    results = []
    tmp = tempfile.mkdtemp(prefix="visitwire-history-bench-")
    svc = start_clickhouse(workdir=os.path.join(tmp, "clickhouse"))
    try:
        base = svc.url.rsplit("/", 1)[0]
        with Progress(console=console, transient=True) as progress:
            r = ours(f"{base}/bench_{uuid.uuid4().hex[:8]}", hits, args.batch, "clickhouse", progress)
            peer = peer_clickhouse_rowwise(f"{base}/peer_{uuid.uuid4().hex[:8]}", hits, args.batch, progress)
            results.append(("clickhouse 18.16", r, "driver row-wise", peer))
            r = ours(f"chdb://{tmp}/chdb_ours", hits, args.batch, "chdb", progress)
            peer = peer_chdb_json(f"chdb://{tmp}/chdb_peer", hits, args.batch, progress)
            results.append(("chdb 26 (embedded)", r, "JSONEachRow text", peer))
    finally:
        svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title=f"history insert: {args.rows} hits, batches of {args.batch}, with the rollup views "
                        f"({os.cpu_count()} cores, shared)")
    for col in ("backend", "visitwire rows/s", "of which convert", "of which insert", "peer", "peer rows/s", "ratio"):
        table.add_column(col)
    for backend, r, peer_name, peer in results:
        table.add_row(backend, f"{r['rows_s']:,.0f}", f"{r['convert_rows_s']:,.0f}", f"{r['insert_rows_s']:,.0f}",
                      peer_name, f"{peer:,.0f}", f"{r['rows_s'] / peer:.1f}x")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
