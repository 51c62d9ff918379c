"""Memory of the capture decoder under 1M short flows: RSS must stay under a documented ceiling.

Two floods, fed to the Decoder as FrameBatches (the path the pcap reader and the live ring use):
  half-open  one packet per flow from a new source, no SYN, a request head never completed (the
             spoofed-source flood of issue 14: before the bound, 200,000 such flows took 2.7 GB)
  short      SYN, request, response, FIN both ways per flow, about --window flows open at once

The decoder ends the least recently seen flows beyond capture.max_flows (counted as flows_evicted),
so its memory is bounded by max_flows, not by the number of sources.

    .venv/bin/python benchmarks/flow_table_bench.py [--flows 1000000] [--kind half-open|short|both]
        [--max-flows 100000] [--ceiling-mb 1200]

Prints, per kind: flows, packets, seconds, packets/s, peak RSS, open flows at the end, evictions,
and whether peak RSS stayed under the ceiling (exit code 1 when not).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from capture.decoder import Decoder
from capture.frames import FrameBatch
from capture.testing import tcp_frame
from config.settings import Settings
from proc_memory import rss_mb

T0 = 1_700_000_000.0
SERVER = bytes([10, 9, 0, 1])
HEAD = b"GET /flood HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: flood/1\r\n"  # never completed
REQ = b"GET /p HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: b/1\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
SYN, SYNACK, PSH, FIN = 0x02, 0x12, 0x18, 0x11


def frame(client: bytes, cport: int, from_client: bool, seq: int, flags: int, payload: bytes = b"") -> bytes:
    src, dst, sp, dp = (client, SERVER, cport, 80) if from_client else (SERVER, client, 80, cport)
    return tcp_frame(src, dst, sp, dp, seq, flags, payload)


def client_of(i: int) -> tuple[bytes, int]:
    return bytes([11, (i >> 16) & 255, (i >> 8) & 255, i & 255]), 1024 + (i % 60000)


def batch(frames: list[bytes], t: float) -> FrameBatch:
    buf = np.frombuffer(b"".join(frames), np.uint8)
    lens = np.array([len(f) for f in frames], np.int32)
    offsets = np.zeros(len(frames), np.int64)
    offsets[1:] = np.cumsum(lens[:-1])
    ts = t + np.arange(len(frames)) * 1e-6
    return FrameBatch(buf, offsets, lens, lens.copy(), ts, np.ones(len(frames), np.int32))


def half_open(n: int, per_batch: int):
    for start in range(0, n, per_batch):
        frames = []
        for i in range(start, min(n, start + per_batch)):
            ip, port = client_of(i)
            frames.append(frame(ip, port, True, 1000, PSH, HEAD))
        yield frames


def short(n: int, per_batch: int, window: int):
    """Flow i: SYN at step i, SYN-ACK, request at i + w/4, response at i + w/2, FINs at i + w."""
    events: dict[int, list] = {}
    step = 0
    out: list[bytes] = []
    for step in range(n + window + 1):
        if step < n:
            events.setdefault(step, []).append((step, 0))
            events.setdefault(step + window // 4, []).append((step, 1))
            events.setdefault(step + window // 2, []).append((step, 2))
            events.setdefault(step + window, []).append((step, 3))
        for i, what in events.pop(step, ()):
            ip, port = client_of(i)
            if what == 0:
                out += [frame(ip, port, True, 100, SYN), frame(ip, port, False, 500, SYNACK)]
            elif what == 1:
                out.append(frame(ip, port, True, 101, PSH, REQ))
            elif what == 2:
                out.append(frame(ip, port, False, 501, PSH, RESP))
            else:
                out += [frame(ip, port, True, 101 + len(REQ), FIN), frame(ip, port, False, 501 + len(RESP), FIN)]
        if len(out) >= per_batch:
            yield out
            out = []
    if out:
        yield out


def run(kind: str, flows: int, max_flows: int, window: int) -> dict:
    d = Decoder(Settings(capture={"ports": [80], "max_flows": max_flows}))
    gen = half_open(flows, 8192) if kind == "half-open" else short(flows, 8192, window)
    packets = events = 0
    peak = rss_mb()
    t = T0
    start = time.perf_counter()
    for frames in gen:
        events += len(d.feed(batch(frames, t)))
        packets += len(frames)
        t += 0.01
        peak = max(peak, rss_mb())
    secs = time.perf_counter() - start
    open_flows = d.open_flows
    events += len(d.close())
    return {"kind": kind, "flows": flows, "packets": packets, "seconds": secs, "pps": packets / secs,
            "peak_rss_mb": peak, "open_at_end": open_flows, "evicted": d.stats["flows_evicted"], "events": events}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--kind", choices=["half-open", "short", "both"], default="both")
    ap.add_argument("--max-flows", type=int, default=Settings().capture.max_flows)
    ap.add_argument("--window", type=int, default=50_000, help="short flows open at once")
    ap.add_argument("--ceiling-mb", type=float, default=800.0,
                    help="documented RSS ceiling with the default max_flows (README, capture.max_flows)")
    a = ap.parse_args()
    if a.kind == "both":  # each flood in a fresh process: RSS never shrinks back, so one would hide the other
        import subprocess

        codes = [subprocess.call([sys.executable, __file__, "--kind", kind, "--flows", str(a.flows), "--max-flows",
                                  str(a.max_flows), "--window", str(a.window), "--ceiling-mb", str(a.ceiling_mb)])
                 for kind in ("half-open", "short")]
        return max(codes)
    from capture.agent import tune_gc
    from capture.decoder import warm_up

    warm_up()  # load the kernels before the baseline
    tune_gc()  # as visitwire capture does
    print(f"baseline RSS {rss_mb():.0f} MB; max_flows {a.max_flows:,}; ceiling {a.ceiling_mb:.0f} MB")
    ok = True
    for kind in [a.kind]:
        r = run(kind, a.flows, a.max_flows, a.window)
        under = r["peak_rss_mb"] <= a.ceiling_mb
        ok &= under
        print(f"{kind:9s}  flows {r['flows']:,}  packets {r['packets']:,}  {r['seconds']:.1f} s  "
              f"{r['pps'] / 1e3:.0f}k pkt/s  peak RSS {r['peak_rss_mb']:.0f} MB  open at end {r['open_at_end']:,}  "
              f"evicted {r['evicted']:,}  events {r['events']:,}  -> {'under' if under else 'OVER'} the ceiling")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
