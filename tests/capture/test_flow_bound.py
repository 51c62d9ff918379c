"""A flood of half-open flows costs capture.max_flows flows of memory, not one per source.

Spoofed sources each send one packet of a request head that never completes (no SYN).
The decoder ends the least recently seen flows beyond max_flows (counted), while a real
visitor that keeps talking is never the one evicted and its requests are all reported.
"""
from __future__ import annotations

import pytest

from capture.decoder import Decoder
from capture.testing import frame_batch, tcp_frame
from config.settings import Settings

T0 = 1_700_000_000.0
SERVER = bytes([10, 9, 0, 1])


def frame(client: bytes, port: int, from_client: bool, seq: int, flags: int, payload: bytes = b"") -> bytes:
    if from_client:
        return tcp_frame(client, SERVER, port, 80, seq, flags, payload)
    return tcp_frame(SERVER, client, 80, port, seq, flags, payload)


def batch(frames: list[bytes], t: float):
    return frame_batch([(t + i * 1e-6, f) for i, f in enumerate(frames)])


@pytest.mark.parametrize("fast", [True, False])
def test_half_open_flood_is_bounded_and_counted_and_the_real_visitor_survives(fast):
    d = Decoder(Settings(capture={"ports": [80], "max_flows": 500}), fast_path=fast)
    real = bytes([192, 0, 2, 1])
    req = b"GET /real/%d HTTP/1.1\r\nHost: shop.example\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    events = d.feed(batch([frame(real, 5000, True, 100, 0x02), frame(real, 5000, False, 900, 0x12)], T0))
    cseq, sseq = 101, 901
    flood = 0
    victim = None
    for b in range(12):
        frames = []
        for i in range(256):  # spoofed sources: one incomplete head each
            flood += 1
            frames.append(frame(bytes([11, 0, flood >> 8, flood & 255]), 1024 + flood, True, 7,
                                0x18, b"GET /flood HTTP/1.1\r\nHost: x\r\n"))
        if b == 0:  # one of them completed its head and waits for an answer: evicted, it is reported
            victim = frame(bytes([12, 0, 0, 1]), 999, True, 7, 0x18, b"GET /waiting HTTP/1.1\r\nHost: x\r\n\r\n")
            frames.insert(0, victim)
        q = req % b
        frames += [frame(real, 5000, True, cseq, 0x18, q), frame(real, 5000, False, sseq, 0x18, resp)]
        cseq, sseq = cseq + len(q), sseq + len(resp)
        events += d.feed(batch(frames, T0 + 1 + b))
        assert d.open_flows <= 500  # at every batch end
    open_at_end = d.open_flows
    events += d.close()
    assert d.stats["flows"] == flood + 2
    assert d.stats["flows_evicted"] == flood + 2 - open_at_end
    assert [(e["uri"], e["status"]) for e in events if e["uri"].startswith("/real/")] == \
        [(f"/real/{b}", 200) for b in range(12)]
    assert [(e["uri"], e["status"], e["no_response"]) for e in events if not e["uri"].startswith("/real/")] == \
        [("/waiting", None, True)]
