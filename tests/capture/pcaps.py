"""Build capture files for the capture tests with scapy.

`Conv` scripts one TCP connection (handshake, data in either direction with any
segmentation, FIN/RST) and keeps the packets with their timestamps; `write`
wraps them in a link layer (Ethernet, VLAN, QinQ, SLL, SLL2, NULL, raw IP) and
writes pcap (scapy wrpcap), pcapng (scapy PcapNgWriter) or, for the cases scapy
cannot write (snaplen cut, ns resolution, big-endian), a hand-built pcap.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.ipsec import AH
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, Loopback
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, wrpcap

T0 = 1_700_000_000.0

LINKTYPES = {"ether": 1, "vlan": 1, "qinq": 1, "sll": 113, "sll2": 276, "null": 0, "raw": 101}


@dataclass
class Conv:
    client: tuple[str, int] = ("10.0.0.1", 40000)
    server: tuple[str, int] = ("10.0.0.2", 80)
    v6: bool = False
    ext_headers: bool | str = False  # IPv6 hop-by-hop + destination options before TCP; "ah": AH between them
    isn_c: int = 1000
    isn_s: int = 5000
    t: float = T0
    pkts: list = field(default_factory=list)  # (ts, scapy IP packet)

    def __post_init__(self):
        self.seq_c = self.isn_c
        self.seq_s = self.isn_s

    def _ip(self, from_client: bool):
        src, dst = (self.client[0], self.server[0]) if from_client else (self.server[0], self.client[0])
        if self.v6:
            ip = IPv6(src=src, dst=dst)
            if self.ext_headers == "ah":  # AH's length counts 4-byte words (the others' 8-byte units)
                ip = ip / IPv6ExtHdrHopByHop() / AH(nh=60, payloadlen=4, spi=7, seq=1, icv=bytes(12)) / \
                    IPv6ExtHdrDestOpt()
            elif self.ext_headers:
                ip = ip / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
            return ip
        return IP(src=src, dst=dst)

    def packet(self, from_client: bool, flags: str, seq: int, payload: bytes = b"", ts: float | None = None):
        sport, dport = (self.client[1], self.server[1]) if from_client else (self.server[1], self.client[1])
        ack = self.seq_s if from_client else self.seq_c
        p = self._ip(from_client) / TCP(sport=sport, dport=dport, flags=flags, seq=seq % (1 << 32),
                                        ack=ack % (1 << 32), window=65535)
        if payload:
            p = p / Raw(payload)
        self.pkts.append((self.t if ts is None else ts, p))
        return p

    def tick(self, dt: float = 0.001) -> "Conv":
        self.t = round(self.t + dt, 6)  # whole microseconds: every file format stores the same instant
        return self

    def handshake(self) -> "Conv":
        self.packet(True, "S", self.seq_c)
        self.seq_c += 1
        self.tick().packet(False, "SA", self.seq_s)
        self.seq_s += 1
        self.tick().packet(True, "A", self.seq_c)
        return self.tick()

    def send(self, data: bytes, from_client: bool = True, sizes: list[int] | None = None, dt: float = 0.0) -> list:
        """Send `data` as segments of the given sizes (default one segment); returns the packets."""
        sizes = sizes or [len(data)]
        out = []
        pos = 0
        for k in sizes + [len(data)]:  # the last entry sweeps up the rest
            if pos >= len(data):
                break
            chunk = data[pos:pos + k]
            seq = self.seq_c if from_client else self.seq_s
            out.append(self.packet(from_client, "PA", seq + pos, chunk))
            pos += len(chunk)
            if dt:
                self.tick(dt)
        if from_client:
            self.seq_c += len(data)
        else:
            self.seq_s += len(data)
        return out

    def request(self, data: bytes, **kw) -> list:
        return self.send(data, True, **kw)

    def response(self, data: bytes, **kw) -> list:
        return self.send(data, False, **kw)

    def fin(self, from_client: bool = True) -> None:
        seq = self.seq_c if from_client else self.seq_s
        self.packet(from_client, "FA", seq)
        if from_client:
            self.seq_c += 1
        else:
            self.seq_s += 1

    def close(self) -> "Conv":
        self.fin(True)
        self.tick().fin(False)
        return self.tick()

    def rst(self, from_client: bool = True) -> None:
        self.packet(from_client, "R", self.seq_c if from_client else self.seq_s)


def frame(ip_pkt, link: str = "ether"):
    """Wrap an IP packet in the given link layer (a scapy packet, or bytes for raw IP)."""
    v6 = ip_pkt.haslayer(IPv6)
    et = 0x86DD if v6 else 0x0800
    if link == "ether":
        return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=et) / ip_pkt
    if link == "vlan":
        return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=10, type=et) / ip_pkt
    if link == "qinq":
        return (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1AD(vlan=100) / Dot1Q(vlan=10, type=et)
                / ip_pkt)
    if link == "sll":
        return CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\x00\x00\x00\x00\x01\x00\x00",
                           proto=et) / ip_pkt
    if link == "sll2":
        return CookedLinuxV2(proto=et, ifindex=1, lladdrtype=1, pkttype=0, lladdrlen=6,
                             src=b"\x02\x00\x00\x00\x00\x01\x00\x00") / ip_pkt
    if link == "null":
        return Loopback(type=24 if v6 else 2) / ip_pkt
    if link == "raw":
        return ip_pkt
    raise ValueError(link)


def write(path, pkts, link: str = "ether", fmt: str = "pcap", snaplen: int | None = None,
          big_endian: bool = False, nanos: bool = False) -> str:
    """Write (ts, ip_packet) pairs in time order as given; returns the path."""
    path = str(path)
    frames = []
    for ts, p in pkts:
        f = frame(p, link)
        f.time = ts
        frames.append(f)
    if fmt == "pcapng":
        w = PcapNgWriter(path)
        w.linktype = LINKTYPES[link]
        for f in frames:
            w.write(f)
        w.close()
    elif snaplen is not None or big_endian or nanos:
        write_raw_pcap(path, [(ts, bytes(f)) for (ts, _), f in zip(pkts, frames)], LINKTYPES[link],
                       snaplen=snaplen, big_endian=big_endian, nanos=nanos)
    else:
        wrpcap(path, frames, linktype=LINKTYPES[link])
    return path


def write_raw_pcap(path, frames: list[tuple[float, bytes]], linktype: int, snaplen: int | None = None,
                   big_endian: bool = False, nanos: bool = False) -> str:
    """A classic pcap by hand: snaplen cut (caplen < wire length), either byte order, us or ns."""
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    units = 1_000_000_000 if nanos else 1_000_000
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen or 262144, linktype)]
    for ts, data in frames:
        sec = int(ts)
        frac = int(round((ts - sec) * units))
        cap = data[:snaplen] if snaplen else data
        out.append(struct.pack(e + "IIII", sec, frac, len(cap), len(data)) + cap)
    with open(path, "wb") as fh:
        fh.write(b"".join(out))
    return str(path)


def udp_packet(ts: float = T0) -> tuple[float, object]:
    return ts, IP(src="10.0.0.9", dst="10.0.0.2") / UDP(sport=5353, dport=53) / Raw(b"dns-ish")


def req(path: str = "/", method: str = "GET", host: str = "shop.example", headers: dict | None = None,
        body: bytes = b"", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", f"Host: {host}", "User-Agent: test-agent/1.0"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def resp(status: int = 200, body: bytes = b"hello", ctype: str = "text/html; charset=utf-8",
         headers: dict | None = None, length: bool = True, reason: str = "OK") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(parts: list[bytes], headers: dict | None = None) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", "Transfer-Encoding: chunked"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def write_pcapng_interfaces(path, packets: list[tuple[int, float, bytes]], interfaces: list[tuple[int, int]],
                            simple_from: int | None = None) -> str:
    """A hand-built pcapng: several interfaces (linktype, if_tsresol exponent of 10) and EPBs.

    packets are (interface index, ts, frame bytes); from index `simple_from` on, frames are
    written as Simple Packet Blocks (interface 0, no timestamp) as some capture tools do."""
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for linktype, exp in interfaces:
        opts = struct.pack("<HHB3x", 9, 1, exp) + struct.pack("<HH", 0, 0)
        out.append(block(1, struct.pack("<HHI", linktype, 0, 262144) + opts))
    for k, (iface, ts, data) in enumerate(packets):
        if simple_from is not None and k >= simple_from:
            out.append(block(3, struct.pack("<I", len(data)) + data))
            continue
        units = 10 ** interfaces[iface][1]
        raw = int(round(ts * units))
        out.append(block(6, struct.pack("<IIIII", iface, raw >> 32, raw & 0xFFFFFFFF, len(data), len(data)) + data))
    with open(path, "wb") as fh:
        fh.write(b"".join(out))
    return str(path)
