"""Decoder: FrameBatches in, Hit dicts out.

numba decodes every frame's headers in one call (capture.decode); Python then
walks only the frames with payload or SYN/FIN/RST, routes them to their flow's
per-direction reassembler (capture.reassembly), whose MessageReaders
(capture.http) frame HTTP messages for the Connection (capture.transactions)
that pairs them into events.
"""
from __future__ import annotations

import logging
import socket

import numpy as np

from capture.decode import KIND_MALFORMED, KIND_NON_TCP, KIND_UNSUPPORTED, TH_ACK, TH_FIN, TH_RST, TH_SYN, \
    decode_batch, needs_python, scan_heads
from capture.frames import FrameBatch
from capture.http import DEAD, HeadParser, RESYNC_REQUEST, RESYNC_RESPONSE
from capture.reassembly import MASK, Budget, Stream
from capture.transactions import Connection, EventBuilder
from config.settings import Settings

log = logging.getLogger(__name__)

STAT_KEYS = ("packets", "bytes", "non_tcp", "malformed", "unsupported_link", "truncated_frames", "flows",
             "requests", "transactions", "no_response", "parse_errors", "gaps", "non_http", "orphan_responses",
             "late_responses", "dropped_pending", "dropped_overflow_bytes", "dropped_overflow_segments",
             "retransmitted_segments", "flows_expired", "flows_reset", "flows_closed", "internal_errors")


class Flow:
    """One TCP connection: endpoints, the two directions, and (once roles are known) the Connection."""

    __slots__ = ("addr", "ports", "streams", "conn", "client_dir", "last_seen", "midstream", "syn_from", "dead")

    def __init__(self, addr: tuple[str, str], ports: tuple[int, int], budget: Budget, ts: float):
        self.addr = addr        # addresses of canonical endpoints a (dirn 0 source) and b
        self.ports = ports
        self.streams = (Stream(budget), Stream(budget))
        self.conn: Connection | None = None
        self.client_dir: int | None = None
        self.last_seen = ts
        self.midstream = True
        self.syn_from: int | None = None
        self.dead = False


class ScanView:
    """The current batch's head scan as Python lists (one numba call per batch, shared by all connections)."""

    __slots__ = ("kind", "end", "a", "b", "c", "minor", "spans")

    def set(self, h) -> None:
        self.kind = h.kind.tolist()
        self.end = h.end.tolist()
        self.a = h.a.tolist()
        self.b = h.b.tolist()
        self.c = h.c.tolist()
        self.minor = h.minor.tolist()
        self.spans = h.spans


class Decoder:
    def __init__(self, settings: Settings):
        cfg = settings.capture
        self.cfg = cfg
        self.ports = frozenset(cfg.ports)
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.flows: dict[int, Flow] = {}
        self.builder = EventBuilder(cfg)
        self.heads = HeadParser(self.builder.request_headers(), self.builder.response_headers())
        self.budget = Budget(cfg.max_flow_buffer_bytes, cfg.max_total_buffer_bytes, self.stats)
        self.out: list[dict] = []
        self.last_ts = 0.0
        self.scan = ScanView()

    # -- public ------------------------------------------------------------------------
    def feed(self, batch: FrameBatch) -> list[dict]:
        """Decode one batch; returns the transactions it completed."""
        if len(batch) == 0:
            return []
        d = decode_batch(batch)
        st = self.stats
        kind = d.kind
        st["packets"] += len(kind)
        st["bytes"] += int(batch.wirelens.sum())
        counts = np.bincount(kind, minlength=4)
        st["non_tcp"] += int(counts[KIND_NON_TCP])
        st["malformed"] += int(counts[KIND_MALFORMED])
        st["unsupported_link"] += int(counts[KIND_UNSUPPORTED])
        st["truncated_frames"] += int(d.truncated.sum())
        idx = needs_python(d)
        if len(idx):
            self._walk(batch, d, idx)
        self.last_ts = max(self.last_ts, float(batch.ts[-1]))
        return self._take()

    def expire(self, now: float) -> list[dict]:
        """Report requests unanswered for transaction_timeout_s and end flows idle for flow_idle_timeout_s."""
        tt = self.cfg.transaction_timeout_s
        idle = self.cfg.flow_idle_timeout_s
        gone = []
        for key, f in self.flows.items():
            if f.last_seen + idle < now:
                gone.append(key)
            elif f.conn is not None and f.conn.pending:
                try:
                    f.conn.expire(now, tt)
                except Exception:
                    self._count_internal()
        for key in gone:
            self.stats["flows_expired"] += 1
            self._safe_end(self.flows.pop(key))
        return self._take()

    def close(self) -> list[dict]:
        """End of input: flush every flow (requests without a response get no_response=True)."""
        for f in self.flows.values():
            self._safe_end(f)
        self.flows.clear()
        return self._take()

    def _take(self) -> list[dict]:
        # connections hold a reference to self.out: empty it in place, never rebind it
        out = self.out[:]
        self.out.clear()
        return out

    @property
    def buffered_bytes(self) -> int:
        return self.budget.total

    # -- per packet --------------------------------------------------------------------
    def _walk(self, batch: FrameBatch, d, idx: np.ndarray) -> None:
        mv = memoryview(batch.buf)
        buf = batch.buf
        flows = self.flows
        poffs = d.poff[idx]
        plens = d.plen[idx]
        self.scan.set(scan_heads(buf, poffs, plens, self.heads.names, self.heads.name_off))
        for j, (i, h, dirn, seq, flags, poff, plen, pwire, ts) in enumerate(zip(
                idx.tolist(), d.fhash[idx].tolist(), d.dirn[idx].tolist(), d.seq[idx].tolist(),
                d.flags[idx].tolist(), poffs.tolist(), plens.tolist(), d.pwire[idx].tolist(),
                batch.ts[idx].tolist())):
            try:
                f = flows.get(h)
                syn = flags & TH_SYN
                if f is None or (syn and not flags & TH_ACK and f.conn is not None and f.streams[dirn].delivered):
                    if f is not None:  # the 4-tuple is reused by a new connection
                        self._end(f)
                    if not syn and not pwire:
                        continue  # FIN/RST stragglers of a connection already ended
                    f = flows[h] = self._new_flow(buf, d, i, dirn, ts)
                f.last_seen = ts
                if f.dead:
                    continue
                s = f.streams[dirn]
                if syn:
                    f.midstream = False
                    if not flags & TH_ACK:
                        f.syn_from = dirn
                    s.syn(seq)
                    seq = (seq + 1) & MASK
                if pwire:
                    if f.conn is None and not self._roles(f, dirn, mv[poff:poff + plen]):
                        continue
                    if not s.body_bytes(seq, pwire, plen):
                        s.data(seq, mv[poff:poff + plen], pwire, ts, j)
                if flags & TH_FIN:
                    s.fin(seq + pwire)
                    if f.streams[0].closed and f.streams[1].closed:
                        self.stats["flows_closed"] += 1
                        self._end(flows.pop(h))
                elif flags & TH_RST:
                    self.stats["flows_reset"] += 1
                    self._end(flows.pop(h))
            except Exception:  # a bug must cost one flow, never the capture
                self._internal_error(h)

    def _count_internal(self) -> None:
        self.stats["internal_errors"] += 1
        if self.stats["internal_errors"] <= 5:
            log.exception("internal error while decoding a flow; the flow is dropped")

    def _safe_end(self, f: Flow) -> None:
        try:
            self._end(f)
        except Exception:
            self._count_internal()

    def _internal_error(self, h: int) -> None:
        self._count_internal()
        f = self.flows.pop(h, None)
        if f is not None:
            f.dead = True

    def _new_flow(self, buf: np.ndarray, d, i: int, dirn: int, ts: float) -> Flow:
        self.stats["flows"] += 1
        n = int(d.alen[i])
        fam = socket.AF_INET if n == 4 else socket.AF_INET6
        so, do = int(d.src_off[i]), int(d.dst_off[i])
        src = socket.inet_ntop(fam, bytes(buf[so:so + n]))
        dst = socket.inet_ntop(fam, bytes(buf[do:do + n]))
        sp, dp = int(d.sport[i]), int(d.dport[i])
        if dirn == 0:
            return Flow((src, dst), (sp, dp), self.budget, ts)
        return Flow((dst, src), (dp, sp), self.budget, ts)

    def _roles(self, f: Flow, dirn: int, first) -> bool:
        """Decide which side is the client when the first payload arrives; False = not yet known."""
        a_srv = f.ports[0] in self.ports
        b_srv = f.ports[1] in self.ports
        if a_srv != b_srv:
            client = 1 if a_srv else 0
        elif f.syn_from is not None:
            client = f.syn_from
        else:
            # neither/both ports are ours: the side that sends a request line is the client
            data = bytes(first)
            if f.midstream:
                if RESYNC_REQUEST.search(data):
                    client = dirn
                elif RESYNC_RESPONSE.search(data):
                    client = 1 - dirn
                else:
                    return False
            else:
                client = 1 - dirn if data.startswith(b"HTTP/") else dirn
        f.client_dir = client
        srv = 1 - client
        conn = Connection((f.addr[client], f.ports[client]), (f.addr[srv], f.ports[srv]), f.midstream,
                          self.builder, self.heads, self.out, self.stats, self.cfg.max_pending_requests, self.scan,
                          self.budget)
        f.conn = conn
        f.streams[client].reader = conn.req_reader
        f.streams[srv].reader = conn.resp_reader
        return True

    def _end(self, f: Flow) -> None:
        if f.conn is None:
            return
        for s in f.streams:
            if s.reader is not None:
                s.close()
        conn = f.conn
        if not conn.seen_http and (f.streams[0].delivered or f.streams[1].delivered) and \
                conn.req_reader.state != DEAD and f.midstream:
            self.stats["non_http"] += 1  # picked up mid-stream and never found an HTTP message
        conn.close()
        f.conn = None
        f.dead = True
