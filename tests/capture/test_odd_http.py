"""Odd and hostile HTTP on the wire -> the events a careful analyser reports.

Each case scripts one connection with scapy and states the exact events: HTTP/0.9
answers without a status line, request lines missing the version, the space before
it or the URI (their headers still read; the answer to a line without a version is a
bare HTTP/0.9 body up to the close, as Zeek's HTTP analyser reads it), CONNECT
tunnels, request targets with spaces and quotes kept as on the wire, and bodies whose
framing is a smuggling attempt (the valid requests after them still reported). Every
case runs through both the numba fast path and the Python-only Decoder, which must agree.
"""
from __future__ import annotations


import pytest


from pcaps import Conv, req, resp, write  # noqa: E402

from capture.pcapfile import read_pcap_batches  # noqa: E402
from capture.decoder import Decoder  # noqa: E402
from config.settings import Settings  # noqa: E402


def events_of(tmp_path, conv: Conv, **capture) -> tuple[list[dict], dict]:
    """The events of both decoders (which must be equal) and the fast one's stats."""
    path = write(tmp_path / "odd.pcap", conv.pkts)
    out = []
    for fast in (True, False):
        d = Decoder(Settings(capture=capture) if capture else Settings(), fast_path=fast)
        ev = []
        for b in read_pcap_batches(path):
            ev += d.feed(b)
        ev += d.close()
        out.append((ev, d.stats))
    assert out[0][0] == out[1][0]
    return out[0]


def rows(events):
    return [(e["method"], e["host"], e["uri"], e["path"], e["query"], e["status"], e["http_version"],
             e["no_response"]) for e in events]


def test_http09_answer_has_no_status(tmp_path):
    c = Conv().handshake()
    c.request(b"GET /ancient\r\n")
    c.tick(0.002).response(b"<html>plain old body</html>")
    c.tick().fin(False)
    events, stats = events_of(tmp_path, c)
    assert rows(events) == [("GET", "", "/ancient", "/ancient", "", None, "0.9", False)]
    assert events[0]["resp_bytes"] == 27 and events[0]["latency_ms"] == 2.0
    assert stats["parse_errors"] == 0


@pytest.mark.parametrize("split", [False, True])
def test_request_line_without_version_still_reads_its_headers(tmp_path, split):
    c = Conv().handshake()
    head = b"GET /cgi-bin/form?email=a@b.example\r\nHost: Old.Example:8080\r\nUser-Agent: telnet\r\n\r\n"
    c.request(head, sizes=[len(b"GET /cgi-bin/form?email=a@b.example\r\n"), 10] if split else None)
    c.tick(0.001).response(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nbody")
    c.tick().request(req("/next"))
    c.tick(0.001).response(resp(404, b"no"))
    c.tick().close()
    events, stats = events_of(tmp_path, c)
    # the answer to a line without a version is a bare body up to the close, whatever it looks like (a server
    # answers HTTP/0.9 so, and the reference analyser reads it so): status unknown, and the request after it
    # on this connection gets no answer of its own
    server_bytes = len(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nbody") + len(resp(404, b"no"))
    assert rows(events) == [
        ("GET", "old.example", "/cgi-bin/form?email=a@b.example", "/cgi-bin/form", "email=a@b.example", None, "0.9",
         False),
        ("GET", "shop.example", "/next", "/next", "", None, "1.1", True)]
    assert events[0]["user_agent"] == "telnet" and events[0]["resp_bytes"] == server_bytes
    assert stats["parse_errors"] == 0 and stats["requests"] == 2


def test_missing_space_before_the_version(tmp_path):
    c = Conv().handshake()
    c.request(b"GET /index.htmlHTTP/1.1\r\nHost: www.example\r\nAccept: */*\r\n\r\n")
    c.tick(0.001).response(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad")
    c.tick().request(req("/after"))
    c.tick(0.001).response(resp(200, b"ok"))
    c.tick().close()
    events, stats = events_of(tmp_path, c)
    # no version on the line: the target is everything after the method, as on the wire, and the answer is
    # an HTTP/0.9 one (a bare body to the close, status unknown) even when it starts with a status line
    assert rows(events) == [
        ("GET", "www.example", "/index.htmlHTTP/1.1", "/index.htmlHTTP/1.1", "", None, "0.9", False),
        ("GET", "shop.example", "/after", "/after", "", None, "1.1", True)]
    assert stats["requests"] == 2 and stats["parse_errors"] == 0


def test_missing_uri(tmp_path):
    c = Conv().handshake()
    c.request(b"GET HTTP/1.1\r\nHost: bro.example\r\n\r\n")
    c.tick(0.001).response(resp(200, b"x" * 40))
    c.tick().close()
    events, stats = events_of(tmp_path, c)
    assert rows(events) == [("GET", "bro.example", "", "", "", 200, "1.1", False)]
    assert events[0]["resp_bytes"] == 40 and stats["parse_errors"] == 0


def test_cruft_after_a_request_makes_no_extra_request(tmp_path):
    c = Conv().handshake()
    c.request(req("/one") + b"T\r\n")
    c.tick(0.001).response(resp(200, b"1"))
    c.tick().request(req("/two"))
    c.tick(0.001).response(resp(200, b"2"))
    c.tick().close()
    events, _ = events_of(tmp_path, c)
    assert [(e["method"], e["uri"], e["status"]) for e in events] == [("GET", "/one", 200), ("GET", "/two", 200)]


@pytest.mark.parametrize("early", [False, True])
def test_connect_tunnel_is_one_event(tmp_path, early):
    c = Conv(server=("10.0.0.2", 8080)).handshake()
    c.request(b"CONNECT mail.example:25 HTTP/1.1\r\nHost: mail.example:25\r\nUser-Agent: ua\r\n\r\n"
              + (b"EHLO client\r\n" if early else b""))
    c.tick(0.001).response(b"HTTP/1.1 200 Connection established\r\n\r\n220 mail.example ESMTP\r\n")
    c.tick().request(b"EHLO client\r\nMAIL FROM:<a@b>\r\n")
    c.tick().response(b"250-mail.example\r\n250 OK\r\n")
    c.tick().request(b"GET /not-http-any-more HTTP/1.1\r\n\r\n")
    c.tick().response(b"500 what\r\n")
    c.tick().close()
    events, stats = events_of(tmp_path, c)
    assert rows(events) == [("CONNECT", "mail.example", "mail.example:25", "", "", 200, "1.1", False)]
    assert stats["requests"] == 1 and stats["parse_errors"] == 0


def test_refused_connect_keeps_speaking_http(tmp_path):
    c = Conv(server=("10.0.0.2", 8080)).handshake()
    c.request(b"CONNECT mail.example:25 HTTP/1.1\r\nHost: mail.example:25\r\n\r\n")
    c.tick(0.001).response(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
    c.tick().request(req("http://shop.example/p?x=1"))
    c.tick(0.001).response(resp(200, b"ok"))
    c.tick().close()
    events, _ = events_of(tmp_path, c)
    assert rows(events) == [("CONNECT", "mail.example", "mail.example:25", "", "", 407, "1.1", False),
                            ("GET", "shop.example", "http://shop.example/p?x=1", "/p", "x=1", 200, "1.1", False)]


def test_target_with_spaces_and_quotes_is_kept_as_on_the_wire(tmp_path):
    c = Conv().handshake()
    c.request(b'GET /download?filename="test.json"&n=1 2 HTTP/1.1\r\nHost: files.example\r\n\r\n')
    c.tick(0.001).response(resp(200, b"{}"))
    c.tick().request(b'GET /q?filename="a.json" HTTP/1.1\r\nHost: files.example\r\n\r\n')
    c.tick(0.001).response(resp(200, b"{}"))
    c.tick().request(b"GET /sp%20ace/caf%C3%A9?filename%3d%22x%22 HTTP/1.1\r\nHost: files.example\r\n\r\n")
    c.tick(0.001).response(resp(200, b"{}"))
    c.tick().close()
    events, _ = events_of(tmp_path, c)
    assert [(e["uri"], e["path"], e["query"]) for e in events] == [
        ('/download?filename="test.json"&n=1 2', "/download", 'filename="test.json"&n=1 2'),
        ('/q?filename="a.json"', "/q", 'filename="a.json"'),
        ("/sp%20ace/caf%C3%A9?filename%3d%22x%22", "/sp%20ace/caf%C3%A9", "filename%3d%22x%22")]


def test_host_is_without_port_and_lower_case(tmp_path):
    c = Conv().handshake()
    for host in ("Shop.Example:8080", "[2001:DB8::1]:443", "10.0.0.2:80", "plain.example"):
        c.request(req("/", host=host))
        c.tick(0.001).response(resp(200, b"."))
        c.tick()
    c.close()
    events, _ = events_of(tmp_path, c)
    assert [e["host"] for e in events] == ["shop.example", "2001:db8::1", "10.0.0.2", "plain.example"]


@pytest.mark.parametrize("framing", [b"Content-Length: -1\r\n", b"Content-Length: 5\r\nContent-Length: 7\r\n",
                                     b"Content-Length: 1e3\r\n"])
def test_unframeable_request_body_resyncs_on_the_next_request(tmp_path, framing):
    c = Conv().handshake()
    c.request(b"POST /a HTTP/1.1\r\nHost: shop.example\r\n" + framing + b"\r\nsome body bytes\r\n")
    c.tick().request(req("/b"))
    c.tick(0.001).response(resp(400, b"bad"))
    c.tick(0.001).response(resp(200, b"fine"))
    c.tick().close()
    events, stats = events_of(tmp_path, c)
    assert [(e["method"], e["uri"], e["status"]) for e in events] == [("POST", "/a", 400), ("GET", "/b", 200)]
    assert stats["framing_anomalies"] == 1 and stats["requests"] == 2


def test_content_length_beside_chunked_is_counted_and_chunked_frames_it(tmp_path):
    c = Conv().handshake()
    c.request(b"POST /c HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    c.tick(0.001).response(resp(200, b"c"))
    c.tick(0.001).response(resp(403, b"no"))
    c.tick().request(req("/after"))
    c.tick(0.001).response(resp(200, b"ok"))
    c.tick().close()
    events, stats = events_of(tmp_path, c)
    assert [(e["method"], e["uri"], e["status"]) for e in events] == [
        ("POST", "/c", 200), ("GET", "/smuggled", 403), ("GET", "/after", 200)]
    assert stats["framing_anomalies"] == 1 and stats["parse_errors"] == 0


def test_any_token_is_a_method_and_tabs_separate_like_spaces(tmp_path):
    c = Conv().handshake()
    c.request(b"get\t/lower\tHTTP/1.1\r\nHost: a.example\r\n\r\n")
    c.tick(0.001).response(resp(200, b"1"))
    c.tick().request(b"VERSION-CONTROL /svn/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    c.tick(0.001).response(resp(201, b"22"))
    c.tick().request(b"GET /crud HTTP/1.1 trailing-crud\r\nHost: a.example\r\n\r\n")
    c.tick(0.001).response(resp(200, b"333"))
    c.tick().close()
    events, stats = events_of(tmp_path, c)
    assert [(e["method"], e["uri"], e["status"], e["http_version"]) for e in events] == [
        ("get", "/lower", 200, "1.1"), ("VERSION-CONTROL", "/svn/x", 201, "1.1"), ("GET", "/crud", 200, "1.1")]
    assert stats["parse_errors"] == 0 and stats["non_http"] == 0


@pytest.mark.parametrize("declared, sent, end", [(158, 58, "fin"), (2_200_000_000, 100, "fin"), (100, 7, "rst")])
def test_an_answer_cut_short_counts_the_bytes_that_came(tmp_path, declared, sent, end):
    # the connection ends before the declared body is complete: resp_bytes is what was sent, not the declaration
    # (Zeek's response_body_len: 58 of 158 in its content-length-exceeds-body trace, 100 of 2.2 GB in
    # content-length-overflow)
    c = Conv().handshake()
    c.request(req("/cut"))
    c.tick().response(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % declared + b"x" * sent)
    if end == "fin":
        c.tick().close()
    else:
        c.tick().rst(False)
    events, _ = events_of(tmp_path, c)
    assert [(e["uri"], e["status"], e["resp_bytes"], e["no_response"]) for e in events] == [("/cut", 200, sent, False)]
