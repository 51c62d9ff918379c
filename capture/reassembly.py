"""TCP reassembly of one direction: in-order bytes (and gaps) to a MessageReader.

The common case, the next expected segment, goes straight to the reader as a
memoryview of the capture buffer (no copy; body bytes are only counted). Out-of-
order segments are copied and held until the hole fills, bounded per flow and in
total; when a bound is hit the segment is dropped (counted) and the stream skips
the hole, which the reader sees as a gap; a hole the other side's packets acknowledge
(sent and received, never captured) is a gap at once (Stream.acked). Retransmissions and
overlaps are trimmed to the bytes not yet delivered. Sequence numbers wrap modulo 2**32.
"""
from __future__ import annotations

from capture.http import BODY, CHUNK_DATA, UNTIL_CLOSE

MASK = 0xFFFFFFFF
HALF = 1 << 31


class Budget:
    """Out-of-order bytes held by all flows together, and the limits."""

    __slots__ = ("total", "max_total", "max_flow", "stats")

    def __init__(self, max_flow: int, max_total: int, stats: dict):
        self.total = 0
        self.max_total = max_total
        self.max_flow = max_flow
        self.stats = stats


def _rel(a: int, b: int) -> int:
    """a - b on the 32-bit sequence circle."""
    d = (a - b) & MASK
    return d - (1 << 32) if d >= HALF else d


class Stream:
    __slots__ = ("reader", "next_seq", "ooo", "ooo_bytes", "fin_seq", "closed", "budget", "delivered")

    def __init__(self, budget: Budget):
        self.reader = None
        self.next_seq: int | None = None
        self.ooo: dict[int, tuple[bytes, int, float]] = {}
        self.ooo_bytes = 0
        self.fin_seq: int | None = None
        self.closed = False
        self.budget = budget
        self.delivered = 0

    def syn(self, seq: int) -> None:
        if self.delivered == 0 and not self.ooo:
            self.next_seq = (seq + 1) & MASK

    def data(self, seq: int, seg, wire: int, ts: float, j: int = -1) -> None:
        """`seg` holds the captured bytes; `wire` is the true payload length (more when the capture was cut).

        `j` indexes the decoder's head scan for this packet (only used when delivered as is)."""
        if self.closed:
            return
        ns = self.next_seq
        if ns is None:  # picked up mid-stream: start here
            ns = self.next_seq = seq
        rel = (seq - ns) & MASK
        if rel == 0 and not self.ooo:
            self._deliver(seg, wire, ts, j)
            self.next_seq = (seq + wire) & MASK
            if self.fin_seq == self.next_seq:
                self._close()
            return
        if rel >= HALF:  # starts before what we already have: retransmission or overlap
            old = (1 << 32) - rel
            if old >= wire:
                self.budget.stats["retransmitted_segments"] += 1
                return
            seg = seg[old:] if old < len(seg) else b""
            wire -= old
            seq = ns
            rel = 0
        if rel == 0:
            self._deliver(seg, wire, ts)
            self.next_seq = (seq + wire) & MASK
            self._drain()
            return
        self._hold(seq, seg, wire, ts)

    def acked(self, ack: int) -> None:
        """The peer acknowledged this side's bytes up to `ack`: those never captured will not come (the receiver has
        them), so they are a gap now, as the reference analyser takes them, not a hole held until the flow ends and
        every request meanwhile has waited. One byte ahead is a FIN not seen."""
        ns = self.next_seq
        if ns is None or self.closed or not 1 < _rel(ack, ns) < HALF:
            return
        end = ack & MASK
        if self.fin_seq is not None and _rel(end, self.fin_seq) > 0:
            end = self.fin_seq
        while not self.closed and _rel(end, self.next_seq) > 0:
            below = [s for s in self.ooo if 0 <= _rel(s, self.next_seq) < _rel(end, self.next_seq)]
            upto = min(below, key=lambda s: _rel(s, self.next_seq)) if below else end
            hole = _rel(upto, self.next_seq)
            if hole > 0:
                self.reader.gap(hole)
                self.next_seq = upto
            self._drain()
            if not below:
                break
        if self.fin_seq is not None and self.next_seq == self.fin_seq:
            self._close()

    def body_bytes(self, seq: int, wire: int, captured: int) -> bool:
        """Fast path for the commonest packet: the next in-order piece of a body being skipped.

        Counts it off without touching its bytes or making any object; False = take the full path."""
        r = self.reader
        if seq != self.next_seq or self.ooo or captured != wire or self.fin_seq is not None or r.keep is not None:
            return False  # (a body its owner keeps takes the full path: its bytes are copied)
        st = r.state
        if (st == BODY or st == CHUNK_DATA) and r.skip > wire:
            r.skip -= wire
        elif st == UNTIL_CLOSE:
            r.body += wire
        else:
            return False
        self.next_seq = (seq + wire) & MASK
        self.delivered += wire
        return True

    def fin(self, seq_end: int) -> None:
        self.fin_seq = seq_end & MASK
        if self.next_seq is None or self.next_seq == self.fin_seq:
            self._close()

    def flush(self) -> None:
        """Deliver everything held, across holes (end of input / expiry / overflow)."""
        while self.ooo and not self.closed:
            lowest = min(self.ooo, key=lambda s: _rel(s, self.next_seq))
            hole = _rel(lowest, self.next_seq)
            if hole > 0:
                self.reader.gap(hole)
                self.next_seq = lowest
            self._drain()

    def close(self) -> None:
        self.flush()
        self._close()

    # -- internals ---------------------------------------------------------------------
    def _deliver(self, seg, wire: int, ts: float, j: int = -1) -> None:
        n = len(seg)
        if n:
            self.reader.feed(seg, ts, j)
        if wire > n:  # bytes on the wire we never captured
            self.reader.gap(wire - n)
        self.delivered += wire

    def _hold(self, seq: int, seg, wire: int, ts: float) -> None:
        b = self.budget
        n = len(seg)
        if self.ooo_bytes + n > b.max_flow or b.total + n > b.max_total:
            b.stats["dropped_overflow_bytes"] += wire
            b.stats["dropped_overflow_segments"] += 1
            self.flush()  # give up on the hole: frees this flow's buffer
            return
        prev = self.ooo.get(seq)
        if prev is not None:
            if prev[1] >= wire:
                b.stats["retransmitted_segments"] += 1
                return
            self._release(len(prev[0]))
        self.ooo[seq] = (bytes(seg), wire, ts)
        self.ooo_bytes += n
        b.total += n

    def _release(self, n: int) -> None:
        self.ooo_bytes -= n
        self.budget.total -= n

    def _drain(self) -> None:
        ooo = self.ooo
        while ooo:
            ns = self.next_seq
            hit = ooo.pop(ns, None)
            if hit is not None:
                seg, wire, ts = hit
                self._release(len(seg))
                self._deliver(seg, wire, ts)
                self.next_seq = (ns + wire) & MASK
                continue
            # segments starting before next_seq (overlaps) are trimmed; stop at a real hole
            best = None
            for s in ooo:
                r = _rel(s, ns)
                if r < 0:
                    best = s
                    break
            if best is None:
                break
            seg, wire, ts = ooo.pop(best)
            self._release(len(seg))
            old = -_rel(best, ns)
            if old < wire:
                self._deliver(seg[old:], wire - old, ts)
                self.next_seq = (ns + wire - old) & MASK
            else:
                self.budget.stats["retransmitted_segments"] += 1
        if self.fin_seq is not None and self.next_seq == self.fin_seq:
            self._close()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            for seg, _, _ in self.ooo.values():
                self._release(len(seg))
            self.ooo.clear()
            if self.reader is not None:
                self.reader.close()
