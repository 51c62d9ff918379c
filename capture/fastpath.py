"""The common case of a whole batch in one numba call: clean flows never touch Python per packet.

A flow that starts with a SYN and stays simple (in-order segments, heads whole within a
packet, Content-Length / chunked / until-close bodies) is followed here: a flow table
(fhash -> slot, an open-addressing index), per-direction next sequence number and the same HTTP
message-framing state machine as capture.http.MessageReader, as integer columns.
The kernel also pairs requests with responses as capture.transactions.Connection does
(pending requests and the current transaction as head refs) and emits each completed
transaction as a tx row, which capture.eventwriter turns into the event's JSON line.
Heads still waited on when a batch ends move to a carry store (_carry). It also emits
records in packet order (new flow, request head, response head, response done, flow
end) whose head spans the writer reads and whose held-byte counts keep the Decoder's
buffer budget exact.

Anything unusual (out of order, retransmission, truncated capture, a head split across
packets, blank lines, HTTP/0.9, odd Content-Length or beside chunked, 101, CONNECT, orphan responses, too
many pending requests...) "demotes" the flow: the packet's effects are rolled back and
the record DEMOTE tells the Decoder to copy this flow's state into the Python objects
(capture.reassembly.Stream, capture.http.MessageReader, capture.transactions.Connection)
and process the packet, and all later ones of that flow, the Python way. Flows first
seen without a SYN are Python's from the start (SLOW). tests/capture/test_fuzz.py holds
both ways to the same events.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from capture.frame_kernels import _lower, scan_one_head
from capture.http import BODY, CHUNK_CRLF, CHUNK_DATA, CHUNK_SIZE, HEAD, TRAILER, UNTIL_CLOSE, HeadParser, \
    RequestHead, ResponseHead
from capture.jit import hot_kernel, jit, kernel

# slot modes
FREE, FAST, SLOW = 0, 1, 2

# per-slot integer columns
MODE, CLIENT, SYNFROM, CONN, NPEND, PHEAD = range(6)
D0 = 6                # first column of direction 0; direction d starts at D0 + DW * d
DW = 11
NEXT, DELIV, FIN, CLOSED, RSTATE, SKIP, BODYN, MSGS, SNIFF, LLEN, PLEN = range(DW)
# the connection's pairing state (Connection.n_requests / seen_http / current, and the current response's
# body bytes when its head decides them: -1 = counted until the body ends) and its endpoints: canonical
# side a (direction 0's source) and b, address length, and the flow's hash (the Decoder's key)
NREQ, SEEN, CURQ, CURR, CURB, APORT, BPORT, ALEN, HASH, BORN = range(D0 + 2 * DW, D0 + 2 * DW + 10)
NCOL = D0 + 2 * DW + 10
NOREF = -(1 << 62)    # no head: an empty CURQ / CURR

LINE_MAX = 32         # chunk-size / trailer line bytes carried across packets (longer: Python's)
PEND_MAX = 16         # pending requests followed per flow (more: Python's)
HEAD_MAX = 2048       # bytes of a head split across segments held per direction (more: Python's)
ARENA_BYTES = 1 << 20  # per batch: heads assembled from several segments, handed to Python

# record types
R_SLOW, R_NEW, R_DEMOTE, R_REQ, R_RESP, R_DONE, R_END = range(1, 8)
# record columns
TYPE, J, SLOT, HS, HE, FA, FB, FC, MINOR, AUX, ARENA, HELD, CLEN, CHUNKED, DONE, IDX = range(16)
RCOL = 16
# meta: free slots, arena fill, head bytes held (all fast flows), held bytes added this batch, limit for those,
# transactions written to tx this batch, this batch's counts for the Decoder's stats, and the flow index's
# keys and deleted entries
M_FREE, M_ARENA, M_HELD, M_ADDED, M_ROOM, M_NTX, M_REQUESTS, M_TRANSACTIONS, M_NO_RESPONSE, M_FLOWS, \
    M_CLOSED, M_RESET, M_KEYS, M_DELETED = range(14)
NMETA = 14
# a transaction the fast path paired: heads (a record number of this batch, or -1 - carried head), response
# body bytes, packet, endpoints (addresses in the txa row: client at 0, server at 16)
TX_REQ, TX_RESP, TX_BODY, TX_K, TX_CPORT, TX_SPORT, TX_ALEN = range(7)
TXCOL = 7
# R_RESP aux: framing the Python Connection must agree with
F_NONE, F_LENGTH, F_CHUNKED, F_CLOSE, F_INTERIM = range(5)
# R_END aux
END_CLOSED, END_RESET, END_REUSE = 1, 2, 3

MASK = 0xFFFFFFFF
HALF = 1 << 31
MAX_BODY = 1 << 40
M_HEAD, M_CONNECT = 1, 2


@kernel
def _has_chunked(buf, vs, ve):
    # b"chunked" in value.lower()
    for p in range(vs, ve - 6):
        if (_lower(buf[p]) == 99 and _lower(buf[p + 1]) == 104 and _lower(buf[p + 2]) == 117
                and _lower(buf[p + 3]) == 110 and _lower(buf[p + 4]) == 107 and _lower(buf[p + 5]) == 101
                and _lower(buf[p + 6]) == 100):
            return True
    return False


@kernel
def _digits(buf, vs, ve):
    """A plain decimal Content-Length (what the Python parser surely accepts); -1 otherwise."""
    if ve - vs < 1 or ve - vs > 16:
        return -1
    v = np.int64(0)
    for p in range(vs, ve):
        dg = buf[p]
        if dg < 48 or dg > 57:
            return -1
        v = v * 10 + (dg - 48)
    if v > MAX_BODY:
        return -1
    return v


@kernel
def _is_ws(x):
    return x == 32 or x == 9 or x == 10 or x == 13 or x == 11 or x == 12


@kernel
def _chunk_size_of(line, n):
    """int(line.split(b';')[0].strip(), 16) with the Python reader's checks; -1 = invalid."""
    e = 0
    while e < n and line[e] != 59:
        e += 1
    s = 0
    while s < e and _is_ws(line[s]):
        s += 1
    while e > s and _is_ws(line[e - 1]):
        e -= 1
    if e == s or e - s > 12:
        return -1
    v = np.int64(0)
    for p in range(s, e):
        x = line[p]
        if 48 <= x <= 57:
            v = v * 16 + (x - 48)
        elif 97 <= x <= 102:
            v = v * 16 + (x - 87)
        elif 65 <= x <= 70:
            v = v * 16 + (x - 55)
        else:
            return -1
    return v


@kernel
def _rec(rec, nrec, typ, k, slot):
    for c in range(RCOL):
        rec[nrec, c] = 0
    rec[nrec, TYPE] = typ
    rec[nrec, J] = k
    rec[nrec, SLOT] = slot


@kernel
def _head_end(src, s, e, scan, is_req):
    """MessageReader._head_end over src[s:e]: end of the head, -1 = not complete yet."""
    nl = s
    while nl < e and src[nl] != 10:
        nl += 1
    if nl >= e:
        return -1
    if is_req:
        found = False
        for q in range(s, nl - 5):
            if src[q] == 32 and src[q + 1] == 72 and src[q + 2] == 84 and src[q + 3] == 84 and src[q + 4] == 80 \
                    and src[q + 5] == 47:
                found = True
                break
        if not found:
            return nl + 1  # HTTP/0.9 request
    q = max(nl - 1, scan)
    while q + 3 < e:
        if src[q] == 13 and src[q + 1] == 10 and src[q + 2] == 13 and src[q + 3] == 10:
            return q + 4
        q += 1
    q = max(nl, scan)
    while q + 1 < e:
        if src[q] == 10 and src[q + 1] == 10:
            return q + 2
        q += 1
    return -1


@kernel
def _plausible(src, s, e, is_req):
    """MessageReader._plausible: could src[s:e] be the start of the connection's first message?"""
    n = e - s
    if is_req:
        lim = min(n, 21)
        if lim == 0:
            return True
        x = src[s]
        if x < 65 or x > 90:
            return False
        q = 1
        while q < lim and q < 20:
            x = src[s + q]
            if not (65 <= x <= 90 or x == 95 or x == 45):
                break
            q += 1
        return q == lim or src[s + q] == 32
    pre = (72, 84, 84, 80, 47)
    for q in range(min(n, 5)):
        if src[s + q] != pre[q]:
            return False
    return True


@kernel
def _bad_status_line(src, s, e):
    """MessageReader._bad_status_line >= 0: a complete first line in src[s:e] that capture.http._STATUS_LINE does
    not match ("HTTP/" of any case, the version, spaces or tabs, three digits)."""
    nl = s
    while nl < e and src[nl] != 10:
        nl += 1
    if nl >= e:
        return False
    if nl - s < 5 or _lower(src[s]) != 104 or _lower(src[s + 1]) != 116 or _lower(src[s + 2]) != 116 \
            or _lower(src[s + 3]) != 112 or src[s + 4] != 47:
        return True
    q = s + 5
    while q < nl and src[q] != 32 and src[q] != 9:
        q += 1
    if q >= nl:
        return True
    while q < nl and (src[q] == 32 or src[q] == 9):
        q += 1
    if q + 3 > nl:
        return True
    for r in range(3):
        if src[q + r] < 48 or src[q + r] > 57:
            return True
    return False


@hot_kernel
def _take_head(src, p, hl, fa, fb, fc, minor, is_req, slot, b, st, pring, max_pend, cl_k, te_k, rec, nrec, k, rsp,
               pref, saddr, tx, txa, meta):
    """Connection.on_head + MessageReader._on_head for a head at src[p:p + hl]: one record, the body framing."""
    chunked = False
    tv = rsp[nrec, 2 * te_k]
    if tv >= 0:
        chunked = _has_chunked(src, p + tv, p + rsp[nrec, 2 * te_k + 1])
    cl = np.int64(-1)
    cv = rsp[nrec, 2 * cl_k]
    if chunked and cv >= 0 and is_req:
        return -1  # Content-Length beside chunked: Python counts the smuggling attempt
    if not chunked and cv >= 0:
        cl = _digits(src, p + cv, p + rsp[nrec, 2 * cl_k + 1])
        if cl < 0:
            return -1
    _rec(rec, nrec, R_REQ if is_req else R_RESP, k, slot)
    rec[nrec, HS] = p
    rec[nrec, HE] = p + hl
    rec[nrec, FA] = fa
    rec[nrec, FB] = fb
    rec[nrec, FC] = fc
    rec[nrec, MINOR] = minor
    rec[nrec, CLEN] = cl          # -1: absent (or chunked)
    rec[nrec, CHUNKED] = chunked
    st[slot, b + MSGS] += 1
    st[slot, b + SNIFF] = 0
    st[slot, b + BODYN] = 0
    if is_req:
        n = st[slot, NPEND]
        if n + 1 > max_pend or n + 1 > PEND_MAX:
            return -1
        mflag = 0
        if fa == 4 and src[p] == 72 and src[p + 1] == 69 and src[p + 2] == 65 and src[p + 3] == 68:
            mflag = M_HEAD
        elif fa == 7 and src[p] == 67 and src[p + 1] == 79 and src[p + 2] == 78 and src[p + 3] == 78 \
                and src[p + 4] == 69 and src[p + 5] == 67 and src[p + 6] == 84:
            return -1  # CONNECT: Python holds the client's bytes until the answer says tunnel or not
        q = (st[slot, PHEAD] + n) % PEND_MAX
        pring[slot, q] = mflag
        pref[slot, q] = nrec
        st[slot, NPEND] = n + 1
        rec[nrec, IDX] = st[slot, NREQ]
        st[slot, NREQ] += 1
        st[slot, SEEN] = 1
        meta[M_REQUESTS] += 1
        nrec += 1
        if chunked:
            st[slot, b + RSTATE] = CHUNK_SIZE
            st[slot, b + LLEN] = 0
        elif cl > 0:
            st[slot, b + RSTATE] = BODY
            st[slot, b + SKIP] = cl
        else:
            st[slot, b + RSTATE] = HEAD
            st[slot, b + SKIP] = 0
    else:
        status = fa
        st[slot, SEEN] = 1
        if 100 <= status < 200 and status != 101:
            rec[nrec, AUX] = F_INTERIM
            nrec += 1
            st[slot, b + RSTATE] = HEAD
            st[slot, b + SKIP] = 0
        else:
            n = st[slot, NPEND]
            if n == 0:
                return -1  # orphan response: Python counts it
            mflag = pring[slot, st[slot, PHEAD]]
            st[slot, CURQ] = pref[slot, st[slot, PHEAD]]
            st[slot, CURR] = nrec
            st[slot, CURB] = -1  # chunked or until close: counted
            st[slot, PHEAD] = (st[slot, PHEAD] + 1) % PEND_MAX
            st[slot, NPEND] = n - 1
            if status == 101 or (mflag == M_CONNECT and 200 <= status < 300):
                return -1
            if mflag == M_HEAD or status == 204 or status == 304:
                st[slot, CURB] = 0
                rec[nrec, AUX] = F_NONE
                rec[nrec, DONE] = 1
                st[slot, b + RSTATE] = HEAD
                st[slot, b + SKIP] = 0
                _emit(st, slot, saddr, 0, k, tx, txa, meta)
            elif chunked:
                rec[nrec, AUX] = F_CHUNKED
                st[slot, b + RSTATE] = CHUNK_SIZE
                st[slot, b + LLEN] = 0
            elif cl > 0:
                st[slot, CURB] = cl
                rec[nrec, AUX] = F_LENGTH
                st[slot, b + RSTATE] = BODY
                st[slot, b + SKIP] = cl
            elif cl == 0:
                st[slot, CURB] = 0
                rec[nrec, AUX] = F_LENGTH
                rec[nrec, DONE] = 1  # no body: complete at once
                st[slot, b + RSTATE] = HEAD
                st[slot, b + SKIP] = 0
                _emit(st, slot, saddr, 0, k, tx, txa, meta)
            else:
                rec[nrec, AUX] = F_CLOSE
                st[slot, b + RSTATE] = UNTIL_CLOSE
            nrec += 1
    return nrec


@hot_kernel
def _reader(buf, s, e, k, tsk, slot, d, is_req, st, lbuf, pring, hbuf, pts, names, name_off, cl_k, te_k, max_pend,
            max_flow, rec, rsp, rts, arena, meta, nrec, pref, saddr, tx, txa):
    """MessageReader.feed for in-order bytes buf[s:e] of direction d. Returns the new record count, -1 = demote."""
    b = D0 + DW * d
    lim = rec.shape[0] - 2  # keep room for a DEMOTE / END record
    p = s
    while p < e:
        rs = st[slot, b + RSTATE]
        if rs == BODY or rs == CHUNK_DATA:
            kk = min(st[slot, b + SKIP], e - p)
            st[slot, b + SKIP] -= kk
            p += kk
            if st[slot, b + SKIP] == 0:
                if rs == BODY:
                    st[slot, b + RSTATE] = HEAD
                    st[slot, b + LLEN] = 0
                    if not is_req:
                        if nrec >= lim:
                            return -1
                        nrec = _done_rec(rec, nrec, k, slot, st[slot, b + BODYN], st, saddr, tx, txa, meta)
                else:
                    st[slot, b + RSTATE] = CHUNK_CRLF
                    st[slot, b + SKIP] = 2
        elif rs == UNTIL_CLOSE:
            st[slot, b + BODYN] += e - p
            p = e
        elif rs == CHUNK_CRLF:
            if buf[p] == 10:
                st[slot, b + SKIP] = 0
            elif st[slot, b + SKIP] == 1:
                return -1
            else:
                st[slot, b + SKIP] -= 1
            p += 1
            if st[slot, b + SKIP] == 0:
                st[slot, b + RSTATE] = CHUNK_SIZE
        elif rs == CHUNK_SIZE or rs == TRAILER:
            nl = p
            while nl < e and buf[nl] != 10:
                nl += 1
            ll = st[slot, b + LLEN]
            if ll + (nl - p) > LINE_MAX:
                return -1
            for q in range(p, nl):
                lbuf[slot, d * LINE_MAX + ll] = buf[q]
                ll += 1
            st[slot, b + LLEN] = ll
            if nl == e:
                p = e
                continue
            p = nl + 1
            st[slot, b + LLEN] = 0
            if rs == CHUNK_SIZE:
                size = _chunk_size_of(lbuf[slot, d * LINE_MAX:d * LINE_MAX + LINE_MAX], ll)
                if size < 0:
                    return -1
                if size == 0:
                    st[slot, b + RSTATE] = TRAILER
                else:
                    st[slot, b + BODYN] += size
                    st[slot, b + RSTATE] = CHUNK_DATA
                    st[slot, b + SKIP] = size
            else:
                empty = True
                for q in range(ll):
                    if lbuf[slot, d * LINE_MAX + q] != 13:
                        empty = False
                        break
                if empty:
                    st[slot, b + RSTATE] = HEAD
                    st[slot, b + SKIP] = 0
                    if not is_req:
                        if nrec >= lim:
                            return -1
                        nrec = _done_rec(rec, nrec, k, slot, st[slot, b + BODYN], st, saddr, tx, txa, meta)
        elif rs == HEAD:
            if nrec >= lim:
                return -1
            want = 1 if is_req else 2
            old = st[slot, b + PLEN]
            if old == 0:
                kind, hl, fa, fb, fc, minor = scan_one_head(buf, p, e, names, name_off, rsp, nrec)
                if kind == 0:
                    # a head that continues in the next segment(s) is held here (MessageReader.partial)
                    if _head_end(buf, p, e, p, is_req) >= 0 or buf[p] == 13 or buf[p] == 10:
                        return -1  # complete but unusual, or blank lines first: Python's
                    if st[slot, b + SNIFF] and not _plausible(buf, p, e, is_req):
                        return -1
                    if not is_req and not st[slot, b + SNIFF] and _bad_status_line(buf, p, e):
                        return -1  # bytes after an answer's body: Python hunts for the next status line
                    n = e - p
                    if n > HEAD_MAX or n > max_flow or meta[M_ADDED] + n > meta[M_ROOM]:
                        return -1
                    meta[M_HELD] += n
                    meta[M_ADDED] += n
                    for q in range(n):
                        hbuf[slot, d, q] = buf[p + q]
                    st[slot, b + PLEN] = n
                    pts[slot, d] = tsk
                    p = e
                    continue
                if kind != want:
                    return -1
                nrec = _take_head(buf, p, hl, fa, fb, fc, minor, is_req, slot, b, st, pring, max_pend, cl_k, te_k,
                                  rec, nrec, k, rsp, pref, saddr, tx, txa, meta)
                if nrec < 0:
                    return -1
                rts[nrec - 1] = tsk
                p += hl
            else:
                row = hbuf[slot, d]
                take = min(e - p, HEAD_MAX - old)
                for q in range(take):
                    row[old + q] = buf[p + q]
                tot = old + take
                end = _head_end(row, 0, tot, max(0, old - 3), is_req)
                if end < 0:
                    if take < e - p or tot > max_flow or meta[M_ADDED] + take > meta[M_ROOM]:
                        return -1
                    if st[slot, b + SNIFF] and not _plausible(row, 0, tot, is_req):
                        return -1
                    if not is_req and not st[slot, b + SNIFF] and _bad_status_line(row, 0, tot):
                        return -1
                    meta[M_HELD] += take
                    meta[M_ADDED] += take
                    st[slot, b + PLEN] = tot
                    p = e
                    continue
                kind, hl, fa, fb, fc, minor = scan_one_head(row, 0, end, names, name_off, rsp, nrec)
                if kind != want or hl != end:
                    return -1
                ap = meta[M_ARENA]
                if ap + end > arena.shape[0]:
                    return -1
                for q in range(end):
                    arena[ap + q] = row[q]
                meta[M_ARENA] = ap + end
                nrec = _take_head(arena, ap, hl, fa, fb, fc, minor, is_req, slot, b, st, pring, max_pend, cl_k,
                                  te_k, rec, nrec, k, rsp, pref, saddr, tx, txa, meta)
                if nrec < 0:
                    return -1
                rec[nrec - 1, ARENA] = 1
                rec[nrec - 1, HELD] = old  # released from the buffer budget
                meta[M_HELD] -= old
                rts[nrec - 1] = pts[slot, d]
                st[slot, b + PLEN] = 0
                p += end - old
        else:
            return -1
    return nrec


@kernel
def _emit(st, slot, saddr, body, k, tx, txa, meta):
    """The current transaction (CURQ, CURR; CURR may be NOREF: no response) is complete: a tx row."""
    q = st[slot, CURQ]
    if q == NOREF:
        return
    r = st[slot, CURR]
    n = meta[M_NTX]
    tx[n, TX_REQ] = q
    tx[n, TX_RESP] = r
    if r == NOREF:
        tx[n, TX_BODY] = 0
        meta[M_NO_RESPONSE] += 1
    else:  # the response head may be carried from an earlier batch: its framing is in CURB
        tx[n, TX_BODY] = st[slot, CURB] if st[slot, CURB] >= 0 else body
    tx[n, TX_K] = k
    c = st[slot, CLIENT]
    al = st[slot, ALEN]
    tx[n, TX_ALEN] = al
    tx[n, TX_CPORT] = st[slot, APORT] if c == 0 else st[slot, BPORT]
    tx[n, TX_SPORT] = st[slot, BPORT] if c == 0 else st[slot, APORT]
    for q in range(al):
        txa[n, q] = saddr[slot, q + 16 * c]
        txa[n, 16 + q] = saddr[slot, q + 16 * (1 - c)]
    meta[M_NTX] = n + 1
    meta[M_TRANSACTIONS] += 1
    st[slot, CURQ] = NOREF
    st[slot, CURR] = NOREF


@kernel
def _done_rec(rec, nrec, k, slot, body, st, saddr, tx, txa, meta):
    """The current response's body is complete: a DONE record, or folded into its head's record when that
    came in this very packet (the commonest case: small responses); the transaction is paired."""
    q = nrec - 1
    if q >= 0 and rec[q, TYPE] == R_RESP and rec[q, SLOT] == slot and rec[q, J] == k and rec[q, DONE] == 0 \
            and rec[q, AUX] != F_INTERIM:
        rec[q, DONE] = 1
        _emit(st, slot, saddr, body, k, tx, txa, meta)
        return nrec
    _rec(rec, nrec, R_DONE, k, slot)
    _emit(st, slot, saddr, body, k, tx, txa, meta)
    return nrec + 1


@kernel
def _end_rec(rec, nrec, k, slot, st, client, aux, meta, pref, saddr, tx, txa):
    """Connection.close for a flow whose readers hold no bytes: a body until close (or cut short) is complete,
    requests still waiting are reported without response."""
    _rec(rec, nrec, R_END, k, slot)
    rec[nrec, AUX] = aux
    held = st[slot, D0 + PLEN] + st[slot, D0 + DW + PLEN]
    rec[nrec, HELD] = held
    meta[M_HELD] -= held
    if aux == END_CLOSED:
        meta[M_CLOSED] += 1
    elif aux == END_RESET:
        meta[M_RESET] += 1
    if st[slot, CONN]:
        bs = D0 + DW * (1 - client)
        if st[slot, bs + RSTATE] == BODY and st[slot, CURB] > 0:
            st[slot, CURB] -= st[slot, bs + SKIP]  # cut short: the bytes that came, not the declared length
        _emit(st, slot, saddr, st[slot, bs + BODYN], k, tx, txa, meta)
        while st[slot, NPEND] > 0:
            st[slot, CURQ] = pref[slot, st[slot, PHEAD]]
            st[slot, CURR] = NOREF
            st[slot, PHEAD] = (st[slot, PHEAD] + 1) % PEND_MAX
            st[slot, NPEND] -= 1
            _emit(st, slot, saddr, 0, k, tx, txa, meta)
    return nrec + 1


@kernel
def _reset(st, slot):
    """A new connection in the slot (its endpoints, set by _endpoints, stay)."""
    for c in range(APORT):
        st[slot, c] = 0
    st[slot, CURQ] = NOREF
    st[slot, CURR] = NOREF
    st[slot, MODE] = FAST
    st[slot, CLIENT] = -1
    st[slot, SYNFROM] = -1
    for d in range(2):
        b = D0 + DW * d
        st[slot, b + NEXT] = -1
        st[slot, b + FIN] = -1
        st[slot, b + SNIFF] = 1


@kernel
def _endpoints(st, slot, saddr, buf, src, dst, alen, sport, dport, d, h, born):
    """The flow's canonical endpoints (a = direction 0's source) from a packet in direction d."""
    a, b = (src, dst) if d == 0 else (dst, src)
    for q in range(alen):
        saddr[slot, q] = buf[a + q]
        saddr[slot, 16 + q] = buf[b + q]
    st[slot, APORT] = sport if d == 0 else dport
    st[slot, BPORT] = dport if d == 0 else sport
    st[slot, ALEN] = alen
    st[slot, HASH] = h
    st[slot, BORN] = born  # the packet that made h a flow (the Decoder ends flows in this order)


@kernel
def _in(ports, x):
    for q in range(ports.shape[0]):
        if ports[q] == x:
            return True
    return False


@hot_kernel
def _packet(buf, k, tsk, slot, fl, sq, ak, pw, pc, ps, sport, dport, d, st, lbuf, pring, hbuf, pts, ports, names,
            name_off, cl_k, te_k, max_pend, max_flow, rec, rsp, rts, arena, meta, nrec, ended, pref, saddr, tx, txa):
    """Pipeline._walk for one packet of a fast flow. Returns the new record count or -1 (demote)."""
    b = D0 + DW * d
    syn = (fl & 0x02) != 0
    ack = (fl & 0x10) != 0
    if syn and not ack and st[slot, CONN] == 1 and st[slot, b + DELIV] > 0:
        # the 4-tuple is reused by a new connection: end the old one, start afresh
        nrec = _end_rec(rec, nrec, k, slot, st, st[slot, CLIENT], END_REUSE, meta, pref, saddr, tx, txa)
        _reset(st, slot)
        meta[M_FLOWS] += 1
        _rec(rec, nrec, R_NEW, k, slot)
        nrec += 1
    if syn:
        if not ack:
            st[slot, SYNFROM] = d
        if st[slot, b + DELIV] == 0:
            st[slot, b + NEXT] = (sq + 1) & MASK
        sq = (sq + 1) & MASK
        if pw > 0:
            return -1
    if pw > 0:
        if pc != pw:
            return -1  # captured less than was sent: a gap, Python's
        if st[slot, CONN] == 0:
            if d == 0:
                pa, pb = sport, dport
            else:
                pa, pb = dport, sport
            a_srv = _in(ports, pa)
            b_srv = _in(ports, pb)
            if a_srv != b_srv:
                client = 1 if a_srv else 0
            elif st[slot, SYNFROM] >= 0:
                client = st[slot, SYNFROM]
            else:
                return -1
            st[slot, CLIENT] = client
            st[slot, CONN] = 1
        if ack:
            on = st[slot, D0 + DW * (1 - d) + NEXT]
            if on >= 0 and 1 < ((ak - on) & MASK) < HALF:
                return -1  # acknowledges bytes of the other side never captured: a gap now (Stream.acked), Python's
        if st[slot, b + CLOSED] or st[slot, b + FIN] >= 0:
            return -1
        ns = st[slot, b + NEXT]
        if ns < 0:
            ns = sq
        if sq != ns:
            return -1
        nrec = _reader(buf, ps, ps + pw, k, tsk, slot, d, d == st[slot, CLIENT], st, lbuf, pring, hbuf, pts, names,
                       name_off, cl_k, te_k, max_pend, max_flow, rec, rsp, rts, arena, meta, nrec, pref, saddr, tx, txa)
        if nrec < 0:
            return -1
        st[slot, b + NEXT] = (sq + pw) & MASK
        st[slot, b + DELIV] += pw
    if fl & 0x01:
        fin = (sq + pw) & MASK
        if st[slot, b + CLOSED]:
            st[slot, b + FIN] = fin
        elif st[slot, b + NEXT] < 0 or st[slot, b + NEXT] == fin:
            st[slot, b + FIN] = fin
            st[slot, b + CLOSED] = 1
            if st[slot, CONN] and st[slot, b + RSTATE] == UNTIL_CLOSE:
                st[slot, b + RSTATE] = HEAD
                st[slot, b + SKIP] = 0
                st[slot, b + LLEN] = 0
                if d != st[slot, CLIENT]:
                    if nrec >= rec.shape[0] - 2:
                        return -1
                    nrec = _done_rec(rec, nrec, k, slot, st[slot, b + BODYN], st, saddr, tx, txa, meta)
        else:
            return -1  # FIN ahead of missing data: Python's
        if st[slot, D0 + CLOSED] and st[slot, D0 + DW + CLOSED]:
            nrec = _end_rec(rec, nrec, k, slot, st, st[slot, CLIENT], END_CLOSED, meta, pref, saddr, tx, txa)
            ended[0] = 1
    elif fl & 0x04:
        nrec = _end_rec(rec, nrec, k, slot, st, st[slot, CLIENT], END_RESET, meta, pref, saddr, tx, txa)
        ended[0] = 1
    return nrec


# The flow index: open addressing over an int64 array (a power of two long, at least twice the slots):
# entry = slot + 1, EMPTY, or DELETED; a slot's key is st[slot, HASH]. A numba typed dict did the same job, but
# each of its operations counted references, which cost more than the lookup.
EMPTY, DELETED = 0, -1
MIX = np.uint64(0x9E3779B97F4A7C15)


@kernel
def _home(index, h):
    return np.int64((np.uint64(h) * MIX) >> np.uint64(40)) & (index.shape[0] - 1)


@kernel
def slot_of(index, st, h):
    """The slot of flow key h, or -1."""
    mask = index.shape[0] - 1
    i = _home(index, h)
    while True:
        e = index[i]
        if e == EMPTY:
            return np.int64(-1)
        if e > 0 and st[e - 1, HASH] == h:
            return e - 1
        i = (i + 1) & mask


@kernel
def _add_key(index, st, meta, h, slot):
    """Index slot under key h (not indexed yet)."""
    mask = index.shape[0] - 1
    i = _home(index, h)
    while index[i] > 0:
        i = (i + 1) & mask
    if index[i] == DELETED:
        meta[M_DELETED] -= 1
    index[i] = slot + 1
    st[slot, HASH] = h
    meta[M_KEYS] += 1


@kernel
def _drop_key(index, st, meta, h):
    mask = index.shape[0] - 1
    i = _home(index, h)
    while index[i] != EMPTY:
        e = index[i]
        if e > 0 and st[e - 1, HASH] == h:
            index[i] = DELETED
            meta[M_KEYS] -= 1
            meta[M_DELETED] += 1
            return
        i = (i + 1) & mask


@kernel
def _reindex(index, st, meta):
    """index (all EMPTY) filled again from the slots in use: after the table grew, or when deleted entries
    pile up (they lengthen every search)."""
    meta[M_KEYS] = 0
    meta[M_DELETED] = 0
    for slot in range(st.shape[0]):
        if st[slot, MODE] != FREE:
            _add_key(index, st, meta, st[slot, HASH], slot)


@kernel
def _run(buf, fh, dirn, seq, ack, flags, poff, plen, pwire, ts, sport, dport, src_off, dst_off, alen, born, index, st,
         last, lbuf, pring, hbuf, pts, free, meta, ports, names, name_off, cl_k, te_k, max_pend, max_flow, rec, rsp,
         rts, arena, nrec, start, pref, saddr, tx, txa, sv, svm, svl, svh, ended):
    """Route a batch's packets (those with payload or SYN/FIN/RST). Returns (records, next packet);
    next packet < n when the slot table, the records or the transactions are full (grow, call again).
    sv, svm, svl, svh, ended: work space (a packet's state before it, to undo a demotion)."""
    n = fh.shape[0]
    for k in range(start, n):
        if nrec >= rec.shape[0] - 4 or meta[M_NTX] + 2 * PEND_MAX + 4 > tx.shape[0]:
            return nrec, k
        h = fh[k]
        d = dirn[k]
        fl = flags[k]
        slot = slot_of(index, st, h)
        if slot < 0:
            if (fl & 0x02) == 0 and pwire[k] == 0:
                continue  # FIN/RST straggler of a flow already ended: Python ignores it too
            if meta[M_FREE] == 0:
                return nrec, k
            meta[M_FREE] -= 1
            slot = free[meta[M_FREE]]
            _add_key(index, st, meta, h, slot)
            last[slot] = ts[k]
            if (fl & 0x17) == 0x02 and pwire[k] == 0:  # a plain SYN: the flow starts here
                _reset(st, slot)
                _endpoints(st, slot, saddr, buf, src_off[k], dst_off[k], alen[k], sport[k], dport[k], d, h, born[k])
                meta[M_FLOWS] += 1
                _rec(rec, nrec, R_NEW, k, slot)
                nrec += 1
            else:
                st[slot, MODE] = SLOW
                _rec(rec, nrec, R_SLOW, k, slot)
                nrec += 1
                continue
        else:
            last[slot] = ts[k]
            if st[slot, MODE] != FAST:
                _rec(rec, nrec, R_SLOW, k, slot)
                nrec += 1
                continue
        for c in range(NCOL):
            sv[c] = st[slot, c]
        for c in range(svl.shape[0]):  # explicit loops: numba's slice assignment costs a microsecond
            svl[c] = lbuf[slot, c]
        sv0, sv1 = pts[slot, 0], pts[slot, 1]
        p0, p1 = st[slot, D0 + PLEN], st[slot, D0 + DW + PLEN]
        for q in range(p0):
            svh[0, q] = hbuf[slot, 0, q]
        for q in range(p1):
            svh[1, q] = hbuf[slot, 1, q]
        for c in range(NMETA):
            svm[c] = meta[c]
        ended[0] = 0
        r = _packet(buf, k, ts[k], slot, fl, seq[k], ack[k], pwire[k], plen[k], poff[k], sport[k], dport[k], d, st,
                    lbuf, pring, hbuf, pts, ports, names, name_off, cl_k, te_k, max_pend, max_flow, rec, rsp, rts,
                    arena, meta, nrec, ended, pref, saddr, tx, txa)
        if r < 0:
            for c in range(NCOL):
                st[slot, c] = sv[c]
            for c in range(svl.shape[0]):
                lbuf[slot, c] = svl[c]
            pts[slot, 0], pts[slot, 1] = sv0, sv1
            for q in range(p0):
                hbuf[slot, 0, q] = svh[0, q]
            for q in range(p1):
                hbuf[slot, 1, q] = svh[1, q]
            for c in range(NMETA):
                meta[c] = svm[c]
            meta[M_HELD] -= p0 + p1  # a held head goes to Python with the flow (still in the budget total)
            st[slot, MODE] = SLOW
            _rec(rec, nrec, R_DEMOTE, k, slot)
            nrec += 1
        else:
            nrec = r
            if ended[0]:
                _drop_key(index, st, meta, h)
                st[slot, MODE] = FREE
                free[meta[M_FREE]] = slot
                meta[M_FREE] += 1
    return nrec, n


@kernel
def _forget(index, st, free, meta, slots):
    """Free the given slots (flows evicted by the Decoder's bound on open flows)."""
    for slot in slots:
        if st[slot, MODE] != FREE:
            _drop_key(index, st, meta, st[slot, HASH])
            st[slot, MODE] = FREE
            free[meta[M_FREE]] = slot
            meta[M_FREE] += 1


@kernel
def _purge(index, st, last, free, meta, now, idle):
    """Forget Python-owned (SLOW) flows idle like the Decoder's expiry rule (it ended them too)."""
    gone = 0
    for slot in range(st.shape[0]):
        if st[slot, MODE] == SLOW and last[slot] + idle < now:
            _drop_key(index, st, meta, st[slot, HASH])
            st[slot, MODE] = FREE
            free[meta[M_FREE]] = slot
            meta[M_FREE] += 1
            gone += 1
    return gone


@jit()
def _carried_size(ref, rec, cmeta):
    if ref >= 0:
        return rec[ref, HE] - rec[ref, HS]
    return cmeta[-1 - ref, HE] - cmeta[-1 - ref, HS]


@jit()
def _carry_one(ref, n, nb, rec, rsp, rts, buf, arena, cbytes, cmeta, crow, cts, nbytes, nmeta, nrow, nts):
    """Copy head `ref` into the new store at entry n, bytes from nb; returns the new byte fill."""
    if ref >= 0:
        hs, he = rec[ref, HS], rec[ref, HE]
        if rec[ref, ARENA]:
            for q in range(he - hs):
                nbytes[nb + q] = arena[hs + q]
        else:
            for q in range(he - hs):
                nbytes[nb + q] = buf[hs + q]
        nmeta[n] = rec[ref]
        nrow[n] = rsp[ref]
        nts[n] = rts[ref]
    else:
        c = -1 - ref
        hs, he = cmeta[c, HS], cmeta[c, HE]
        for q in range(he - hs):
            nbytes[nb + q] = cbytes[hs + q]
        nmeta[n] = cmeta[c]
        nrow[n] = crow[c]
        nts[n] = cts[c]
    nmeta[n, HS] = nb
    nmeta[n, HE] = nb + he - hs
    nmeta[n, ARENA] = 0
    return nb + he - hs


@jit()
def _carry(st, pref, rec, rsp, rts, buf, arena, cbytes, cmeta, crow, cts):
    """The heads fast flows still wait on (pending requests, the current transaction) when a batch ends move
    to a new carry store: the batch buffer and arena are about to be reused. Their refs become -1 - entry."""
    nh = 0
    nb = 0
    for slot in range(st.shape[0]):
        if st[slot, MODE] != FAST:
            continue
        for j in range(st[slot, NPEND]):
            nh += 1
            nb += _carried_size(pref[slot, (st[slot, PHEAD] + j) % PEND_MAX], rec, cmeta)
        for c in (CURQ, CURR):
            if st[slot, c] != NOREF:
                nh += 1
                nb += _carried_size(st[slot, c], rec, cmeta)
    nbytes = np.empty(max(nb, 1), np.uint8)
    nmeta = np.empty((nh, RCOL), np.int64)
    nrow = np.empty((nh, rsp.shape[1]), np.int32)
    nts = np.empty(nh, np.float64)
    n = 0
    fill = 0
    for slot in range(st.shape[0]):
        if st[slot, MODE] != FAST:
            continue
        for j in range(st[slot, NPEND]):
            q = (st[slot, PHEAD] + j) % PEND_MAX
            fill = _carry_one(pref[slot, q], n, fill, rec, rsp, rts, buf, arena, cbytes, cmeta, crow, cts, nbytes,
                              nmeta, nrow, nts)
            pref[slot, q] = -1 - n
            n += 1
        for c in (CURQ, CURR):
            if st[slot, c] != NOREF:
                fill = _carry_one(st[slot, c], n, fill, rec, rsp, rts, buf, arena, cbytes, cmeta, crow, cts, nbytes,
                                  nmeta, nrow, nts)
                st[slot, c] = -1 - n
                n += 1
    return nbytes, nmeta, nrow, nts


@jit()
def _stale(st, last, cts, pref, now, idle, tt):
    """Slots of fast flows the Decoder's expiry must take over: idle, or with a request unanswered for tt."""
    out = []
    for slot in range(st.shape[0]):
        if st[slot, MODE] != FAST:
            continue
        late = False
        if st[slot, NPEND] > 0:
            ref = pref[slot, st[slot, PHEAD]]
            late = ref < 0 and cts[-1 - ref] + tt < now
        if last[slot] + idle < now or late:
            out.append(slot)
    return out


_LINE_STATES = (CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER)  # reader states that carry a partial line


@dataclass
class DirectionState:
    """One direction of a flow as the fast path held it: capture.reassembly.Stream's sequence state and
    capture.http.MessageReader's framing state."""
    next_seq: int | None
    delivered: int
    fin_seq: int | None
    closed: bool
    reader_state: int
    skip: int
    body: int
    messages: int
    sniff: bool
    partial: bytes | None  # a head split across segments, held by the fast path
    partial_ts: float
    line: bytes | None     # the chunk-size / trailer line read so far (in a line state)


@dataclass
class FlowState:
    """One flow handed over to Python (FlowTable.hand_over): endpoints, the two directions and the pairing
    state of its connection, with heads as refs (a record number of this batch, or -1 - a carried head)."""
    addr: tuple[bytes, bytes]  # raw addresses of canonical sides a (direction 0's source) and b
    ports: tuple[int, int]
    born: int
    last_seen: float
    syn_from: int | None
    client: int | None         # the client's direction, once the connection exists
    directions: tuple[DirectionState, DirectionState]
    pending: list[int]         # heads of requests waiting for their responses, oldest first
    current: tuple[int, int] | None  # request and response heads of the transaction in progress
    n_requests: int
    seen_http: bool


class Transaction(NamedTuple):
    """A transaction the fast path paired: its heads (refs, see Heads), response body bytes and endpoints."""
    request: int
    response: int | None
    body_bytes: int
    client_addr: bytes  # raw address
    client_port: int
    server_addr: bytes
    server_port: int


class HandedOver(NamedTuple):
    """The packets a run handed to Python (SLOW / DEMOTE records), in packet order."""
    j: np.ndarray          # each one's index into the batch's run() arrays
    demoted: list[bool]    # the kernel demoted its flow at this packet (Python takes the flow's state over)
    slots: list[int]       # its flow's slot
    released: list[int]    # head bytes the fast path had released up to it (they leave the buffer total)
    released_total: int    # ... and up to the end of the batch


@dataclass(slots=True)
class FastBatch:
    """What FlowTable.run did with one batch: the packets it handed to Python, the transactions it paired and
    the heads they refer to. The record and transaction layouts stay in this module and capture.eventwriter
    (which writes the events from them in numba); the Decoder reads them through these methods."""
    buf: np.ndarray
    arena: np.ndarray
    rec: np.ndarray  # records (int64 [n, RCOL])
    rsp: np.ndarray  # their heads' spans (int32 [n, 2K])
    rts: np.ndarray  # their heads' times
    tx: np.ndarray   # paired transactions (int64 [t, TXCOL])
    txa: np.ndarray  # their endpoint addresses (uint8 [t, 32]: client at 0, server at 16)

    def handed_over(self) -> HandedOver | None:
        rec = self.rec
        if not len(rec):
            return None
        types = rec[:, TYPE]
        held = np.cumsum(rec[:, HELD])
        rows = np.flatnonzero((types == R_SLOW) | (types == R_DEMOTE))
        return HandedOver(rec[rows, J], (types[rows] == R_DEMOTE).tolist(), rec[rows, SLOT].tolist(),
                          held[rows].tolist(), int(held[-1]))

    def packets(self) -> np.ndarray:
        """The packet (the run's `born` numbering) that completed each transaction."""
        return self.tx[:, TX_K].copy()

    def head_refs(self) -> tuple[list[int], list[int | None]]:
        """Each transaction's request head and response head (None: no response), for a pass over all of them
        (the cookie learner's: a Transaction each cost 1 us of its 3)."""
        return self.tx[:, TX_REQ].tolist(), [None if r == NOREF else r for r in self.tx[:, TX_RESP].tolist()]

    def client_addr(self, i: int) -> bytes:
        return self.txa[i, :self.tx[i, TX_ALEN]].tobytes()

    def transaction(self, i: int) -> Transaction:
        t = self.tx[i].tolist()
        n = t[TX_ALEN]
        addr = self.txa[i]
        return Transaction(t[TX_REQ], None if t[TX_RESP] == NOREF else t[TX_RESP], t[TX_BODY], addr[:n].tobytes(),
                           t[TX_CPORT], addr[16:16 + n].tobytes(), t[TX_SPORT])


class Heads:
    """Heads the fast path refers to, as RequestHead / ResponseHead: records of the current batch (ref >= 0,
    only while it is replayed) or heads it carried across batches (ref = -1 - entry)."""

    def __init__(self, parser: HeadParser, carry, batch: FastBatch | None = None):
        self.parser = parser
        self.cbytes, self.cmeta, self.crow, self.cts = carry
        self.batch = batch

    def record(self, ref: int) -> tuple[list, bytes, list, float]:
        """The head's record row, bytes, header spans (the head scan's row) and time, without parsing it."""
        if ref >= 0:
            b = self.batch
            r = b.rec[ref].tolist()
            data = (b.arena if r[ARENA] else b.buf)[r[HS]:r[HE]].tobytes()
            return r, data, b.rsp[ref].tolist(), float(b.rts[ref])
        c = -1 - ref
        r = self.cmeta[c].tolist()
        return r, self.cbytes[r[HS]:r[HE]].tobytes(), self.crow[c].tolist(), float(self.cts[c])

    def request(self, ref: int) -> RequestHead:
        r, data, row, ts = self.record(ref)
        req = self.parser.request_framed(data, r[FA], r[FB], r[FC], r[MINOR], row, r[CLEN], r[CHUNKED] == 1)
        req.ts = ts
        req.index = r[IDX]
        return req

    def response(self, ref: int) -> ResponseHead:
        r, data, row, ts = self.record(ref)
        resp = self.parser.response_framed(data, r[FA], r[MINOR], row, r[CLEN], r[CHUNKED] == 1)
        resp.ts = ts
        if r[AUX] == F_LENGTH:
            resp.body_bytes = resp.content_length
        return resp


class FlowTable:
    """The numba side's flow state, grown on demand."""

    def __init__(self, ports, names: np.ndarray, name_off: np.ndarray, cl_k: int, te_k: int, max_pending: int,
                 max_flow_bytes: int, capacity: int = 1024):
        self.index = np.zeros(0, np.int64)  # flow key -> slot (see slot_of)
        self.ports = np.array(sorted(ports), np.int64)
        self.names = names
        self.name_off = name_off
        self.cl_k = cl_k
        self.te_k = te_k
        self.max_pending = max_pending
        self.max_flow = max_flow_bytes
        self.hbuf = np.zeros((0, 2, HEAD_MAX), np.uint8)
        self.pts = np.zeros((0, 2), np.float64)
        self.arena = np.zeros(ARENA_BYTES, np.uint8)
        self._out = None  # record arrays, reused batch after batch
        self.st = np.zeros((0, NCOL), np.int64)
        self.last = np.zeros(0, np.float64)
        self.lbuf = np.zeros((0, 2 * LINE_MAX), np.uint8)
        self.pring = np.zeros((0, PEND_MAX), np.int8)
        self.pref = np.zeros((0, PEND_MAX), np.int64)   # heads of the pending requests (refs, see _carry)
        self.saddr = np.zeros((0, 32), np.uint8)         # endpoint addresses: a at 0, b at 16
        self.free = np.zeros(0, np.int64)
        self.meta = np.zeros(NMETA, np.int64)
        # _run's work space: a packet's flow state before it (undone when the packet demotes the flow)
        self._undo = (np.zeros(NCOL, np.int64), np.zeros(NMETA, np.int64), np.zeros(2 * LINE_MAX, np.uint8),
                      np.zeros((2, HEAD_MAX), np.uint8), np.zeros(1, np.int64))
        # heads waiting across batches: bytes, their record rows (HS/HE into the bytes), scan rows, times
        nrow = len(name_off) * 2 - 2
        self.carry = (np.zeros(1, np.uint8), np.zeros((0, RCOL), np.int64), np.zeros((0, nrow), np.int32),
                      np.zeros(0, np.float64))
        self.max_grow = 1 << 62  # slots added at most at once (the Decoder bounds open flows; see in_use)
        self._grow(capacity)

    def _grow(self, extra: int) -> None:
        old = self.st.shape[0]
        new = old + extra
        self.st = np.concatenate([self.st, np.zeros((extra, NCOL), np.int64)])
        self.last = np.concatenate([self.last, np.zeros(extra, np.float64)])
        self.lbuf = np.concatenate([self.lbuf, np.zeros((extra, 2 * LINE_MAX), np.uint8)])
        self.pring = np.concatenate([self.pring, np.zeros((extra, PEND_MAX), np.int8)])
        self.pref = np.concatenate([self.pref, np.zeros((extra, PEND_MAX), np.int64)])
        self.saddr = np.concatenate([self.saddr, np.zeros((extra, 32), np.uint8)])
        self.hbuf = np.concatenate([self.hbuf, np.zeros((extra, 2, HEAD_MAX), np.uint8)])
        self.pts = np.concatenate([self.pts, np.zeros((extra, 2), np.float64)])
        nfree = int(self.meta[M_FREE])
        free = np.zeros(new, np.int64)
        free[:nfree] = self.free[:nfree]
        free[nfree:nfree + extra] = np.arange(new - 1, old - 1, -1)  # low slots handed out first
        self.free = free
        self.meta[M_FREE] = nfree + extra
        self.index = np.zeros(1 << (2 * new - 1).bit_length(), np.int64)  # a power of two, >= twice the slots
        _reindex(self.index, self.st, self.meta)

    def run(self, buf, fh, dirn, seq, ack, flags, poff, plen, pwire, ts, sport, dport, src_off, dst_off, alen, born,
            room: int):
        """Follow a batch's packets (the Decoder's decoded columns of those needing more than L2-L4): what it
        handed over, paired and framed (FastBatch). Call keep_waiting_heads(batch) once its events are written.

        `room`: head bytes the fast path may start holding in this batch; the caller keeps it far enough
        from the total buffer limit that holding them cannot change any of Python's overflow decisions."""
        n = len(fh)
        cap = 2 * n + 64
        if self._out is None or self._out[0].shape[0] < cap:
            # kept between batches: every row the caller reads is written by the kernel first
            self._out = (np.zeros((cap, RCOL), np.int64), np.full((cap, len(self.name_off) * 2 - 2), -1, np.int32),
                         np.zeros(cap, np.float64), np.zeros((cap, TXCOL), np.int64), np.zeros((cap, 32), np.uint8))
        rec, rsp, rts, tx, txa = self._out
        nrec, k = 0, 0
        self.meta[M_ARENA] = 0
        self.meta[M_ADDED] = 0
        self.meta[M_ROOM] = room
        self.meta[M_NTX:M_KEYS] = 0
        if self.meta[M_DELETED] > len(self.index) // 4:
            self.index[:] = EMPTY
            _reindex(self.index, self.st, self.meta)
        while True:
            nrec, k = _run(buf, fh, dirn, seq, ack, flags, poff, plen, pwire, ts, sport, dport, src_off, dst_off, alen,
                           born, self.index, self.st, self.last, self.lbuf, self.pring, self.hbuf, self.pts,
                           self.free, self.meta, self.ports, self.names, self.name_off, self.cl_k, self.te_k,
                           self.max_pending, self.max_flow, rec, rsp, rts, self.arena, nrec, k, self.pref, self.saddr,
                           tx, txa, *self._undo)
            ntx = int(self.meta[M_NTX])
            if k >= n:
                return FastBatch(buf, self.arena, rec[:nrec], rsp, rts, tx[:ntx], txa[:ntx])
            if nrec >= rec.shape[0] - 4:
                grow = rec.shape[0]
                rec = np.concatenate([rec, np.zeros((grow, RCOL), np.int64)])
                rsp = np.concatenate([rsp, np.full((grow, rsp.shape[1]), -1, np.int32)])
                rts = np.concatenate([rts, np.zeros(grow, np.float64)])
            elif ntx + 2 * PEND_MAX + 4 > tx.shape[0]:
                grow = tx.shape[0]
                tx = np.concatenate([tx, np.zeros((grow, TXCOL), np.int64)])
                txa = np.concatenate([txa, np.zeros((grow, 32), np.uint8)])
            else:
                self._grow(max(4096, min(self.st.shape[0], self.max_grow)))
            self._out = (rec, rsp, rts, tx, txa)

    def keep_waiting_heads(self, batch: FastBatch) -> None:
        """End of a batch (after its events are written): heads still waited on move to the carry store."""
        self.carry = _carry(self.st, self.pref, batch.rec, batch.rsp, batch.rts, batch.buf, self.arena, *self.carry)

    def heads(self, parser: HeadParser, batch: FastBatch | None = None) -> Heads:
        """The heads fast-path refs point to: carried ones, and while a batch is replayed its records."""
        return Heads(parser, self.carry, batch)

    def stale(self, now: float, idle: float, transaction_timeout: float) -> list[int]:
        """Keys of fast flows idle for `idle` or with a request unanswered for `transaction_timeout`."""
        if not self.meta[M_KEYS]:
            return []
        slots = np.array(_stale(self.st, self.last, self.carry[3], self.pref, now, idle, transaction_timeout),
                         np.int64)
        return self._keys_by_birth(slots)

    def in_use(self) -> int:
        """Flows the table knows (followed here, or Python's)."""
        return int(self.meta[M_KEYS])

    def least_recent(self, n: int) -> tuple[np.ndarray, list[int], list[bool]]:
        """The n slots in use whose last packet is oldest: (slots, their flow keys, followed here or not)."""
        used = np.flatnonzero(self.st[:, MODE] != FREE)
        if n < len(used):
            used = used[np.argpartition(self.last[used], n)[:n]]
        return used, self.st[used, HASH].tolist(), (self.st[used, MODE] == FAST).tolist()

    def forget(self, slots: np.ndarray) -> None:
        """Free these slots (flows the Decoder evicted and ended)."""
        _forget(self.index, self.st, self.free, self.meta, slots.astype(np.int64))

    def slot(self, key: int) -> int:
        """The slot of flow key `key`, -1 when the table does not know it."""
        return int(slot_of(self.index, self.st, key))

    def followed(self, slot: int) -> bool:
        """Whether the flow in `slot` is followed here (not Python's, not free)."""
        return bool(self.st[slot, MODE] == FAST)

    def batch_counts(self) -> dict[str, int]:
        """What the last run() did, by the Decoder's stats names, plus the head bytes it began holding
        (`held_added`: they count in the Decoder's buffer budget)."""
        m = self.meta
        return {"held_added": int(m[M_ADDED]), "requests": int(m[M_REQUESTS]),
                "transactions": int(m[M_TRANSACTIONS]), "no_response": int(m[M_NO_RESPONSE]),
                "flows": int(m[M_FLOWS]), "flows_closed": int(m[M_CLOSED]), "flows_reset": int(m[M_RESET])}

    def hand_over(self, slot: int, in_kernel: bool = False) -> FlowState:
        """The flow in `slot`, from now on Python's: its state, and the slot marked SLOW.

        in_kernel: the kernel demoted it (and already moved its held head bytes to Python's side);
        otherwise the head bytes it held leave the fast path's count (Python's budget still has them)."""
        row = self.st[slot].tolist()
        n = row[ALEN]
        conn = bool(row[CONN])
        dirs = []
        for dd in (0, 1):
            b = D0 + DW * dd
            st, held = row[b + RSTATE], row[b + PLEN] if conn else 0
            if held and not in_kernel:
                self.meta[M_HELD] -= held
            lo = dd * LINE_MAX
            dirs.append(DirectionState(
                next_seq=None if row[b + NEXT] < 0 else row[b + NEXT], delivered=row[b + DELIV],
                fin_seq=None if row[b + FIN] < 0 else row[b + FIN], closed=bool(row[b + CLOSED]),
                reader_state=st, skip=row[b + SKIP], body=row[b + BODYN], messages=row[b + MSGS],
                sniff=bool(row[b + SNIFF]), partial=self.hbuf[slot, dd, :held].tobytes() if held else None,
                partial_ts=float(self.pts[slot, dd]),
                line=self.lbuf[slot, lo:lo + row[b + LLEN]].tobytes() if st in _LINE_STATES else None))
        pend = self.pref[slot]
        state = FlowState(
            addr=(self.saddr[slot, :n].tobytes(), self.saddr[slot, 16:16 + n].tobytes()),
            ports=(row[APORT], row[BPORT]), born=row[BORN], last_seen=float(self.last[slot]),
            syn_from=None if row[SYNFROM] < 0 else row[SYNFROM], client=row[CLIENT] if conn else None,
            directions=(dirs[0], dirs[1]),
            pending=[int(pend[(row[PHEAD] + j) % PEND_MAX]) for j in range(row[NPEND])],
            current=(row[CURQ], row[CURR]) if row[CURQ] != NOREF else None,
            n_requests=row[NREQ], seen_http=bool(row[SEEN]))
        self.st[slot, MODE] = SLOW
        return state

    def fast_flows(self) -> list[int]:
        """Keys of the flows the fast path follows, in the order they were born."""
        return self._keys_by_birth(np.flatnonzero(self.st[:, MODE] == FAST))

    def _keys_by_birth(self, slots: np.ndarray) -> list[int]:
        st = self.st
        return st[slots[np.argsort(st[slots, BORN], kind="stable")], HASH].tolist()

    def purge(self, now: float, idle: float) -> None:
        if self.meta[M_KEYS]:
            _purge(self.index, self.st, self.last, self.free, self.meta, now, idle)

    def reset(self) -> None:
        """Forget every flow (end of input)."""
        cap = self.st.shape[0]
        self.index[:] = EMPTY
        self.st[:] = 0
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self.meta[:] = 0
        self.meta[M_FREE] = cap
        self.carry = tuple(c[:0] for c in self.carry)
