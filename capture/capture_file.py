"""Is this file a capture visitwire can read? Answered from its header alone, before anything starts.

`visitwire run --pcap` used to start the broker, Redis, the history and the worker before the capture
child found out that the file was not a capture at all, or one of a link type it does not decode
(802.11 radiotap, USB, ...), whose packets were then only counted as undecodable. Plain Python and
`struct`, no numba: this runs on every start.
"""
from __future__ import annotations

import struct

from capture.frames import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL,
                            LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NULL, LINKTYPE_RAW)

DECODED_LINKTYPES = {
    LINKTYPE_NULL: "BSD loopback", LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback", LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)", LINKTYPE_IPV4: "raw IPv4", LINKTYPE_IPV6: "raw IPv6",
}
_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}
_PCAPNG_SHB, _PCAPNG_IDB, _PCAPNG_EPB, _PCAPNG_SPB = 0x0A0D0D0A, 1, 6, 3
_HEADER_SCAN_BYTES = 1 << 20  # interface blocks come first; this is plenty


class CaptureFileError(ValueError):
    """The file is not a capture visitwire can read; the message says why and what to do."""


def capture_linktypes(path: str) -> list[int]:
    """The link types a pcap / pcapng file declares (pcapng: its interfaces, in order)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_SCAN_BYTES)
    except OSError as e:
        raise CaptureFileError(f"cannot read {path} ({e.strerror}): check the path and its permissions") from None
    magic = head[:4]
    if magic in _PCAP_MAGICS:
        if len(head) < 24:
            raise CaptureFileError(f"{path} ends inside its pcap header ({len(head)} bytes): the file is damaged")
        return [struct.unpack(_PCAP_MAGICS[magic] + "I", head[20:24])[0] & 0xFFFF]
    if len(head) >= 12 and struct.unpack("<I", magic)[0] == _PCAPNG_SHB:
        return _pcapng_linktypes(path, head)
    raise CaptureFileError(f"{path} is not a pcap or pcapng capture (starts with {magic.hex() or 'nothing'}); "
                           "write one with tcpdump -w FILE or convert it with editcap -F pcap")


def _pcapng_linktypes(path: str, head: bytes) -> list[int]:
    order = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    pos, types = 0, []
    while pos + 12 <= len(head):
        kind, length = struct.unpack(order + "II", head[pos:pos + 8])
        if length < 12 or length % 4:
            raise CaptureFileError(f"{path}: damaged pcapng block at byte {pos} (length {length})")
        if kind == _PCAPNG_IDB:
            types.append(struct.unpack(order + "H", head[pos + 8:pos + 10])[0])
        elif kind in (_PCAPNG_EPB, _PCAPNG_SPB) and types:
            break  # packets follow the interfaces they use
        pos += length
    return types


def check_capture_file(path: str) -> None:
    """Raise CaptureFileError unless `path` is a pcap/pcapng file of link types the decoder reads."""
    types = capture_linktypes(path)
    odd = sorted({t for t in types if t not in DECODED_LINKTYPES})
    if odd:
        known = ", ".join(f"{n} ({k})" for k, n in sorted(DECODED_LINKTYPES.items()))
        raise CaptureFileError(f"{path} holds link type {', '.join(map(str, odd))}, which visitwire does not decode "
                               f"(it reads {known}); capture on the web server's wired interface, or convert with "
                               "tcpdump -i IFACE -w FILE on the web server's Ethernet or loopback interface")
