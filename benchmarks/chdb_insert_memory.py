"""Does chdb's memory level off under many small inserts? The engine's RSS in benchmarks/soak.py follows the
number of history inserts (one per table per flush), so this runs chdb alone at that shape.

    .venv/bin/python benchmarks/chdb_insert_memory.py [--inserts 8000] [--rows 50]

Inserts --rows rows at a time into a MergeTree table in a fresh chdb directory (merges run meanwhile) and
prints the process's RSS every tenth of the run, then the growth per insert (least squares over a sample
every 50 inserts; merges make single samples jump by 30 MB) over the first and the last halves after a
warm-up of 200 inserts: a leak keeps its rate, a cache or allocator that fills levels off.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

from chdb import session
from proc_memory import rss_mb, slope

WARM_UP = 200
SAMPLE_EVERY = 50


def kb_per_insert(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (insert, RSS MB) points, in KB per insert."""
    return 1024 * slope(points)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inserts", type=int, default=8000)
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--old-parts-lifetime", type=int, default=0, help="MergeTree setting (s); 0 = default 480")
    args = ap.parse_args()
    db = session.Session(tempfile.mkdtemp(prefix="chdb-insert-memory-"))
    lifetime = f" SETTINGS old_parts_lifetime = {args.old_parts_lifetime}" if args.old_parts_lifetime else ""
    db.query("CREATE TABLE t (a UInt64, b String) ENGINE = MergeTree ORDER BY a" + lifetime)
    middle = WARM_UP + (args.inserts - WARM_UP) // 2
    samples: list[tuple[int, int]] = []
    t0 = time.monotonic()
    for i in range(args.inserts):
        db.query(f"INSERT INTO t SELECT number + {i * args.rows}, repeat('x', 200) FROM numbers({args.rows})")
        if i >= WARM_UP and i % SAMPLE_EVERY == 0:
            samples.append((i, rss_mb()))
        if i % max(1, args.inserts // 10) == 0:
            print(f"{i:6d} inserts  {time.monotonic() - t0:5.0f} s  RSS {rss_mb():.0f} MB", flush=True)
    first = kb_per_insert([p for p in samples if p[0] < middle])
    last = kb_per_insert([p for p in samples if p[0] >= middle])
    print(f"\nafter {WARM_UP} inserts: {first:+.1f} KB per insert over the next {middle - WARM_UP}, "
          f"{last:+.1f} KB per insert over the last {args.inserts - middle} "
          f"({'levels off' if last < first / 2 else 'keeps growing'}); RSS at the end {rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
