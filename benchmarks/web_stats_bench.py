"""How long GET /api/stats takes on a day of history, against the rollup peer on the same input.

/api/stats answers whole-minute ranges without a breakdown from the per-minute rollups and
everything else from the raw tables with a dedup subquery (exact under replays, any
dimension). Timed here: both of our paths and the peer, sinks/reads/queries.
pageviews_per_interval (the history room's rollup query), on the same input. All must return
the same numbers (checked); median of --repeat runs; ratios against the peer.

    .venv/bin/python benchmarks/web_stats_bench.py --rows 300000
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sinks.history import open_history
from sinks.reads.queries import pageviews_per_interval
from sinks.reads.stats import compute_stats, parse_stats_request

DAY = 86400
START = 1767225600  # 2026-01-01T00:00:00Z


def pageview_rows(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    ts = START + np.sort(rng.uniform(0, DAY, n))
    visitors = rng.integers(0, max(1, n // 8), n)
    paths = rng.integers(0, 500, n)
    for i in range(n):
        yield {"event_id": f"e{i:09d}", "ts": float(ts[i]), "visitor_id": f"v{visitors[i]:08d}", "member_id": "",
               "session_id": f"s{visitors[i]:08d}", "host": "shop", "path": f"/product/{paths[i]}", "query": "",
               "method": "GET", "status": 200, "latency_ms": 12.0, "referrer": "", "referrer_host": "",
               "channel": "direct", "utm_source": "", "utm_medium": "", "utm_campaign": "", "utm_term": "",
               "utm_content": "", "browser": "Chrome", "os": "Linux", "device": "desktop", "is_bot": False,
               "page_group": "product", "section": "shop", "product_id": str(paths[i]), "category": "", "menu": "",
               "goal": "", "goal_value": 0.0}


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], fn()  # one untimed run: caches warm for every contender alike
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_history(f"chdb://{tmp}/chdb")
        batch, chunk = [], 50_000
        with Progress(console=console) as progress:
            task = progress.add_task("writing page views", total=args.rows)
            for row in pageview_rows(args.rows):
                batch.append(row)
                if len(batch) == chunk:
                    store.write("pageviews", batch)
                    progress.advance(task, len(batch))
                    batch = []
            if batch:
                store.write("pageviews", batch)
                progress.advance(task, len(batch))
        day = {"from": str(START), "to": str(START + DAY)}
        table = Table(title=f"/api/stats on {args.rows:,} page views (chdb, median of {args.repeat})")
        for col in ("query", "ours: rollup ms", "ours: raw ms", "peer ms", "rollup/peer", "raw/peer", "same numbers"):
            table.add_column(col, justify="right")
        for name, interval, step in (("day per hour", "hour", 3600), ("day per minute", "minute", 60)):
            req = parse_stats_request({**day, "interval": interval, "metrics": "pageviews,visitors"})
            ms_roll, r_roll = timed(lambda: compute_stats(store.query, req), args.repeat)
            ms_raw, r_raw = timed(lambda: compute_stats(store.query, req, prefer_rollups=False), args.repeat)
            ms_peer, r_peer = timed(lambda: pageviews_per_interval(store, START, START + DAY, step), args.repeat)
            rows = lambda series: [(r["t"], r["pageviews"], r["visitors"]) for r in series]  # noqa: E731
            same = rows(r_roll["series"]) == rows(r_raw["series"]) == rows(r_peer)
            table.add_row(name, f"{ms_roll:.1f}", f"{ms_raw:.1f}", f"{ms_peer:.1f}", f"{ms_roll / ms_peer:.2f}x",
                          f"{ms_raw / ms_peer:.2f}x", str(same))
        ms_by, _ = timed(lambda: compute_stats(store.query, parse_stats_request(
            {**day, "by": "page", "metrics": "pageviews,visitors"})), args.repeat)
        table.add_row("day by page (raw only)", "-", f"{ms_by:.1f}", "-", "-", "-", "-")
        store.close()
    Console(width=140).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
