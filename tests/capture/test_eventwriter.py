"""The numba event writer (capture.eventwriter) and its BLAKE2b (capture.blake2).

The writer must give exactly the events EventBuilder gives (the Python-only Decoder is
the reference), write the common ones itself, and hand everything it cannot write
plainly (non-ASCII, sensitive query parameters, fragments, absolute-form URIs) back
to Python rather than get them wrong.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

from capture.testing import frame_batch  # noqa: E402
from test_fuzz import FUZZ, _with_client_port, conversation_frames  # noqa: E402

from capture.blake2 import blake2b_hex, key_state  # noqa: E402
from capture.decoder import Decoder  # noqa: E402
from config.settings import Settings  # noqa: E402


@pytest.mark.parametrize("n", [1, 2, 100, 127, 128, 129, 256, 257, 1000])
@pytest.mark.parametrize("key", [b"", b"k", b"change-me-visitwire-salt", bytes(range(64))])
def test_blake2b_matches_hashlib(n, key):
    data = np.frombuffer(bytes((i * 7 + n) % 256 for i in range(n + 9)), np.uint8)
    out = np.zeros(32, np.uint8)
    blake2b_hex(data, 4, n, key_state(key), out, 0, np.zeros(320, np.uint8))
    assert out.tobytes().decode() == hashlib.blake2b(data[4:4 + n].tobytes(), key=key, digest_size=16).hexdigest()


def test_a_blake2b_key_longer_than_64_bytes_is_refused():
    with pytest.raises(ValueError, match="64 bytes"):
        key_state(bytes(65))


# heads that exercise every field rule: case, ports, quotes, control bytes, UTF-8, scrubbing, cookies
PATHS = ["/", "/p/1", "/a\"b\\c", "/caf\xe9", "/x:y", "http://proxy.example/abs?a=1", "*", "/sp%20ace"]
QUERIES = ["", "?", "?a=1", "?q=shoes&page=2", "?PassWord=x&b=2", "?a=1#frag", "?q=\xfc", "?t=\x01"]
HOSTS = [None, "shop.example", "Shop.EXAMPLE:8080", "[::1]:80", "[::1", "ho\"st", "", "HOST:"]
AGENTS = [None, "Mozilla/5.0 (X11)", "tab\there", "quote\"d", "\xe9t\xe9", ""]
REFERRERS = [None, "https://a.example/b", "https://a.example/b?", "https://a.example/b?token=1",
             "https://a.example/b?x=1#f", "https://a.example/?#f", "https://a.example/b?q=\xfc", ""]
COOKIES = [None, "_vw_id=v1", "_ga=\"g1\"", "visitor_id=  ", "member=m7", "xmember=1; _ga=g2", "_vw_id=",
           " _ga = a", "member=\"\"", "_vw_id=\tv2 ", "a=1;_vw_id=q; member=m8", "_vw_id=\"\"; _vw_id=later",
           "_vw_id=first; _vw_id=second"]
MEMBER_HEADERS = [None, "77", ""]
SET_COOKIES = [None, "_vw_id=new1; Path=/", "member=\"m9\"; HttpOnly", "_vw_id=deleted", "member=", "_ga=z",
               "visitor_id= \"vv\" ;x"]
CTYPES = [None, "Text/HTML; charset=x", " image/png ", "", "a\"b", "application/\xe9"]
AMOUNTS = [None, "12.50", "", "\xe9"]
FWD = [None, None, None, "203.0.113.7, 10.0.0.9", "unknown", "[2001:db8::1]:443"]
FORWARDED = [None, None, None, 'for="[2001:db8::2]:1";proto=https, for=10.0.0.3', "for=_hidden"]


@st.composite
def rich_transaction(draw):
    def pick(options):
        return draw(st.sampled_from(options))

    lines = [f"{pick(['GET', 'POST', 'HEAD', 'OPTIONS'])} {pick(PATHS)}{pick(QUERIES)} HTTP/1.{pick([0, 1])}"]
    for name, options in (("Host", HOSTS), ("User-Agent", AGENTS), ("Referer", REFERRERS), ("Cookie", COOKIES),
                          ("X-Member-Id", MEMBER_HEADERS), ("X-Order-Amount", AMOUNTS), ("X-Forwarded-For", FWD),
                          ("Forwarded", FORWARDED)):
        value = pick(options)
        if value is not None:
            lines.append(f"{name}: {value}")
    method = lines[0].split(" ")[0]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    status = pick([200, 302, 404, 204])
    head = [f"HTTP/1.1 {status} X"]
    for name, options in (("Set-Cookie", SET_COOKIES), ("Content-Type", CTYPES), ("X-Order-Amount", AMOUNTS)):
        value = pick(options)
        if value is not None:
            head.append(f"{name}: {value}")
    body = b"" if method == "HEAD" or status == 204 else b"x" * pick([0, 5])
    head.append(f"Content-Length: {len(body)}")
    response = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    return request, response, None


def decode(frames, fast: bool, lines: bool = False, **capture):
    d = Decoder(Settings(capture=capture) if capture else Settings(), fast_path=fast)
    if lines:
        out = d.feed_lines(frame_batch(frames))
        return out.dicts(), out.keys, d
    return d.feed(frame_batch(frames)) + d.close(), None, d


@FUZZ
@given(st.lists(rich_transaction(), min_size=1, max_size=4), st.booleans())
def test_written_events_equal_the_python_builders(txs, pipelined):
    frames = conversation_frames(txs, [], [], pipelined)
    expected, _, _ = decode(frames, fast=False)
    got, _, _ = decode(frames, fast=True)
    assert got == expected
    assert len(got) == len(txs)


@FUZZ
@given(st.lists(rich_transaction(), min_size=1, max_size=4))
def test_lines_carry_the_same_events_and_their_visitor_keys(txs):
    frames = conversation_frames(txs, [], [], False)
    expected, _, _ = decode(frames, fast=False)
    got, keys, d = decode(frames, fast=True, lines=True)
    got += d.close()
    assert got == expected
    assert keys == [e["visitor_id"].encode() for e in got[:len(keys)]]


@FUZZ
@given(st.lists(rich_transaction(), min_size=1, max_size=3))
def test_member_parameter_and_forwarded_for_rules_stay_pythons(txs):
    frames = conversation_frames(txs, [], [], False)
    rules = {"member_param": "uid", "trusted_proxies": ["10.0.0.0/8"]}
    expected, _, _ = decode(frames, fast=False, **rules)
    got, _, _ = decode(frames, fast=True, **rules)
    assert got == expected


def test_plain_transactions_are_written_by_numba_and_unusual_ones_by_python():
    plain = (b"GET /p/1?q=shoes HTTP/1.1\r\nHost: Shop.example:80\r\nUser-Agent: ua/1\r\n"
             b"Cookie: _ga=g1; member=m1\r\nReferer: https://s.example/?q=x\r\n\r\n",
             b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok", None)
    secret = (b"GET /login?password=hunter2 HTTP/1.1\r\nHost: shop.example\r\n\r\n",
              b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", None)
    d = Decoder(Settings())
    built = []
    build = d.builder.build
    d.builder.build = lambda conn, req, resp: built.append(req.uri) or build(conn, req, resp)
    events = d.feed(frame_batch(conversation_frames([plain, secret, plain], [], [], False))) + d.close()
    assert [e["uri"] for e in events] == ["/p/1?q=shoes", "/login", "/p/1?q=shoes"]
    assert built == [b"/login?password=hunter2"]  # only the one that needed scrubbing went the Python way
    assert events[0]["host"] == "shop.example" and events[0]["member_id"] and events[0]["latency_ms"] == 1.0


def _one_field_variants():
    """A plain transaction with one header (or the request line) changed at a time: every listed option."""
    base = {"Host": "shop.example", "User-Agent": "ua/1"}
    for path in PATHS:
        for query in QUERIES:
            yield f"GET {path}{query} HTTP/1.1", base, {}
    for name, options in (("Host", HOSTS), ("User-Agent", AGENTS), ("Referer", REFERRERS), ("Cookie", COOKIES),
                          ("X-Member-Id", MEMBER_HEADERS), ("X-Order-Amount", AMOUNTS), ("X-Forwarded-For", FWD),
                          ("Forwarded", FORWARDED)):
        for value in options:
            yield "GET / HTTP/1.1", {**base, name: value}, {}
    for name, options in (("Set-Cookie", SET_COOKIES), ("Content-Type", CTYPES), ("X-Order-Amount", AMOUNTS)):
        for value in options:
            for cookie in (None, "_vw_id=v1", "member=m2"):
                yield "GET / HTTP/1.1", {**base, "Cookie": cookie}, {name: value}


def test_every_listed_field_variant_is_written_like_python_writes_it():
    txs = []
    for line, req_headers, resp_headers in _one_field_variants():
        req = [line] + [f"{k}: {v}" for k, v in req_headers.items() if v is not None]
        resp = ["HTTP/1.1 200 OK"] + [f"{k}: {v}" for k, v in resp_headers.items() if v is not None]
        txs.append((("\r\n".join(req) + "\r\n\r\n").encode("latin-1"),
                    ("\r\n".join(resp + ["Content-Length: 0"]) + "\r\n\r\n").encode("latin-1"), None))
    # a connection each: one unusual head must not send the others to Python with its flow
    frames = [(t, _with_client_port(f, 20000 + i)) for i, tx in enumerate(txs)
              for t, f in conversation_frames([tx], [], [], False)]
    expected, _, _ = decode(frames, fast=False)
    got, _, _ = decode(frames, fast=True)
    assert len(got) == len(txs)
    for g, e in zip(got, expected):
        assert g == e
