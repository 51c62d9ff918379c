"""Packets made up for tests, benchmarks and the decoder's warm-up: Ethernet/IPv4/TCP frames, FrameBatches of
them as a capture file or the live ring would hand them over, and classic pcap files of them."""
from __future__ import annotations

import struct

import numpy as np

from capture.frames import FrameBatch

CLIENT_MAC, SERVER_MAC = b"\x02\0\0\0\0\x01", b"\x02\0\0\0\0\x02"
SYN, FIN, PSH, ACK = 0x02, 0x01, 0x08, 0x10
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, flags: int = PSH | ACK, payload: bytes = b"",
              *, ack: int = 0, ip_id: int = 0, ip_checksum: bool = False, tcp_checksum: bool = False,
              macs: tuple[bytes, bytes] = (CLIENT_MAC, SERVER_MAC)) -> bytes:
    """One Ethernet II / IPv4 / TCP frame (no options, DF set, TTL 64) from `macs` = (source, destination).
    Checksums are 0 unless asked for: the decoder does not check them, pcap readers such as tshark do."""
    tcp = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    if tcp_checksum:
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
        tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp + payload)) + tcp[18:]
    ip = _IP.pack(0x45, 0, 20 + len(tcp) + len(payload), ip_id & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
    if ip_checksum:
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return macs[1] + macs[0] + b"\x08\x00" + ip + tcp + payload


PCAP_RECORD = struct.Struct("<IIII")  # a classic pcap record's header: seconds, microseconds, captured, wire length


def pcap_header(snaplen: int = 65535) -> bytes:
    """The header of a classic pcap file of Ethernet frames (little-endian, microsecond timestamps)."""
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)


def pcap_record(ts: float, frame: bytes) -> bytes:
    """One whole frame of such a file, captured at `ts` (epoch seconds)."""
    sec = int(ts)
    return PCAP_RECORD.pack(sec, int(round((ts - sec) * 1e6)) % 1_000_000, len(frame), len(frame)) + frame


# one client-server conversation: the fuzz tests' and the decoder's warm-up
CLIENT_IP, SERVER_IP, CLIENT_PORT, SERVER_PORT = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40000, 80


def conversation_frame(from_client: bool, seq: int, payload: bytes = b"", flags: int = PSH | ACK) -> bytes:
    """A frame of that conversation, from the client or from the server."""
    if from_client:
        return tcp_frame(CLIENT_IP, SERVER_IP, CLIENT_PORT, SERVER_PORT, seq, flags, payload)
    return tcp_frame(SERVER_IP, CLIENT_IP, SERVER_PORT, CLIENT_PORT, seq, flags, payload)


def frame_batch(frames: list[tuple[float, bytes]], linktypes: list[int] | None = None,
                writable: bool = False) -> FrameBatch:
    """(timestamp, frame) pairs as one FrameBatch; Ethernet unless `linktypes` says otherwise. The buffer is
    read-only (as a mapped file) unless `writable` (as the live ring's copies): numba compiles both."""
    buf = np.frombuffer(b"".join(f for _, f in frames) or b"\0", dtype=np.uint8)
    if writable:
        buf = buf.copy()
    lens = np.array([len(f) for _, f in frames], np.int32)
    offsets = np.zeros(len(frames), np.int64)
    if len(frames) > 1:
        offsets[1:] = np.cumsum(lens[:-1])
    lt = np.array(linktypes if linktypes is not None else [1] * len(frames), np.int32)
    return FrameBatch(buf, offsets, lens, lens.copy(), np.array([t for t, _ in frames], np.float64), lt)
