"""Does chdb's memory level off under many small inserts? The engine's RSS in benchmarks/soak.py followed the
number of history inserts (one per table per flush), so this runs the engine's history store alone at that shape.

    .venv/bin/python benchmarks/chdb_insert_memory.py [--flushes 3000] [--rows 20] [--rate 4] [--bare]
        [--set NAME=VALUE ...] [--table-set NAME=VALUE ...]

A fresh chdb store (sinks/chdb_store.py, visitwire's migrated schema with its materialized views) takes
--flushes flushes of the worker's shape: --rows hits, page views and sessions, one insert per table (the
Arrow path the engine uses), --rate flushes a second (0: flat out; the engine at the soak's ~25 hits/s makes
about one a second, and chdb's background cleanup of merged parts runs on a clock). Every tenth of the run it
prints the RSS, the anonymous part of it (the shared library's pages count in RSS too, and fill in once), what
chdb's allocator (jemalloc) holds and the data parts in memory; then the RSS slope in MB per minute (least
squares over a sample every hundredth of the run) over the first and the last halves after the first tenth:
a leak keeps its rate, a cache or allocator that fills levels off.

--bare opens chdb without the store's MergeTree settings (MERGE_TREE_SETTINGS in sinks/chdb_store.py): the figure
before them. --set adds or overrides one (e.g. --set max_cleanup_delay_period=300, chdb's default).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from proc_memory import rss_mb, slope

from sinks import chdb_store
from sinks.testing.events import make_hits, make_pageviews, make_sessions


def anon_mb() -> float:
    """RssAnon of this process in MB: RSS without the mapped files (chdb's ~230 MB library among them)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


def jemalloc_mb(store) -> tuple[float, float]:
    """What chdb's jemalloc has allocated and keeps resident, in MB (malloc_stats_print's totals line)."""
    text = store._query("SELECT stats FROM system.jemalloc_stats", "TSVRaw").bytes().decode()
    m = re.search(r"Allocated: (\d+), active: \d+, metadata: \d+.*?resident: (\d+)", text)
    return (int(m[1]) / 2**20, int(m[2]) / 2**20) if m else (float("nan"), float("nan"))


def parts(store) -> str:
    """Data parts chdb holds in memory: active, and outdated (merged away, kept until old_parts_lifetime)."""
    rows = store._query("SELECT metric, value FROM system.metrics WHERE metric IN ('PartsActive', 'PartsOutdated')",
                        "CSV").bytes().decode().replace('"', "").split()
    found = dict(r.split(",") for r in rows)
    return f"parts {found.get('PartsActive', '?')} active, {found.get('PartsOutdated', '?')} outdated"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flushes", type=int, default=600)
    ap.add_argument("--rows", type=int, default=25, help="rows per table per flush")
    ap.add_argument("--rate", type=float, default=1.0, help="flushes per second (0: as fast as they go)")
    ap.add_argument("--bare", action="store_true", help="without the store's MergeTree settings")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a MergeTree setting")
    args = ap.parse_args()
    settings = {} if args.bare else dict(chdb_store.MERGE_TREE_SETTINGS)
    for item in args.set:
        name, _, value = item.partition("=")
        settings[name] = value
    chdb_store.MERGE_TREE_SETTINGS = settings
    store = chdb_store.ChdbHistory("chdb://bench", tempfile.mkdtemp(prefix="chdb-insert-memory-"))
    store.init_schema()
    warm_up, sample_every = args.flushes // 10, max(1, args.flushes // 100)
    print(f"MergeTree settings: {settings or 'chdb defaults'}; {args.flushes} flushes of {args.rows} rows per table "
          f"at {args.rate:g}/s", flush=True)
    samples: list[tuple[float, float]] = []  # (minute, RSS MB), every SAMPLE_EVERY flushes after the warm-up
    t0, cpu0 = time.monotonic(), time.process_time()
    for i in range(args.flushes):
        if args.rate:
            time.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))
        seed = i + 10
        store.write("hits", make_hits(args.rows, seed=seed, prefix=f"f{i}-"))
        store.write("pageviews", make_pageviews(args.rows, seed=seed))
        store.write("sessions", make_sessions(args.rows, seed=seed))
        if i >= warm_up and i % sample_every == 0:
            samples.append(((time.monotonic() - t0) / 60, rss_mb()))
        if i % max(1, args.flushes // 10) == 0 or i == args.flushes - 1:
            alloc, resident = jemalloc_mb(store)
            print(f"{i:6d} flushes  {time.monotonic() - t0:5.0f} s  RSS {rss_mb():.0f} MB (anonymous {anon_mb():.0f})"
                  f"  jemalloc allocated {alloc:.0f} MB, resident {resident:.0f}; {parts(store)}", flush=True)
    minutes = (time.monotonic() - t0) / 60
    half = len(samples) // 2
    first, last = slope(samples[:half]), slope(samples[half:])
    per_flush = 1024 * last * minutes / args.flushes
    print(f"\nafter {warm_up} flushes: {first:+.2f} MB/min over the next {samples[half][0] - samples[0][0]:.1f} min, "
          f"{last:+.2f} MB/min ({per_flush:+.1f} KB per flush) over the last {samples[-1][0] - samples[half][0]:.1f} "
          f"({'levels off' if last < first / 2 else 'keeps growing'}); RSS at the end {rss_mb():.0f} MB; "
          f"{time.process_time() - cpu0:.0f} cpu-s for {args.flushes} flushes ({3 * args.flushes} inserts)")
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
