"""Kernel drops, counted and exported (issue 19, metrics): a live ring of 1 MiB that nobody reads while
30 MB cross loopback on a captured port overflows; the kernel's count of what it dropped reaches
visitwire_capture_kernel_drops_total, and every packet it saw is either read from the ring or dropped.
Needs root (CAP_NET_RAW)."""
from __future__ import annotations

import os
import socket
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from capture.live import LiveSource
from config.settings import Settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root / CAP_NET_RAW")
TOKEN = "kernel-drops-token"


def _blast(port: int, total: int) -> None:
    """`total` bytes from a client to a local server on `port` (loopback segments of up to 64 KB)."""
    server = socket.create_server(("127.0.0.1", port))

    def sink() -> None:
        conn, _ = server.accept()
        with conn:
            while conn.recv(1 << 20):
                pass
    t = threading.Thread(target=sink, daemon=True)
    t.start()
    with socket.create_connection(("127.0.0.1", port)) as c:
        chunk = b"x" * (1 << 20)
        for _ in range(total // len(chunk)):
            c.sendall(chunk)
    t.join(10)
    server.close()


def test_a_ring_nobody_reads_counts_every_drop_and_exports_it():
    from engine.metrics import CaptureCollector, Metrics
    from engine.metrics_server import MetricsServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = LiveSource("lo", [port], Settings(), ring_mb=1, block_kb=256)  # 4 blocks of 256 KiB
    assert source.mode == "ring"
    server = MetricsServer(Metrics(CaptureCollector(lambda: {"source": source.stats(), "events": 0})), "127.0.0.1",
                           0, TOKEN).start()
    try:
        _blast(port, 30 << 20)  # ~1,000 segments of up to 64 KB into a 1 MiB ring: most cannot fit
        frames = 0
        for batch in source:  # what the ring held, read after the fact, until its first idle tick
            if not len(batch.offsets):
                break
            frames += len(batch.offsets)
        stats = source.stats()  # the kernel's counts, read as the ring closed
        req = urllib.request.Request(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            m = {s.name: s.value for fam in text_string_to_metric_families(r.read().decode()) for s in fam.samples}
    finally:
        server.stop()
    assert stats["kernel_drops"] > 0 and frames > 0, stats
    assert stats["kernel_packets"] == frames + stats["kernel_drops"], (stats, frames)  # each packet accounted for
    assert m["visitwire_capture_kernel_drops_total"] == stats["kernel_drops"]
    assert m["visitwire_capture_kernel_packets_total"] == stats["kernel_packets"]
