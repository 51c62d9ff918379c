"""Soak: `visitwire demo` at a steady crowd for N minutes; the RSS of every process, each minute, must stay flat.

    .venv/bin/python benchmarks/soak.py --minutes 10 --visitors 60

The demo runs the whole embedded pipeline (shop, crowd, live capture on lo, tansu, redis-server, the
worker with its hits reader, chdb, the screen). Every --every seconds the script reads VmRSS of the demo
process and each of its descendants from /proc and prints one row. The verdict takes each process's RSS
from the warm-up sample on: flat when it grew by at most max(GROWTH_MB, GROWTH_FRACTION of it) and its
least-squares slope, carried on for an hour, stays under that too (a 5-minute run cannot hide a steady
10 MB/min behind the limit). Exit code 1 when a process was not flat or the demo failed.
Needs root (live capture on lo).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.proctree import descendants
from proc_memory import rss_mb, slope  # slope of (minute, MB): MB per minute

SAMPLE_EVERY_S = 60.0
GROWTH_MB = 40.0          # allocator noise and caches that fill once; a leak grows past this in 10 minutes
GROWTH_FRACTION = 0.10
HORIZON_MIN = 60.0        # a slope is judged by what it adds in an hour


def label(pid: int, name: str) -> str:
    """A readable name: the role from the command line, the pid to tell two of a kind apart."""
    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        text = ""
    for key, role in (("hits_reader", "hits reader"), ("resource_tracker", "mp tracker"),
                      ("multiprocessing", "capture child"), ("tansu", "tansu"),
                      ("redis-server", "redis-server"), ("engine.cli", "engine")):
        if key in text or key in name:
            return f"{role}[{pid}]"
    return f"{name}[{pid}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--visitors", type=int, default=60)
    ap.add_argument("--every", type=float, default=SAMPLE_EVERY_S, help="seconds between samples")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("soak: the demo captures on lo and needs root", file=sys.stderr)
        return 2
    data = tempfile.mkdtemp(prefix="visitwire-soak-")
    env = {**os.environ, "VISITWIRE_DATA_DIR": data, "PYTHONUNBUFFERED": "1"}
    with open(Path(data) / "demo.log", "wb") as log:
        demo = subprocess.Popen([sys.executable, "-m", "engine.cli", "demo", "--duration", str(args.minutes * 60),
                                 "--visitors", str(args.visitors)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[1])
    print(f"soak: visitwire demo for {args.minutes:g} min, {args.visitors} visitors; log {data}/demo.log", flush=True)
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()
    while demo.poll() is None:
        time.sleep(args.every)
        tree = {demo.pid: "demo", **descendants(demo.pid)}
        row = {label(p, n): rss_mb(p) for p, n in tree.items()}
        if demo.poll() is not None:
            break
        samples.append({k: v for k, v in row.items() if v is not None})
        print(f"{(time.monotonic() - t0) / 60:5.1f} min  "
              + "  ".join(f"{k} {v:,.0f} MB" for k, v in sorted(samples[-1].items())), flush=True)
    code = demo.wait()
    if len(samples) < 3:
        print(f"soak: only {len(samples)} samples (demo exit {code}); run longer", file=sys.stderr)
        return 1
    # from the warm-up sample on (caches and compiled code are in), while every process still ran: a sample
    # taken as the demo stops (the children gone, the engine flushing) says nothing about a leak
    warm = [s for s in samples[1:] if set(s) >= set(samples[1])]
    flat = True
    print("\nprocess                      at start   after warm-up   at the end   growth    slope"
          "          verdict")
    for name in sorted(set(warm[0]) & set(warm[-1])):
        series = [(i * args.every / 60, s[name]) for i, s in enumerate(warm) if name in s]
        growth, rate = warm[-1][name] - warm[0][name], slope(series)
        limit = max(GROWTH_MB, GROWTH_FRACTION * warm[0][name])
        ok = growth <= limit and rate * HORIZON_MIN <= limit
        flat &= ok
        print(f"{name:28s} {samples[0].get(name, float('nan')):8,.0f} MB {warm[0][name]:10,.0f} MB "
              f"{warm[-1][name]:9,.0f} MB {growth:+7,.0f} MB {rate:+7.2f} MB/min   "
              f"{'flat' if ok else 'GROWS'}")
    print(f"\ndemo exit code {code}; memory {'flat' if flat else 'NOT flat'} "
          f"(limit per process, from the warm-up sample to the end and for its slope over "
          f"{HORIZON_MIN:.0f} min: +{GROWTH_MB:.0f} MB or +{GROWTH_FRACTION:.0%})")
    return 0 if flat and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
