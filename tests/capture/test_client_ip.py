"""The real client behind a TLS terminator, and the wrong leg said once.

The deployment that works: capture the plain HTTP between the TLS-terminating proxy and
the app servers. The proxy (a trusted address, capture.trusted_proxies) says who the
client was in Forwarded / X-Forwarded-For / X-Real-IP; the client may have written its
own entries to the left, so the right-most address that is not a trusted proxy counts.
"""
from __future__ import annotations

import logging

import pytest


from pcaps import Conv, req, resp  # noqa: E402
from test_odd_http import events_of  # noqa: E402

PROXY = ("10.0.0.5", 50000)  # the TLS terminator, talking to the app server 10.0.0.2:80
TRUST = {"trusted_proxies": ["10.0.0.0/24", "192.168.7.7"]}


def client_ips(tmp_path, headers_list, client=PROXY, **capture):
    c = Conv(client=client).handshake()
    for headers in headers_list:
        c.request(req("/", headers=headers))
        c.tick(0.001).response(resp(200, b"."))
        c.tick()
    c.close()
    events, _ = events_of(tmp_path, c, **capture)
    return [e["client_ip"] for e in events]


def test_right_most_untrusted_address_is_the_client(tmp_path):
    got = client_ips(tmp_path, [
        {"X-Forwarded-For": "203.0.113.7"},
        {"X-Forwarded-For": "6.6.6.6, 203.0.113.8"},                 # a forged entry on the left
        {"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 192.168.7.7"},    # through a second trusted proxy
        {"X-Forwarded-For": "198.51.100.1:5555"},
        {"Forwarded": 'for=6.6.6.6, for="[2001:DB8::7]:443";proto=https'},
        {"X-Real-IP": "203.0.113.10"},
        {"X-Forwarded-For": "unknown, 10.0.0.9"},                    # unreadable hop: stop at the last trusted
        {"X-Forwarded-For": "10.0.0.8, 10.0.0.9"},                   # all trusted: the left-most
        {},
    ], **TRUST)
    assert got == ["203.0.113.7", "203.0.113.8", "203.0.113.9", "198.51.100.1", "2001:db8::7", "203.0.113.10",
                   "10.0.0.9", "10.0.0.8", "10.0.0.5"]


def test_a_second_forwarded_for_line_is_read_as_the_list_continues(tmp_path):
    c = Conv(client=PROXY).handshake()
    c.request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.11\r\n\r\n")
    c.tick(0.001).response(resp(200, b"."))
    events, _ = events_of(tmp_path, c, **TRUST)
    assert events[0]["client_ip"] == "203.0.113.11"


def test_headers_from_an_untrusted_source_prove_nothing(tmp_path):
    forged = [{"X-Forwarded-For": "203.0.113.7"}, {"X-Real-IP": "203.0.113.7"}]
    assert client_ips(tmp_path, forged, client=("198.51.100.9", 40000), **TRUST) == ["198.51.100.9"] * 2
    assert client_ips(tmp_path, forged, trusted_proxies=[]) == ["10.0.0.5"] * 2  # trust nothing


def test_loopback_proxy_is_trusted_by_default(tmp_path):
    c = Conv(client=("127.0.0.1", 50000), server=("127.0.0.1", 8080)).handshake()
    c.request(req("/", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}))
    c.tick(0.001).response(resp(200, b"."))
    events, _ = events_of(tmp_path, c)
    assert events[0]["client_ip"] == "203.0.113.7"


def test_bad_trusted_proxy_is_a_clear_settings_error():
    from config.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="trusted_proxies.*not an address or network"):
        load_settings(capture={"trusted_proxies": ["10.0.0.0/99"]})


def test_tls_and_http2_on_a_captured_port_are_counted_and_said_once(tmp_path, caplog):
    c = Conv(client=("10.0.0.1", 40000), server=("10.0.0.2", 443))
    pkts = []
    for port in (40000, 40001):  # two TLS connections to port 443: one notice
        t = Conv(client=("10.0.0.1", port), server=("10.0.0.2", 443), t=c.t + port % 10).handshake()
        t.request(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(200)))
        t.tick().response(b"\x16\x03\x03\x00\x5a" + bytes(90))
        pkts += t.close().pkts
    h2 = Conv(client=("10.0.0.1", 40002), server=("10.0.0.2", 80), t=c.t + 5).handshake()
    h2.request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00")
    h2.tick().response(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
    pkts += h2.close().pkts
    c.pkts = sorted(pkts, key=lambda p: p[0])
    with caplog.at_level(logging.WARNING, logger="capture.transactions"):
        events, stats = events_of(tmp_path, c, ports=[80, 443])
    assert events == []
    assert (stats["tls_flows"], stats["http2_flows"], stats["non_http"]) == (2, 1, 3)
    said = [r.getMessage() for r in caplog.records]
    # each decoder (fast path and Python-only) says it once per port
    assert sum(m.startswith("port 443 carries TLS: visitwire reads plain HTTP/1.x, so capture behind the TLS "
                            "terminator") for m in said) == 2
    assert sum(m.startswith("port 80 carries HTTP/2") for m in said) == 2 and len(said) == 4
