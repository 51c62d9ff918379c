"""Soak: `visitwire demo` at a steady crowd for N minutes; the RSS of every process, each minute, must stay flat.

    .venv/bin/python benchmarks/soak.py --minutes 40 --visitors 60

The demo runs the whole embedded pipeline (shop, crowd, live capture on lo, tansu, redis-server, the
worker with its hits reader, chdb, the screen). Every --every seconds the script reads VmRSS of the demo
process and each of its descendants from /proc and prints one row. The table gives each process's RSS at
the start, after the warm-up sample, at the end, and its least-squares slope over the whole run after the
warm-up and over its last --last part (a third by default). The verdict is that last slope: flat when,
carried on for an hour, it adds at most max(GROWTH_MB, GROWTH_FRACTION of the process's size); caches and
allocators that fill once (chdb's, the first 10-25 minutes) show in the growth, not in the last part's
slope (run 30 minutes or more); the engine, ~750 MB, fails from a steady +1.25 MB/min. The history's inserts a
minute and a packet's delay to its history flush (the engine's /metrics) are printed too. Exit code 1 when a
process was not flat or the demo failed.
Needs root (live capture on lo).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from engine.proctree import descendants
from proc_memory import rss_mb, slope  # slope of (minute, MB): MB per minute

SAMPLE_EVERY_S = 60.0
GROWTH_MB = 40.0          # allocator noise; a leak of 0.7 MB/min grows past this in an hour
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


def free_port() -> int:
    """A free loopback port for the demo's screen: the default 8787 may be another engine's."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def history_figures(data_dir: str) -> dict[str, float]:
    """From the running engine's /metrics: inserts into the history (one per table per flush) and the delay from
    a packet's time to its history flush (p50/p99 since the start, ms); {} when it does not answer."""
    try:
        info = json.loads((Path(data_dir) / "engine.json").read_text())
        req = urllib.request.Request(info["web_url"].rstrip("/") + "/metrics",
                                     headers={"Authorization": f"Bearer {info['token']}"})
        text = urllib.request.urlopen(req, timeout=10).read().decode()
    except (OSError, ValueError, KeyError):
        return {}
    inserts = re.findall(r'^visitwire_sink_write_seconds_count\{sink="history",table="\w+"\} (\S+)$', text, re.M)
    out = {"inserts": sum(map(float, inserts))}
    for q, name in (("0.5", "p50"), ("0.99", "p99")):
        m = re.search(rf'^visitwire_delay_milliseconds\{{quantile="{q}",sink="history"\}} (\S+)$', text, re.M)
        if m:
            out[name] = float(m[1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=40.0)
    ap.add_argument("--visitors", type=int, default=60)
    ap.add_argument("--every", type=float, default=SAMPLE_EVERY_S, help="seconds between samples")
    ap.add_argument("--last", type=float, default=1 / 3, help="the part of the run the verdict's slope is over")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("soak: the demo captures on lo and needs root", file=sys.stderr)
        return 2
    data = tempfile.mkdtemp(prefix="visitwire-soak-")
    env = {**os.environ, "VISITWIRE_DATA_DIR": data, "PYTHONUNBUFFERED": "1"}
    with open(Path(data) / "demo.log", "wb") as log:
        demo = subprocess.Popen([sys.executable, "-m", "engine.cli", "demo", "--duration", str(args.minutes * 60),
                                 "--visitors", str(args.visitors), "--web-port", str(free_port())], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    print(f"soak: visitwire demo for {args.minutes:g} min, {args.visitors} visitors; log {data}/demo.log", flush=True)
    samples: list[dict[str, float]] = []
    history: list[tuple[float, dict[str, float]]] = []  # (minute, history_figures)
    t0 = time.monotonic()
    while demo.poll() is None:
        time.sleep(args.every)
        tree = {demo.pid: "demo", **descendants(demo.pid)}
        row = {label(p, n): rss_mb(p) for p, n in tree.items()}
        figures = history_figures(data)
        if figures:
            history.append(((time.monotonic() - t0) / 60, figures))
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
    last_from = len(warm) - max(3, round(len(warm) * args.last))
    last_min = (len(warm) - 1 - max(0, last_from)) * args.every / 60
    print(f"\nprocess                      at start  after warm-up  at the end   growth   slope after warm-up"
          f"  over the last {last_min:.0f} min   verdict")
    for name in sorted(set(warm[0]) & set(warm[-1])):
        series = [(i * args.every / 60, s[name]) for i, s in enumerate(warm) if name in s]
        growth, rate, last = warm[-1][name] - warm[0][name], slope(series), slope(series[last_from:])
        limit = max(GROWTH_MB, GROWTH_FRACTION * warm[0][name])
        ok = last * HORIZON_MIN <= limit
        flat &= ok
        print(f"{name:28s} {samples[0].get(name, float('nan')):7,.0f} MB {warm[0][name]:9,.0f} MB "
              f"{warm[-1][name]:8,.0f} MB {growth:+7,.0f} MB {rate:+9.2f} MB/min {last:+15.2f} MB/min     "
              f"{'flat' if ok else 'GROWS'}")
    if len(history) >= 2:
        (m0, f0), (m1, f1) = history[0], history[-1]
        per_min, nan = (f1["inserts"] - f0["inserts"]) / (m1 - m0), float("nan")
        print(f"\nhistory: {per_min:,.0f} inserts a minute ({f1['inserts']:,.0f} in all); a packet's time to its "
              f"history flush p50 {f1.get('p50', nan) / 1000:.1f} s, p99 {f1.get('p99', nan) / 1000:.1f} s "
              "(since the start)")
    print(f"\ndemo exit code {code}; memory {'flat' if flat else 'NOT flat'} (limit per process: its slope over "
          f"the last {last_min:.0f} min, carried on for {HORIZON_MIN:.0f} min, adds at most +{GROWTH_MB:.0f} MB "
          f"or +{GROWTH_FRACTION:.0%})")
    return 0 if flat and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
