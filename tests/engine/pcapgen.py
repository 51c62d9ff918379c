"""A pcap of known site traffic for end-to-end tests, with its ground truth computed alongside.

Frames are built with struct (Ethernet / IPv4 / TCP with real checksums), so thousands
of transactions take well under a second. The site follows the default settings'
URL layout. The traffic:
- K human visitors, each with a `_vw_id` cookie, a real browser User-Agent and 1 session,
  or 2 sessions separated by more than `idle_gap_s` (default 35 min > the 30 min idle rule);
- each session has 2..5 page views (GET text/html 200) 20..90 s apart, each followed by
  its static assets (css, js, png) on the same keep-alive connection;
- some visitors hit a missing page (404, not a page view), some buy: POST /cart/add (303)
  and POST /order/complete (200 with X-Order-Amount);
- one Googlebot crawling product pages without cookies (hits, never page views or visitors).
Page view rule (processors): GET, 2xx, text/html, not static, not a bot.

    python tests/engine/pcapgen.py OUT.pcap --visitors 50   # writes the pcap, prints the truth as JSON
"""
from __future__ import annotations

import json
import random
import socket
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field

from capture.testing import pcap_header, pcap_record, tcp_frame

HTML = "text/html; charset=utf-8"
UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PAGES = ["/", "/category/shoes", "/category/bags", "/product/1", "/product/2", "/product/3",
         "/product/4", "/product/5", "/cart", "/checkout"]
PAGE_WEIGHTS = [12, 6, 4, 9, 7, 5, 3, 2, 2, 1]
ASSETS = (("/static/app.css", "text/css", 600), ("/static/app.js", "application/javascript", 2900),
          ("/static/logo.png", "image/png", 180))
HOST = "shop.example"


@dataclass
class GroundTruth:
    server_port: int
    start_ts: float
    end_ts: float
    packets: int = 0
    hits: int = 0
    pageviews: int = 0
    sessions: int = 0
    visitors: int = 0          # distinct humans with at least one page view
    bot_hits: int = 0
    purchases: int = 0
    revenue: float = 0.0
    top_pages: list = field(default_factory=list)           # [(path, page views)] most viewed first, ties by path
    pageviews_per_minute: dict = field(default_factory=dict)  # minute start (epoch s) -> page views
    hits_per_minute: dict = field(default_factory=dict)
    statuses: dict = field(default_factory=dict)              # status -> hits
    sessions_per_visitor: dict = field(default_factory=dict)  # raw cookie value -> sessions (for 2-session checks)
    pageview_log: list = field(default_factory=list)          # [(ts, cookie value, session no., path)] in ts order


class _PcapWriter:
    SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
    MSS = 1400

    def __init__(self, fh):
        self.fh = fh
        self.packets = 0
        fh.write(pcap_header())

    def tcp(self, ts: float, src: str, dst: str, sport: int, dport: int, seq: int, ack: int,
            flags: int, payload: bytes = b"") -> None:
        frame = tcp_frame(socket.inet_aton(src), socket.inet_aton(dst), sport, dport, seq, flags, payload, ack=ack,
                          ip_id=self.packets, ip_checksum=True, tcp_checksum=True)
        self.fh.write(pcap_record(ts, frame))
        self.packets += 1


class _Connection:
    """One keep-alive TCP connection: handshake, request/response pairs, FIN."""

    def __init__(self, w: _PcapWriter, ts: float, client: str, cport: int, server: str, sport: int):
        self.w, self.client, self.cport, self.server, self.sport = w, client, cport, server, sport
        self.cseq, self.sseq = 1000, 5000
        w.tcp(ts, client, server, cport, sport, self.cseq, 0, w.SYN)
        w.tcp(ts + 0.0001, server, client, sport, cport, self.sseq, self.cseq + 1, w.SYN | w.ACK)
        w.tcp(ts + 0.0002, client, server, cport, sport, self.cseq + 1, self.sseq + 1, w.ACK)
        self.cseq += 1
        self.sseq += 1

    def exchange(self, ts: float, request: bytes, response: bytes, latency_s: float) -> None:
        w = self.w
        w.tcp(ts, self.client, self.server, self.cport, self.sport, self.cseq, self.sseq, w.PSH | w.ACK, request)
        self.cseq += len(request)
        t = ts + latency_s
        for i in range(0, len(response), w.MSS):
            chunk = response[i:i + w.MSS]
            w.tcp(t, self.server, self.client, self.sport, self.cport, self.sseq, self.cseq, w.PSH | w.ACK, chunk)
            self.sseq += len(chunk)
            t += 0.00005
        w.tcp(t + 0.0001, self.client, self.server, self.cport, self.sport, self.cseq, self.sseq, w.ACK)

    def close(self, ts: float) -> None:
        w = self.w
        w.tcp(ts, self.client, self.server, self.cport, self.sport, self.cseq, self.sseq, w.FIN | w.ACK)
        w.tcp(ts + 0.0001, self.server, self.client, self.sport, self.cport, self.sseq, self.cseq + 1, w.FIN | w.ACK)
        w.tcp(ts + 0.0002, self.client, self.server, self.cport, self.sport, self.cseq + 1, self.sseq + 1, w.ACK)


def _request(method: str, path: str, ua: str, cookie: str, referrer: str = "", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", f"User-Agent: {ua}", "Accept: */*"]
    if referrer:
        lines.append(f"Referer: {referrer}")
    if cookie:
        lines.append(f"Cookie: {cookie}")
    if body:
        lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _response(status: int, ctype: str, body_len: int, extra: dict | None = None) -> bytes:
    reason = {200: "OK", 303: "See Other", 404: "Not Found"}[status]
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}", f"Content-Length: {body_len}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b"x" * body_len


def generate_pcap(path: str, start_ts: float, visitors: int = 30, seed: int = 1, port: int = 8080,
                  two_session_share: float = 0.3, idle_gap_s: float = 35 * 60,
                  second_path: str | None = None) -> GroundTruth:
    """Write the pcap to `path`; returns what a correct pipeline must count.

    With `second_path`, the site has two web servers behind a balancer: each visit's page views (a
    page with its assets and what follows it) alternate between server 10.9.0.1 (`path`) and
    10.9.0.2 (`second_path`), on a connection to each; the truth covers both files together."""
    rng = random.Random(seed)
    truth = GroundTruth(server_port=port, start_ts=start_ts, end_ts=start_ts)
    pv_paths: Counter = Counter()
    pv_minute: Counter = Counter()
    hit_minute: Counter = Counter()
    statuses: Counter = Counter()
    server = "10.9.0.1"
    conns = []  # (transactions, client ip, user agent, cookie header) per connection

    def minute(ts: float) -> int:
        return int(ts // 60 * 60)

    cport = 20000
    for v in range(visitors):
        cookie_value = f"v{seed}-{v:05d}"
        client = f"10.1.{v // 250}.{v % 250 + 1}"
        ua = UAS[v % len(UAS)]
        n_sessions = 2 if rng.random() < two_session_share else 1
        t = start_ts + rng.uniform(0, 600)
        visitor_pvs = 0
        for s in range(n_sessions):
            txs = []
            referrer = "https://www.google.com/search?q=shop" if rng.random() < 0.4 else ""
            for p in range(rng.randint(2, 5)):
                page = rng.choices(PAGES, PAGE_WEIGHTS)[0]
                txs.append((t, "GET", page, 200, HTML, rng.randint(800, 6000), None, referrer))
                for i, (asset, ctype, size) in enumerate(ASSETS):
                    txs.append((t + 0.05 + 0.01 * i, "GET", asset, 200, ctype, size, None, f"http://{HOST}{page}"))
                referrer = f"http://{HOST}{page}"
                visitor_pvs += 1
                truth.pageview_log.append((t, cookie_value, s, page))
                pv_paths[page] += 1
                pv_minute[minute(t)] += 1
                t += rng.uniform(20, 90)
            if rng.random() < 0.15:  # a dead link: a hit, not a page view
                txs.append((t, "GET", "/old-offers", 404, HTML, 300, None, referrer))
                t += rng.uniform(5, 20)
            if rng.random() < 0.2:  # a purchase: goals, not page views (POST)
                amount = f"{rng.randint(10, 300)}.{rng.randint(0, 99):02d}"
                txs.append((t, "POST", "/cart/add", 303, HTML, 0, None, referrer))
                txs.append((t + 5, "POST", "/order/complete", 200, HTML, 900, {"X-Order-Amount": amount}, referrer))
                truth.purchases += 1
                truth.revenue = round(truth.revenue + float(amount), 2)
                t += 10
            conns.append((txs, client, ua, f"_vw_id={cookie_value}"))
            truth.sessions += 1
            if s + 1 < n_sessions:
                t += idle_gap_s + rng.uniform(0, 120)
        truth.sessions_per_visitor[cookie_value] = n_sessions
        truth.visitors += visitor_pvs > 0
    # the crawler: one connection, product pages, no cookie
    bot_t = start_ts + rng.uniform(0, 600)
    bot_txs = [(bot_t + 2 * i, "GET", f"/product/{i % 5 + 1}", 200, HTML, 2000, None, "") for i in range(12)]
    conns.append((bot_txs, "66.249.66.1", BOT_UA, ""))
    truth.bot_hits = len(bot_txs)

    files = [(path, server, conns)]
    if second_path:
        files = [(path, server, []), (second_path, "10.9.0.2", [])]
        for txs, client, ua, cookie in conns:
            groups: list[list] = []
            for tx in txs:  # a page view opens a group; assets, 404s and POSTs follow their page
                if not groups or (tx[1] == "GET" and tx[4] == HTML and tx[3] == 200):
                    groups.append([])
                groups[-1].append(tx)
            for i in (0, 1):
                part = [tx for g in groups[i::2] for tx in g]
                if part:
                    files[i][2].append((part, client, ua, cookie))
    for out_path, server_ip, file_conns in files:
        with open(out_path, "wb") as fh:
            w = _PcapWriter(fh)
            # Connections are written in start order; each stays on its own 4-tuple so interleaving
            # in file order does not matter to a per-flow decoder.
            for txs, client, ua, cookie in sorted(file_conns, key=lambda c: c[0][0][0]):
                cport += 1
                conn = _Connection(w, txs[0][0] - 0.01, client, cport, server_ip, port)
                for ts, method, path_, status, ctype, size, extra, ref in txs:
                    body = b"product=1" if method == "POST" else b""
                    conn.exchange(ts, _request(method, path_, ua, cookie, ref, body),
                                  _response(status, ctype, size, extra), rng.uniform(0.003, 0.08))
                    statuses[status] += 1
                    hit_minute[minute(ts)] += 1
                    truth.hits += 1
                    truth.end_ts = max(truth.end_ts, ts)
                conn.close(txs[-1][0] + 1.0)
            truth.packets += w.packets
    truth.pageview_log.sort()
    truth.pageviews = sum(pv_paths.values())
    truth.top_pages = sorted(pv_paths.items(), key=lambda kv: (-kv[1], kv[0]))
    truth.pageviews_per_minute = dict(sorted(pv_minute.items()))
    truth.hits_per_minute = dict(sorted(hit_minute.items()))
    truth.statuses = dict(sorted(statuses.items()))
    return truth


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--visitors", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--start", type=float, default=1_772_445_600.0, help="first minute, epoch seconds")
    a = ap.parse_args()
    json.dump(asdict(generate_pcap(a.out, a.start, a.visitors, a.seed, a.port)), sys.stdout, indent=1)
    print()


def generate_shared_device_pcap(path: str, start_ts: float, port: int = 8080) -> dict:
    """Two members in turn on one device, another device of the first member, an anonymous device.

    Device 1 (cookie dev1), visit 1: two anonymous pages, alice logs in, buys 100.00, logs out, an anonymous
    page, bob logs in and buys 40.00; visit 2 (2 h later, still bob's cookie): a page, 25.00; visit 3 (4 h
    later, logged out): a page and an anonymous order of 7.00. Device 2 (alice's cookie): a page, 60.00.
    Device 3: two anonymous pages. Returns the truth per raw member key."""
    ua = UAS[0]
    def tx(t, method, p, cookie, status=200, extra=None, body=b""):
        return (t, method, p, cookie, status, extra, body)

    d1, d1a, d1b = "_vw_id=dev1", "_vw_id=dev1; member=alice", "_vw_id=dev1; member=bob"
    t = start_ts
    visits = [
        ("10.1.0.1", [
            tx(t, "GET", "/", d1), tx(t + 20, "GET", "/product/1", d1),
            tx(t + 40, "POST", "/login", d1, 303, {"Set-Cookie": "member=alice; Path=/"}, b"user=alice"),
            tx(t + 41, "GET", "/", d1a), tx(t + 60, "POST", "/cart/add", d1a, 303, None, b"product=1"),
            tx(t + 80, "POST", "/order/complete", d1a, 200, {"X-Order-Amount": "100.00"}),
            tx(t + 100, "GET", "/logout", d1a, 303, {"Set-Cookie": "member=; Max-Age=0; Path=/"}),
            tx(t + 120, "GET", "/product/2", d1),
            tx(t + 140, "POST", "/login", d1, 303, {"Set-Cookie": "member=bob; Path=/"}, b"user=bob"),
            tx(t + 141, "GET", "/cart", d1b),
            tx(t + 160, "POST", "/order/complete", d1b, 200, {"X-Order-Amount": "40.00"})]),
        ("10.1.0.1", [tx(t + 7200, "GET", "/product/3", d1b),
                      tx(t + 7220, "POST", "/order/complete", d1b, 200, {"X-Order-Amount": "25.00"})]),
        ("10.1.0.1", [tx(t + 14400, "GET", "/", d1),
                      tx(t + 14420, "POST", "/order/complete", d1, 200, {"X-Order-Amount": "7.00"})]),
        ("10.1.0.2", [tx(t + 600, "GET", "/", "_vw_id=dev2; member=alice"),
                      tx(t + 620, "POST", "/order/complete", "_vw_id=dev2; member=alice", 200,
                         {"X-Order-Amount": "60.00"})]),
        ("10.1.0.3", [tx(t + 300, "GET", "/", "_vw_id=dev3"), tx(t + 330, "GET", "/product/1", "_vw_id=dev3")]),
    ]
    with open(path, "wb") as fh:
        w = _PcapWriter(fh)
        for n, (client, txs) in enumerate(sorted(visits, key=lambda v: v[1][0][0])):
            conn = _Connection(w, txs[0][0] - 0.01, client, 30000 + n, "10.9.0.1", port)
            for ts, method, p, cookie, status, extra, body in txs:
                req = _request(method, p, ua, cookie, "", body)
                conn.exchange(ts, req, _response(status, HTML, 0 if status == 303 else 500, extra), 0.01)
            conn.close(txs[-1][0] + 1.0)
    return {"members": {"alice": {"orders": 2, "revenue": 160.0, "visits": 2, "pageviews": 4},
                        "bob": {"orders": 2, "revenue": 65.0, "visits": 2, "pageviews": 2}},
            "revenue": 232.0, "orders": 5, "visitors": 3, "member_visitors": 2, "end_ts": start_ts + 14421}
