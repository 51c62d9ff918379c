"""pcap / pcapng files -> FrameBatch, straight from an mmap.

The file is mapped once and wrapped with np.frombuffer; numba kernels walk the
record headers and fill offset/length/timestamp arrays, so frames are never
copied and no Python object is made per packet (scapy's RawPcapReader is ~8x
slower). A file cut short (capture killed mid-write) ends cleanly: the partial
record is counted in `stats['truncated_file']`.
"""
from __future__ import annotations

import logging
import mmap
import os
from typing import Iterator

import numpy as np

from capture.frames import FrameBatch
from capture.jit import jit

log = logging.getLogger(__name__)

# a record claiming more than this is corruption, not a packet
MAX_RECORD_BYTES = 1 << 26
POPULATE_MAX_BYTES = 2 << 30  # files up to this size are mapped whole at open (see _map)

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": (False, 1_000_000),   # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (True, 1_000_000),    # big-endian, microseconds
    b"\x4d\x3c\xb2\xa1": (False, 1_000_000_000),  # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (True, 1_000_000_000),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


class PcapFormatError(Exception):
    """The file is not a pcap/pcapng capture (or its header is damaged)."""


@jit(inline="always")
def _u32(buf, p, be):
    if be:
        return ((np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16) | (np.int64(buf[p + 2]) << 8)
                | np.int64(buf[p + 3]))
    return (np.int64(buf[p + 3]) << 24) | (np.int64(buf[p + 2]) << 16) | (np.int64(buf[p + 1]) << 8) | np.int64(buf[p])


@jit(inline="always")
def _u16(buf, p, be):
    if be:
        return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])
    return (np.int64(buf[p + 1]) << 8) | np.int64(buf[p])


@jit()
def _index_pcap(buf, pos, be, units, max_frames, max_record):
    """Walk classic pcap records from `pos`. status: 0 batch full, 1 end of file, 2 cut-short record."""
    size = buf.shape[0]
    offsets = np.empty(max_frames, np.int64)
    caplens = np.empty(max_frames, np.int32)
    wirelens = np.empty(max_frames, np.int32)
    ts = np.empty(max_frames, np.float64)
    n = 0
    status = 0
    while n < max_frames:
        if pos >= size:
            status = 1
            break
        if pos + 16 > size:
            status = 2
            break
        incl = _u32(buf, pos + 8, be)
        orig = _u32(buf, pos + 12, be)
        if incl > max_record or pos + 16 + incl > size:
            status = 2
            break
        ts[n] = np.float64(_u32(buf, pos, be)) + np.float64(_u32(buf, pos + 4, be)) / units
        offsets[n] = pos + 16
        caplens[n] = incl
        wirelens[n] = min(orig, np.int64(0x7FFFFFFF))
        n += 1
        pos += 16 + incl
    return offsets[:n], caplens[:n], wirelens[:n], ts[:n], pos, status


@jit()
def _index_pcapng(buf, pos, be, if_linktype, if_units, if_offset, if_snaplen, last_ts, max_frames, max_record):
    """Walk pcapng packet blocks (EPB, SPB, OPB) from `pos`.

    status: 0 batch full, 1 end of file, 2 cut-short/corrupt block, 3 a non-packet
    block (SHB/IDB/...) at `pos` that Python must read, 4 packet on an unknown interface.
    """
    size = buf.shape[0]
    offsets = np.empty(max_frames, np.int64)
    caplens = np.empty(max_frames, np.int32)
    wirelens = np.empty(max_frames, np.int32)
    ts = np.empty(max_frames, np.float64)
    lts = np.empty(max_frames, np.int32)
    n = 0
    status = 0
    nif = if_linktype.shape[0]
    while n < max_frames:
        if pos >= size:
            status = 1
            break
        if pos + 12 > size:
            status = 2
            break
        btype = _u32(buf, pos, be)
        blen = _u32(buf, pos + 4, be)
        if blen < 12 or blen % 4 != 0 or blen > max_record or pos + blen > size:
            status = 2
            break
        if btype == 6 or btype == 2:  # enhanced / obsolete packet block
            if blen < 32:
                status = 2
                break
            if btype == 6:
                ifid = _u32(buf, pos + 8, be)
            else:
                ifid = _u16(buf, pos + 8, be)
            if ifid >= nif:
                status = 4
                break
            raw = (_u32(buf, pos + 12, be) << 32) | _u32(buf, pos + 16, be)
            u = if_units[ifid]
            t = np.float64(raw // u) + np.float64(raw % u) / np.float64(u) + if_offset[ifid]
            incl = _u32(buf, pos + 20, be)
            orig = _u32(buf, pos + 24, be)
            if 28 + incl > blen - 4:
                status = 2
                break
            offsets[n] = pos + 28
            caplens[n] = incl
            wirelens[n] = min(orig, np.int64(0x7FFFFFFF))
            ts[n] = t
            lts[n] = if_linktype[ifid]
            last_ts = t
            n += 1
        elif btype == 3:  # simple packet block: interface 0, no timestamp
            if nif == 0:
                status = 4
                break
            orig = _u32(buf, pos + 8, be)
            incl = max(np.int64(0), min(orig, blen - 16))
            if if_snaplen[0] > 0:
                incl = min(incl, if_snaplen[0])
            offsets[n] = pos + 12
            caplens[n] = incl
            wirelens[n] = min(orig, np.int64(0x7FFFFFFF))
            ts[n] = last_ts
            lts[n] = if_linktype[0]
            n += 1
        elif btype == 1 or btype == 0x0A0D0D0A:
            status = 3
            break
        # any other block (name resolution, statistics, custom...) is skipped
        pos += blen
    return offsets[:n], caplens[:n], wirelens[:n], ts[:n], lts[:n], pos, status, last_ts


def _map(path: str) -> tuple[mmap.mmap | None, np.ndarray]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise PcapFormatError(f"{path}: no such file; give the path of a .pcap or .pcapng capture") from None
    except IsADirectoryError:
        raise PcapFormatError(f"{path} is a directory; give the path of a .pcap or .pcapng capture") from None
    except PermissionError:
        raise PcapFormatError(f"{path}: permission denied; check the file's permissions "
                              "(or run as its owner)") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise PcapFormatError(f"{path} is empty, not a pcap/pcapng capture")
        # a file that fits comfortably in memory is mapped in one go (MAP_POPULATE): page-faulting it in
        # 64 KiB at a time cost as much as indexing its records; a larger one is mapped as it is read
        populate = mmap.MAP_POPULATE if size <= POPULATE_MAX_BYTES and hasattr(mmap, "MAP_POPULATE") else 0
        mm = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED | populate, prot=mmap.PROT_READ)
    except (OSError, ValueError) as e:
        raise PcapFormatError(f"{path}: cannot map the file ({e}); is it a regular pcap/pcapng file?") from None
    finally:
        os.close(fd)
    return mm, np.frombuffer(mm, dtype=np.uint8)


def read_pcap_batches(path: str, batch_size: int = 65536, stats: dict | None = None) -> Iterator[FrameBatch]:
    """Yield FrameBatches of a pcap (either byte order, us or ns) or pcapng file.

    Raises PcapFormatError (with a readable message) before the first batch when the
    file is not a capture. `stats` (optional) receives frames, truncated_file and, for
    a capture that ends mid-record, the byte offset where reading stopped.
    """
    stats = stats if stats is not None else {}
    stats.setdefault("frames", 0)
    stats.setdefault("truncated_file", 0)
    mm, buf = _map(path)
    magic = bytes(buf[:4])
    if magic in _PCAP_MAGIC:
        gen = _pcap(path, buf, magic, batch_size, stats)
    elif magic == _PCAPNG_SHB:
        gen = _pcapng(path, buf, batch_size, stats)
    else:
        raise PcapFormatError(f"{path} is not a pcap or pcapng capture (starts with {magic.hex()}); "
                              "write one with tcpdump -w FILE or convert it with editcap -F pcap")
    return _closing(gen, mm)


def _closing(gen: Iterator[FrameBatch], mm) -> Iterator[FrameBatch]:
    # the mmap stays open while any yielded batch may still be in use by the caller
    yield from gen


def _truncated(path: str, stats: dict, pos: int, what: str) -> None:
    stats["truncated_file"] += 1
    stats["stopped_at"] = pos
    log.warning("%s: %s at byte %d; stopped reading there (the capture was probably cut short)", path, what, pos)


def _pcap(path: str, buf: np.ndarray, magic: bytes, batch_size: int, stats: dict) -> Iterator[FrameBatch]:
    be, units = _PCAP_MAGIC[magic]
    if len(buf) < 24:
        raise PcapFormatError(f"{path}: pcap header is cut short ({len(buf)} bytes); the file is damaged")
    linktype = int(_u32(buf, 20, be)) & 0xFFFF
    pos = 24
    while True:
        offsets, caplens, wirelens, ts, pos, status = _index_pcap(buf, pos, be, float(units), batch_size,
                                                                  MAX_RECORD_BYTES)
        if len(offsets):
            stats["frames"] += len(offsets)
            yield FrameBatch(buf, offsets, caplens, wirelens, ts, np.full(len(offsets), linktype, np.int32))
        if status == 1:
            return
        if status == 2:
            _truncated(path, stats, pos, "incomplete packet record")
            return


def _pcapng(path: str, buf: np.ndarray, batch_size: int, stats: dict) -> Iterator[FrameBatch]:
    size = len(buf)
    pos = 0
    be = False
    if_linktype: list[int] = []
    if_units: list[int] = []
    if_offset: list[float] = []
    if_snaplen: list[int] = []
    arrays = None
    last_ts = 0.0
    while pos < size:
        if pos + 12 > size:
            _truncated(path, stats, pos, "incomplete block")
            return
        head = bytes(buf[pos:pos + 12])
        if head[:4] == _PCAPNG_SHB:
            bom = head[8:12]
            if bom == b"\x1a\x2b\x3c\x4d":
                be = True
            elif bom == b"\x4d\x3c\x2b\x1a":
                be = False
            else:
                raise PcapFormatError(f"{path}: pcapng section header at byte {pos} has a bad byte-order magic; "
                                      "the file is damaged")
            blen = int(_u32(buf, pos + 4, be))
            if blen < 28 or pos + blen > size:
                _truncated(path, stats, pos, "incomplete section header")
                return
            # a new section starts a new interface list
            if_linktype, if_units, if_offset, if_snaplen = [], [], [], []
            arrays = None
            pos += blen
            continue
        btype = int(_u32(buf, pos, be))
        blen = int(_u32(buf, pos + 4, be))
        if btype == 1:
            if blen < 20 or pos + blen > size:
                _truncated(path, stats, pos, "incomplete interface block")
                return
            linktype = int(_u16(buf, pos + 8, be))
            snaplen = int(_u32(buf, pos + 12, be))
            units, offset = _idb_options(buf, pos + 16, pos + blen - 4, be)
            if_linktype.append(linktype)
            if_units.append(units)
            if_offset.append(offset)
            if_snaplen.append(snaplen)
            arrays = None
            pos += blen
            continue
        if arrays is None:
            arrays = (np.array(if_linktype, np.int32), np.array(if_units, np.int64),
                      np.array(if_offset, np.float64), np.array(if_snaplen, np.int64))
        offsets, caplens, wirelens, ts, lts, pos, status, last_ts = _index_pcapng(
            buf, pos, be, arrays[0], arrays[1], arrays[2], arrays[3], last_ts, batch_size, MAX_RECORD_BYTES)
        if len(offsets):
            stats["frames"] += len(offsets)
            yield FrameBatch(buf, offsets, caplens, wirelens, ts, lts)
        if status == 1:
            return
        if status == 2:
            _truncated(path, stats, pos, "incomplete or corrupt block")
            return
        if status == 4:
            _truncated(path, stats, pos, "packet block names an interface that was never described")
            return


def _idb_options(buf: np.ndarray, p: int, end: int, be: bool) -> tuple[int, float]:
    """if_tsresol (default microseconds) and if_tsoffset from an interface block's options."""
    units, offset = 1_000_000, 0.0
    while p + 4 <= end:
        code = int(_u16(buf, p, be))
        olen = int(_u16(buf, p + 2, be))
        if code == 0:
            break
        if code == 9 and olen >= 1:
            v = int(buf[p + 4])
            units = 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
        elif code == 14 and olen >= 8:
            hi = int(_u32(buf, p + 4, be))
            lo = int(_u32(buf, p + 8, be))
            offset = float((hi << 32) | lo if be else (lo << 32) | hi)
        p += 4 + ((olen + 3) & ~3)
    return units, offset
