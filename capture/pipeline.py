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
from collections import deque

import numpy as np
import orjson

from capture.decode import KIND_MALFORMED, KIND_NON_TCP, KIND_UNSUPPORTED, TH_ACK, TH_FIN, TH_RST, TH_SYN, \
    decode_batch, needs_python, scan_heads
from capture import fastpath as fp
from capture.fastpath import R_DEMOTE, FlowTable
from capture.frames import FrameBatch
from capture.http import CHUNK_CRLF, CHUNK_DATA, CHUNK_SIZE, DEAD, TRAILER, HeadParser, RESYNC_REQUEST, \
    RESYNC_RESPONSE
from capture.reassembly import MASK, Budget, Stream
from capture.eventwriter import EventWriter
from capture.outputs import EventLines
from capture.transactions import Connection, EventBuilder
from config.settings import Settings

log = logging.getLogger(__name__)

STAT_KEYS = ("packets", "bytes", "non_tcp", "malformed", "unsupported_link", "truncated_frames", "flows",
             "requests", "transactions", "no_response", "parse_errors", "gaps", "non_http", "orphan_responses",
             "late_responses", "dropped_pending", "dropped_overflow_bytes", "dropped_overflow_segments",
             "retransmitted_segments", "flows_expired", "flows_reset", "flows_closed", "internal_errors")


class Flow:
    """One TCP connection: endpoints, the two directions, and (once roles are known) the Connection."""

    __slots__ = ("addr", "ports", "streams", "conn", "client_dir", "last_seen", "midstream", "syn_from", "dead", "slot")

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
        self.slot = -1          # >= 0: followed by the numba fast path (capture.fastpath), state lives there


class FastFlow:
    """A flow the numba fast path follows: only what its events need. Its stream/HTTP state lives in the
    FlowTable; it becomes a full Flow (Decoder._materialize) the moment Python must take it over."""

    __slots__ = ("slot", "client_dir", "client_ip", "client_port", "server_ip", "server_port", "id_prefix",
                 "pending", "current", "n_requests", "seen_http", "dead")

    def __init__(self, slot: int):
        self.slot = slot
        self.client_dir = -1    # known (with the addresses) from the first head
        self.pending = None
        self.current = None
        self.n_requests = 0
        self.seen_http = False
        self.dead = False


_LINE_STATES = (CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER)


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


class _BatchHeads:
    """A batch's fast-path records while Python replays them: heads by record number, and the transactions
    whose heads are all in this batch (columns for capture.eventwriter)."""

    def __init__(self, buf, arena, rec, recl, rsp, rts, heads: HeadParser, builder: EventBuilder, out: list):
        self.buf, self.arena, self.rec, self.recl, self.rsp, self.rts = buf, arena, rec, recl, rsp, rts
        self.heads = heads
        self.builder = builder
        self.out = out  # the Decoder's event list: markers (ints) hold the places of numba-written lines
        self.index = [0] * len(recl)  # per R_REQ record: the request's index in its connection
        self.conns: list = []
        self.req_k: list[int] = []
        self.resp_k: list[int] = []
        self.body: list[int] = []

    @property
    def n_fast(self) -> int:
        return len(self.req_k)

    def tx(self, conn, req, resp, body: int) -> None:
        """A transaction is complete: numba writes it if both heads are this batch's, else Python builds it."""
        if type(req) is int and (resp is None or type(resp) is int):
            self.out.append(len(self.req_k))
            self.conns.append(conn)
            self.req_k.append(req)
            if resp is None:
                self.resp_k.append(-1)
                self.body.append(0)
            else:
                self.resp_k.append(resp)
                self.body.append(self._resp_bytes(resp, body))
            return
        req = self.request(req) if type(req) is int else req
        if resp is not None:
            resp = self.response(resp) if type(resp) is int else resp
            if resp.chunked or resp.content_length < 0:
                resp.body_bytes = body
        self.out.append(self.builder.build(conn, req, resp))

    def _resp_bytes(self, k: int, body: int) -> int:
        aux = self.recl[k][fp.AUX]
        if aux == fp.F_NONE:
            return 0
        return self.recl[k][fp.CLEN] if aux == fp.F_LENGTH else body

    def columns(self):
        return (np.array(self.req_k, np.int64), np.array(self.resp_k, np.int64), np.array(self.body, np.int64),
                np.array([self.index[k] for k in self.req_k], np.int64), [c.id_prefix for c in self.conns])

    def objects(self, i: int):
        """Transaction i as (conn, RequestHead, ResponseHead | None, body) for EventBuilder.build."""
        req = self.request(self.req_k[i])
        kr = self.resp_k[i]
        resp = self.response(kr) if kr >= 0 else None
        if resp is not None:
            resp.body_bytes = self.body[i]
        return self.conns[i], req, resp, self.body[i]

    def _head(self, r) -> bytes:
        src = self.arena if r[fp.ARENA] else self.buf
        return src[r[fp.HS]:r[fp.HE]].tobytes()

    def request(self, k: int):
        r = self.recl[k]
        req = self.heads.request_framed(self._head(r), r[fp.FA], r[fp.FB], r[fp.FC], r[fp.MINOR],
                                        self.rsp[k].tolist(), r[fp.CLEN], r[fp.CHUNKED] == 1)
        req.ts = float(self.rts[k])
        req.index = self.index[k]
        return req

    def response(self, k: int):
        r = self.recl[k]
        resp = self.heads.response_framed(self._head(r), r[fp.FA], r[fp.MINOR], self.rsp[k].tolist(), r[fp.CLEN],
                                          r[fp.CHUNKED] == 1)
        resp.ts = float(self.rts[k])
        if r[fp.AUX] == fp.F_LENGTH:
            resp.body_bytes = resp.content_length
        return resp

    def resolve(self, ff) -> None:
        """The heads a flow still waits on become objects: this batch's buffer is about to go."""
        pending = ff.pending
        if pending and any(type(x) is int for x in pending):
            ff.pending = deque(self.request(x) if type(x) is int else x for x in pending)
        cur = ff.current
        if cur is not None and (type(cur[0]) is int or type(cur[1]) is int):
            req, resp = cur
            ff.current = (self.request(req) if type(req) is int else req,
                          self.response(resp) if type(resp) is int else resp)


class Decoder:
    def __init__(self, settings: Settings, fast_path: bool = True):
        """fast_path=False keeps every packet on the Python path (the reference the fast path must equal)."""
        cfg = settings.capture
        self.cfg = cfg
        self.ports = frozenset(cfg.ports)
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.flows: dict[int, Flow] = {}
        self.builder = EventBuilder(cfg)
        self.heads = HeadParser(self.builder.request_headers(), self.builder.response_headers())
        self.budget = Budget(cfg.max_flow_buffer_bytes, cfg.max_total_buffer_bytes, self.stats)
        self.out: list = []     # dicts, and ints: this batch's numba-written lines (self._lines)
        self._lines = None
        self._ctx: _BatchHeads | None = None  # set while a batch's records are replayed
        self.writer = EventWriter(self.builder, self.heads)
        self.last_ts = 0.0
        self.scan = ScanView()
        self._ips: dict[bytes, str] = {}
        h = self.heads
        self.fast = FlowTable(self.ports, h.names, h.name_off, h.cl_slot // 2, h.te_slot // 2,
                              cfg.max_pending_requests, cfg.max_flow_buffer_bytes) if fast_path else None

    # -- public ------------------------------------------------------------------------
    def _feed(self, batch: FrameBatch) -> None:
        if len(batch) == 0:
            return
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
            if self.fast is not None:
                self._walk_fast(batch, d, idx)
            else:
                self._walk(batch, d, idx)
        self.last_ts = max(self.last_ts, float(batch.ts[-1]))

    def feed(self, batch: FrameBatch) -> list[dict]:
        """Decode one batch; returns the transactions it completed."""
        self._feed(batch)
        return self._take()

    def feed_lines(self, batch: FrameBatch) -> EventLines:
        """feed() for outputs: the completed transactions as JSON lines (no dicts built for them)."""
        self._feed(batch)
        return self._take_lines()

    def expire(self, now: float) -> list[dict]:
        """Report requests unanswered for transaction_timeout_s and end flows idle for flow_idle_timeout_s."""
        tt = self.cfg.transaction_timeout_s
        idle = self.cfg.flow_idle_timeout_s
        gone = []
        fast = self.fast
        for key, f in list(self.flows.items()):
            if f.slot >= 0:
                last = float(fast.last[f.slot])
                if last + idle < now or (f.pending and f.pending[0].ts + tt < now):
                    f = self._materialize(key, f)  # its expiry is Python's business
                else:
                    continue
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
        if fast is not None:
            fast.purge(now, idle)
        return self._take()

    def close(self) -> list[dict]:
        """End of input: flush every flow (requests without a response get no_response=True)."""
        for key, f in list(self.flows.items()):
            if f.slot >= 0:
                f = self._materialize(key, f)
            self._safe_end(f)
        self.flows.clear()
        if self.fast is not None:
            self.fast.reset()
        return self._take()

    def _take(self) -> list[dict]:
        """The events completed so far, as dicts (markers of numba-written lines are parsed)."""
        # connections hold a reference to self.out: empty it in place, never rebind it
        out = self.out[:]
        self.out.clear()
        if self._lines is None:
            return out
        data, ends, _ = self._lines
        self._lines = None
        loads = orjson.loads
        events = []
        for e in out:
            if type(e) is int:
                events.append(loads(data[ends[e - 1] if e else 0:ends[e]]))
            elif e is not None:
                events.append(e)
        return events

    def _take_lines(self) -> EventLines:
        """The events completed so far as JSON lines with their Kafka keys (visitor ids)."""
        out = self.out[:]
        self.out.clear()
        lines = self._lines
        self._lines = None
        if lines is not None and len(out) == len(lines[1]) and all(type(e) is int for e in out):
            data, _, vis = lines  # only numba-written events: their lines are the output as they are
            return EventLines(data, [data[v:v + 32] for v in vis.tolist()])
        pieces, keys = [], []
        dumps = orjson.dumps
        for e in out:
            if type(e) is int:
                data, ends, vis = lines
                pieces.append(data[ends[e - 1] if e else 0:ends[e]])
                keys.append(data[vis[e]:vis[e] + 32])
            elif e is not None:
                pieces.append(dumps(e) + b"\n")
                keys.append(e["visitor_id"].encode())
        return EventLines(b"".join(pieces), keys)

    @property
    def buffered_bytes(self) -> int:
        return self.budget.total

    # -- per packet --------------------------------------------------------------------
    def _walk(self, batch: FrameBatch, d, idx: np.ndarray) -> None:
        mv = memoryview(batch.buf)
        buf = batch.buf
        poffs = d.poff[idx]
        plens = d.plen[idx]
        self.scan.set(scan_heads(buf, poffs, plens, self.heads.names, self.heads.name_off))
        one = self._one
        for j, (i, h, dirn, seq, flags, poff, plen, pwire, ts) in enumerate(zip(
                idx.tolist(), d.fhash[idx].tolist(), d.dirn[idx].tolist(), d.seq[idx].tolist(),
                d.flags[idx].tolist(), poffs.tolist(), plens.tolist(), d.pwire[idx].tolist(),
                batch.ts[idx].tolist())):
            one(mv, buf, d, i, h, dirn, seq, flags, poff, plen, pwire, ts, j)

    def _one(self, mv, buf, d, i, h, dirn, seq, flags, poff, plen, pwire, ts, j) -> None:
        """One packet the Python way (j indexes the current head scan)."""
        flows = self.flows
        try:
            f = flows.get(h)
            syn = flags & TH_SYN
            if f is None or (syn and not flags & TH_ACK and f.conn is not None and f.streams[dirn].delivered):
                if f is not None:  # the 4-tuple is reused by a new connection
                    self._end(f)
                if not syn and not pwire:
                    return  # FIN/RST stragglers of a connection already ended
                f = flows[h] = self._new_flow(buf, d, i, dirn, ts)
            f.last_seen = ts
            if f.dead:
                return
            s = f.streams[dirn]
            if syn:
                f.midstream = False
                if not flags & TH_ACK:
                    f.syn_from = dirn
                s.syn(seq)
                seq = (seq + 1) & MASK
            if pwire:
                if f.conn is None and not self._roles(f, dirn, mv[poff:poff + plen]):
                    return
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

    def _walk_fast(self, batch: FrameBatch, d, idx: np.ndarray) -> None:
        """The numba fast path routes the batch; Python replays its records in packet order.

        Heads of this batch stay record numbers (ints) in the flows' queues; a transaction whose two heads
        are both in this batch is written by the numba EventWriter at the end (a marker holds its place in
        self.out). Heads still waiting when the batch ends become RequestHead/ResponseHead (_resolve)."""
        buf = batch.buf
        fh = d.fhash[idx]
        dirn = d.dirn[idx]
        poff = d.poff[idx]
        plen = d.plen[idx]
        ts = batch.ts[idx]
        pwire = d.pwire[idx]
        budget = self.budget
        # heads the fast path holds count in the buffer total; it only starts holding more while the total
        # stays below the limit even if Python buffered every payload byte of this batch
        room = budget.max_total - budget.total - int(pwire.sum())
        rec, rsp, rts = self.fast.run(buf, fh, dirn, d.seq[idx], d.flags[idx], poff, plen, pwire, ts,
                                      d.sport[idx], d.dport[idx], max(0, room))
        budget.total += int(self.fast.meta[fp.M_ADDED])
        if not len(rec):
            return
        types = rec[:, fp.TYPE]
        rj = rec[:, fp.J]
        slow_j = rj[(types == fp.R_SLOW) | (types == fp.R_DEMOTE)]
        slow = None
        if len(slow_j):
            sp, sl = poff[slow_j], plen[slow_j]
            self.scan.set(scan_heads(buf, sp, sl, self.heads.names, self.heads.name_off))
            slow = list(zip(idx[slow_j].tolist(), d.seq[idx][slow_j].tolist(), d.flags[idx][slow_j].tolist(),
                            sp.tolist(), sl.tolist(), d.pwire[idx][slow_j].tolist()))
        mv = memoryview(buf)
        ix = idx.tolist()
        recl = rec.tolist()
        ctx = self._ctx = _BatchHeads(buf, self.fast.arena, rec, recl, rsp, rts, self.heads, self.builder, self.out)
        ridx = ctx.index
        tx = ctx.tx
        out, conns, req_k, resp_k, tx_body = self.out, ctx.conns, ctx.req_k, ctx.resp_k, ctx.body
        flows = self.flows
        stats = self.stats
        touched = []  # flows that queued a head of this batch
        js = 0
        R_REQ, R_RESP, R_DONE, R_NEW, R_END, R_SLOW = fp.R_REQ, fp.R_RESP, fp.R_DONE, fp.R_NEW, fp.R_END, fp.R_SLOW
        F_INTERIM, F_NONE, F_LENGTH = fp.F_INTERIM, fp.F_NONE, fp.F_LENGTH
        n_req = n_tx = 0
        for k, (r, h, dr) in enumerate(zip(recl, fh[rj].tolist(), dirn[rj].tolist())):
            t, _, slot, hs, he, fa, fb, fc, minor, body, aux, _, arena, held, clen, chunked, done = r
            if held:
                budget.total -= held  # a held head completed or its flow ended
            if t > R_DEMOTE:  # the flow's own records (Connection.on_head / _finish inlined, framing validated)
                f = flows.get(h)
                if f is None or f.slot != slot:
                    continue  # the flow was dropped by an internal error
                try:
                    if t == R_REQ:
                        conn = f if f.client_dir >= 0 else self._fast_roles(f, mv, d, ix[r[1]], dr, True)
                        ridx[k] = conn.n_requests
                        conn.n_requests += 1
                        conn.seen_http = True
                        n_req += 1
                        conn.pending.append(k)
                        touched.append(conn)
                    elif t == R_RESP:
                        conn = f if f.client_dir >= 0 else self._fast_roles(f, mv, d, ix[r[1]], 1 - dr, False)
                        conn.seen_http = True
                        if aux == F_INTERIM:
                            continue
                        req = conn.pending.popleft()
                        if done:  # the body ended in this packet too (or there is none)
                            n_tx += 1
                            if type(req) is int:  # both heads in this batch: numba writes it (ctx.tx inlined)
                                out.append(len(req_k))
                                conns.append(conn)
                                req_k.append(req)
                                resp_k.append(k)
                                tx_body.append(0 if aux == F_NONE else clen if aux == F_LENGTH else body)
                            else:
                                tx(conn, req, k, body)
                        else:
                            conn.current = (req, k)
                            touched.append(conn)
                    elif t == R_DONE:
                        conn = f
                        req, resp = conn.current
                        conn.current = None
                        n_tx += 1
                        tx(conn, req, resp, body)
                    else:  # R_END: Connection.close for a flow whose readers hold no bytes
                        f.slot = -1
                        f.dead = True
                        if aux == fp.END_CLOSED:
                            stats["flows_closed"] += 1
                            flows.pop(h)
                        elif aux == fp.END_RESET:
                            stats["flows_reset"] += 1
                            flows.pop(h)
                        if f.client_dir >= 0:
                            cur = f.current
                            if cur is not None:  # a body until close, or cut short
                                f.current = None
                                n_tx += 1
                                tx(f, cur[0], cur[1], body)
                            pending = f.pending
                            while pending:
                                n_tx += 1
                                stats["no_response"] += 1
                                tx(f, pending.popleft(), None, 0)
                except Exception:
                    if f.slot >= 0 and self.fast.keys.get(h, -1) == f.slot:
                        self.fast.st[f.slot, fp.MODE] = fp.SLOW
                    self._internal_error(h)
            elif t == R_NEW:
                flows[h] = FastFlow(slot)
                stats["flows"] += 1
            else:  # R_SLOW / R_DEMOTE: this packet goes the Python way
                i, seq, flags, po, pl, pw = slow[js]
                if t != R_SLOW:
                    f = flows.get(h)
                    if f is not None and f.slot == slot:
                        self._materialize(h, f, in_kernel=True, packet=(buf, d, i, dr, float(ts[r[1]])))
                stats["transactions"] += n_tx
                n_tx = 0
                self._one(mv, buf, d, i, h, dr, seq, flags, po, pl, pw, float(ts[r[1]]), js)
                js += 1
        stats["requests"] += n_req
        stats["transactions"] += n_tx
        for conn in touched:
            ctx.resolve(conn)
        self._ctx = None
        if ctx.n_fast:
            self._write_fast(ctx)

    def _write_fast(self, ctx: "_BatchHeads") -> None:
        """Write this batch's fast transactions (numba); the few it leaves to Python are built here."""
        lines, ends, vis, result = self.writer.write(ctx.buf, ctx.arena, ctx.rec, ctx.rsp, ctx.rts,
                                                     *ctx.columns())
        self._lines = (lines.tobytes(), ends, vis)
        python = np.flatnonzero(result).tolist()
        if python:
            at = {m: n for n, m in enumerate(self.out) if type(m) is int}
            for i in python:
                conn, req, resp, body = ctx.objects(i)
                try:
                    self.out[at[i]] = self.builder.build(conn, req, resp)
                except Exception:
                    self.out[at[i]] = None
                    self._count_internal()

    def _ip(self, raw: bytes) -> str:
        ip = self._ips.get(raw)
        if ip is None:
            if len(self._ips) >= 100_000:
                self._ips.clear()
            ip = self._ips[raw] = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        return ip

    def _fast_roles(self, ff: FastFlow, mv: memoryview, d, i: int, client_dir: int, client_is_src: bool) -> FastFlow:
        """The first head of a fast flow: its endpoints, taken from that packet."""
        n = int(d.alen[i])
        so, do = int(d.src_off[i]), int(d.dst_off[i])
        src, dst = self._ip(mv[so:so + n].tobytes()), self._ip(mv[do:do + n].tobytes())
        sp, dp = int(d.sport[i]), int(d.dport[i])
        if client_is_src:
            ff.client_ip, ff.client_port, ff.server_ip, ff.server_port = src, sp, dst, dp
        else:
            ff.client_ip, ff.client_port, ff.server_ip, ff.server_port = dst, dp, src, sp
        ff.client_dir = client_dir
        ff.id_prefix = f"{ff.client_ip}|{ff.client_port}|{ff.server_ip}|{ff.server_port}|".encode()
        ff.pending = deque()
        return ff

    def _materialize(self, key: int, ff: FastFlow, in_kernel: bool = False, packet=None) -> Flow:
        """Python takes a fast flow over: a full Flow/Connection with the fast path's state (same dict slot)."""
        if self._ctx is not None and ff.client_dir >= 0:
            self._ctx.resolve(ff)
        if ff.client_dir < 0:
            if packet is not None:  # no head yet: the endpoints come from the packet being handed over
                f = self._new_flow(*packet)
                self.stats["flows"] -= 1  # counted when the fast path saw its SYN
            else:
                f = Flow(("", ""), (0, 0), self.budget, 0.0)  # ends now (expiry / end of input), no events
        else:
            c = (ff.client_ip, ff.client_port)
            s = (ff.server_ip, ff.server_port)
            a, b = (c, s) if ff.client_dir == 0 else (s, c)
            f = Flow((a[0], b[0]), (a[1], b[1]), self.budget, 0.0)
            f.midstream = False
            conn = self._make_conn(f, ff.client_dir)
            conn.pending = ff.pending
            conn.current = ff.current
            conn.n_requests = ff.n_requests
            conn.seen_http = ff.seen_http
        f.slot = ff.slot
        self.flows[key] = f
        self._sync(f, in_kernel)
        return f

    def _sync(self, f: Flow, in_kernel: bool = False) -> None:
        """Hand a fast-path flow to Python: copy its numba state into the Python objects.

        in_kernel: the kernel demoted it (and already moved its held head bytes to Python's side)."""
        fast = self.fast
        slot = f.slot
        row = fast.st[slot].tolist()
        f.last_seen = float(fast.last[slot])
        f.midstream = False
        f.syn_from = None if row[fp.SYNFROM] < 0 else row[fp.SYNFROM]
        if row[fp.CONN] and f.conn is None:
            self._make_conn(f, row[fp.CLIENT])
        for dd in (0, 1):
            b = fp.D0 + fp.DW * dd
            s = f.streams[dd]
            s.next_seq = None if row[b + fp.NEXT] < 0 else row[b + fp.NEXT]
            s.delivered = row[b + fp.DELIV]
            s.fin_seq = None if row[b + fp.FIN] < 0 else row[b + fp.FIN]
            s.closed = bool(row[b + fp.CLOSED])
            r = s.reader
            if r is not None:
                r.state = st = row[b + fp.RSTATE]
                r.skip = row[b + fp.SKIP]
                r.body = row[b + fp.BODYN]
                r.messages = row[b + fp.MSGS]
                r.sniff = bool(row[b + fp.SNIFF])
                n = row[b + fp.PLEN]
                if n:  # a head split across segments, held by the fast path
                    r.partial = bytearray(fast.hbuf[slot, dd, :n].tobytes())
                    r.partial_ts = float(fast.pts[slot, dd])
                    if not in_kernel:
                        fast.meta[fp.M_HELD] -= n  # still counted in budget.total, now as Python's
                else:
                    r.partial = None
                lo = dd * fp.LINE_MAX
                r.line = bytearray(fast.lbuf[slot, lo:lo + row[b + fp.LLEN]].tobytes()) if st in _LINE_STATES \
                    else None
        f.slot = -1
        fast.st[slot, fp.MODE] = fp.SLOW

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
        self._make_conn(f, client)
        return True

    def _make_conn(self, f: Flow, client: int) -> Connection:
        f.client_dir = client
        srv = 1 - client
        conn = Connection((f.addr[client], f.ports[client]), (f.addr[srv], f.ports[srv]), f.midstream,
                          self.builder, self.heads, self.out, self.stats, self.cfg.max_pending_requests, self.scan,
                          self.budget)
        f.conn = conn
        f.streams[client].reader = conn.req_reader
        f.streams[srv].reader = conn.resp_reader
        return conn

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
