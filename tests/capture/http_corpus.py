"""A corpus of odd HTTP/1.x connections with the request rows a careful analyser reports.

Each case scripts one connection with scapy (`pcaps.Conv`) and states its rows: (method, host without
port, uri as on the wire, status; None when there is no status). The expected rows follow RFC 9112 and,
where the RFC leaves it open, what Zeek's HTTP analyser logs (its test traces hold these kinds: 0.9
requests and answers, CONNECT tunnels, 1xx and 101, HEAD/204/304, smuggling variants, desynchronised
responses, capture gaps). `test_http_conformance.py` runs every case through both decoders;
`benchmarks/conformance.py` scores visitwire and tshark on the same files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pcaps import Conv, req, resp


@dataclass
class Case:
    name: str
    build: Callable[[], Conv]
    rows: list[tuple]  # (method, host, uri, status)
    server_port: int = 80


CASES: list[Case] = []


def case(*rows, port: int = 80):
    def add(build):
        CASES.append(Case(build.__name__, build, list(rows), port))
        return build
    return add


@case(("CONNECT", "", "mailin.example.de:25 /", 200), port=8240)
def connect_without_host_then_smtp():
    # host is the Host header's, as for any request: this CONNECT has none
    c = Conv(server=("10.0.0.2", 8240)).handshake()
    c.request(b"CONNECT mailin.example.de:25 / HTTP/1.0\r\n\r\n")
    c.tick().response(b"HTTP/1.0 200 Connection established\r\n\r\n220 mailin ESMTP\r\n")
    c.tick().request(b"EHLO client\r\nGET /not-http HTTP/1.1\r\n\r\n")
    c.tick().response(b"250 ok\r\n")
    return c.tick().close()


@case(("CONNECT", "secure.example", "secure.example:443", 200))
def connect_with_host_then_tls():
    c = Conv().handshake()
    c.request(b"CONNECT secure.example:443 HTTP/1.0\r\nHost: secure.example:443\r\n"
              b"Proxy-Connection: keep-alive\r\n\r\n")
    c.tick().response(b"HTTP/1.0 200 Connection Established\r\n\r\n")
    c.tick().request(b"\x16\x03\x01\x00\x05hello")
    c.tick().response(b"\x16\x03\x03\x00\x02hi")
    return c.tick().close()


@case(("GET", "sandbox.example", "/echo?.kl=Y", 101))
def websocket_upgrade_then_frames():
    c = Conv().handshake()
    c.request(b"GET /echo?.kl=Y HTTP/1.1\r\nHost: sandbox.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    c.tick().response(b"HTTP/1.1 101 Web Socket Protocol Handshake\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                      b"\x81\x05hello")
    c.tick().request(b"\x81\x85abcd" + b"GET / HTTP/1.1\r\n\r\n")  # frames that hold what looks like a request
    c.tick().response(b"HTTP/1.1 200 OK\r\n\r\n")
    return c.tick().close()


@case(("POST", "www.osu.example", "/", 200))
def interim_responses_before_the_final_one():
    c = Conv().handshake()
    c.request(b"POST / HTTP/1.1\r\nHost: www.osu.example\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
    c.tick().response(b"HTTP/1.1 100 Continue\r\n\r\n")
    c.tick().request(b"0123456789")
    c.tick().response(b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    return c.tick().close()


@case(("POST", "target", "/", 200), ("GET", "target", "/after-100", 200))
def expect_100_with_empty_body():
    c = Conv().handshake()
    c.request(b"POST / HTTP/1.1\r\nHost: target\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n"
              b"GET /after-100 HTTP/1.1\r\nHost: target\r\n\r\n")
    c.tick().response(b"HTTP/1.1 100 Continue\r\n\r\n" + resp(200, b"1") + resp(200, b"2"))
    return c.tick().close()


@case(("HEAD", "a.example", "/h", 200), ("GET", "a.example", "/g", 204), ("GET", "a.example", "/n", 304),
      ("GET", "a.example", "/c", 200))
def answers_without_a_body_and_one_until_close():
    # HEAD, 204 and 304 carry no body whatever Content-Length says; a 1.0 answer without length runs to the close
    c = Conv().handshake()
    c.request(b"HEAD /h HTTP/1.1\r\nHost: a.example\r\n\r\nGET /g HTTP/1.1\r\nHost: a.example\r\n\r\n")
    c.tick().response(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                      b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
    c.tick().request(b"GET /n HTTP/1.1\r\nHost: a.example\r\n\r\n")
    c.tick().response(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n")
    c.tick().request(b"GET /c HTTP/1.0\r\nHost: a.example\r\n\r\n")
    c.tick().response(b"HTTP/1.0 200 OK\r\n\r\nbody until close")
    return c.tick().close()


@case(("POST", "a.example", "/up", 200), ("GET", "a.example", "/next", 404))
def chunked_with_extensions_and_trailers():
    c = Conv().handshake()
    c.request(b"POST /up HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n"
              b"X-Trailer: t\r\n\r\nGET /next HTTP/1.1\r\nHost: a.example\r\n\r\n")
    c.tick().response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;name=val\r\nabc\r\n0\r\nTrailer-A: 1\r\n"
                      b"Trailer-B: 2\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
    return c.tick().close()


@case(("POST", "a.example", "/m", 200), ("GET", "a.example", "/after", 201))
def repeated_equal_content_length():
    c = Conv().handshake()
    c.request(b"POST /m HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
              b"GET /after HTTP/1.1\r\nHost: a.example\r\n\r\n")
    c.tick().response(resp(200, b"1") + resp(201, b"22"))
    return c.tick().close()


@case(("GET", "shop.example", "/r1", 200), ("GET", "shop.example", "/r2", 202))
def conflicting_response_lengths():
    # the answer counts; its body cannot be framed, so the next status line is hunted for
    c = Conv().handshake()
    c.request(req("/r1"))
    c.tick().response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde")
    c.tick().request(req("/r2"))
    c.tick().response(resp(202, b"x"))
    return c.tick().close()


@case(("GET", "shop.example", "/p1", 200), ("GET", "shop.example", "/p2", 404), ("GET", "shop.example", "/p3", 500))
def pipelined_requests():
    c = Conv().handshake()
    c.request(req("/p1") + req("/p2") + req("/p3"))
    c.tick().response(resp(200, b"a") + resp(404, b"bb") + resp(500, b"ccc"))
    return c.tick().close()


@case(("GET", "shop.example", "/lost", None))
def request_without_response():
    c = Conv().handshake()
    c.request(req("/lost"))
    return c.tick().close()


@case(("GET", "shop.example", "/", None), port=22)
def request_to_an_ssh_server():
    # the server's banner is not HTTP, its client's request still is: reported, unanswered
    c = Conv(server=("10.0.0.2", 22)).handshake()
    c.response(b"SSH-2.0-OpenSSH_7.4\r\n")
    c.tick().request(req("/"))
    c.tick().response(b"Protocol mismatch.\n")
    return c.tick().close()


@case(("GET", "shop.example", "/a", None), ("GET", "shop.example", "/b", None), ("GET", "shop.example", "/c", None))
def requests_answered_in_something_else():
    # the client speaks HTTP, its server does not: every request is still reported, unanswered
    c = Conv().handshake()
    c.request(req("/a") + req("/b"))
    c.tick().response(b"\x00\x01garbage that is no status line\r\n")
    c.tick().request(req("/c"))
    c.tick().response(b"more garbage\r\n")
    return c.tick().close()


@case(("GET", "shop.example", "/s0", 200), ("GET", "shop.example", "/s1", 404), ("GET", "shop.example", "/s2", 301),
      ("GET", "shop.example", "/s3", 200))
def liberal_status_lines():
    # two spaces, no reason phrase, a tab, no space before the reason: the status is the 3 digits after "HTTP/x.y"
    c = Conv().handshake()
    for i, line in enumerate((b"HTTP/1.1  200 OK", b"HTTP/1.0 404", b"HTTP/1.1\t301 Moved", b"HTTP/1.1 200OK")):
        c.request(req(f"/s{i}"))
        c.tick().response(line + b"\r\nContent-Length: 1\r\n\r\nx")
        c.tick()
    return c.close()


@case(port=25)
def smtp_on_a_captured_port():
    # a server-first protocol whose client does not speak HTTP either: no request made of "EHLO client"
    c = Conv(server=("10.0.0.2", 25)).handshake()
    c.response(b"220 mail.example ESMTP\r\n")
    c.tick().request(b"EHLO client\r\n")
    c.tick().response(b"250 mail.example\r\n")
    c.tick().request(b"QUIT\r\n")
    return c.tick().close()


@case(("GET", "shop.example", "/later", 200))
def server_speaks_first():
    c = Conv().handshake()
    c.response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    c.tick().request(req("/later"))
    c.tick().response(resp(200, b"ok"))
    return c.tick().close()


@case(("GET", "localhost", "/", 200), ("GET", "localhost", "/", 200), ("GET", "localhost", "/", 200),
      ("GET", "localhost", "/", 200), ("GET", "localhost", "/", 200), port=8080)
def three_responses_to_one_request():
    # the two extra answers belong to no request; the later requests pair with the later answers
    c = Conv(server=("10.0.0.2", 8080)).handshake()
    c.request(req("/", host="localhost:8080"))
    c.tick().response(resp(200, b"a") + resp(200, b"b") + resp(200, b"c"))
    for _ in range(4):
        c.tick().request(req("/", host="localhost:8080"))
        c.tick().response(resp(200, b"d"))
    return c.tick().close()


@case(("GET", "other.example", "http://proxy.example:8080/path?q=1", 200), ("GET", "", "http://nohost.example/x", 200))
def absolute_form_targets():
    # host is the Host header's (a proxy request names its own in the target; the uri keeps it)
    c = Conv().handshake()
    c.request(b"GET http://proxy.example:8080/path?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
    c.tick().response(resp(200, b"x"))
    c.tick().request(b"GET http://nohost.example/x HTTP/1.0\r\n\r\n")
    c.tick().response(resp(200, b"y"))
    return c.tick().close()


@case(("get", "a.example", "/a", 200), ("QUERY", "example.com", "/users", 200), ("CCM_POST", "a.example", "/", 405),
      ("OPTIONS", "www.google.example", "*", 405))
def lower_case_unknown_methods_and_asterisk():
    c = Conv().handshake()
    c.request(b"get /a HTTP/1.1\r\nHost: a.example\r\n\r\nQUERY /users HTTP/1.1\r\nHost: example.com\r\n"
              b"Content-Length: 2\r\n\r\n{}CCM_POST / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    c.tick().response(resp(200, b"1") + resp(200, b"2") + resp(405, b"3"))
    c.tick().request(b"OPTIONS * HTTP/1.1\r\nHost: www.google.example\r\n\r\n")
    c.tick().response(resp(405, b"4"))
    return c.tick().close()


@case(("GET", "a.example", "/caf\u00e9/\ufffd?x=%41%zz", 200), ("GET", "icir.example", "/%", 400),
      ("GET", "icir.example", "/%5", 400))
def non_ascii_and_broken_escapes():
    # kept as sent (UTF-8 read as such, a byte that is not UTF-8 replaced), escapes untouched
    c = Conv().handshake()
    c.request(b"GET /caf\xc3\xa9/\xff?x=%41%zz HTTP/1.1\r\nHost: a.example\r\n\r\n")
    c.tick().response(resp(200, b"1"))
    c.tick().request(b"GET /% HTTP/1.1\r\nHost: icir.example\r\n\r\nGET /%5 HTTP/1.1\r\nHost: icir.example\r\n\r\n")
    c.tick().response(resp(400, b"2") + resp(400, b"3"))
    return c.tick().close()


@case(("GET", "::1", "/", 200), ("GET", "2001:db8::1", "/", 200), ("GET", "spaced.example", "/", 200),
      ("GET", "", "/nohost", 200), ("GET", "second.example", "/two", 200))
def host_header_forms():
    # a repeated Host: the last one counts, as Zeek's http.log keeps it (main.zeek sets host on each HOST header)
    c = Conv().handshake()
    for h in (b"[::1]", b"[2001:DB8::1]:8080", b" Spaced.Example "):
        c.request(b"GET / HTTP/1.1\r\nHost: " + h + b"\r\n\r\n")
        c.tick().response(resp(200, b"."))
    c.request(b"GET /nohost HTTP/1.1\r\n\r\n")
    c.tick().response(resp(200, b"."))
    c.request(b"GET /two HTTP/1.1\r\nHost: first.example\r\nHost: second.example\r\n\r\n")
    c.tick().response(resp(200, b"."))
    return c.tick().close()


@case(("GET", "a.example", "/two-spaces", 200), ("GET", "a.example", "/x", 200), ("GET", "a.example", "/y", 200),
      ("GET", "a.example", '/q?f="a b"', 200))
def request_line_spacing_and_crud():
    # the version is the first HTTP/d.d after whitespace; what follows it is ignored
    c = Conv().handshake()
    c.request(b"GET  /two-spaces \t HTTP/1.1\r\nHost: a.example\r\n\r\n")
    c.tick().response(resp(200, b"1"))
    c.tick().request(b"GET /x HTTP/1.1foo\r\nHost: a.example\r\n\r\n")
    c.tick().response(resp(200, b"2"))
    c.tick().request(b"GET /y HTTP/1.1 HTTP/1.0\r\nHost: a.example\r\n\r\n")
    c.tick().response(resp(200, b"3"))
    c.tick().request(b'GET /q?f="a b" HTTP/1.1\r\nHost: a.example\r\n\r\n')
    c.tick().response(resp(200, b"4"))
    return c.tick().close()


@case(("GET", "www.example", "/index.htmlHTTP/1.1", None), ("GET", "shop.example", "/after", None))
def missing_space_before_the_version():
    # no version: HTTP/0.9, whose answer is a bare body to the close even when it starts with a status line
    c = Conv().handshake()
    c.request(b"GET /index.htmlHTTP/1.1\r\nHost: www.example\r\n\r\n")
    c.tick().response(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad")
    c.tick().request(req("/after"))
    c.tick().response(resp(200, b"ok"))
    return c.tick().close()


@case(("GET", "localhost", "/zeek.html", None))
def http09_request_with_headers_and_bare_answer():
    c = Conv().handshake()
    c.request(b"GET /zeek.html\r\nHost: localhost\r\nUser-Agent: curl/7.74.0\r\n\r\n")
    c.tick().response(b"<html>zeek</html>\n")
    c.tick().fin(False)
    return c.tick().close()


@case(("GET", "", "/", None))
def answer_before_an_http09_request():
    # a status line nobody asked for, then a 0.9 request: its answer is the bare body after it
    c = Conv().handshake()
    c.response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    c.tick().request(b"GET /\r\n\r\n")
    c.tick().response(b"nineteen bytes here")
    return c.tick().close()


@case(("POST", "", "/zeek.html", None))
def http09_post_never_answered():
    # a 0.9 line with a method of 3 letters or more and a target is a request; this server never answers
    c = Conv().handshake()
    c.request(b"POST /zeek.html\r\n")
    return c.tick().close()


@case()
def http09_line_with_a_two_letter_method():
    c = Conv().handshake()
    c.request(b"XX /zeek.html\r\n")
    c.tick().response(b"hi")
    return c.tick().close()


@case()
def http09_line_without_a_target():
    c = Conv().handshake()
    c.request(b"GET\r\n")
    c.tick().response(b"hi")
    return c.tick().close()


@case(("GET", "bro.example", "", 200))
def missing_uri():
    c = Conv().handshake()
    c.request(b"GET HTTP/1.1\r\nHost: bro.example\r\n\r\n")
    c.tick().response(resp(200, b"x" * 40))
    return c.tick().close()


@case(("GET", "shop.example", "/big", 200), ("GET", "shop.example", "/after", 200))
def capture_gap_inside_a_body():
    c = Conv().handshake()
    c.request(req("/big"))
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n"
    sent = c.tick().response(head + b"x" * 3000, sizes=[len(head) + 1000, 1000, 1000])
    c.pkts = [p for p in c.pkts if p[1] is not sent[1]]  # the middle 1000 body bytes were never captured
    c.tick().request(req("/after"))
    c.tick().response(resp(200, b"ok"))
    return c.tick().close()


@case(("GET", "shop.example", "/rt", 200))
def retransmitted_and_overlapping_segments():
    c = Conv().handshake()
    data = req("/rt")
    c.request(data, sizes=[10, 10])
    c.packet(True, "PA", c.isn_c + 1, data[:20])  # the first two segments again, as one
    answer = resp(200, b"ok")
    c.tick().response(answer, sizes=[5])
    c.packet(False, "PA", c.isn_s + 1, answer[:12])
    return c.tick().close()


@case(("GET", "shop.example", "/r", 200))
def reset_in_the_middle_of_a_body():
    c = Conv().handshake()
    c.request(req("/r"))
    c.tick().response(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    c.tick().rst(False)
    return c


@case(("GET", "shop.example", "/nosyn", 200))
def picked_up_without_the_handshake():
    c = Conv()
    c.request(req("/nosyn"))
    c.tick().response(resp(200, b"ok"))
    return c.tick().close()


@case(("GET", "lf.example", "/lf", 200))
def bare_line_feeds():
    c = Conv().handshake()
    c.request(b"GET /lf HTTP/1.0\nHost: lf.example\n\n")
    c.tick().response(b"HTTP/1.0 200 OK\nContent-Length: 2\n\nok")
    return c.tick().close()


@case(("GET", "146.190.62.39", "/index.html", 200), ("GET", "146.190.62.39", "/small", 200), port=1234)
def lower_case_http_keyword():
    # "http/1.1" in the request line or the status line is still the version (Zeek: lowercase_HTTP_keyword)
    c = Conv(server=("10.0.0.2", 1234)).handshake()
    c.request(b"GET /index.html http/1.1\r\nHost: 146.190.62.39\r\n\r\n")
    c.tick().response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    c.tick().request(b"GET /small HTTP/1.1\r\nHost: 146.190.62.39\r\n\r\n")
    c.tick().response(b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return c.tick().close()


@case()
def bytes_before_the_request_line():
    # a malware beacon's 5 bytes before "GET ... HTTP/1.1": no request line, no request (Zeek:
    # bad_HTTP_request_with_version, and its answer is logged without a request)
    c = Conv().handshake()
    c.request(b"\xdd\x00\x00\x00 GET /c2 HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    c.tick().response(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nfourteen bytes")
    return c.tick().close()


def _mime_body(inner: bytes) -> bytes:
    return b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n" + inner + b"\r\n\r\nhello\r\n"


@case(("POST", "localhost", "/first", 200), ("POST", "localhost", "/smuggle-this", 200),
      ("POST", "localhost", "/te-inside", 200), ("POST", "localhost", "/after-te", 200), port=8080)
def framing_headers_inside_a_message_body():
    # a message/rfc822 body holds its own Content-Length / Transfer-Encoding: the outer head frames the body, so
    # the pipelined request after it is not swallowed (Zeek's content-length-in-request-body, smuggle-http-request)
    c = Conv(server=("10.0.0.2", 8080)).handshake()
    for first, inner, after in ((b"/first", b"Content-Length: 100000", b"/smuggle-this"),
                                (b"/te-inside", b"Transfer-Encoding: chunked", b"/after-te")):
        body = _mime_body(inner)
        c.request(b"POST " + first + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: message/rfc822\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                  + b"POST " + after + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: message/rfc822\r\n"
                  b"Content-Length: 0\r\n\r\n")
        c.tick().response(resp(200, b"1") + resp(200, b"2"))
        c.tick()
    return c.close()


@case(("POST", "interleave.me", "/", 200), ("GET", "interleave.me", "/next", 200))
def answer_while_the_body_is_still_sent():
    # the server answers before the client has sent all of its body (Zeek's interleaved-http-entity)
    c = Conv().handshake()
    c.request(b"POST / HTTP/1.1\r\nHost: interleave.me\r\nContent-Length: 10\r\n\r\n01234")
    c.tick().response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    c.tick().request(b"56789GET /next HTTP/1.1\r\nHost: interleave.me\r\n\r\n")
    c.tick().response(resp(200, b"n"))
    return c.tick().close()


@case(("GET", "localhost", "/", 200), ("GET", "10.0.0.2", "/bigfile", 200))
def declared_length_beyond_the_body():
    # the connection closes before the declared body is complete: 100 of 158 bytes short, or 2.2 GB declared and
    # 100 bytes sent (Zeek's content-length-exceeds-body, content-length-overflow); the answer still counts
    c = Conv().handshake()
    c.request(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
    c.tick().response(b"HTTP/1.0 200 OK\r\nContent-Length: 158\r\n\r\n" + b"x" * 58)
    c.tick().close()
    d = Conv(client=("10.0.0.1", 40001)).handshake()
    d.request(b"GET /bigfile HTTP/1.1\r\nHost: 10.0.0.2\r\n\r\n")
    d.tick().response(b"HTTP/1.1 200 OK\r\nContent-Length: 2200000000\r\n\r\n" + b"A" * 100)
    d.tick().close()
    c.pkts += d.pkts
    c.pkts.sort(key=lambda p: p[0])
    return c


@case(("GET", "ad.example", "/srad.js", 200), ("GET", "ad.example", "/ad", 200))
def answers_in_two_versions():
    # the server answers HTTP/1.1, then HTTP/1.0 on the same connection (Zeek's version-mismatch)
    c = Conv().handshake()
    c.request(req("/srad.js", host="ad.example"))
    c.tick().response(resp(200, b"js"))
    c.tick().request(req("/ad", host="ad.example", version="1.0"))
    c.tick().response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nad")
    return c.tick().close()


@case(("POST", "localhost", "/", 200), port=8000)
def client_on_a_well_known_port_without_handshake():
    # the client's port 1080 is SOCKS's, the server's 8000 no captured port, and the capture starts after the
    # handshake: the side that sends the request line is the client (Zeek's flip-content-line-orig)
    c = Conv(client=("10.0.0.1", 1080), server=("10.0.0.2", 8000))
    body = b"\x89PNG" + b"z" * 3000
    c.request(b"POST / HTTP/1.1\r\nHost: localhost:8000\r\nContent-Length: " + str(len(body)).encode()
              + b"\r\n\r\n" + body, sizes=[80, 1400])
    c.tick().response(resp(200, b"saved"))
    return c.tick().close()


@case(("GET", "shop.example", "/1", 200), ("GET", "shop.example", "/2", None), ("GET", "shop.example", "/3", 201),
      ("GET", "shop.example", "/4", 404))
def a_whole_answer_never_captured():
    # /2's answer is lost in a capture gap; /3's packet acknowledges it, so the hole is known then (the client has
    # those bytes: no retransmission will bring them): /2 is reported unanswered, /3 and /4 get their answers. Zeek
    # learns of the hole the same way but stops reading answers there (its 1000-requests-one-dropped-response
    # trace: every later row without a status); the answers after it are real, so they are reported here
    c = Conv().handshake()
    c.request(req("/1"))
    c.tick().response(resp(200, b"a"))
    c.tick().request(req("/2"))
    lost = c.tick().response(resp(200, b"bb"))
    c.pkts = [p for p in c.pkts if p[1] is not lost[0]]
    c.tick().request(req("/3"))
    c.tick().response(resp(201, b"c"))
    c.tick().request(req("/4"))
    c.tick().response(resp(404, b"d"))
    return c.tick().close()


@case(("GET", "shop.example", "/g1", 200), ("GET", "shop.example", "/g2", 404))
def capture_gap_inside_a_request_head():
    # the end of /g1's head was never captured; the server's answer acknowledges it, so the hole is known before
    # that answer is read: /g1 is reported with what was seen of it (its request line and Host) and its answer, as
    # Zeek reports it. Zeek then stops reading the client; the reading goes on here, with /g2 and its answer
    c = Conv().handshake()
    head = b"GET /g1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: test-agent/1.0\r\nAccept: */*\r\n\r\n"
    sent = c.request(head, sizes=[40])
    c.pkts = [p for p in c.pkts if p[1] is not sent[1]]
    c.tick().response(resp(200, b"a"))
    c.tick().request(req("/g2"))
    c.tick().response(resp(404, b"b"))
    return c.tick().close()


@case(("GET", "shop.example", "/a", 200), ("GET", "shop.example", "/b", 404), ("GET", "shop.example", "/c", 200),
      ("GET", "shop.example", "/d", 202), ("HEAD", "shop.example", "/h", 200), ("GET", "shop.example", "/g", 301))
def answer_longer_than_its_content_length():
    # a server sends more than its Content-Length says, or a body after a HEAD answer: the extra bytes are no
    # answer, and the next status line is hunted for, also when they end their segment, run on into the next one
    # or run into the next status line. Zeek stops reading the server at such a line (AnalyzerViolation "not a
    # http reply line": the later requests get no status); the answers after it are reported here, as sent
    c = Conv().handshake()
    c.request(req("/a"))
    c.tick().response(resp(200, b"abc") + b"xyz, three bytes too many\r\n")
    c.tick().request(req("/b"))
    c.tick().response(resp(404, b"n"))
    c.tick().request(req("/c"))
    c.tick().response(resp(200, b"c") + b"more")
    c.tick().request(req("/d"))
    c.tick().response(b"junk\r\n" + resp(202, b"d"))
    c.tick().request(req("/h", method="HEAD"))
    c.tick().response(resp(200, b"hello"))
    c.tick().request(req("/g"))
    c.tick().response(resp(301, b"moved"))
    return c.tick().close()


def _smuggling(name: str, framing: bytes, body: bytes, smuggled: str, first_status: int = 200):
    def build():
        c = Conv().handshake()
        c.request(b"POST / HTTP/1.1\r\nHost: target\r\n" + framing + b"\r\n" + body
                  + f"GET {smuggled} HTTP/1.1\r\nHost: target\r\n\r\n".encode())
        c.tick().response(resp(first_status, b"1") + resp(404, b"2"))
        return c.tick().close()
    build.__name__ = name
    case(("POST", "target", "/", first_status), ("GET", "target", smuggled, 404))(build)


# the request smuggling variants of Zeek's test traces: whatever the framing trick, both requests are reported
_smuggling("chunk_size_beyond_2_to_the_64", b"Transfer-Encoding: chunked\r\n", b"10000000000000001\r\nx\r\n0\r\n\r\n",
           "/smuggled-chunk-2pow64", 400)
_smuggling("content_length_uint64_max", b"Content-Length: 18446744073709551615\r\n", b"", "/smuggled-cl-uint64max",
           400)
_smuggling("content_length_negative", b"Content-Length: -1\r\n", b"", "/smuggled-cl-negative", 400)
_smuggling("content_length_leading_zeros", b"Content-Length: 0003\r\n", b"abc", "/smuggled-leading-zeros")
_smuggling("transfer_encoding_folded", b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n", "/smuggled-obsfold")
_smuggling("transfer_encoding_list", b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n", "/smuggled-multi-te")
_smuggling("content_length_beside_chunked", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n",
           "/smuggled-te-cl")
