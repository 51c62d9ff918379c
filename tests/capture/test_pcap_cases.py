"""Capture files built with scapy -> exact HTTP visit events.

Each test scripts a TCP conversation (tests/capture/pcaps.py), writes it as a
capture file, runs it through read_pcap_batches + Decoder exactly as
`visitwire capture --pcap` does, and checks the events a user would see.
"""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest


from pcaps import T0, Conv, chunked, req, resp, udp_packet, write  # noqa: E402

from scapy.layers.inet import IP  # noqa: E402

from capture.pcapfile import PcapFormatError, read_pcap_batches  # noqa: E402
from capture.decoder import Decoder  # noqa: E402
from config.events import HIT_FIELD_NAMES  # noqa: E402
from config.settings import Settings  # noqa: E402


def decode(path, expire_at: float | None = None, **capture) -> tuple[list[dict], dict, Decoder]:
    d = Decoder(Settings(capture=capture) if capture else Settings())
    events = []
    for b in read_pcap_batches(str(path)):
        events += d.feed(b)
    if expire_at is not None:
        events += d.expire(expire_at)
    events += d.close()
    for e in events:
        assert tuple(e) == HIT_FIELD_NAMES
    return events, d.stats, d


def run(tmp_path, conv_or_pkts, link="ether", fmt="pcap", **kw):
    pkts = conv_or_pkts.pkts if isinstance(conv_or_pkts, Conv) else conv_or_pkts
    path = write(tmp_path / f"c.{fmt}", pkts, link=link, fmt=fmt,
                 **{k: kw.pop(k) for k in ("snaplen", "big_endian", "nanos") if k in kw})
    return decode(path, **kw)


def brief(events):
    # latency to 0.1 ms: writers store timestamps truncated to whole microseconds
    return [(e["method"], e["uri"], e["status"], e["resp_bytes"],
             None if e["latency_ms"] is None else round(e["latency_ms"], 1)) for e in events]


def simple_conv(**kw) -> Conv:
    c = Conv(**kw).handshake()
    c.request(req("/product/42?color=red", headers={"Referer": "https://www.google.com/"}))
    c.tick(0.025).response(resp(200, b"x" * 2500), sizes=[1400])
    c.tick().close()
    return c


EXPECTED_SIMPLE = [("GET", "/product/42?color=red", 200, 2500, 25.0)]


# -- link layers and file formats -------------------------------------------------------

@pytest.mark.parametrize("link", ["ether", "vlan", "qinq", "sll", "sll2", "null", "raw"])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_every_link_type_and_format_gives_the_same_event(tmp_path, link, fmt):
    events, stats, _ = run(tmp_path, simple_conv(), link=link, fmt=fmt)
    assert brief(events) == EXPECTED_SIMPLE
    e = events[0]
    assert (e["client_ip"], e["client_port"], e["server_ip"], e["server_port"]) == ("10.0.0.1", 40000, "10.0.0.2", 80)
    assert (e["host"], e["path"], e["query"], e["referrer"]) == ("shop.example", "/product/42", "color=red",
                                                                   "https://www.google.com/")
    assert e["content_type"] == "text/html" and e["http_version"] == "1.1" and e["no_response"] is False
    assert e["ts"] == pytest.approx(T0 + 0.003, abs=1e-6)
    assert stats["flows"] == 1 and stats["parse_errors"] == 0


@pytest.mark.parametrize("ext", [False, True, "ah"])
def test_ipv6_with_and_without_extension_headers(tmp_path, ext):
    c = simple_conv(client=("2001:db8::1", 40000), server=("2001:db8::2", 80), v6=True, ext_headers=ext)
    events, _, _ = run(tmp_path, c)
    assert brief(events) == EXPECTED_SIMPLE
    assert events[0]["client_ip"] == "2001:db8::1" and events[0]["server_ip"] == "2001:db8::2"


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_byte_orders_and_nanosecond_timestamps(tmp_path, big_endian, nanos):
    events, _, _ = run(tmp_path, simple_conv(), big_endian=big_endian, nanos=nanos)
    assert brief(events) == EXPECTED_SIMPLE
    assert events[0]["ts"] == pytest.approx(T0 + 0.003, abs=1e-6)


def test_not_a_capture_file_is_a_clear_error(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, I am not a pcap\n")
    with pytest.raises(PcapFormatError, match="not a pcap or pcapng"):
        read_pcap_batches(str(p))
    with pytest.raises(PcapFormatError, match="no such file"):
        read_pcap_batches(str(tmp_path / "missing.pcap"))
    (tmp_path / "empty.pcap").write_bytes(b"")
    with pytest.raises(PcapFormatError, match="empty"):
        read_pcap_batches(str(tmp_path / "empty.pcap"))


def test_file_cut_mid_record_stops_cleanly_and_is_counted(tmp_path):
    c = Conv().handshake()
    c.request(req("/first"))
    c.tick(0.01).response(resp(200, b"a" * 10))
    c.tick().request(req("/second"))
    c.tick(0.01).response(resp(200, b"b" * 10))
    path = write(tmp_path / "c.pcap", c.pkts)
    data = Path(path).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-20])  # the last response packet loses its tail
    stats: dict = {}
    d = Decoder(Settings())
    events = []
    for b in read_pcap_batches(str(cut), stats=stats):
        events += d.feed(b)
    events += d.close()
    assert stats["truncated_file"] == 1
    assert brief(events) == [("GET", "/first", 200, 10, 10.0), ("GET", "/second", None, 0, None)]


# -- TCP reassembly ---------------------------------------------------------------------

def test_request_split_across_many_segments(tmp_path):
    c = Conv().handshake()
    r = req("/search?q=shoes", headers={"Accept": "text/html", "X-Long": "y" * 300})
    c.request(r, sizes=[1, 2, 3, 5, 8, 13, 21, 34, 55, 89])
    c.tick(0.01).response(resp(200, b"z" * 100), sizes=[7])
    events, stats, _ = run(tmp_path, c)
    assert brief(events) == [("GET", "/search?q=shoes", 200, 100, 10.0)]
    assert events[0]["ts"] == pytest.approx(c.pkts[3][0])


def test_out_of_order_segments_are_reordered(tmp_path):
    c = Conv().handshake()
    c.request(req("/a", headers={"X-Pad": "p" * 200}), sizes=[50, 50, 50])
    c.tick(0.02).response(resp(404, b"n" * 3000), sizes=[1000, 1000])
    c.tick().request(req("/b"))
    c.tick(0.01).response(resp(200, b"ok"))
    p = c.pkts
    # request segments 2,1,3,4 and response segments 3,1,2
    order = p[:3] + [p[4], p[3], p[5], p[6], p[9], p[7], p[8]] + p[10:]
    events, stats, _ = run(tmp_path, order)
    assert brief(events) == [("GET", "/a", 404, 3000, 20.0), ("GET", "/b", 200, 2, 10.0)]
    assert stats["parse_errors"] == 0 and stats["gaps"] == 0


def test_retransmissions_and_overlaps_are_delivered_once(tmp_path):
    c = Conv().handshake()
    data = req("/r", headers={"X-Pad": "p" * 100})
    segs = c.request(data, sizes=[60, 60])
    # an overlapping segment covering the end of segment 1 and the start of segment 2
    c.packet(True, "PA", c.isn_c + 1 + 40, data[40:90])
    c.pkts.append(c.pkts[3])  # exact retransmission of the first segment
    c.tick(0.005).response(resp(200, b"q" * 50))
    c.pkts.append(c.pkts[-1])  # the response retransmitted
    c.tick().request(req("/after"))
    c.tick(0.005).response(resp(201, b""))
    events, stats, _ = run(tmp_path, c)
    assert len(segs) == 3
    assert brief(events) == [("GET", "/r", 200, 50, 5.0), ("GET", "/after", 201, 0, 5.0)]
    assert stats["retransmitted_segments"] >= 2 and stats["parse_errors"] == 0


def test_sequence_numbers_wrapping_around(tmp_path):
    c = Conv(isn_c=(1 << 32) - 30, isn_s=(1 << 32) - 5).handshake()
    c.request(req("/wrap"), sizes=[20, 20])
    c.tick(0.001).response(resp(200, b"w" * 500), sizes=[100])
    events, _, _ = run(tmp_path, c)
    assert brief(events) == [("GET", "/wrap", 200, 500, 1.0)]


def test_midstream_pickup_resyncs_on_the_next_request(tmp_path):
    c = Conv()  # no handshake: the capture starts mid-connection
    c.response(b"x" * 900 + b"\r\nGET /fake HTTP/1.1\r\n" + b"y" * 50)  # the tail of a body
    c.tick().request(req("/next"))
    c.tick(0.004).response(resp(200, b"n" * 30))
    events, stats, _ = run(tmp_path, c)
    assert brief(events) == [("GET", "/next", 200, 30, 4.0)]


def test_truncated_capture_snaplen_counts_frames_and_keeps_lengths(tmp_path):
    c = Conv().handshake()
    c.request(req("/big"))
    c.tick(0.003).response(resp(200, b"B" * 4000), sizes=[1400, 1400])
    c.tick().request(req("/next"))
    c.tick(0.002).response(resp(200, b"C" * 100))
    events, stats, _ = run(tmp_path, c, snaplen=400)
    assert brief(events) == [("GET", "/big", 200, 4000, 3.0), ("GET", "/next", 200, 100, 2.0)]
    assert stats["truncated_frames"] == 3


def test_response_never_comes_is_flagged_at_timeout(tmp_path):
    c = Conv().handshake()
    c.request(req("/lost"))
    t_req = c.t
    c.tick(0.5)
    path = write(tmp_path / "c.pcap", c.pkts)
    d = Decoder(Settings(capture={"transaction_timeout_s": 10}))
    events = []
    for b in read_pcap_batches(str(path)):
        events += d.feed(b)
    assert events == [] and d.expire(t_req + 9.0) == []
    events = d.expire(t_req + 10.5)
    assert brief(events) == [("GET", "/lost", None, 0, None)]
    assert events[0]["no_response"] is True and d.stats["no_response"] == 1
    assert d.close() == []


def test_late_response_after_timeout_does_not_shift_pairing(tmp_path):
    c = Conv().handshake()
    c.request(req("/slow"))
    c.tick(20).response(resp(200, b"late"))
    c.tick().request(req("/fast"))
    c.tick(0.001).response(resp(200, b"ok"))
    path = write(tmp_path / "c.pcap", c.pkts)
    d = Decoder(Settings(capture={"transaction_timeout_s": 5}))
    events = []
    for b in read_pcap_batches(str(path)):
        for i in range(len(b)):  # feed frame by frame with expiry sweeps, like a live capture
            sub = type(b)(b.buf, b.offsets[i:i + 1], b.caplens[i:i + 1], b.wirelens[i:i + 1], b.ts[i:i + 1],
                          b.linktypes[i:i + 1])
            events += d.expire(float(b.ts[i]))
            events += d.feed(sub)
    events += d.close()
    assert brief(events) == [("GET", "/slow", None, 0, None), ("GET", "/fast", 200, 2, 1.0)]
    assert d.stats["late_responses"] == 1


def test_close_reports_pending_requests_without_response(tmp_path):
    c = Conv().handshake()
    c.request(req("/one"))
    c.tick(0.002).response(resp(200, b"1"))
    c.tick().request(req("/two"))
    events, stats, _ = run(tmp_path, c)
    assert brief(events) == [("GET", "/one", 200, 1, 2.0), ("GET", "/two", None, 0, None)]
    assert stats["no_response"] == 1


def test_http10_body_until_fin(tmp_path):
    c = Conv().handshake()
    c.request(req("/old", version="1.0"))
    c.tick(0.003).response(resp(200, b"E" * 3333, length=False), sizes=[1000])
    c.tick(0.001).fin(False)
    path = write(tmp_path / "c.pcap", c.pkts)
    d = Decoder(Settings())
    events = []
    for b in read_pcap_batches(str(path)):
        events += d.feed(b)  # the FIN completes the body: no need to wait for close()
    assert brief(events) == [("GET", "/old", 200, 3333, 3.0)]
    assert events[0]["http_version"] == "1.0"


def test_rst_ends_the_connection_and_reports_the_unanswered_request(tmp_path):
    c = Conv().handshake()
    c.request(req("/one"))
    c.tick(0.002).response(resp(200, b"1"))
    c.tick().request(req("/two"))
    c.tick().rst(False)
    path = write(tmp_path / "c.pcap", c.pkts)
    d = Decoder(Settings())
    events = []
    for b in read_pcap_batches(str(path)):
        events += d.feed(b)
    assert brief(events) == [("GET", "/one", 200, 1, 2.0), ("GET", "/two", None, 0, None)]
    assert d.stats["flows_reset"] == 1 and d.open_flows == 0


def test_fin_both_ways_removes_the_flow(tmp_path):
    _, stats, d = run(tmp_path, simple_conv())
    assert stats["flows_closed"] == 1


def test_idle_flow_expiry_finishes_and_forgets_the_flow(tmp_path):
    c = Conv().handshake()
    c.request(req("/stream", version="1.0"))
    c.tick(0.001).response(resp(200, b"s" * 700, length=False))
    path = write(tmp_path / "c.pcap", c.pkts)
    d = Decoder(Settings(capture={"flow_idle_timeout_s": 60}))
    for b in read_pcap_batches(str(path)):
        assert d.feed(b) == []
    assert d.expire(c.t + 30) == [] and d.open_flows == 1
    events = d.expire(c.t + 61)
    assert brief(events) == [("GET", "/stream", 200, 700, 1.0)]
    assert d.open_flows == 0 and d.stats["flows_expired"] == 1


def test_buffer_overflow_is_dropped_and_counted(tmp_path):
    c = Conv().handshake()
    c.request(req("/x"))
    segs = c.tick(0.001).response(resp(200, b"o" * 6000), sizes=[1000] * 6)
    c.tick().request(req("/y"))
    c.tick(0.001).response(resp(200, b"k" * 10))
    p = c.pkts
    first = p.index(next(x for x in p if x[1] is segs[0]))
    # the first response segment arrives last: everything after it waits in the out-of-order buffer
    order = p[:first] + p[first + 1:first + 7] + [p[first]] + p[first + 7:]
    events, stats, d = run(tmp_path, order, max_flow_buffer_bytes=2500)
    assert stats["dropped_overflow_bytes"] > 0 and stats["dropped_overflow_segments"] > 0
    # the response of /x was lost to the drop: /x is reported unanswered, /y still pairs with its own response
    assert brief(events) == [("GET", "/x", None, 0, None), ("GET", "/y", 200, 10, 1.0)]
    assert d.buffered_bytes == 0


# -- HTTP framing -----------------------------------------------------------------------

def test_pipelining_three_requests_then_three_responses(tmp_path):
    c = Conv().handshake()
    c.request(req("/1") + req("/2") + req("/3", method="HEAD"))
    c.tick(0.010).response(resp(200, b"one") + resp(404, b"four-oh-four"), sizes=[90])
    c.tick(0.002).response(resp(200, b"", headers={"X-Note": "head"}).replace(b"Content-Length: 0",
                                                                               b"Content-Length: 999"))
    c.tick().request(req("/4"))
    c.tick(0.001).response(resp(200, b"four"))
    events, stats, _ = run(tmp_path, c)
    assert brief(events) == [("GET", "/1", 200, 3, 10.0), ("GET", "/2", 404, 12, 10.0),
                             ("HEAD", "/3", 200, 0, 12.0), ("GET", "/4", 200, 4, 1.0)]
    assert stats["parse_errors"] == 0


def test_chunked_body_with_sizes_split_across_segments(tmp_path):
    c = Conv().handshake()
    c.request(req("/api"))
    body = chunked([b"a" * 300, b"b" * 17, b"c" * 4096])
    head_len = body.index(b"\r\n\r\n") + 4
    # cut inside the chunk-size lines "12c\r\n" and "1000\r\n" and the final "0\r\n\r\n"
    sizes = [head_len + 2, 2, 300, 5, 20, 2, 2, 1, 1, 4096, 3]
    c.tick(0.007).response(body, sizes=sizes)
    c.tick().request(req("/after"))
    c.tick(0.001).response(resp(200, b"done"))
    events, stats, _ = run(tmp_path, c)
    assert brief(events) == [("GET", "/api", 200, 300 + 17 + 4096, 7.0), ("GET", "/after", 200, 4, 1.0)]
    assert events[0]["content_type"] == "application/json"


def test_body_containing_a_request_line_is_not_a_request(tmp_path):
    c = Conv().handshake()
    fake = b"GET /fake HTTP/1.1\r\nHost: evil\r\n\r\n"
    c.request(req("/upload", method="POST", body=fake * 3), sizes=[100, 10])
    c.tick(0.002).response(resp(200, fake + b"HTTP/1.1 500 Boom\r\n\r\n"))
    c.tick().request(req("/real"))
    c.tick(0.001).response(resp(200, b"r"))
    events, stats, _ = run(tmp_path, c)
    assert brief(events) == [("POST", "/upload", 200, len(fake) + 21, 2.0), ("GET", "/real", 200, 1, 1.0)]


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(tmp_path, status):
    c = Conv().handshake()
    c.request(req("/nb"))
    # a Content-Length on 204/304 describes the entity, not bytes on the wire
    c.tick(0.002).response(resp(status, b"", headers={"Content-Length": "1234"}, length=False, reason="X"))
    c.tick().request(req("/next"))
    c.tick(0.001).response(resp(200, b"abc"))
    events, stats, _ = run(tmp_path, c)
    assert brief(events) == [("GET", "/nb", status, 0, 2.0), ("GET", "/next", 200, 3, 1.0)]
    assert stats["parse_errors"] == 0


def test_expect_100_continue(tmp_path):
    c = Conv().handshake()
    c.request(req("/order/complete", method="POST", headers={"Expect": "100-continue",
                                                             "Content-Length": "11"}))
    c.tick(0.001).response(b"HTTP/1.1 100 Continue\r\n\r\n")
    c.tick(0.001).request(b"amount=9.99")
    c.tick(0.003).response(resp(201, b"created", headers={"X-Order-Amount": "9.99"}))
    events, stats, _ = run(tmp_path, c)
    assert brief(events) == [("POST", "/order/complete", 201, 7, 5.0)]
    assert events[0]["extra"] == {"x-order-amount": "9.99"}


def test_folded_headers_and_odd_case_names(tmp_path):
    c = Conv().handshake()
    raw = (b"GET /f HTTP/1.1\r\nhOsT: Shop.EXAMPLE:8080\r\nUSER-AGENT: Mozilla/5.0\r\n (folded part)\r\n"
           b"this line is garbage\r\nreferer:https://ref.example/x\r\n\r\n")
    c.request(raw)
    c.tick(0.001).response(b"HTTP/1.1 200 OK\r\ncontent-TYPE: Text/Plain;charset=x\r\nCONTENT-LENGTH: 2\r\n\r\nok")
    events, stats, _ = run(tmp_path, c)
    e = events[0]
    assert (e["host"], e["user_agent"], e["referrer"]) == ("shop.example", "Mozilla/5.0 (folded part)",
                                                           "https://ref.example/x")
    assert (e["status"], e["resp_bytes"], e["content_type"]) == (200, 2, "text/plain")


def test_non_http_traffic_on_the_port_is_counted_and_ignored(tmp_path):
    c = Conv().handshake()
    c.request(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(200)))  # a TLS ClientHello
    c.tick().response(b"\x16\x03\x03\x00\x5a" + bytes(90))
    c.tick().close()
    pkts = c.pkts + [udp_packet(c.t)]
    events, stats, _ = run(tmp_path, pkts)
    assert events == []
    assert stats["non_http"] == 1 and stats["non_tcp"] == 1 and stats["parse_errors"] == 0


def test_hostile_heads_and_lengths_are_counted_parse_errors(tmp_path):
    c = Conv().handshake()
    c.request(req("/huge", headers={"X-Big": "h" * 70000}), sizes=[1400] * 60)
    c.tick().request(req("/after-huge"))
    c.tick(0.001).response(resp(200, b"1"))
    c.tick().request(req("/absurd"))
    c.tick(0.001).response(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nxx")
    c.tick().request(req("/neg"))
    c.tick(0.001).response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabcde\r\n0\r\n\r\n")
    c.tick().request(req("/last"))
    c.tick(0.001).response(resp(200, b"fine"))
    events, stats, _ = run(tmp_path, c)
    # an answer whose length cannot be trusted still gives its status (a framing anomaly, its body unknown);
    # a broken chunked body ends that response
    assert brief(events) == [("GET", "/after-huge", 200, 1, 1.0), ("GET", "/absurd", 200, 0, 1.0),
                             ("GET", "/neg", 200, 0, 1.0), ("GET", "/last", 200, 4, 1.0)]
    assert stats["parse_errors"] == 2 and stats["framing_anomalies"] == 1


def test_server_side_when_no_configured_port_matches(tmp_path):
    c = Conv(client=("10.0.0.1", 5555), server=("10.0.0.2", 7777)).handshake()
    c.request(req("/p"))
    c.tick(0.001).response(resp(200, b"x"))
    events, _, _ = run(tmp_path, c)
    e = events[0]
    assert (e["client_ip"], e["client_port"], e["server_port"], e["status"]) == ("10.0.0.1", 5555, 7777, 200)
    # midstream too: the side that sends the request line is the client
    c2 = Conv(client=("10.0.0.1", 5555), server=("10.0.0.2", 7777))
    c2.request(req("/q"))
    c2.tick(0.001).response(resp(200, b"y"))
    events, _, _ = run(tmp_path, c2)
    assert [(e["client_port"], e["uri"], e["status"]) for e in events] == [(5555, "/q", 200)]


# -- identity and privacy ---------------------------------------------------------------

def test_visitor_and_member_ids_are_salted_hashes_and_raw_values_never_leave(tmp_path):
    c1 = Conv(client=("10.0.0.1", 40001)).handshake()
    c1.request(req("/login?password=hunter2&next=/home", method="POST", body=b"user=ann&password=hunter2",
                   headers={"Cookie": "theme=dark; _vw_id=VISITOR-RAW-123", "Authorization": "Basic QUxBRERJTjpPUEVO",
                            "Referer": "https://shop.example/signup?token=TOKEN-RAW-5&step=2"}))
    c1.tick(0.001).response(resp(302, b"", headers={"Set-Cookie": "member=MEMBER-RAW-777; Path=/; HttpOnly"}))
    c1.tick().request(req("/account", headers={"Cookie": "_vw_id=VISITOR-RAW-123; member=MEMBER-RAW-777"}))
    c1.tick(0.001).response(resp(200, b"acct"))
    c2 = Conv(client=("10.0.0.3", 40002), t=c1.t + 1).handshake()
    c2.request(req("/", headers={"Cookie": "_ga=GA-OTHER-9", "X-Member-Id": "MEMBER-RAW-777"}))
    c2.tick(0.001).response(resp(200, b"home"))
    c2.tick().request(req("/anon"))
    c2.tick(0.001).response(resp(200, b"a"))
    events, _, _ = run(tmp_path, sorted(c1.pkts + c2.pkts, key=lambda x: x[0]))
    out = b"\n".join(orjson.dumps(e) for e in events)
    for secret in (b"VISITOR-RAW-123", b"MEMBER-RAW-777", b"GA-OTHER-9", b"hunter2", b"QUxBRERJTjpPUEVO", b"theme",
                   b"TOKEN-RAW-5"):
        assert secret not in out
    by = {e["path"]: e for e in events}
    assert by["/login"]["query"] == "next=/home" and by["/login"]["uri"] == "/login?next=/home"
    assert by["/login"]["referrer"] == "https://shop.example/signup?step=2"
    assert by["/login"]["visitor_id"] == by["/account"]["visitor_id"]
    assert len(by["/login"]["visitor_id"]) == 32
    # the login response's Set-Cookie marks the member; the cookie and the header name the same member
    assert by["/login"]["member_id"] == by["/account"]["member_id"] == by["/"]["member_id"] != ""
    assert by["/"]["visitor_id"] != by["/login"]["visitor_id"]
    assert by["/anon"]["member_id"] == ""
    # no visitor cookie: salted hash of client IP + User-Agent, stable but not the same as a cookie visitor
    assert by["/anon"]["visitor_id"] not in (by["/"]["visitor_id"], by["/login"]["visitor_id"])
    # another salt gives other ids
    other, _, _ = run(tmp_path, sorted(c1.pkts + c2.pkts, key=lambda x: x[0]), salt="another-salt")
    assert {e["visitor_id"] for e in other}.isdisjoint({e["visitor_id"] for e in events})
    # credentials stay out even when someone lists them as extra headers
    careless, _, _ = run(tmp_path, sorted(c1.pkts + c2.pkts, key=lambda x: x[0]),
                         extra_headers=["Authorization", "Cookie", "x-order-amount"])
    assert all(e["extra"] == {} for e in careless)
    assert b"QUxBRERJTjpPUEVO" not in b"".join(orjson.dumps(e) for e in careless)


def test_first_visit_takes_the_visitor_cookie_the_response_assigns(tmp_path):
    c = Conv(client=("10.0.0.9", 40009)).handshake()
    c.request(req("/"))  # no cookie yet
    c.tick(0.001).response(resp(200, b"home", headers={"Set-Cookie": "_vw_id=NEW-VISITOR-42; Path=/"}))
    c.tick().request(req("/product/1", headers={"Cookie": "_vw_id=NEW-VISITOR-42"}))
    c.tick(0.001).response(resp(200, b"p1"))
    c.tick().request(req("/no-cookie-again"))
    c.tick(0.001).response(resp(200, b"x"))
    events, _, _ = run(tmp_path, c)
    by = {e["path"]: e for e in events}
    assert by["/"]["visitor_id"] == by["/product/1"]["visitor_id"]
    assert by["/no-cookie-again"]["visitor_id"] != by["/"]["visitor_id"]  # IP + UA fallback
    assert b"NEW-VISITOR-42" not in b"".join(orjson.dumps(e) for e in events)


def test_event_ids_are_deterministic_and_distinct(tmp_path):
    c = Conv().handshake()
    for k in range(5):
        c.request(req(f"/{k}"))
        c.tick(0.001).response(resp(200, b"x"))
        c.tick()
    a, _, _ = run(tmp_path, c, big_endian=True)
    b, _, _ = run(tmp_path, c, nanos=True)
    assert [e["event_id"] for e in a] == [e["event_id"] for e in b]
    assert len({e["event_id"] for e in a}) == 5


def test_incomplete_heads_count_against_the_total_buffer_limit(tmp_path):
    # two clients each leave a 2 KB head unfinished; together they exceed the 3 KB total limit
    c1 = Conv(client=("10.0.0.1", 40001)).handshake()
    c2 = Conv(client=("10.0.0.3", 40002)).handshake()
    big = req("/slow", headers={"X-Pad": "p" * 2000})
    c1.request(big, sizes=[2000], dt=0.0005)  # the heads' two halves interleave across the flows
    c2.request(big, sizes=[2000], dt=0.0005)
    c1.tick(0.001).response(resp(200, b"1"))
    c2.tick(0.001).response(resp(200, b"2"))
    c2.tick().request(req("/ok"))
    c2.tick(0.001).response(resp(200, b"fine"))
    pkts = sorted(c1.pkts + c2.pkts, key=lambda x: x[0])
    events, stats, d = run(tmp_path, pkts, max_total_buffer_bytes=3000)
    assert stats["dropped_overflow_bytes"] >= 2000
    assert brief(events).count(("GET", "/slow", 200, 1, 2.0)) == 1  # the flow that stayed within the limit
    assert ("GET", "/ok", 200, 4, 1.0) in brief(events)    # the other one resyncs on its next request
    assert d.buffered_bytes == 0
    plenty, stats2, _ = run(tmp_path, pkts)
    assert stats2["dropped_overflow_bytes"] == 0 and sorted(brief(plenty)) == sorted(
        [("GET", "/slow", 200, 1, 2.0), ("GET", "/slow", 200, 1, 2.0), ("GET", "/ok", 200, 4, 1.0)])


def test_pcapng_interfaces_with_their_own_link_type_and_resolution(tmp_path):
    from pcaps import frame, write_pcapng_interfaces

    a = simple_conv()
    b = Conv(client=("10.0.0.5", 41000), server=("10.0.0.6", 8080), t=T0 + 10).handshake()
    b.request(req("/other"))
    b.tick(0.004).response(resp(200, b"abc"))
    # connection a on an Ethernet interface with microseconds, b on a raw-IP interface with nanoseconds
    pkts = [(0, t, bytes(frame(p, "ether"))) for t, p in a.pkts] + [(1, t, bytes(frame(p, "raw"))) for t, p in b.pkts]
    path = write_pcapng_interfaces(tmp_path / "multi.pcapng", pkts, [(1, 6), (101, 9)])
    events, stats, _ = decode(path)
    assert brief(events) == EXPECTED_SIMPLE + [("GET", "/other", 200, 3, 4.0)]
    assert events[1]["ts"] == pytest.approx(b.pkts[3][0], abs=1e-6)


def test_pcapng_simple_packet_blocks(tmp_path):
    from pcaps import frame, write_pcapng_interfaces

    c = simple_conv()
    pkts = [(0, t, bytes(frame(p, "ether"))) for t, p in c.pkts]
    # SPBs carry no timestamp: they take the last one seen, so latency is not measurable, the rest is
    path = write_pcapng_interfaces(tmp_path / "spb.pcapng", pkts, [(1, 6)], simple_from=4)
    events, stats, _ = decode(path)
    assert [(e["uri"], e["status"], e["resp_bytes"]) for e in events] == [("/product/42?color=red", 200, 2500)]
    assert stats["packets"] == len(pkts)


def test_offloaded_segments_larger_than_the_mtu(tmp_path):
    c = Conv().handshake()
    c.request(req("/video"))
    big = c.tick(0.002).response(resp(200, b"v" * 60000, ctype="video/mp4"), sizes=[40000])
    big[0][IP].len = 0  # some NICs hand over offloaded IPv4 packets with total length 0
    c.tick().request(req("/after"))
    c.tick(0.001).response(resp(200, b"a"))
    events, stats, _ = run(tmp_path, c)
    assert brief(events) == [("GET", "/video", 200, 60000, 2.0), ("GET", "/after", 200, 1, 1.0)]
    assert events[0]["content_type"] == "video/mp4"
    assert stats["truncated_frames"] == 0 and stats["gaps"] == 0
