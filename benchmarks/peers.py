"""Peer HTTP-from-pcap parsers the capture benchmark compares visitwire with.

Each peer reads the same pcap and reports the transactions it found as a set of
(client_ip, uri) plus counts and wall time. They are written the way their users
typically write them; none is crippled on purpose:
- tshark: Wireshark's dissector with TCP reassembly, fields out as text;
- dpkt: Ethernet/IP/TCP unpack + per-direction buffers fed to dpkt.http.Request/Response;
- pure Python over scapy's RawPcapReader: struct slicing, per-flow buffers, head/body state machine;
- scapy full dissection with scapy.layers.http (no reassembly; usually run on a subsample).
"""
from __future__ import annotations

import subprocess
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field


@dataclass
class PeerResult:
    name: str
    transactions: int          # requests found (paired with a response where the peer pairs them)
    responses: int
    packets: int
    seconds: float
    keys: set = field(default_factory=set)  # {(client_ip, uri)}
    extrapolated_from: int = 0  # packets actually processed when a subsample was timed


def _ip4(b: bytes) -> str:
    return "%d.%d.%d.%d" % (b[0], b[1], b[2], b[3])


# --- tshark ------------------------------------------------------------------------------------
TSHARK_FIELDS = ["frame.time_epoch", "ip.src", "tcp.srcport", "http.request.method", "http.request.uri",
                 "http.host", "http.user_agent", "http.referer", "http.cookie", "http.response.code",
                 "http.content_length", "http.content_type"]


def tshark_argv(path: str, server_port: int) -> list[str]:
    """tshark's HTTP fields extraction of every request and response (TSHARK_FIELDS, tab-separated)."""
    argv = ["tshark", "-n", "-r", path, "-d", f"tcp.port=={server_port},http", "-Y", "http.request || http.response",
            "-T", "fields", "-E", "occurrence=a"]
    for f in TSHARK_FIELDS:
        argv += ["-e", f]
    return argv


def run_tshark(path: str, server_port: int, packets: int) -> PeerResult:
    t0 = time.perf_counter()
    proc = subprocess.Popen(tshark_argv(path, server_port), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    keys, requests, responses = set(), 0, 0
    for line in proc.stdout:
        cols = line.rstrip(b"\n").split(b"\t")
        if cols[3]:
            # pipelined requests reassembled into one frame come out as comma-separated occurrences
            uris = cols[4].split(b",") if cols[3].count(b",") else [cols[4]]
            requests += len(uris)
            for u in uris:
                keys.add((cols[1].decode(), u.decode(errors="replace")))
        if cols[9]:
            responses += cols[9].count(b",") + 1
    proc.wait()
    return PeerResult("tshark", requests, responses, packets, time.perf_counter() - t0, keys)


# --- dpkt --------------------------------------------------------------------------------------
def run_dpkt(path: str, server_port: int, limit: int | None = None) -> PeerResult:
    import dpkt

    t0 = time.perf_counter()
    bufs: dict[tuple, bytes] = defaultdict(bytes)
    pending: dict[tuple, deque] = defaultdict(deque)
    keys, requests, responses, packets = set(), 0, 0, 0
    with open(path, "rb") as fh:
        for _ts, raw in dpkt.pcap.Reader(fh):
            packets += 1
            if limit and packets > limit:
                break
            eth = dpkt.ethernet.Ethernet(raw)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            tcp = ip.data
            if not tcp.data:
                continue
            if tcp.dport == server_port:
                flow = (ip.src, tcp.sport, ip.dst, tcp.dport)
                buf = bufs[flow] + tcp.data
                while b"\r\n\r\n" in buf:  # dpkt happily parses half a request line otherwise
                    try:
                        req = dpkt.http.Request(buf)
                    except (dpkt.NeedData, dpkt.UnpackError):
                        break
                    requests += 1
                    key = (_ip4(ip.src), req.uri)
                    keys.add(key)
                    pending[flow].append(key)
                    buf = req.data
                bufs[flow] = buf
            elif tcp.sport == server_port:
                flow = (ip.dst, tcp.dport, ip.src, tcp.sport)
                rflow = flow + ("r",)
                buf = bufs[rflow] + tcp.data
                while buf:
                    try:
                        resp = dpkt.http.Response(buf)
                    except (dpkt.NeedData, dpkt.UnpackError):
                        break
                    responses += 1
                    if pending[flow]:
                        pending[flow].popleft()
                    buf = resp.data
                bufs[rflow] = buf
    return PeerResult("dpkt", requests, responses, min(packets, limit or packets), time.perf_counter() - t0, keys)


# --- pure Python over RawPcapReader --------------------------------------------------------------
class _Direction:
    __slots__ = ("buf", "body_left", "chunked")

    def __init__(self):
        self.buf = b""
        self.body_left = 0
        self.chunked = False


def _head_fields(head: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _skip_chunks(d: _Direction) -> bool:
    """Consume chunked body bytes from d.buf; True when the terminating chunk was seen."""
    buf = d.buf
    pos = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(buf[pos:eol].split(b";")[0] or b"0", 16)
        end = eol + 2 + size + 2
        if end > len(buf):
            break
        pos = end
        if size == 0:
            d.buf = buf[pos:]
            d.chunked = False
            return True
    d.buf = buf[pos:]
    return False


def run_pure_python(path: str, server_port: int, limit: int | None = None) -> PeerResult:
    from scapy.utils import RawPcapReader

    t0 = time.perf_counter()
    dirs: dict[tuple, _Direction] = {}
    pending: dict[tuple, deque] = defaultdict(deque)
    keys, requests, responses, packets = set(), 0, 0, 0
    for raw, _meta in RawPcapReader(path):
        packets += 1
        if limit and packets > limit:
            break
        if raw[12:14] != b"\x08\x00" or raw[23] != 6:
            continue
        ihl = (raw[14] & 0x0F) * 4
        t = 14 + ihl
        sport = raw[t] << 8 | raw[t + 1]
        dport = raw[t + 2] << 8 | raw[t + 3]
        payload = raw[t + (raw[t + 12] >> 4) * 4:14 + (raw[16] << 8 | raw[17])]
        if not payload:
            continue
        to_server = dport == server_port
        if not to_server and sport != server_port:
            continue
        src, dst = raw[26:30], raw[30:34]
        flow = (src, sport, dst, dport) if to_server else (dst, dport, src, sport)
        dkey = flow + (to_server,)
        d = dirs.get(dkey)
        if d is None:
            d = dirs[dkey] = _Direction()
        d.buf += payload
        while d.buf:
            if d.body_left:
                n = min(d.body_left, len(d.buf))
                d.body_left -= n
                d.buf = d.buf[n:]
                continue
            if d.chunked:
                if not _skip_chunks(d):
                    break
                continue
            end = d.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            first, headers = _head_fields(d.buf[:end])
            d.buf = d.buf[end + 4:]
            if to_server:
                parts = first.split(b" ")
                if len(parts) < 3:
                    continue
                requests += 1
                key = (_ip4(flow[0]), parts[1].decode(errors="replace"))
                keys.add(key)
                pending[flow].append(parts[0])
                d.body_left = int(headers.get(b"content-length", b"0") or 0)
            else:
                responses += 1
                method = pending[flow].popleft() if pending[flow] else b"GET"
                status = int(first.split(b" ")[1])
                if method == b"HEAD" or status in (204, 304) or status < 200:
                    continue
                if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                    d.chunked = True
                else:
                    d.body_left = int(headers.get(b"content-length", b"0") or 0)
    return PeerResult("python+RawPcapReader", requests, responses, min(packets, limit or packets),
                      time.perf_counter() - t0, keys)


# --- scapy full dissection -----------------------------------------------------------------------
def run_scapy(path: str, server_port: int, limit: int | None = 20_000) -> PeerResult:
    from scapy.layers.http import HTTP, HTTPRequest, HTTPResponse, bind_layers
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapReader

    if server_port != 80:
        bind_layers(TCP, HTTP, sport=server_port)
        bind_layers(TCP, HTTP, dport=server_port)
    t0 = time.perf_counter()
    keys, requests, responses, packets = set(), 0, 0, 0
    with PcapReader(path) as reader:
        for pkt in reader:
            if limit and packets >= limit:
                break
            packets += 1
            if pkt.haslayer(HTTPRequest):
                req = pkt[HTTPRequest]
                requests += 1
                keys.add((pkt[IP].src, (req.Path or b"").decode(errors="replace")))
            elif pkt.haslayer(HTTPResponse):
                responses += 1
    return PeerResult("scapy+layers.http", requests, responses, packets, time.perf_counter() - t0, keys,
                      extrapolated_from=packets if limit else 0)
