"""Live capture from a network interface into FrameBatch objects.

Fast path: an AF_PACKET socket with a memory-mapped TPACKET_V3 ring. The kernel
fills whole blocks of packets; we index a ready block in place (numba) and hand
the decoder a view of the ring, so no packet is copied in Python. Fallback when
the ring cannot be set up: recvfrom_into a preallocated buffer with a 64 MiB
socket buffer.

A batch's `buf` is a view of the ring: it stays valid until the next batch is
requested (the ring block is then handed back to the kernel). The decoder copies
what it keeps. Idle periods yield empty batches every `flush_interval_s` so the
agent can expire transactions even when no packet arrives.

Needs root or CAP_NET_RAW.
"""
from __future__ import annotations

import ctypes
import logging
import mmap
import os
import select
import socket
import struct
import time
from typing import Iterator

import numpy as np

from capture.frames import LINKTYPE_ETHERNET, LINKTYPE_RAW, FrameBatch
from capture.jit import jit

log = logging.getLogger(__name__)

# <linux/if_packet.h>
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
DLT_EN10MB = 1
DLT_RAW = 12          # pcap_open_dead's value for raw IP on Linux
SNAPLEN = 262144      # segment offload hands us up to 64 KiB + headers; never truncate

# tpacket_block_desc / tpacket_hdr_v1 field offsets
_BLK_STATUS = 8
_BLK_NUM_PKTS = 12
_BLK_FIRST = 16


class CaptureError(Exception):
    """Live capture cannot start; the message says what to do."""


def available_interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def bpf_filter_for(ports: list[int], vlan: bool = True) -> str:
    """`tcp port 80 or tcp port 8080`, also matching 802.1Q-tagged frames on Ethernet."""
    base = " or ".join(f"tcp port {int(p)}" for p in ports)
    return f"({base}) or (vlan and ({base}))" if vlan else base


def _compile_bpf(expr: str, dlt: int) -> list[tuple[int, int, int, int]]:
    """Compile with libpcap (through scapy) and lift the snap length so large offloaded segments stay whole."""
    try:
        from scapy.arch.common import compile_filter
    except ImportError as e:  # pragma: no cover - scapy is a dependency
        raise CaptureError(f"scapy is needed to compile the BPF filter: {e}") from None
    try:
        prog = compile_filter(expr, linktype=dlt)
    except Exception as e:
        raise CaptureError(f"could not compile BPF filter {expr!r} (is libpcap0.8 installed? "
                           f"apt-get install libpcap0.8): {e}") from None
    insns = []
    for i in range(prog.bf_len):
        ins = prog.bf_insns[i]
        k = ins.k
        if ins.code == 0x06 and k != 0:  # BPF_RET|BPF_K accept -> keep the whole packet
            k = SNAPLEN
        insns.append((ins.code, ins.jt, ins.jf, k))
    return insns


def _attach_bpf(sock: socket.socket, insns: list[tuple[int, int, int, int]]) -> None:
    raw = b"".join(struct.pack("HBBI", *ins) for ins in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


@jit(nogil=True)
def _index_block(ring, base, offsets, caplens, wirelens, ts, n, drop_lo_outgoing, lo_ifindex):
    """Append the frames of the ring block at `base` to the output arrays; returns the new count."""
    num = np.int64(ring[base + 12]) | (np.int64(ring[base + 13]) << 8) | \
        (np.int64(ring[base + 14]) << 16) | (np.int64(ring[base + 15]) << 24)
    off = np.int64(ring[base + 16]) | (np.int64(ring[base + 17]) << 8) | \
        (np.int64(ring[base + 18]) << 16) | (np.int64(ring[base + 19]) << 24)
    p = base + off
    for _ in range(num):
        nxt = np.int64(ring[p]) | (np.int64(ring[p + 1]) << 8) | (np.int64(ring[p + 2]) << 16) | \
            (np.int64(ring[p + 3]) << 24)
        sec = np.int64(ring[p + 4]) | (np.int64(ring[p + 5]) << 8) | (np.int64(ring[p + 6]) << 16) | \
            (np.int64(ring[p + 7]) << 24)
        nsec = np.int64(ring[p + 8]) | (np.int64(ring[p + 9]) << 8) | (np.int64(ring[p + 10]) << 16) | \
            (np.int64(ring[p + 11]) << 24)
        snap = np.int64(ring[p + 12]) | (np.int64(ring[p + 13]) << 8) | (np.int64(ring[p + 14]) << 16) | \
            (np.int64(ring[p + 15]) << 24)
        wlen = np.int64(ring[p + 16]) | (np.int64(ring[p + 17]) << 8) | (np.int64(ring[p + 18]) << 16) | \
            (np.int64(ring[p + 19]) << 24)
        mac = np.int64(ring[p + 24]) | (np.int64(ring[p + 25]) << 8)
        keep = True
        if drop_lo_outgoing:
            # sockaddr_ll follows the 48-byte tpacket3_hdr: ifindex at +4, pkttype at +10
            sll = p + 48
            ifindex = np.int64(ring[sll + 4]) | (np.int64(ring[sll + 5]) << 8) | \
                (np.int64(ring[sll + 6]) << 16) | (np.int64(ring[sll + 7]) << 24)
            if ifindex == lo_ifindex and ring[sll + 10] == 4:
                keep = False  # the loopback's outgoing copy: the same packet arrives again as incoming
        if keep:
            offsets[n] = p + mac
            caplens[n] = snap
            wirelens[n] = wlen
            ts[n] = sec + nsec * 1e-9
            n += 1
        if nxt == 0:
            break
        p += nxt
    return n


class LiveSource:
    """Packets from `iface` (or "any") for the given server ports, as FrameBatch objects.

    for batch in LiveSource("eth0", [80], settings): decoder.feed(batch)

    `ports` empty -> settings.capture.ports. The keyword options size the ring (ring_mb, block_kb),
    bound latency (block_timeout_ms: a partly filled block is handed over after this long;
    flush_interval_s: an empty batch is yielded after this much idle time) and allow forcing
    the recvfrom fallback (use_ring=False).
    """

    def __init__(self, iface: str, ports: list[int], settings=None, *, ring_mb: int = 64,
                 block_kb: int = 1024, block_timeout_ms: int = 8, flush_interval_s: float = 0.05,
                 use_ring: bool = True):
        self.iface = iface or "any"
        self.ports = list(ports or (settings.capture.ports if settings is not None else []))
        if not self.ports:
            raise CaptureError("no server ports to capture: give ports, e.g. --ports 80,8080")
        self.flush_interval_s = flush_interval_s
        self._closed = False
        self._counts = {"packets": 0, "drops": 0, "freeze_q": 0}
        self._frames = 0
        self._batches = 0
        self._pending_blocks: list[int] = []
        self._ring = None
        self._mm = None
        self._iterating = False
        self.sock = None
        self._block_timeout_s = block_timeout_ms / 1000

        self.ifindex = self._resolve_iface(self.iface)
        self.is_loopback = self.iface == "lo" or self._arphrd(self.iface) == ARPHRD_LOOPBACK
        ethernet_like = self.iface != "any" and self._arphrd(self.iface) in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
        # Ethernet devices give us whole frames; "any" and other link types give IP packets (cooked mode).
        self.linktype = LINKTYPE_ETHERNET if ethernet_like else LINKTYPE_RAW
        kind = socket.SOCK_RAW if ethernet_like else socket.SOCK_DGRAM
        self._lo_ifindex = socket.if_nametoindex("lo") if "lo" in available_interfaces() else -1
        try:
            # protocol 0: nothing is received until bind(), so no unfiltered packet sneaks in first
            self.sock = socket.socket(socket.AF_PACKET, kind, 0)
        except PermissionError:
            raise CaptureError("live capture needs root or CAP_NET_RAW: run as root, or grant it once with "
                               "`sudo setcap cap_net_raw+ep $(readlink -f $(which python3))`") from None
        try:
            # cooked mode hands over IP packets: the kernel has already taken any VLAN tag off
            _attach_bpf(self.sock, _compile_bpf(bpf_filter_for(self.ports, vlan=ethernet_like),
                                                DLT_EN10MB if ethernet_like else DLT_RAW))
            self._drop_lo_outgoing = False
            if self.is_loopback:
                # On lo every packet passes the tap twice (out and in); keep one. On a real NIC the
                # server's responses are outgoing and must be kept, so only on loopback.
                try:
                    self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                except OSError:
                    self._drop_lo_outgoing = True
            elif self.iface == "any":
                self._drop_lo_outgoing = True  # same duplicate, seen through "any"
            self.mode = "recv"
            if use_ring:
                try:
                    self._setup_ring(ring_mb, block_kb, block_timeout_ms)
                    self.mode = "ring"
                except OSError as e:
                    log.warning("TPACKET_V3 ring unavailable (%s); falling back to recvfrom (slower)", e)
            if self.mode == "recv":
                self._setup_recv()
            self._bind()
        except BaseException:
            self._shutdown()
            raise
        log.info("live capture on %s (%s mode, ports %s)", self.iface, self.mode, self.ports)

    # -- set-up ---------------------------------------------------------------------------------
    def _bind(self) -> None:
        """Start receiving: bind to the device (ifindex 0 = every device) with ETH_P_ALL."""
        if self.ifindex:
            self.sock.bind((self.iface, ETH_P_ALL))
            return
        # Python's AF_PACKET bind needs a device name; "any" is ifindex 0, so call bind(2) directly
        addr = struct.pack("HHi12x", socket.AF_PACKET, socket.htons(ETH_P_ALL), 0)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.bind(self.sock.fileno(), ctypes.c_char_p(addr), len(addr)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"bind to all devices failed: {os.strerror(err)}")

    @staticmethod
    def _resolve_iface(iface: str) -> int:
        if iface == "any":
            return 0
        try:
            return socket.if_nametoindex(iface)
        except OSError:
            raise CaptureError(f"unknown interface {iface!r}; available: {', '.join(available_interfaces())} "
                               "(or 'any')") from None

    @staticmethod
    def _arphrd(iface: str) -> int:
        try:
            with open(f"/sys/class/net/{iface}/type") as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            return -1

    def _setup_ring(self, ring_mb: int, block_kb: int, block_timeout_ms: int) -> None:
        block_size = max(block_kb * 1024, 1 << 18)  # must hold the largest offloaded segment
        block_nr = max(4, (ring_mb << 20) // block_size)
        frame_size = 2048  # unused by V3 beyond validation
        self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        req = struct.pack("7I", block_size, block_nr, frame_size, block_size // frame_size * block_nr,
                          block_timeout_ms, 0, 0)
        self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self._mm = mmap.mmap(self.sock.fileno(), block_size * block_nr, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self._ring = np.frombuffer(self._mm, dtype=np.uint8)
        self._ring_u32 = self._ring.view(np.uint32)
        self._block_size = block_size
        self._block_nr = block_nr
        self._next_block = 0
        self._ring_view = self._ring.view()
        self._ring_view.flags.writeable = False

    def _setup_recv(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self._rbuf = np.empty(32 << 20, dtype=np.uint8)
        self.sock.setblocking(False)

    # -- reading --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[FrameBatch]:
        """Batches until close(); after close() what the kernel already captured is still delivered."""
        if self._iterating:
            raise RuntimeError("a LiveSource can be iterated by one consumer at a time")
        self._iterating = True
        try:
            yield from (self._iter_ring() if self.mode == "ring" else self._iter_recv())
        finally:
            self._iterating = False
            self._shutdown()

    def _empty(self) -> FrameBatch:
        return FrameBatch(np.empty(0, np.uint8), np.empty(0, np.int64), np.empty(0, np.int32),
                          np.empty(0, np.int32), np.empty(0, np.float64), np.empty(0, np.int32))

    def _release_blocks(self, ring_u32: np.ndarray) -> None:
        for b in self._pending_blocks:
            ring_u32[(b * self._block_size + _BLK_STATUS) // 4] = TP_STATUS_KERNEL
        self._pending_blocks.clear()

    def _iter_ring(self) -> Iterator[FrameBatch]:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN | select.POLLERR)
        words = self._block_size // 4
        ring, ring_u32, ring_view = self._ring, self._ring_u32, self._ring_view
        draining = False
        try:
            while True:
                self._release_blocks(ring_u32)
                if self._closed and not draining:
                    draining = True
                    time.sleep(self._block_timeout_s * 2)  # let the kernel retire the partly filled block
                ready = []
                b = self._next_block
                while len(ready) < self._block_nr and ring_u32[b * words + _BLK_STATUS // 4] & TP_STATUS_USER:
                    ready.append(b)
                    b = (b + 1) % self._block_nr
                if not ready:
                    if draining:
                        return
                    try:
                        poller.poll(int(self.flush_interval_s * 1000))
                    except InterruptedError:
                        pass
                    if not self._closed and not ring_u32[self._next_block * words + _BLK_STATUS // 4] & TP_STATUS_USER:
                        self._batches += 1
                        yield self._empty()  # idle tick: lets the agent expire transactions
                    continue
                self._next_block = b
                total = int(sum(int(ring_u32[r * words + _BLK_NUM_PKTS // 4]) for r in ready))
                offsets = np.empty(total, np.int64)
                caplens = np.empty(total, np.int32)
                wirelens = np.empty(total, np.int32)
                ts = np.empty(total, np.float64)
                n = 0
                for r in ready:
                    n = _index_block(ring, r * self._block_size, offsets, caplens, wirelens, ts, n,
                                     self._drop_lo_outgoing, self._lo_ifindex)
                self._pending_blocks = ready
                self._frames += n
                self._batches += 1
                yield FrameBatch(ring_view, offsets[:n], caplens[:n], wirelens[:n], ts[:n],
                                 np.full(n, self.linktype, np.int32))
        finally:
            self._release_blocks(ring_u32)

    def _iter_recv(self) -> Iterator[FrameBatch]:
        buf = self._rbuf
        mv = memoryview(buf)
        cap = len(buf)
        draining = False
        while True:
            if self._closed:
                draining = True  # take what is queued in the socket, then stop
            offsets, caplens, wirelens, ts = [], [], [], []
            pos = 0
            deadline = time.monotonic() + self.flush_interval_s
            while pos + SNAPLEN <= cap and time.monotonic() < deadline:
                try:
                    nbytes, addr = self.sock.recvfrom_into(mv[pos:], SNAPLEN, socket.MSG_TRUNC)
                except BlockingIOError:
                    if offsets or draining or self._closed:
                        break
                    select.select([self.sock], [], [], min(0.01, max(0.0, deadline - time.monotonic())))
                    continue
                if self._drop_lo_outgoing and addr[2] == PACKET_OUTGOING and addr[0] == "lo":
                    continue
                got = min(nbytes, SNAPLEN)
                offsets.append(pos)
                caplens.append(got)
                wirelens.append(nbytes)
                ts.append(time.time())
                pos += (got + 7) & ~7
            if draining and not offsets:
                return
            self._frames += len(offsets)
            self._batches += 1
            yield FrameBatch(buf[:pos], np.array(offsets, np.int64), np.array(caplens, np.int32),
                             np.array(wirelens, np.int32), np.array(ts, np.float64),
                             np.full(len(offsets), self.linktype, np.int32))

    # -- stats / close --------------------------------------------------------------------------
    def _poll_kernel_stats(self) -> None:
        if self.sock is None or self.sock.fileno() < 0:
            return
        # Reading PACKET_STATISTICS resets the kernel counters, so we accumulate.
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops = struct.unpack_from("II", raw)
        self._counts["packets"] += packets
        self._counts["drops"] += drops
        if len(raw) >= 12:
            self._counts["freeze_q"] += struct.unpack_from("I", raw, 8)[0]

    def stats(self) -> dict:
        """Kernel-side packets / drops since start, plus what we handed to the decoder."""
        try:
            self._poll_kernel_stats()
        except OSError:
            pass
        return {"mode": self.mode, "iface": self.iface, "kernel_packets": self._counts["packets"],
                "kernel_drops": self._counts["drops"], "kernel_freeze_q": self._counts["freeze_q"],
                "frames": self._frames, "batches": self._batches}

    def close(self) -> None:
        """Stop capturing. A running iteration delivers what was already captured, then ends."""
        self._closed = True
        if not self._iterating:
            self._shutdown()

    def _shutdown(self) -> None:
        if self.sock is None:
            return
        try:
            self._poll_kernel_stats()
        except OSError:
            pass
        self._ring = self._ring_u32 = self._ring_view = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # a batch still holds a view; the mapping goes when that view is dropped
            self._mm = None
        self.sock.close()
        self.sock = None

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_live(settings, iface: str) -> LiveSource:
    """The agent's entry point: live capture on `iface` for settings.capture.ports."""
    return LiveSource(iface or "any", settings.capture.ports, settings)
