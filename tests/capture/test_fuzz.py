"""Property tests: the Decoder never raises, and segmentation does not change events.

Frames are built with struct (scapy is too slow for hundreds of examples) and fed
to the Decoder as FrameBatches, the same path the pcap reader and live source use.
"""
from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from capture.decoder import Decoder
from capture.testing import CLIENT_PORT, conversation_frame, frame_batch
from config.settings import Settings

T0 = 1_700_000_000.0
FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "120")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def decode_all(frames, linktypes=None, chunk: int = 0) -> tuple[list[dict], dict]:
    d = Decoder(Settings())
    events = []
    step = chunk or max(1, len(frames))
    for i in range(0, len(frames), step):
        part = frames[i:i + step]
        events += d.feed(frame_batch(part, None if linktypes is None else linktypes[i:i + step]))
    events += d.close()
    return events, d.stats


# -- valid HTTP conversations ----------------------------------------------------------

METHODS = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE"])
# unusual but legal (or tolerated) header lines: the one-packet fast path must agree with the slow path
ODD_REQUEST_LINES = ["hOST: other.example:8080", "X-Folded: first\r\n  second", "this line has no colon",
                     "User-Agent : spaced/1", "Cookie: member=m1; _ga=g2", "Referer:   https://r.example/?password=1  ",
                     "X-Member-Id: mm7", "X-Order-Amount: 3.50", "Accept: */*"]
ODD_RESPONSE_LINES = ["Set-Cookie: member=abc; Path=/", "Set-Cookie: theme=dark", "content-type:  text/plain  ",
                      "X-Order-Amount: 12.50", "X-Folded: a\r\n\tb", "Connection: keep-alive", "garbage"]


@st.composite
def transaction(draw):
    method = draw(METHODS)
    path = "/" + draw(st.text("abcxyz019-_/", max_size=20))
    query = draw(st.sampled_from(["", "?a=1", "?q=shoes&page=2", "?utm_source=news&token=zz"]))
    headers = [f"Host: shop{draw(st.integers(0, 3))}.example", "User-Agent: fuzz/1"]
    if draw(st.booleans()):
        headers.append("Cookie: _vw_id=v" + str(draw(st.integers(0, 5))))
    headers += draw(st.lists(st.sampled_from(ODD_REQUEST_LINES), max_size=3))
    req_body = b""
    if method in ("POST", "PUT"):
        req_body = draw(st.binary(max_size=300)).replace(b"\r", b"r")
        if draw(st.booleans()):
            headers.append("Transfer-Encoding: chunked")
            req_body = _chunk(req_body, draw(st.integers(1, 64)))
        else:
            headers.append(f"Content-Length: {len(req_body)}")
    request = (f"{method} {path}{query} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode() + req_body
    status = draw(st.sampled_from([200, 200, 201, 204, 301, 304, 404, 500]))
    body = draw(st.binary(max_size=2000))
    rh = [f"HTTP/1.1 {status} X", "Content-Type: " + draw(st.sampled_from(["text/html", "image/png; q=1"]))]
    rh += draw(st.lists(st.sampled_from(ODD_RESPONSE_LINES), max_size=3))
    no_body = method == "HEAD" or status in (204, 304)
    if no_body:
        rh.append(f"Content-Length: {len(body)}")
        wire_body, size = b"", 0
    elif draw(st.booleans()):
        rh.append("Transfer-Encoding: chunked")
        wire_body, size = _chunk(body, draw(st.integers(1, 700))), len(body)
    else:
        rh.append(f"Content-Length: {len(body)}")
        wire_body, size = body, len(body)
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" if draw(st.integers(0, 9)) == 0 else b""
    response = interim + ("\r\n".join(rh) + "\r\n\r\n").encode() + wire_body
    return request, response, (method, path + query, status, size)


def _chunk(data: bytes, size: int) -> bytes:
    parts = [data[i:i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def conversation_frames(txs, cuts_c, cuts_s, pipelined: bool, shuffle=None) -> list[tuple[float, bytes]]:
    """Client stream and server stream cut at the given offsets, interleaved message by message."""
    frames = [(T0, conversation_frame(True, 100, b"", 0x02)), (T0, conversation_frame(False, 900, b"", 0x12))]
    cseq, sseq = 101, 901
    t = T0

    def segments(from_client, data, cuts, seq0):
        points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        return [conversation_frame(from_client, seq0 + a, data[a:b]) for a, b in zip(points, points[1:]) if b > a]

    reqs = [(tx[0], tx[1]) for tx in txs]
    order = [("c", i) for i in range(len(txs))] + [("s", i) for i in range(len(txs))] if pipelined else \
        [x for i in range(len(txs)) for x in (("c", i), ("s", i))]
    for side, i in order:
        t += 0.001
        if side == "c":
            segs = segments(True, reqs[i][0], cuts_c, cseq)
            cseq += len(reqs[i][0])
        else:
            segs = segments(False, reqs[i][1], cuts_s, sseq)
            sseq += len(reqs[i][1])
        if shuffle is not None and len(segs) > 1:
            segs = shuffle(segs)
        frames += [(t, f) for f in segs]
    frames.append((t + 0.001, conversation_frame(True, cseq, b"", 0x11)))
    frames.append((t + 0.001, conversation_frame(False, sseq, b"", 0x11)))
    return frames


def comparable(events):
    # ts/latency/event_id legitimately depend on which packet a message starts in
    skip = {"ts", "latency_ms", "event_id"}
    return [{k: v for k, v in e.items() if k not in skip} for e in events]


@FUZZ
@given(st.lists(transaction(), min_size=1, max_size=5), st.lists(st.integers(0, 5000), max_size=25),
       st.lists(st.integers(0, 5000), max_size=25), st.booleans(), st.integers(0, 7))
def test_any_segmentation_gives_the_same_events(txs, cuts_c, cuts_s, pipelined, batch_chunk):
    whole, ws = decode_all(conversation_frames(txs, [], [], pipelined))
    assert [(e["method"], e["uri"].split("&token")[0], e["status"], e["resp_bytes"]) for e in whole] == \
           [(m, u.split("&token")[0], s, n) for m, u, s, n in (tx[2] for tx in txs)]
    assert ws["parse_errors"] == 0 and ws["internal_errors"] == 0
    split, ss = decode_all(conversation_frames(txs, cuts_c, cuts_s, pipelined), chunk=batch_chunk)
    assert comparable(split) == comparable(whole)
    assert ss["parse_errors"] == 0


@FUZZ
@given(st.lists(transaction(), min_size=1, max_size=4), st.lists(st.integers(0, 3000), min_size=1, max_size=12),
       st.randoms(use_true_random=False))
def test_reordered_and_duplicated_segments_give_the_same_events(txs, cuts, rnd):
    whole, _ = decode_all(conversation_frames(txs, [], [], False))

    def mess(segs):
        segs = list(segs)
        rnd.shuffle(segs)
        return segs + [rnd.choice(segs)]  # plus a retransmission

    messy, stats = decode_all(conversation_frames(txs, cuts, cuts, False, shuffle=mess))
    assert comparable(messy) == comparable(whole)
    assert stats["parse_errors"] == 0


# -- hostile input -----------------------------------------------------------------------

@FUZZ
@given(st.lists(transaction(), min_size=1, max_size=4), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                                  min_size=1, max_size=30),
       st.lists(st.integers(0, 5000), max_size=10))
def test_byte_flips_never_raise(txs, flips, cuts):
    frames = conversation_frames(txs, cuts, cuts, False)
    mutated = []
    for k, (t, f) in enumerate(frames):
        b = bytearray(f)
        for pos, val in flips:
            if pos % len(frames) == k:
                b[pos % len(b)] = val
        mutated.append((t, bytes(b)))
    events, stats = decode_all(mutated)
    assert stats["internal_errors"] == 0
    assert len(events) <= stats["requests"]


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=200), st.sampled_from([0, 1, 12, 101, 108, 113, 228, 229, 276, 147])),
                min_size=1, max_size=40))
def test_random_frames_never_raise(frames):
    data = [(T0 + i, f) for i, (f, _) in enumerate(frames)]
    events, stats = decode_all(data, linktypes=[lt for _, lt in frames])
    assert stats["packets"] == len(frames) and stats["internal_errors"] == 0


@FUZZ
@given(st.binary(min_size=1, max_size=3000), st.lists(st.integers(0, 3000), max_size=20), st.booleans())
def test_random_payloads_on_an_http_port_never_raise(payload, cuts, handshake):
    frames = [(T0, conversation_frame(True, 100, b"", 0x02))] if handshake else []
    points = sorted({c % (len(payload) + 1) for c in cuts} | {0, len(payload)})
    for a, b in zip(points, points[1:]):
        frames.append((T0 + 0.001, conversation_frame(a % 2 == 0, 101 + a, payload[a:b])))
    events, stats = decode_all(frames)
    assert stats["internal_errors"] == 0


# -- the numba one-packet head scanner agrees with the regex parser ---------------------------

def _fields(h):
    return {k: getattr(h, k) for k in h.__slots__ if k not in ("ts", "index", "expect_continue", "body_bytes")}


@FUZZ
@given(transaction(), st.binary(max_size=40))
def test_head_scanner_matches_the_slow_parser(tx, tail):
    from capture.frame_kernels import HEAD_REQUEST, HEAD_RESPONSE, scan_heads
    from capture.http import HeadParser, HttpError

    parser = HeadParser(["x-member-id", "x-forwarded-for", "x-order-amount"], ["x-order-amount"])
    request, response, _ = tx
    if response.startswith(b"HTTP/1.1 100 "):
        response = response.split(b"\r\n\r\n", 1)[1]  # the final response after the interim one
    for data, want in ((request + tail, HEAD_REQUEST), (response + tail, HEAD_RESPONSE)):
        buf = np.frombuffer(data, dtype=np.uint8)
        h = scan_heads(buf, np.array([0], np.int64), np.array([len(data)], np.int32), parser.names, parser.name_off)
        if int(h.kind[0]) != want:
            continue  # unusual head: the slow parser alone handles it
        end = int(h.end[0])
        row = h.spans[0].tolist()
        try:
            slow = parser.request(data[:end]) if want == HEAD_REQUEST else parser.response(data[:end])
        except HttpError:
            slow = None
        try:
            fast = parser.request_scanned(data, int(h.a[0]), int(h.b[0]), int(h.c[0]), int(h.minor[0]), row) \
                if want == HEAD_REQUEST else parser.response_scanned(data, int(h.a[0]), int(h.minor[0]), row)
        except HttpError:
            fast = None
        assert (slow is None) == (fast is None)
        if slow is not None:
            assert _fields(fast) == _fields(slow)
            assert data[:end].endswith(b"\r\n\r\n")


def test_head_scanner_takes_the_common_heads():
    from capture.frame_kernels import HEAD_REQUEST, HEAD_RESPONSE, scan_heads
    from capture.http import HeadParser

    parser = HeadParser([], [])
    heads = [b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\n\r\n",
             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"]
    buf = np.frombuffer(b"".join(heads), dtype=np.uint8)
    h = scan_heads(buf, np.array([0, len(heads[0])], np.int64), np.array([len(x) for x in heads], np.int32),
                   parser.names, parser.name_off)
    assert h.kind.tolist() == [HEAD_REQUEST, HEAD_RESPONSE]
    assert h.end.tolist() == [len(heads[0]), len(heads[1]) - 5]
    assert (int(h.a[1]), int(h.minor[1])) == (200, 1)


# -- the numba fast path (capture.fastpath) equals the Python path exactly ---------------------

def decode_both(frames, chunk: int = 0, expire_every: float = 0.0, **capture) -> tuple[list[dict], dict]:
    """Events + stats of the fast path, after asserting the Python-only Decoder gives the very same."""
    results = []
    for fast in (True, False):
        d = Decoder(Settings(capture=capture) if capture else Settings(), fast_path=fast)
        events = []
        step = chunk or max(1, len(frames))
        for i in range(0, len(frames), step):
            part = frames[i:i + step]
            events += d.feed(frame_batch(part))
            if expire_every:
                events += d.expire(part[-1][0] + expire_every)
        events += d.close()
        results.append((events, d.stats))
    (fast_ev, fast_st), (slow_ev, slow_st) = results
    assert fast_ev == slow_ev  # every field, event_id included, in the same order
    assert fast_st == slow_st
    return fast_ev, fast_st


def _mutate(frames, flips):
    out = []
    for k, (t, f) in enumerate(frames):
        b = bytearray(f)
        for pos, val in flips:
            if pos % len(frames) == k:
                b[pos % len(b)] = val
        out.append((t, bytes(b)))
    return out


@FUZZ
@given(st.lists(transaction(), min_size=1, max_size=5), st.lists(st.integers(0, 5000), max_size=25),
       st.lists(st.integers(0, 5000), max_size=25), st.booleans(), st.integers(0, 7))
def test_fast_path_equals_python_path_on_any_segmentation(txs, cuts_c, cuts_s, pipelined, batch_chunk):
    events, stats = decode_both(conversation_frames(txs, cuts_c, cuts_s, pipelined), chunk=batch_chunk)
    assert len(events) == len(txs) and stats["internal_errors"] == 0


@FUZZ
@given(st.lists(transaction(), min_size=1, max_size=4), st.lists(st.integers(0, 3000), min_size=1, max_size=12),
       st.randoms(use_true_random=False), st.integers(0, 5),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6))
def test_fast_path_equals_python_path_on_messy_streams(txs, cuts, rnd, batch_chunk, flips):
    def mess(segs):
        segs = list(segs)
        if rnd.random() < 0.5:
            rnd.shuffle(segs)
        return segs + ([rnd.choice(segs)] if rnd.random() < 0.5 else [])

    frames = conversation_frames(txs, cuts, cuts, rnd.random() < 0.3, shuffle=mess)
    decode_both(_mutate(frames, flips), chunk=batch_chunk)


@FUZZ
@given(st.lists(st.lists(transaction(), min_size=1, max_size=3), min_size=1, max_size=4), st.integers(1, 9),
       st.sampled_from([0.0, 0.5, 40.0, 200.0]), st.randoms(use_true_random=False),
       st.sampled_from([(1 << 20, 256 << 20), (600, 256 << 20), (1 << 20, 900), (1 << 20, 4000)]))
def test_fast_path_equals_python_path_on_interleaved_flows(convs, batch_chunk, expire_every, rnd, limits):
    """Several connections at once (some reusing a 4-tuple, some cut off, some reset, heads split across
    segments, buffer limits hit or not), expiry sweeps between batches."""
    frames = []
    for n, txs in enumerate(convs):
        cuts = [rnd.randrange(0, 400) for _ in range(rnd.randrange(0, 3))]
        conv = conversation_frames(txs, cuts, [rnd.randrange(0, 2000)], n % 2 == 1)
        port = CLIENT_PORT + n % 3  # n and n+3 reuse one 4-tuple
        conv = [(t + 100 * n * rnd.random(), _with_client_port(f, port)) for t, f in conv]
        cut = rnd.random()
        if cut < 0.2:
            conv = conv[:-2]  # no FIN: ends at close() or by expiry
        elif cut < 0.3:
            t, f = conv[-1]
            conv[-1] = (t, f[:47] + bytes([0x04]) + f[48:])  # the last FIN becomes a RST
        frames += conv
    frames.sort(key=lambda x: x[0])
    decode_both(frames, chunk=batch_chunk, expire_every=expire_every, transaction_timeout_s=1.0,
                flow_idle_timeout_s=60.0, max_flow_buffer_bytes=limits[0], max_total_buffer_bytes=limits[1])


def _with_client_port(frame: bytes, port: int) -> bytes:
    # the client's port is the TCP source port (client -> server) or destination port (server -> client)
    tcp = 14 + 20
    sp, dp = struct.unpack("!HH", frame[tcp:tcp + 4])
    sp, dp = (port, dp) if sp == CLIENT_PORT else (sp, port)
    return frame[:tcp] + struct.pack("!HH", sp, dp) + frame[tcp + 4:]


def test_fast_path_takes_the_common_case():
    """A clean keep-alive conversation is followed by the numba fast path: no packet goes to Python."""
    txs = [(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + b"x" * 3000),
           (b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunk(b"y" * 5000, 1200))]
    # requests cut in three segments (the head is held across them), responses at MSS-like points
    frames = conversation_frames([tx + (None,) for tx in txs], [10, 20], [1000, 2000, 3000, 4000, 5000, 6000], False)
    d = Decoder(Settings())
    python_packets = []
    orig = d._one
    d._one = lambda *a: (python_packets.append(a), orig(*a))
    events = d.feed(frame_batch(frames)) + d.close()
    assert [(e["uri"], e["status"], e["resp_bytes"]) for e in events] == [("/a", 200, 3000), ("/b", 200, 5000)]
    assert python_packets == []
    assert d.stats["flows_closed"] == 1 and d.stats["transactions"] == 2 and d.buffered_bytes == 0


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["a", "Password", "TOKEN", "pass%57ord", "x", "ſession", "sessionId", "tok"]),
                          st.text(max_size=6)), max_size=6))
def test_query_scrubbing_shortcut_agrees_with_the_regex(params):
    """The ASCII shortcut in Identity.scrub_query decides exactly like the case-insensitive regex."""
    from capture.identity import Identity

    fast = Identity(Settings().capture)
    by_regex = Identity(Settings().capture)
    by_regex._scrub_ascii = None  # the regex alone decides
    query = "&".join(f"{k}={v}" for k, v in params)
    assert fast.scrub_query(query) == by_regex.scrub_query(query)
