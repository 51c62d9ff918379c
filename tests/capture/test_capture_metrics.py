"""The capture agent's Prometheus figures on a scripted capture whose every count is known: flows,
transactions, and parse errors by kind (a smuggling attempt, a TLS flow, an HTTP/2 flow), read through
the real metrics listener as a scraper reads them (issue 19, metrics)."""
from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from pcaps import Conv, req, resp, write

TOKEN = "capture-metrics-token"


def _scripted_capture(tmp_path) -> str:
    """Five connections: two clean requests, a CL+TE request followed by a valid one, a request with
    Content-Length: -1 followed by a valid one, a TLS ClientHello on port 443, the HTTP/2 preface on 80."""
    pkts = []
    clean = Conv(client=("10.0.0.1", 40000)).handshake()
    for path in ("/a", "/b"):
        clean.tick().request(req(path))
        clean.tick(0.002).response(resp(200, b"ok"))
    pkts += clean.close().pkts
    smuggle = Conv(client=("10.0.0.3", 40001), t=clean.t + 1).handshake()
    smuggle.request(b"POST /c HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    smuggle.tick().request(req("/after-smuggle"))
    smuggle.tick(0.001).response(resp(200, b"c"))
    smuggle.tick(0.001).response(resp(200, b"after"))
    pkts += smuggle.close().pkts
    minus = Conv(client=("10.0.0.4", 40002), t=smuggle.t + 1).handshake()
    minus.request(b"POST /d HTTP/1.1\r\nHost: shop.example\r\nContent-Length: -1\r\n\r\nbody\r\n")
    minus.tick().request(req("/after-minus"))
    minus.tick(0.001).response(resp(400, b"bad"))
    minus.tick(0.001).response(resp(200, b"fine"))
    pkts += minus.close().pkts
    tls = Conv(client=("10.0.0.5", 40003), server=("10.0.0.2", 443), t=minus.t + 1).handshake()
    tls.request(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(200)))
    tls.tick().response(b"\x16\x03\x03\x00\x5a" + bytes(90))
    pkts += tls.close().pkts
    h2 = Conv(client=("10.0.0.6", 40004), t=tls.t + 1).handshake()
    h2.request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00")
    h2.tick().response(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
    pkts += h2.close().pkts
    return write(tmp_path / "scripted.pcap", sorted(pkts, key=lambda p: p[0]))


def _scrape(url: str) -> dict[tuple, float]:
    req_ = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req_, timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_capture_metrics_count_flows_transactions_and_parse_errors_by_kind(tmp_path):
    from capture.decoder import Decoder
    from capture.pcapfile import read_pcap_batches
    from config.settings import load_settings
    from engine.capture_cmd import _figures, process
    from engine.metrics import CaptureCollector, Metrics
    from engine.metrics_server import MetricsServer

    path = _scripted_capture(tmp_path)
    s = load_settings(capture={"ports": [80, 443]}, data_dir=str(tmp_path / "data"))
    decoder, counts, source = Decoder(s, state_dir=s.data_dir), {"events": 0}, read_pcap_batches(path)
    server = MetricsServer(Metrics(CaptureCollector(lambda: _figures(decoder, source, [], counts))), "127.0.0.1",
                           0, TOKEN).start()
    try:
        process(source, decoder, [], counts=counts)
        m = _scrape(f"{server.url}/metrics")
    finally:
        server.stop()
    kinds = {dict(k[1])["kind"]: v for k, v in m.items() if k[0] == "visitwire_capture_parse_errors_total"}
    assert m[("visitwire_capture_flows_total", ())] == 5
    # 2 clean + 2 anomalous requests reported + the 2 valid requests after them
    assert m[("visitwire_capture_transactions_total", ())] == 6
    assert m[("visitwire_capture_requests_total", ())] == 6
    assert m[("visitwire_capture_events_total", ())] == counts["events"] == 6
    assert (kinds["framing_anomalies"], kinds["tls_flows"], kinds["http2_flows"]) == (2, 1, 1)
    assert kinds["parse_errors"] == 0 and kinds["malformed"] == 0
    assert m[("visitwire_capture_packets_total", ())] == decoder.stats["packets"] > 0
