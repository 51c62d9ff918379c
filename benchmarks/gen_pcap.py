"""A large pcap of mixed-shape HTTP traffic for the capture benchmarks, with its ground truth.

Shapes: keep-alive connections (1..8 transactions), one-shot `Connection: close`,
HTTP/1.0, pipelined requests, requests split across two TCP segments, POST bodies,
chunked and gzip-encoded responses (Content-Encoding header + opaque bytes), 304/404/301/500,
cookies (visitor cookie, others), varied body sizes split at MSS. Many connections are
open at once and their packets interleave, like a busy server.

Frames are built with struct straight into one buffer (no scapy), so 150k transactions
take seconds. TCP checksums are left zero (nobody here verifies them; live_bench wants
the kernel to drop the replayed packets anyway); IPv4 header checksums are correct.

    python benchmarks/gen_pcap.py --transactions 150000     # prints the cached path
Ground truth is one JSON object per transaction in <pcap>.truth.jsonl:
client_ip, client_port, method, uri, status, resp_bytes, http_version.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import orjson

from capture.testing import CLIENT_MAC, PCAP_RECORD, SERVER_MAC, pcap_header, tcp_frame

OUT_DIR = Path(__file__).resolve().parent / "out"
SERVER_IP = bytes([192, 168, 10, 5])
SERVER_PORT = 80
MSS = 1448
ACTIVE_CONNECTIONS = 256

SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
_MACS_C2S, _MACS_S2C = (SERVER_MAC, CLIENT_MAC), (CLIENT_MAC, SERVER_MAC)  # (source, destination)

PATHS = ["/", "/product/{}", "/category/{}", "/cart", "/checkout", "/search", "/static/app.{}.js",
         "/static/site.{}.css", "/img/p{}.jpg", "/api/recs", "/login", "/order/complete", "/blog/{}"]
PATH_W = [10, 25, 10, 4, 2, 6, 8, 6, 12, 8, 2, 1, 6]
UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
]
REFS = ["", "https://www.google.com/", "https://shop.example/", "https://t.co/abc", "https://news.example.org/x"]
CTYPES = {".js": "application/javascript", ".css": "text/css", ".jpg": "image/jpeg", "api": "application/json"}
_OPAQUE = random.Random(99).randbytes(1 << 17)  # body bytes are opaque; slices of this block


def _body_size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.55:
        return rng.randint(0, 800)
    if r < 0.90:
        return rng.randint(800, 4000)
    if r < 0.98:
        return rng.randint(4000, 16000)
    return rng.randint(16000, 64000)


class _Conn:
    """One TCP connection's packets, produced lazily in order."""

    def __init__(self, gen: "Generator", client_ip: bytes, client_port: int, n_tx: int, kind: str):
        self.gen = gen
        self.cip = client_ip
        self.cport = client_port
        self.kind = kind  # "keepalive" | "close" | "http10" | "pipeline"
        self.n_tx = n_tx
        self.packets = self._packets()

    def _packets(self):
        g = self.gen
        rng = g.rng
        cseq = rng.getrandbits(32)
        sseq = rng.getrandbits(32)
        c2s, s2c = True, False
        yield c2s, SYN, cseq, 0, b""
        cseq += 1
        yield s2c, SYN | ACK, sseq, cseq, b""
        sseq += 1
        yield c2s, ACK, cseq, sseq, b""
        txs = [g.transaction(self) for _ in range(self.n_tx)]
        if self.kind == "pipeline":
            # all requests back to back, then all responses
            for req, _ in txs:
                yield c2s, PSH | ACK, cseq, sseq, req
                cseq += len(req)
            for _, resp in txs:
                for i in range(0, len(resp), MSS):
                    seg = resp[i:i + MSS]
                    yield s2c, PSH | ACK, sseq, cseq, seg
                    sseq += len(seg)
            yield c2s, ACK, cseq, sseq, b""
        else:
            for req, resp in txs:
                if len(req) > 40 and rng.random() < 0.05:
                    cut = rng.randint(10, len(req) - 10)  # request split across segments
                    yield c2s, ACK, cseq, sseq, req[:cut]
                    yield c2s, PSH | ACK, cseq + cut, sseq, req[cut:]
                else:
                    yield c2s, PSH | ACK, cseq, sseq, req
                cseq += len(req)
                for i in range(0, len(resp), MSS):
                    seg = resp[i:i + MSS]
                    yield s2c, PSH | ACK, sseq, cseq, seg
                    sseq += len(seg)
                yield c2s, ACK, cseq, sseq, b""
        yield s2c, FIN | ACK, sseq, cseq, b""
        sseq += 1
        yield c2s, FIN | ACK, cseq, sseq, b""
        cseq += 1
        yield s2c, ACK, sseq, cseq, b""


class Generator:
    def __init__(self, transactions: int, seed: int = 1):
        self.rng = random.Random(seed)
        self.target = transactions
        self.made = 0
        self.truth: list[bytes] = []
        self.n_clients = max(500, transactions // 30)

    def transaction(self, conn: _Conn) -> tuple[bytes, bytes]:
        rng = self.rng
        i = self.made
        self.made += 1
        path = rng.choices(PATHS, PATH_W)[0]
        if "{}" in path:
            path = path.format(rng.randint(1, 5000))
        method = "POST" if path in ("/login", "/order/complete", "/cart") and rng.random() < 0.6 else "GET"
        uri = f"{path}?v={i}" if rng.random() < 0.5 else f"{path}?q=shoes&page={rng.randint(1, 9)}&v={i}"
        version = "1.0" if conn.kind == "http10" else "1.1"
        client_no = int.from_bytes(conn.cip, "big") & 0xFFFFFF
        lines = [f"{method} {uri} HTTP/{version}", "Host: shop.example",
                 f"User-Agent: {UAS[client_no % len(UAS)]}", "Accept: */*"]
        ref = REFS[rng.randrange(len(REFS))]
        if ref:
            lines.append(f"Referer: {ref}")
        if rng.random() < 0.6:
            lines.append(f"Cookie: _vw_id=c{client_no:07d}; theme=dark; cart=3")
        if conn.kind == "close":
            lines.append("Connection: close")
        body = b""
        if method == "POST":
            body = f"item={i}&qty=1&password=hunter2".encode()
            lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
        req = ("\r\n".join(lines) + "\r\n\r\n").encode() + body

        r = rng.random()
        status = 200 if r < 0.80 else 304 if r < 0.88 else 404 if r < 0.94 else 301 if r < 0.98 else 500
        size = 0 if status in (304,) else _body_size(rng) if status == 200 else rng.randint(100, 600)
        if status == 301:
            size = 0
        ext = os.path.splitext(path)[1]
        ctype = CTYPES.get(ext) or (CTYPES["api"] if path.startswith("/api") else "text/html; charset=utf-8")
        head = [f"HTTP/{version} {status} {_REASON[status]}", "Server: nginx", f"Content-Type: {ctype}"]
        if status == 301:
            head.append("Location: https://shop.example/")
        if rng.random() < 0.1:
            head.append("Set-Cookie: _vw_id=new; Path=/; HttpOnly")
        if status == 200 and ctype.startswith("text/") and rng.random() < 0.4:
            head.append("Content-Encoding: gzip")
        off = rng.randrange(0, len(_OPAQUE) - 64001)
        payload = _OPAQUE[off:off + size]
        chunked = version == "1.1" and status == 200 and size > 0 and rng.random() < 0.12
        if chunked:
            head.append("Transfer-Encoding: chunked")
            parts, pos = [], 0
            while pos < size:
                n = min(size - pos, rng.randint(500, 8000))
                parts.append(b"%x\r\n" % n + payload[pos:pos + n] + b"\r\n")
                pos += n
            body_wire = b"".join(parts) + b"0\r\n\r\n"
        else:
            if status != 304:
                head.append(f"Content-Length: {size}")
            body_wire = payload
        if conn.kind == "close" or conn.kind == "http10":
            head.append("Connection: close")
        resp = ("\r\n".join(head) + "\r\n\r\n").encode() + body_wire
        self.truth.append(orjson.dumps({"client_ip": ".".join(map(str, conn.cip)), "client_port": conn.cport,
                                        "method": method, "uri": uri, "status": status, "resp_bytes": size,
                                        "http_version": version}))
        return req, resp

    def new_conn(self, remaining: int) -> _Conn:
        rng = self.rng
        client = rng.randrange(self.n_clients)
        cip = bytes([10, (client >> 16) & 0xFF, (client >> 8) & 0xFF, client & 0xFF])
        r = rng.random()
        if r < 0.45:
            kind, n = "keepalive", rng.randint(1, 8)
        elif r < 0.80:
            kind, n = "close", 1
        elif r < 0.88:
            kind, n = "http10", 1
        else:
            kind, n = "pipeline", rng.randint(2, 4)
        return _Conn(self, cip, rng.randint(1024, 65535), max(1, min(n, remaining)), kind)

    def write(self, path: Path, progress=None) -> int:
        """Write the pcap; returns the number of packets."""
        rng = self.rng
        ts_us = 1_700_000_000 * 1_000_000
        out = bytearray(pcap_header(262144))
        packets = 0
        planned = 0
        active: list[_Conn] = []
        ip_id = 0
        with open(path, "wb") as fh:
            while True:
                while len(active) < ACTIVE_CONNECTIONS and planned < self.target:
                    c = self.new_conn(self.target - planned)
                    planned += c.n_tx
                    active.append(c)
                if not active:
                    break
                k = rng.randrange(len(active))
                conn = active[k]
                try:
                    c2s, flags, seq, ack, payload = next(conn.packets)
                except StopIteration:
                    active[k] = active[-1]
                    active.pop()
                    continue
                if c2s:
                    src, dst, sport, dport, macs = conn.cip, SERVER_IP, conn.cport, SERVER_PORT, _MACS_C2S
                else:
                    src, dst, sport, dport, macs = SERVER_IP, conn.cip, SERVER_PORT, conn.cport, _MACS_S2C
                ip_id = (ip_id + 1) & 0xFFFF
                ts_us += rng.randint(1, 12)
                frame = tcp_frame(src, dst, sport, dport, seq, flags, payload, ack=ack, ip_id=ip_id, ip_checksum=True,
                                  macs=macs)
                out += PCAP_RECORD.pack(ts_us // 1_000_000, ts_us % 1_000_000, len(frame), len(frame))
                out += frame
                packets += 1
                if len(out) > 32 << 20:
                    fh.write(out)
                    out.clear()
                    if progress:
                        progress(self.made)
            fh.write(out)
        return packets


_REASON = {200: "OK", 301: "Moved Permanently", 304: "Not Modified", 404: "Not Found", 500: "Internal Server Error"}


def pcap_path(transactions: int, seed: int = 1) -> Path:
    return OUT_DIR / f"http_{transactions}_s{seed}.pcap"


def ensure_pcap(transactions: int = 150_000, seed: int = 1, quiet: bool = False) -> Path:
    """The cached benchmark pcap (generated on first use); ground truth sits next to it."""
    path = pcap_path(transactions, seed)
    truth = path.with_suffix(".truth.jsonl")
    if path.exists() and truth.exists():
        return path
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    gen = Generator(transactions, seed)
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    if quiet:
        packets = gen.write(tmp)
    else:
        from rich.progress import Progress

        with Progress(transient=True) as prog:
            task = prog.add_task(f"generating {transactions} transactions", total=transactions)
            packets = gen.write(tmp, progress=lambda made: prog.update(task, completed=made))
    truth.write_bytes(b"\n".join(gen.truth) + b"\n")
    tmp.rename(path)
    if not quiet:
        print(f"wrote {path} ({packets} packets, {gen.made} transactions, "
              f"{path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return path


def load_truth(pcap: Path) -> list[dict]:
    return [orjson.loads(line) for line in Path(pcap).with_suffix(".truth.jsonl").read_bytes().splitlines() if line]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=150_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(ensure_pcap(args.transactions, args.seed))
