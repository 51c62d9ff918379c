"""Decoder: FrameBatches in, Hit events out (dicts, or JSON lines for outputs).

numba decodes every frame's headers in one call (capture.frame_kernels). Flows that start
with a SYN and stay simple are followed, paired and written as JSON lines entirely in
numba (capture.fastpath, capture.eventwriter). Every other frame with payload or
SYN/FIN/RST is walked in Python: routed to its flow's per-direction reassembler
(capture.reassembly), whose MessageReaders (capture.http) frame HTTP messages for the
Connection (capture.transactions) that pairs them into events. Both kinds of events
come out in packet order.
"""
from __future__ import annotations

import heapq
import logging
import socket
from collections import deque

import numpy as np
import orjson

from capture.frame_kernels import KIND_MALFORMED, KIND_NON_TCP, KIND_UNSUPPORTED, TH_ACK, TH_FIN, TH_RST, TH_SYN, \
    decode_batch, needs_python, scan_heads
from capture.fastpath import FastBatch, FlowTable, HandedOver, Heads, Transaction
from capture.frames import FrameBatch
from capture.http import DEAD, RESYNC_REQUEST, RESYNC_RESPONSE, HeadParser
from capture.reassembly import MASK, Budget, Stream
from capture.cookie_learning import CookieLearner, load_state, save_state
from capture.install_salt import install_salt, rotation_due
from capture.eventwriter import WRITTEN, EventWriter
from capture.first_requests import FirstRequests
from capture.outputs import EventLines
from capture.transactions import Connection, EventBuilder
from config.settings import CaptureSettings, Settings

log = logging.getLogger(__name__)

STAT_KEYS = ("packets", "bytes", "non_tcp", "malformed", "unsupported_link", "truncated_frames", "flows",
             "requests", "transactions", "no_response", "parse_errors", "gaps", "non_http", "orphan_responses",
             "late_responses", "dropped_pending", "dropped_overflow_bytes", "dropped_overflow_segments",
             "retransmitted_segments", "flows_expired", "flows_reset", "flows_closed", "internal_errors",
             "framing_anomalies", "tls_flows", "http2_flows", "flows_evicted", "bodies_dropped")


class Flow:
    """One TCP connection: endpoints, the two directions, and (once roles are known) the Connection."""

    __slots__ = ("addr", "ports", "streams", "conn", "client_dir", "last_seen", "midstream", "syn_from", "dead", "slot",
                 "born")

    def __init__(self, addr: tuple[str, str], ports: tuple[int, int], budget: Budget, ts: float, born: int = 0):
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
        self.born = born        # packet number that made its key a flow: expiry and end of input go in this order


class _Endpoints:
    """What EventBuilder.build needs of a connection, for a transaction the fast path paired."""

    __slots__ = ("client_ip", "client_port", "server_ip", "server_port", "id_prefix")

    def __init__(self, client_ip: str, client_port: int, server_ip: str, server_port: int):
        self.client_ip, self.client_port, self.server_ip, self.server_port = client_ip, client_port, server_ip, \
            server_port
        self.id_prefix = f"{client_ip}|{client_port}|{server_ip}|{server_port}|".encode()


def _built(e: dict | None, assigned_pop) -> tuple:
    """A Python-built event as an _in_order item (None: an internal error dropped it)."""
    if e is None:
        return None, None, b"", None
    return e, None, e["visitor_id"].encode(), assigned_pop(e["event_id"], None)


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
    def __init__(self, settings: Settings, fast_path: bool = True, state_dir: str | None = None):
        """fast_path=False keeps every packet on the Python path (the reference the fast path must equal).

        state_dir: where the learned visitor cookie is kept (capture-state.json); None = nowhere."""
        cfg = settings.capture
        self.salt_made = 0.0
        if not cfg.salt:  # the install's random salt (never a known default)
            salt, self.salt_made = install_salt(state_dir, cfg.salt_rotation_days)
            cfg = cfg.model_copy(update={"salt": salt})
        self.cfg = cfg
        self.ports = frozenset(cfg.ports)
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.flows: dict[int, Flow] = {}
        self.first = FirstRequests(cfg.transaction_timeout_s)
        self.builder = EventBuilder(cfg)
        self.builder.assigned = self.first.assigned
        self.heads = HeadParser(self.builder.request_headers(), self.builder.response_headers())
        self.budget = Budget(cfg.max_flow_buffer_bytes, cfg.max_total_buffer_bytes, self.stats)
        self.out: list[dict] = []
        self._out_k: list[int] = []  # while a batch is replayed: the packet (fast-path numbering) of each event
        self._lines = None  # the batch's numba-written events: (lines, ends, visitor offsets, packets, Python's)
        self._batch: FastBatch | None = None  # while a batch is replayed (fast-path heads refer to its records)
        self._packets_before = 0  # packets of earlier batches: flows are born at base + packet index
        self.writer = EventWriter(self.builder, self.heads)
        self.last_ts = 0.0
        self.scan = ScanView()
        self._ips: dict[bytes, str] = {}
        h = self.heads
        self.fast = FlowTable(self.ports, h.names, h.name_off, h.cl_slot // 2, h.te_slot // 2,
                              cfg.max_pending_requests, cfg.max_flow_buffer_bytes) if fast_path else None
        if self.fast is not None:
            self.fast.max_grow = max(4096, cfg.max_flows // 4)  # no doubling far past the bound on open flows
        self.state_dir = state_dir
        self.told: set = set()  # wrong-leg notices already given (TLS / HTTP/2 per port)
        self.learner: CookieLearner | None = None
        # a visitor_cookies list of one's own overrides learning (the settings travel to child processes as
        # JSON, where every field counts as set: compare with the default instead)
        if cfg.learn_visitor_cookie and cfg.visitor_cookies == CaptureSettings().visitor_cookies:
            self._start_learning()

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
        self._packets_before += len(kind)
        if self.learner is not None:
            if self.learner.learned:
                self._adopt_learned()
            elif self.learner.pointless():
                log.info("visitor cookie learning stops: %s", self.learner.pointless())
                self.learner = self.builder.learner = None
        n = len(self.out)
        self._bound_flows()
        self._out_k += [1 << 62] * (len(self.out) - n)  # evicted flows' events come after the batch's

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
        if self.salt_made and rotation_due(self.salt_made, self.cfg.salt_rotation_days):
            self._rotate_salt()
        tt = self.cfg.transaction_timeout_s
        idle = self.cfg.flow_idle_timeout_s
        fast = self.fast
        if fast is not None:
            for key in fast.stale(now, idle, tt):
                self._materialize(key)  # its expiry is Python's business
        gone = []
        for key, f in self._by_birth():
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
        return self.first.expire(now) + self._take()

    def close(self) -> list[dict]:
        """End of input: flush every flow (requests without a response get no_response=True)."""
        if self.fast is not None:
            for key in self.fast.fast_flows():
                self._materialize(key)
        for _, f in self._by_birth():
            self._safe_end(f)
        self.flows.clear()
        if self.fast is not None:
            self.fast.reset()
        events = self._take()
        return self.first.close() + events  # the held ones are older

    def _by_birth(self) -> list:
        # the order flows came into being: the Python-only path's dict order, whoever followed them since
        return sorted(self.flows.items(), key=lambda kv: kv[1].born)

    def _take(self) -> list[dict]:
        """The events completed so far, as dicts (numba-written lines are parsed)."""
        loads = orjson.loads
        return [e if line is None else loads(line) for e, line in self._routed()[0]]

    def _take_lines(self) -> EventLines:
        """The events completed so far as JSON lines with their Kafka keys (visitor ids)."""
        lines = self._lines
        if lines is not None and not self.out and not lines[4] and not self.first.assigned:
            # only numba-written events: their lines are the output as they are, but for first requests
            data, ends, vis, _, _, given = lines
            keys = [data[v:v + 32] for v in vis.tolist()]
            if not given and self.first.passes(keys, self.last_ts):
                self._lines = None
                return EventLines(data, keys)
            if given:
                cut = self.first.hold_lines(data, ends.tolist(), keys, given, self.last_ts)
                if cut is not None:
                    self._lines = None
                    return EventLines(*cut)
        pieces = []
        dumps = orjson.dumps
        items, keys = self._routed()
        for e, line in items:
            pieces.append(line if e is None else dumps(e) + b"\n")
        return EventLines(b"".join(pieces), keys)

    def _routed(self) -> tuple[list[tuple], list[bytes]]:
        """_in_order's events with their visitor ids, through the first-request hold (capture.first_requests)."""
        items, firsts = self._in_order()
        self.first.assigned.clear()  # every event built so far is among these items
        return self.first.route(items, firsts, self.last_ts)

    def _in_order(self) -> tuple[list[tuple], bool]:
        """(dict, None, visitor id, cookie id) or (None, JSON line, visitor id, cookie id) per event in packet
        order, and forget them; cookie id: the one its response's Set-Cookie assigned when it had none (else
        None). Also whether any has one."""
        # connections hold a reference to self.out: empty it in place, never rebind it
        py = self.out[:]
        self.out.clear()
        py_k = self._out_k
        self._out_k = []
        lines = self._lines
        self._lines = None
        assigned = self.first.assigned
        firsts = bool(assigned)
        pop = assigned.pop
        if lines is None:
            return [(e, None, e["visitor_id"].encode(), pop(e["event_id"], None)) for e in py], firsts
        data, ends, vis, fast_k, python, given = lines
        firsts = firsts or bool(given)
        starts = [0] + ends[:-1].tolist()
        ends = ends.tolist()
        vis = vis.tolist()
        get = given.get
        fast = [(None, data[starts[i]:ends[i]], data[vis[i]:vis[i] + 32], get(i)) if i not in python else
                _built(python[i], pop) for i in range(len(ends))]
        if not py:
            return [x for x in fast if x[0] is not None or x[1] is not None], firsts
        # both kinds: merge by packet (a packet is either the fast path's or Python's, never both)
        out = []
        i = 0
        for e, k in zip(py, py_k):
            while i < len(fast) and fast_k[i] <= k:
                out.append(fast[i])
                i += 1
            out.append(_built(e, pop))
        out += fast[i:]
        return [x for x in out if x[0] is not None or x[1] is not None], firsts

    # -- bounded memory -------------------------------------------------------------
    def _bound_flows(self) -> None:
        """Above capture.max_flows open flows, end the least recently seen ones down to 90% of it (like idle
        expiry: unanswered requests are reported) and count them; a flood of half-open flows then costs
        max_flows flows of memory, not one per spoofed source."""
        limit = self.cfg.max_flows
        fast = self.fast
        n = fast.in_use() if fast is not None else len(self.flows)
        if n <= limit:
            return
        k = n - limit * 9 // 10
        if fast is not None:
            slots, keys, followed = fast.least_recent(k)
            for key, here in zip(keys, followed):
                if here:
                    self._materialize(key)
                f = self.flows.pop(key, None)
                if f is not None:
                    self._safe_end(f)
            fast.forget(slots)
            k = len(slots)
        else:
            for key, f in heapq.nsmallest(k, self.flows.items(), key=lambda kv: kv[1].last_seen):
                del self.flows[key]
                self._safe_end(f)
        self.stats["flows_evicted"] += k
        if self.stats["flows_evicted"] == k:
            log.warning("more than capture.max_flows = %d open flows: the least recently seen are ended early "
                        "and counted (flows_evicted); raise it if this is not a flood", limit)

    # -- the learned visitor cookie (capture.cookie_learning) ------------------------
    def _start_learning(self) -> None:
        state = load_state(self.state_dir)
        name = state.get("visitor_cookie")
        aliases = state.get("aliases")
        if isinstance(name, str) and name and isinstance(aliases, dict):
            self._use_cookie(name, {k: v for k, v in aliases.items() if isinstance(k, str) and isinstance(v, str)})
            log.info("visitor cookie: %s (learned earlier, kept in %s)", name, self.state_dir)
            return
        idn = self.builder.identity
        self.learner = CookieLearner(idn.visitor_cookies, [idn.member_cookie])
        self.builder.learner = self.learner

    def _adopt_learned(self) -> None:
        lr = self.learner
        self.learner = None
        name = lr.learned.decode("latin-1")
        old = self.builder
        aliases = lr.aliases(lambda v: old.identity.hash(v, b"v:"), lambda c: old._anon[c])
        self._use_cookie(name, aliases)
        log.warning("visitor cookie learned: %s (%s); visitor ids now follow it, and capture.visitor_cookies "
                    "overrides it", name, lr.evidence)
        save_state(self.state_dir, {"visitor_cookie": name, "evidence": lr.evidence, "aliases": aliases})

    def _use_cookie(self, name: str, aliases: dict[str, str]) -> None:
        """Visitor ids from now on also follow cookie `name` (after the configured ones)."""
        self.cfg = self.cfg.model_copy(update={"visitor_cookies": list(self.cfg.visitor_cookies) + [name]})
        self._rebuild(aliases)

    def _rotate_salt(self) -> None:
        salt, self.salt_made = install_salt(self.state_dir, self.cfg.salt_rotation_days)
        self.cfg = self.cfg.model_copy(update={"salt": salt})
        self._rebuild({})  # aliases are ids under the old salt

    def _rebuild(self, aliases: dict[str, str]) -> None:
        """The event builder and writer again from self.cfg (a learned cookie, a new salt)."""
        cfg = self.cfg
        self.builder = EventBuilder(cfg)
        self.builder.aliases = aliases
        self.builder.assigned = self.first.assigned
        self.builder.learner = self.learner
        self.writer = EventWriter(self.builder, self.heads)
        for f in self.flows.values():
            if f.conn is not None:
                f.conn.builder = self.builder

    def _observe_written(self, refs: Heads, fb: FastBatch, result: np.ndarray) -> None:
        """While learning: the cookies of the transactions the numba writer wrote (Python-built ones are
        observed by EventBuilder.build), sliced from the heads without parsing them (~2 us each)."""
        observe = self.learner.observe
        slot = self.heads.slot_of
        ck, ua, sc = 2 * slot["cookie"], 2 * slot["user-agent"], 2 * slot["set-cookie"]
        reqs, resps = fb.head_refs()
        for i in np.flatnonzero(result == WRITTEN).tolist():
            _, data, row, ts = refs.record(reqs[i])
            cookie = data[row[ck]:row[ck + 1]] if row[ck] >= 0 else None
            agent = data[row[ua]:row[ua + 1]] if row[ua] >= 0 else b""
            sets = None
            if resps[i] is not None:
                _, rdata, rrow, _ = refs.record(resps[i])
                if rrow[sc] >= 0:
                    sets = [rdata[rrow[sc]:rrow[sc + 1]]]
            if cookie is None and sets is None:
                continue
            observe((self._ip(fb.client_addr(i)), agent), cookie, sets, ts)

    def _alias_written(self, lines: np.ndarray, vis: np.ndarray, result: np.ndarray) -> None:
        """Visitor ids the numba writer wrote for a cookie whose client had an IP+UA id before it was learned."""
        al = self.builder.aliases
        for i, o in enumerate(vis.tolist()):
            if result[i] == WRITTEN:
                a = al.get(lines[o:o + 32].tobytes().decode())
                if a is not None:
                    lines[o:o + 32] = np.frombuffer(a.encode(), np.uint8)

    @property
    def open_flows(self) -> int:
        """Connections being followed (by Python or by the fast path)."""
        return len(self.flows) + (len(self.fast.fast_flows()) if self.fast is not None else 0)

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
        for j, (i, h, dirn, seq, ack, flags, poff, plen, pwire, ts) in enumerate(zip(
                idx.tolist(), d.fhash[idx].tolist(), d.dirn[idx].tolist(), d.seq[idx].tolist(), d.ack[idx].tolist(),
                d.flags[idx].tolist(), poffs.tolist(), plens.tolist(), d.pwire[idx].tolist(),
                batch.ts[idx].tolist())):
            one(mv, buf, d, i, h, dirn, seq, ack, flags, poff, plen, pwire, ts, j)

    def _one(self, mv, buf, d, i, h, dirn, seq, ack, flags, poff, plen, pwire, ts, j) -> None:
        """One packet the Python way (j indexes the current head scan)."""
        flows = self.flows
        try:
            f = flows.get(h)
            syn = flags & TH_SYN
            if f is None or (syn and not flags & TH_ACK and f.conn is not None and f.streams[dirn].delivered):
                born = self._packets_before + i
                if f is not None:  # the 4-tuple is reused by a new connection (same place in the dict)
                    self._end(f)
                    born = f.born
                if not syn and not pwire:
                    return  # FIN/RST stragglers of a connection already ended
                f = flows[h] = self._new_flow(buf, d, i, dirn, ts)
                f.born = born
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
                if flags & TH_ACK:  # bytes of the other side it acknowledges and we never saw will not come
                    f.streams[1 - dirn].acked(ack)
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
        """The numba fast path follows the batch's clean flows, pairs their transactions and writes their events
        (capture.eventwriter); Python replays only the packets it hands over (R_SLOW / R_DEMOTE), in order."""
        buf = batch.buf
        fast = self.fast
        budget = self.budget
        fh = d.fhash[idx]
        pwire = d.pwire[idx]
        # heads the fast path holds count in the buffer total; it only starts holding more while the total
        # stays below the limit even if Python buffered every payload byte of this batch
        room = budget.max_total - budget.total - int(pwire.sum())
        flags = d.flags[idx]  # a copy
        if self.builder.bodies is not None:
            self._bodies_to_python(buf, d, idx, fh, flags)
        fb = fast.run(buf, fh, d.dirn[idx], d.seq[idx], d.ack[idx], flags, d.poff[idx], d.plen[idx], pwire,
                      batch.ts[idx], d.sport[idx], d.dport[idx], d.src_off[idx], d.dst_off[idx], d.alen[idx],
                      idx + self._packets_before, max(0, room))
        counts = fast.batch_counts()
        budget.total += counts.pop("held_added")
        for name, n in counts.items():
            self.stats[name] += n
        self._batch = fb
        try:
            handed = fb.handed_over()
            if handed is not None:
                self._replay_handed_over(batch, d, idx, handed)
            if len(fb.tx):
                self._write_fast(fb)
        finally:
            self._batch = None
        fast.keep_waiting_heads(fb)

    def _bodies_to_python(self, buf, d, idx: np.ndarray, fh: np.ndarray, flags: np.ndarray) -> None:
        """Flows with a request in this batch whose body fields are read (capture.bodies) go the Python way, as
        the fast path skips bodies unread: a followed one is handed over now, a new one starts as Python's (the
        fast path gets its SYN with ACK set, so it does not adopt it; Python replays the real flags)."""
        fast = self.fast
        for h in set(fh[self.builder.bodies.packets_with_requests(buf, d.poff[idx], d.plen[idx])].tolist()):
            slot = fast.slot(h)
            if slot >= 0:
                if fast.followed(slot):
                    self._materialize(h)
            else:
                flags[(fh == h) & ((flags & 0x17) == TH_SYN)] |= TH_ACK

    def _replay_handed_over(self, batch: FrameBatch, d, idx: np.ndarray, handed: HandedOver) -> None:
        """The packets the fast path handed to Python, in order, with the buffer total as it was at each."""
        budget = self.budget
        released = 0
        rj = handed.j
        if len(rj):
            buf = batch.buf
            sp, sl = d.poff[idx][rj], d.plen[idx][rj]
            self.scan.set(scan_heads(buf, sp, sl, self.heads.names, self.heads.name_off))
            mv = memoryview(buf)
            fast = self.fast
            for js, (demoted, slot, upto, k, i, h, dr, seq, ack, flags, po, pl, pw, ts) in enumerate(zip(
                    handed.demoted, handed.slots, handed.released, rj.tolist(), idx[rj].tolist(),
                    d.fhash[idx][rj].tolist(), d.dirn[idx][rj].tolist(), d.seq[idx][rj].tolist(),
                    d.ack[idx][rj].tolist(), d.flags[idx][rj].tolist(), sp.tolist(), sl.tolist(),
                    d.pwire[idx][rj].tolist(), batch.ts[idx][rj].tolist())):
                budget.total -= upto - released
                released = upto
                if demoted and fast.slot(h) == slot:
                    self._materialize(h, in_kernel=True)
                n = len(self.out)
                self._one(mv, buf, d, i, h, dr, seq, ack, flags, po, pl, pw, ts, js)
                self._out_k += [k] * (len(self.out) - n)
        budget.total -= handed.released_total - released

    def _write_fast(self, fb: FastBatch) -> None:
        """The fast path's transactions as JSON lines (numba); the few it leaves to Python are built here."""
        lines, ends, vis, result, given = self.writer.write(fb, self.fast.carry)
        python = {}
        refs = self.fast.heads(self.heads, fb)
        if self.learner is not None:
            self._observe_written(refs, fb, result)
        if self.builder.aliases:
            self._alias_written(lines, vis, result)
        for i in np.flatnonzero(result).tolist():
            try:
                python[i] = self.builder.build(*self._paired(refs, fb.transaction(i)))
            except Exception:
                python[i] = None
                self._count_internal()
        if given and self.builder.aliases:
            al = self.builder.aliases
            given = {i: al.get(v.decode(), v.decode()).encode() for i, v in given.items()}
        self._lines = (lines.tobytes(), ends, vis, fb.packets(), python, given)

    def _paired(self, refs: Heads, t: Transaction):
        """A fast-path transaction as EventBuilder.build's (connection, request, response)."""
        ep = _Endpoints(self._ip(t.client_addr), t.client_port, self._ip(t.server_addr), t.server_port)
        req = refs.request(t.request)
        resp = None
        if t.response is not None:
            resp = refs.response(t.response)
            resp.body_bytes = t.body_bytes
        return ep, req, resp

    def _ip(self, raw: bytes) -> str:
        ip = self._ips.get(raw)
        if ip is None:
            if len(self._ips) >= 100_000:
                self._ips.clear()
            ip = self._ips[raw] = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        return ip

    def _materialize(self, key: int, in_kernel: bool = False) -> Flow:
        """Python takes a fast flow over: a full Flow/Connection with the fast path's state.

        in_kernel: the kernel demoted it (and already moved its held head bytes to Python's side)."""
        h = self.fast.hand_over(self.fast.slot(key), in_kernel)
        f = Flow((self._ip(h.addr[0]), self._ip(h.addr[1])), h.ports, self.budget, h.last_seen, h.born)
        self.flows[key] = f
        f.midstream = False
        f.syn_from = h.syn_from
        conn = self._make_conn(f, h.client) if h.client is not None else None
        for s, d in zip(f.streams, h.directions):
            s.next_seq, s.delivered, s.fin_seq, s.closed = d.next_seq, d.delivered, d.fin_seq, d.closed
            r = s.reader
            if r is not None:
                r.state, r.skip, r.body, r.messages, r.sniff = d.reader_state, d.skip, d.body, d.messages, d.sniff
                r.partial = bytearray(d.partial) if d.partial is not None else None
                if d.partial is not None:
                    r.partial_ts = d.partial_ts
                r.line = bytearray(d.line) if d.line is not None else None
        if conn is not None:
            refs = self.fast.heads(self.heads, self._batch)
            conn.pending = deque(refs.request(ref) for ref in h.pending)
            if h.current is not None:
                conn.current = (refs.request(h.current[0]), refs.response(h.current[1]))
            conn.n_requests = h.n_requests
            conn.seen_http = h.seen_http
        return f

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
                client = 1 - dirn if data[:5].upper() == b"HTTP/" else dirn
        self._make_conn(f, client)
        return True

    def _make_conn(self, f: Flow, client: int) -> Connection:
        f.client_dir = client
        srv = 1 - client
        conn = Connection((f.addr[client], f.ports[client]), (f.addr[srv], f.ports[srv]), f.midstream,
                          self.builder, self.heads, self.out, self.stats, self.cfg.max_pending_requests, self.scan,
                          self.budget, self.told)
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
        # readers and their connection refer to each other: untie them, or the flow waits for a full garbage
        # collection (tune_gc makes those rare), and ended flows piled up (1 GB after 400k half-open flows)
        conn.req_reader.owner = conn.resp_reader.owner = None
        f.conn = None
        f.dead = True


def warm_up() -> None:
    """Load (or compile, first time ~30 s) every kernel of the Decoder for both buffer kinds sources hand us:
    read-only (mmap'd files) and writable (live ring copies) are separate numba specialisations. Runs a short
    HTTP conversation through a Decoder, so the flow fast path, the pairing and the event writer are ready."""
    from capture.testing import ACK, FIN, PSH, SYN, conversation_frame as frame, frame_batch

    req = b"GET / HTTP/1.1\r\nHost: warm.up\r\nCookie: a=b\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    frames = [frame(True, 1, b"", SYN), frame(False, 5, b"", SYN | ACK), frame(True, 2, req, PSH | ACK),
              frame(False, 6, resp, PSH | ACK), frame(True, 2 + len(req), b"", FIN | ACK),
              frame(False, 6 + len(resp), b"", FIN | ACK)]
    for writable in (False, True):
        for fast_path in (True, False):  # False: the Python path's head scan too, as flows it takes use it
            # a body rule: capture.bodies' request-line finder runs too
            decoder = Decoder(Settings(capture={"ports": [80], "request_bodies": [{"path": "/", "fields": ["f"]}]}),
                              fast_path=fast_path)
            decoder.feed_lines(frame_batch(list(enumerate(frames)), writable=writable))
            decoder.close()
