"""Capture throughput: visitwire vs tshark, dpkt, pure Python and scapy on the same pcap, one core.

    .venv/bin/python benchmarks/capture_bench.py [--transactions 150000] [--quick]

Every contender reads the same file (benchmarks/gen_pcap.py, cached under benchmarks/out/)
in this run; the table shows transactions/s, packets/s, visitwire's speed-up over each and
whether each found exactly the generator's transactions (set of (client_ip, uri)).
visitwire is measured end to end: pcap reader -> Decoder -> events fully built as JSON lines
(Decoder.feed_lines, as `visitwire capture` does) -> written to /dev/null. numba compile time is reported apart:
a fresh process with an
empty numba cache vs a second one reusing the cache.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gen_pcap import SERVER_PORT, ensure_pcap, load_truth
from peers import PeerResult, run_dpkt, run_pure_python, run_scapy, run_tshark

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

TARGETS = {"tx_per_s": 100_000, "tshark": 20, "dpkt": 8, "scapy+layers.http": 100}


def run_visitwire(path: str, packets_hint: int = 0) -> tuple[PeerResult, list[dict]]:
    from capture.agent import tune_gc
    from capture.decoder import Decoder
    from capture.outputs import JsonlOutput
    from capture.pcapfile import read_pcap_batches
    from config.settings import Settings

    settings = Settings(capture={"ports": [SERVER_PORT]})
    tune_gc()  # as `visitwire capture` does
    t0 = time.perf_counter()
    decoder = Decoder(settings)
    kept: list = []
    with open(os.devnull, "wb") as devnull:
        out = JsonlOutput(devnull)
        for batch in read_pcap_batches(path):
            lines = decoder.feed_lines(batch)
            out.write(lines)
            kept.append(lines)
        events = decoder.close()
        out.write(events)
        out.close()
    secs = time.perf_counter() - t0
    kept = [e for lines in kept for e in lines.dicts()] + events  # checked after the clock stops
    keys = {(e["client_ip"], e["uri"]) for e in kept}
    return PeerResult("visitwire", len(kept), sum(e["status"] is not None for e in kept),
                      decoder.stats["packets"], secs, keys), kept


def warm_up() -> float:
    """Compile (or load) the numba kernels on a small file so the timed run measures steady state."""
    t0 = time.perf_counter()
    run_visitwire(str(ensure_pcap(2000, seed=7, quiet=True)))
    return time.perf_counter() - t0


_STARTUP = """
import sys, time
t0 = time.perf_counter()
from gen_pcap import ensure_pcap
from capture_bench import run_visitwire
run_visitwire(str(ensure_pcap(2000, seed=7, quiet=True)))
print(time.perf_counter() - t0)
"""


def startup_times() -> tuple[float, float]:
    """Import + first small file in a fresh process: empty numba cache, then the cache it left."""
    ensure_pcap(2000, seed=7, quiet=True)
    code = _STARTUP  # run in HERE: gen_pcap and capture_bench import from there
    with tempfile.TemporaryDirectory(prefix="vw-numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        times = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                                 cwd=HERE)
            if out.returncode != 0:
                raise RuntimeError(f"start-up probe failed:\n{out.stderr[-2000:]}")
            times.append(float(out.stdout.strip().splitlines()[-1]))
    return times[0], times[1]


def check_fields(events: list[dict], truth: list[dict]) -> int:
    """Transactions whose status and body bytes match the generator's (visitwire only)."""
    want = {(t["client_ip"], t["uri"]): (t["status"], t["resp_bytes"]) for t in truth}
    return sum(want.get((e["client_ip"], e["uri"])) == (e["status"], e["resp_bytes"]) for e in events)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=150_000)
    ap.add_argument("--quick", action="store_true", help="20k transactions, smaller scapy subsample")
    ap.add_argument("--scapy-packets", type=int, default=20_000, help="scapy runs on this many packets, extrapolated")
    ap.add_argument("--skip", default="", help="comma-separated peers to leave out: tshark,dpkt,python,scapy")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the last one)")
    ap.add_argument("--profile", action="store_true", help="also print where visitwire spends its time (cProfile)")
    ap.add_argument("--kafka", action="store_true", help="also time publishing the events to an embedded tansu")
    args = ap.parse_args()
    if args.quick:
        args.transactions = min(args.transactions, 20_000)
        args.scapy_packets = min(args.scapy_packets, 5_000)
    skip = set(filter(None, args.skip.split(",")))

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 170)
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # one core for everyone, children (tshark) included
    path = str(ensure_pcap(args.transactions))
    truth = load_truth(Path(path))
    truth_keys = {(t["client_ip"], t["uri"]) for t in truth}
    console.print(f"[bold]capture benchmark[/] on {path} ({os.path.getsize(path) / 1e6:.0f} MB, "
                  f"{len(truth)} transactions), pinned to CPU {cpu}")

    with console.status("numba start-up (fresh process, empty cache then cached)..."):
        cold, warm = startup_times()
        warm_up()
    with console.status("visitwire..."):
        ours, events = run_visitwire(path)
    packets = ours.packets
    results = [ours]
    peers = [("tshark", lambda: run_tshark(path, SERVER_PORT, packets)),
             ("dpkt", lambda: run_dpkt(path, SERVER_PORT)),
             ("python", lambda: run_pure_python(path, SERVER_PORT)),
             ("scapy", lambda: run_scapy(path, SERVER_PORT, args.scapy_packets))]
    for name, fn in peers:
        if name in skip:
            continue
        with console.status(f"{name}..."):
            results.append(fn())

    table = Table(title=f"HTTP transactions from a {len(truth)}-transaction pcap, 1 core")
    for col in ("parser", "transactions", "same as truth", "seconds", "transactions/s", "packets/s",
                "visitwire speed-up"):
        table.add_column(col, justify="right" if col != "parser" else "left")
    our_rate = ours.transactions / ours.seconds
    for r in results:
        if r.extrapolated_from:
            # timed on the first packets only: scale by the share of packets processed
            share = r.extrapolated_from / packets
            tx_rate = r.transactions / r.seconds if r.transactions else 0.0
            pkt_rate = r.packets / r.seconds
            secs = f"{r.seconds / share:.1f} (extrapolated from {r.extrapolated_from} packets)"
            same = f"{r.transactions} of ~{int(len(truth) * share)} (subsample)"
            speedup = (ours.packets / ours.seconds) / pkt_rate
        else:
            tx_rate = r.transactions / r.seconds
            pkt_rate = r.packets / r.seconds
            secs = f"{r.seconds:.2f}"
            ok = r.keys == truth_keys and r.transactions == len(truth)
            same = ("yes" if ok else f"no: {len(truth_keys - r.keys)} missed, {len(r.keys - truth_keys)} extra") + \
                f" ({r.transactions})"
            speedup = our_rate / tx_rate if tx_rate else float("inf")
        r.speedup = speedup
        table.add_row(r.name, str(r.transactions), same, secs, f"{tx_rate:,.0f}", f"{pkt_rate:,.0f}",
                      "-" if r is ours else f"{speedup:.1f}x")
    console.print(table)
    exact = check_fields(events, truth)
    console.print(f"visitwire events with the generator's exact status and body bytes: {exact} of {len(truth)}")
    console.print(f"numba start-up (import + first 2k-transaction file): first start {cold:.2f}s, "
                  f"cached second start {warm:.2f}s")
    checks = [(f"visitwire >= {TARGETS['tx_per_s']:,} transactions/s", our_rate >= TARGETS["tx_per_s"],
               f"{our_rate:,.0f}")]
    for r in results[1:]:
        if r.name in TARGETS:
            checks.append((f">= {TARGETS[r.name]}x {r.name}", r.speedup >= TARGETS[r.name], f"{r.speedup:.1f}x"))
    for label, ok, got in checks:
        console.print(f"  [{'green' if ok else 'red'}]{'PASS' if ok else 'MISS'}[/] {label}: {got}")
    if args.kafka:
        with console.status("publishing to tansu..."):
            for comp in ("lz4", None):
                rate, sent, codec = kafka_rate(events, comp)
                console.print(f"KafkaOutput to an embedded tansu ({codec or 'no'} compression): {sent} events "
                              f"delivered at {rate:,.0f} events/s (send_many + flush)")
    if args.profile:
        profile(path, console)
    return 0


def kafka_rate(events: list[dict], compression) -> tuple[float, int, str | None]:
    from capture.kafka_out import KafkaOutput
    from engine.services import start_tansu

    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))  # the broker gets its own core, like in production
    try:
        broker = start_tansu()
    finally:
        os.sched_setaffinity(0, pinned)
    with broker:
        out = KafkaOutput(broker.url, partitions=4, compression=compression)
        out.send_many(events[:1000])
        out.flush(60)
        t0 = time.perf_counter()
        for i in range(1000, len(events), 5000):
            out.send_many(events[i:i + 5000])
        out.flush(600)
        secs = time.perf_counter() - t0
        sent = out.stats["sent"]
        out.close()
    return (sent - 1000) / secs, sent, out.compression


def profile(path: str, console) -> None:
    """Top functions by own time for the visitwire run (under cProfile, so ~2x slower)."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    run_visitwire(path)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
    console.print("[bold]where visitwire's time goes[/] (cProfile, own time):")
    text = buf.getvalue()
    console.print(text[text.find("   ncalls"):].replace(str(ROOT) + "/", ""), markup=False, highlight=False)


if __name__ == "__main__":
    sys.exit(main())
