"""Real HTTP traffic on loopback, captured live (LiveSource) and by tcpdump, decoded into visit events.

Every request the client made must come out exactly once with the status and body size the
server sent, both from the live ring and from the pcap tcpdump wrote at the same time.
Needs root (CAP_NET_RAW) and tcpdump; skipped otherwise.
"""
from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from capture.live import CaptureError, LiveSource
from config.settings import Settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root / CAP_NET_RAW")



def _decoder_parts():
    pipeline = pytest.importorskip("capture.decoder")
    return pipeline.Decoder, pytest.importorskip("capture.pcapfile").read_pcap_batches


class Handler(BaseHTTPRequestHandler):
    """/bytes/N -> 200 with N body bytes; /chunked/N -> 200 chunked; /etag -> 304; anything else -> 404."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        if path.startswith("/bytes/"):
            body = b"x" * int(path.rsplit("/", 1)[1])
            self._reply(200, body)
        elif path.startswith("/chunked/"):
            n = int(path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, n, 700):
                part = b"c" * min(700, n - i)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/etag":
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.end_headers()
        else:
            self._reply(404, b"not here")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._reply(201, b'{"ok":true}')

    def _reply(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def drive_traffic(port: int) -> list[tuple[str, str, int, int]]:
    """Make varied requests; returns the expected (method, uri, status, body bytes) of each."""
    expected = []
    sizes = [0, 1, 517, 1400, 4000, 70_000, 250_000]
    # keep-alive: many requests on one connection
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for i, n in enumerate(sizes * 2):
        uri = f"/bytes/{n}?ka={i}"
        conn.request("GET", uri, headers={"Cookie": "_vw_id=alice"})
        r = conn.getresponse()
        assert len(r.read()) == n
        expected.append(("GET", uri, 200, n))
    for i, n in enumerate([10, 3000, 90_000]):
        uri = f"/chunked/{n}?ka={i}"
        conn.request("GET", uri)
        r = conn.getresponse()
        assert len(r.read()) == n
        expected.append(("GET", uri, 200, n))
    for i in range(3):
        conn.request("GET", f"/etag?ka={i}", headers={"If-None-Match": '"v1"'})
        conn.getresponse().read()
        expected.append(("GET", f"/etag?ka={i}", 304, 0))
        conn.request("GET", f"/missing?ka={i}")
        conn.getresponse().read()
        expected.append(("GET", f"/missing?ka={i}", 404, 8))
    conn.request("POST", "/cart/add?ka=1", body=b"item=7&qty=2",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    conn.getresponse().read()
    expected.append(("POST", "/cart/add?ka=1", 201, 11))
    conn.close()
    # one connection per request (urllib sends Connection: close)
    for i, n in enumerate(sizes):
        uri = f"/bytes/{n}?close={i}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{uri}", timeout=5) as r:
            assert len(r.read()) == n
        expected.append(("GET", uri, 200, n))
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope?close=1", timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 404
    expected.append(("GET", "/nope?close=1", 404, 8))
    # HTTP/1.0 by hand
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /bytes/300?v10=1 HTTP/1.0\r\nHost: localhost\r\n\r\n")
        while s.recv(65536):
            pass
    expected.append(("GET", "/bytes/300?v10=1", 200, 300))
    return expected


def settings_for(port: int) -> Settings:
    return Settings(capture={"ports": [port]})


def decode_all(batches, port: int) -> list[dict]:
    decoder = _decoder_parts()[0](settings_for(port))
    events = []
    for batch in batches:
        events.extend(decoder.feed(batch))
    events.extend(decoder.close())
    return events


def check(events: list[dict], expected: list[tuple[str, str, int, int]], port: int, where: str) -> None:
    ours = [e for e in events if e["server_port"] == port]
    got = sorted((e["method"], e["uri"], e["status"], e["resp_bytes"]) for e in ours)
    assert got == sorted(expected), f"{where}: events differ from the requests made"
    assert all(e["client_ip"] == "127.0.0.1" and e["server_ip"] == "127.0.0.1" for e in ours)


def decoding(source, decoder) -> tuple[threading.Thread, list[dict]]:
    """A thread (not started) that feeds every batch of `source` to `decoder` until the source is closed, then
    closes the decoder; and the list the events go to."""
    events: list[dict] = []

    def consume():
        for batch in source:
            events.extend(decoder.feed(batch))
        events.extend(decoder.close())

    return threading.Thread(target=consume, daemon=True), events


def collecting_frames(source, stop: threading.Event | None = None) -> tuple[threading.Thread, list[bytes]]:
    """A started thread that keeps each frame of `source`'s batches until it is closed (or `stop` is set)."""
    frames: list[bytes] = []

    def consume():
        for batch in source:
            for i in range(len(batch)):
                o = batch.offsets[i]
                frames.append(bytes(batch.buf[o:o + batch.caplens[i]]))
            if stop is not None and stop.is_set():
                break

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    return t, frames


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def start_tcpdump(port: int, path: str) -> subprocess.Popen:
    if not shutil.which("tcpdump"):
        pytest.skip("tcpdump not installed (apt-get install tcpdump)")
    proc = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-s", "0", "-w", path, f"tcp port {port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = proc.stderr.readline()  # "listening on lo ..." once the capture is armed
    assert b"listening" in line, line
    return proc


def wait_until_written(path: str, quiet_s: float = 1.0, limit_s: float = 30.0) -> None:
    """Until the file has not grown for quiet_s (a loaded machine can leave tcpdump seconds behind)."""
    size, since, start = -1, time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() - start < limit_s:
        now = os.path.getsize(path) if os.path.exists(path) else 0
        if now != size:
            size, since = now, time.monotonic()
        time.sleep(0.1)


def test_every_request_once_with_status_and_bytes_live_and_from_pcap(server, tmp_path):
    port = server
    Decoder, read_pcap_batches = _decoder_parts()
    source = LiveSource("lo", [port], Settings())
    assert source.mode == "ring"
    reader, batches_events = decoding(source, Decoder(settings_for(port)))
    reader.start()
    pcap = str(tmp_path / "lo.pcap")
    dump = start_tcpdump(port, pcap)
    try:
        expected = drive_traffic(port)
        time.sleep(0.5)  # last packets reach the ring
        wait_until_written(pcap)  # tcpdump (-U) has written the last packets: SIGINT drops what it has not read
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
        source.close()
    reader.join(120)  # cold numba cache: the first feed compiles
    assert not reader.is_alive(), "live reader did not stop after close()"
    stats = source.stats()
    assert stats["kernel_drops"] == 0
    assert stats["frames"] > len(expected)

    check(batches_events, expected, port, "live capture")
    check(decode_all(read_pcap_batches(pcap), port), expected, port, "tcpdump pcap")


@pytest.mark.parametrize("iface,use_ring", [("lo", False), ("any", True)], ids=["lo-recvfrom-fallback", "any-cooked"])
def test_other_capture_modes_decode_every_request_once(server, iface, use_ring):
    """The recvfrom fallback and the cooked 'any' device (raw IP frames, loopback copies dropped) agree."""
    Decoder, _ = _decoder_parts()
    port = server
    source = LiveSource(iface, [port], Settings(), use_ring=use_ring)
    assert source.mode == ("ring" if use_ring else "recv")
    t, events = decoding(source, Decoder(settings_for(port)))
    t.start()
    try:
        expected = drive_traffic(port)
        time.sleep(0.3)
    finally:
        source.close()
    t.join(120)  # generous: a cold numba cache compiles the decoder on the first batch
    assert not t.is_alive()
    assert source.stats()["kernel_drops"] == 0
    check(events, expected, port, f"{iface} ({source.mode})")


def test_live_source_sees_each_packet_once_on_loopback(server):
    """The loopback tap sees every packet twice (out and in); we must hand over one copy."""
    port = server
    with LiveSource("lo", [port], Settings()) as source:
        stop = threading.Event()
        t, frames = collecting_frames(source, stop)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/bytes/10?once=1", timeout=5).read()
        assert body == b"x" * 10
        time.sleep(0.3)
        stop.set()
        t.join(5)
    requests = [f for f in frames if b"GET /bytes/10?once=1 HTTP/1.1" in f]
    assert len(requests) == 1
    assert len(set(frames)) == len(frames)  # no duplicate copies


def test_filter_keeps_other_ports_out(server):
    port = server
    other = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        with LiveSource("lo", [port], Settings()) as source:
            t, frames = collecting_frames(source)
            urllib.request.urlopen(f"http://127.0.0.1:{other.server_address[1]}/bytes/5?other=1", timeout=5).read()
            urllib.request.urlopen(f"http://127.0.0.1:{port}/bytes/5?mine=1", timeout=5).read()
            time.sleep(0.3)
        t.join(5)
    finally:
        other.shutdown()
        other.server_close()
    assert any(b"?mine=1" in f for f in frames)
    assert not any(b"?other=1" in f for f in frames)


def test_idle_source_ticks_so_the_agent_can_expire_and_stops_on_close():
    with LiveSource("lo", [9], Settings()) as source:  # discard port: nothing arrives
        it = iter(source)
        t0 = time.monotonic()
        first = next(it)
        assert len(first) == 0 and time.monotonic() - t0 < 1.0
        closer = threading.Timer(0.2, source.close)
        closer.start()
        rest = list(it)  # ends once closed
        assert all(len(b) == 0 for b in rest)
        assert time.monotonic() - t0 < 3.0
    assert source.stats()["kernel_drops"] == 0


def test_unknown_interface_lists_the_available_ones():
    with pytest.raises(CaptureError) as e:
        LiveSource("nosuchif0", [80], Settings())
    assert "unknown interface 'nosuchif0'" in str(e.value) and "lo" in str(e.value)


def test_without_cap_net_raw_says_how_to_fix():
    """A child process that dropped CAP_NET_RAW gets the clear message, not a traceback."""
    import sys

    code = ("import os\n"
            "from capture.live import LiveSource, CaptureError\n"
            "from scapy.arch.common import compile_filter\n"
            "os.setgid(65534); os.setuid(65534)  # drops every capability\n"
            "try:\n    LiveSource('lo', [80])\n"
            "except CaptureError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert "run as root" in out.stdout and "setcap cap_net_raw+ep" in out.stdout, out.stderr


def test_capture_command_live_on_loopback_to_kafka(server, tansu):
    """`visitwire capture --iface lo --kafka ...`: events reach visitwire.hits while it runs, exactly once,
    and a SIGTERM (how a service manager stops it) ends it cleanly with its summary."""
    import asyncio
    import sys

    import orjson
    from aiokafka import AIOKafkaConsumer

    port = server

    async def read_topic(want: int, timeout: float) -> list[dict]:
        """This test's records, reading until `want` arrived (or timeout) and then until the topic is quiet."""
        consumer = AIOKafkaConsumer("visitwire.hits", bootstrap_servers=tansu.url, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        out: list[dict] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                out += [v for records in batches.values() for r in records
                        if (v := orjson.loads(r.value))["server_port"] == port]
                if len(out) >= want and not batches:
                    break
        finally:
            await consumer.stop()
        return out

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    agent = subprocess.Popen([sys.executable, "-c", "from engine.cli import main; main()", "capture",
                              "--iface", "lo", "--ports", str(port), "--kafka", tansu.url],
                             cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = agent.stderr.readline()
            if "live capture on lo" in line or not line:
                break
        assert agent.poll() is None, agent.stderr.read()
        expected = drive_traffic(port)  # the ring holds these even while the decoder still compiles
        # generous: a cold numba cache compiles the decoder first
        records = asyncio.run(read_topic(len(expected), timeout=180))
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    assert "kernel:" in err and " 0 dropped" in err
    got = sorted((e["method"], e["uri"], e["status"], e["resp_bytes"]) for e in records)
    assert got == sorted(expected)


class TlsTerminator:
    """A TLS-terminating proxy on loopback: one request per connection to the app, X-Forwarded-For appended."""

    def __init__(self, app_port: int, tmp_path):
        import ssl

        if not shutil.which("openssl"):
            pytest.skip("openssl not installed")
        key, cert = str(tmp_path / "k.pem"), str(tmp_path / "c.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.app_port = app_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                raw, (peer, _) = self.sock.accept()
            except OSError:
                return
            with self.ctx.wrap_socket(raw, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += tls.recv(65536)
                lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                fwd = [ln for ln in lines[1:] if ln.lower().startswith(b"x-forwarded-for:")]
                chain = (fwd[0].split(b":", 1)[1].strip() + b", " if fwd else b"") + peer.encode()
                out = [lines[0]] + [ln for ln in lines[1:]
                                    if ln not in fwd and not ln.lower().startswith(b"connection:")]
                out += [b"X-Forwarded-For: " + chain, b"Connection: close"]
                with socket.create_connection(("127.0.0.1", self.app_port), timeout=5) as app:
                    app.sendall(b"\r\n".join(out) + b"\r\n\r\n")
                    while True:
                        data = app.recv(65536)
                        if not data:
                            break
                        tls.sendall(data)

    def close(self):
        self.sock.close()


def test_behind_a_tls_terminator_the_app_leg_gives_the_real_client_and_the_tls_leg_is_said_once(
        server, tmp_path, caplog):
    import logging
    import ssl

    Decoder, _ = _decoder_parts()
    proxy = TlsTerminator(server, tmp_path)
    ports = [server, proxy.port]
    source = LiveSource("lo", ports, Settings())
    decoder = Decoder(Settings(capture={"ports": ports, "trusted_proxies": ["127.0.0.1/32"]}))
    t, events = decoding(source, decoder)
    with caplog.at_level(logging.WARNING, logger="capture.transactions"):
        t.start()
        try:
            ctx = ssl._create_unverified_context()
            for forged in (None, "6.6.6.6"):  # the client at 127.0.0.2, once writing its own entry
                c = http.client.HTTPSConnection("127.0.0.1", proxy.port, timeout=5, context=ctx,
                                                source_address=("127.0.0.2", 0))
                c.request("GET", "/bytes/10?via=tls", headers={"X-Forwarded-For": forged} if forged else {})
                assert c.getresponse().read() == b"x" * 10
                c.close()
            time.sleep(0.5)
        finally:
            source.close()
            proxy.close()
        t.join(120)
    assert not t.is_alive()
    assert [(e["uri"], e["status"], e["client_ip"], e["server_port"]) for e in events] == \
        [("/bytes/10?via=tls", 200, "127.0.0.2", server)] * 2
    assert decoder.stats["tls_flows"] == 2
    said = [r.getMessage() for r in caplog.records if "carries TLS" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"port {proxy.port} carries TLS")
