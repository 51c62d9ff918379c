"""Analytics query times per backend, against a peer computing the same figures in pandas.

    python benchmarks/analytics_bench.py [--visitors 4000] [--backends chdb,clickhouse]

Data: sinks/testing/events.py generate (deterministic shop history) scaled by --visitors,
written through the HistoryStore. visitwire path: the analytics functions (SQL in the
store: ClickHouse 18.16 server started here, or embedded chdb). Peer: the same figures
computed with pandas on the same rows already in memory (no I/O: a generous peer).
Prints the seconds per query, page views/s, and the ratio peer / visitwire (>1 = faster).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid

import pandas as pd
from rich.console import Console
from rich.table import Table

from sinks.history import open_history
from sinks.reads import funnels, profiles, recommendations, usage
from sinks.testing.events import generate

FUNNEL = ["/product/{product_id}", "/cart", "/checkout"]


def pandas_peer(pageviews: list[dict]) -> dict[str, float]:
    """The same figures in pandas: product views + visitors, co-visitation pairs, top visitors, funnel."""
    times = {}
    df = pd.DataFrame(pageviews)
    df = df[~df.is_bot].drop_duplicates("event_id")
    t = time.perf_counter()
    prod = df[df.product_id != ""].groupby("product_id").agg(views=("event_id", "size"),
                                                            visitors=("visitor_id", "nunique"))
    times["product usage"] = time.perf_counter() - t
    t = time.perf_counter()
    items = df[df.product_id != ""][["session_id", "product_id"]].drop_duplicates()
    pairs = items.merge(items, on="session_id")
    pairs = pairs[pairs.product_id_x != pairs.product_id_y].groupby(["product_id_x", "product_id_y"]).size()
    pairs = pairs[pairs >= 3]
    times["co-visitation"] = time.perf_counter() - t
    t = time.perf_counter()
    per = df.groupby(["visitor_id", "session_id"]).ts.agg(["min", "max", "size"])
    per["span"] = per["max"] - per["min"]
    top = per.groupby(level=0).agg(visits=("size", "size"), pageviews=("size", "sum"), time=("span", "sum"))
    top.nlargest(20, "pageviews")
    times["top visitors"] = time.perf_counter() - t
    t = time.perf_counter()
    import re

    res = [re.compile(funnels.pattern_regex(s)) for s in FUNNEL]
    reached = [0] * len(FUNNEL)
    for _, paths in df.sort_values(["ts", "event_id"]).groupby("session_id").path:
        for k in range(funnels.level_reached(list(paths), res)):
            reached[k] += 1
    times["funnel"] = time.perf_counter() - t
    assert len(prod) and len(pairs) >= 0
    return times


def visitwire_times(store) -> dict[str, float]:
    times = {}
    for name, fn in (("product usage", lambda: usage.usage(store, "product_id", limit=1000)),
                     ("co-visitation", lambda: recommendations.co_visitation(store, 3)),
                     ("top visitors", lambda: profiles.top_visitors(store, limit=20)),
                     ("funnel", lambda: funnels.funnel(store, "bench", FUNNEL))):
        fn()  # warm-up (first query opens parts, caches marks)
        t = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visitors", type=int, default=4000)
    ap.add_argument("--backends", default="chdb,clickhouse")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 140))
    with console.status("generating the shop history ..."):
        ds = generate(seed=1, visitors=args.visitors, members=args.visitors // 4, products=200)
    n = len(ds.pageviews)
    console.print(f"{n:,} page views, {len(ds.hits):,} hits, {len(ds.sessions):,} sessions")
    with console.status("pandas peer ..."):
        peer = pandas_peer(ds.pageviews)
    table = Table(title=f"analytics queries over {n:,} page views (seconds; ratio = pandas / visitwire)")
    table.add_column("query")
    table.add_column("pandas (in memory)", justify="right")
    results = {}
    for backend in args.backends.split(","):
        tmp = tempfile.mkdtemp(prefix="vw-analytics-bench-")
        server = None
        if backend == "chdb":
            url = f"chdb://{tmp}/chdb"
        else:
            from engine.services import start_clickhouse

            server = start_clickhouse()
            url = server.url.rsplit("/", 1)[0] + f"/bench_{uuid.uuid4().hex[:6]}"
        try:
            store = open_history(url)
            store.init_schema()
            with console.status(f"{backend}: writing ..."):
                store.write("hits", ds.hits)
                store.write("pageviews", ds.pageviews)
            with console.status(f"{backend}: querying ..."):
                results[backend] = visitwire_times(store)
            store.close()
        finally:
            if server:
                server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        table.add_column(f"{backend} s", justify="right")
        table.add_column(f"{backend} pv/s", justify="right")
        table.add_column("ratio", justify="right")
    for q, peer_s in peer.items():
        row = [q, f"{peer_s:.3f}"]
        for backend in results:
            s = results[backend][q]
            row += [f"{s:.3f}", f"{n / s:,.0f}", f"{peer_s / s:.2f}x"]
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
