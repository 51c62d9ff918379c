"""Hit events as JSON lines written by numba, for the transactions the fast path paired.

Building a Python dict per transaction and serializing it cost most of the capture's
time. For a transaction whose request and response heads are both in the current
batch (the common case), `EventWriter.write` writes the event's JSON line straight
from the heads' bytes: the same fields, values and order as
capture.transactions.EventBuilder.build + orjson (event id and visitor/member keys
hashed with the numba BLAKE2b of capture.blake2).

Whatever needs more than plain bytes copying (non-ASCII text, a query or referrer
carrying a sensitive parameter, a '#' in the query, absolute-form URIs, member keys
in the query, a trusted client-IP header) is flagged, and the Decoder builds that
event the Python way. tests/capture/test_eventwriter.py holds the two to the same
events.
"""
from __future__ import annotations

import numpy as np
import orjson

from capture.blake2 import blake2b_hex, key_state
from capture.fastpath import ARENA, FA, FB, FC, HE, HS, IDX, MINOR, NOREF, TX_ALEN, TX_BODY, TX_CPORT, TX_REQ, \
    TX_RESP, TX_SPORT, FastBatch
from capture.jit import copy_bytes, inline_kernel, kernel

# scratch: [0:320) blake2 work space, [320:) the bytes being hashed
SCRATCH_HASH = 320
GIVEN = 33  # per transaction in `given`: the id a Set-Cookie assigns (32 hex digits), then 1 when it does


def _lit(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), np.uint8).copy()


K_EVENT_ID = _lit('{"event_id":"')
K_TS = _lit('","ts":')
K_CLIENT_IP = _lit(',"client_ip":"')
K_CLIENT_PORT = _lit('","client_port":')
K_SERVER_IP = _lit(',"server_ip":"')
K_SERVER_PORT = _lit('","server_port":')
K_METHOD = _lit(',"method":"')
K_HOST = _lit('","host":"')
K_URI = _lit('","uri":"')
K_PATH = _lit('","path":"')
K_QUERY = _lit('","query":"')
K_REFERRER = _lit('","referrer":"')
K_UA = _lit('","user_agent":"')
K_STATUS = _lit('","status":')
K_RESP_BYTES = _lit(',"resp_bytes":')
K_CTYPE = _lit(',"content_type":"')
K_LATENCY = _lit('","latency_ms":')
K_VISITOR = _lit(',"visitor_id":"')
K_MEMBER = _lit('","member_id":"')
K_VERSION = _lit('","http_version":"1.')
K_NO_RESPONSE = _lit('","no_response":')
K_EXTRA = _lit(',"extra":{')
K_NULL = _lit("null")
K_TRUE = _lit("true")
K_FALSE = _lit("false")
HEXD = _lit("0123456789abcdef")
# control bytes orjson escapes with a letter (the others as \u00XX): byte -> letter, 0 = none
SHORT_ESCAPE = np.zeros(32, np.uint8)
for _byte, _letter in ((8, "b"), (9, "t"), (10, "n"), (12, "f"), (13, "r")):
    SHORT_ESCAPE[_byte] = ord(_letter)

TEN = np.uint64(10)
# the decimal text of each byte value: OCTET[b, :3] its digits, OCTET[b, 3] how many (IPv4 addresses)
OCTET = np.zeros((256, 4), np.uint8)
for _b in range(256):
    OCTET[_b, :len(str(_b))] = np.frombuffer(str(_b).encode(), np.uint8)
    OCTET[_b, 3] = len(str(_b))

# per transaction result
WRITTEN, PYTHON = 0, 1


@inline_kernel  # ~20 fixed keys per event: a call each cost more than the copy
def _put(out, o, lit):
    base = np.uint64(o)
    for i in range(np.uint64(lit.shape[0])):
        out[base + i] = lit[i]
    return o + lit.shape[0]


@kernel
def _int(out, o, v):
    if v < 0:
        out[o] = 45
        o += 1
        v = -v
    # unsigned: division by 10 becomes a multiplication, without Python's floor-division sign fix-ups
    u = np.uint64(v)
    n = 1
    t = u
    while t >= TEN:
        t //= TEN
        n += 1
    for i in range(n - 1, -1, -1):
        out[o + i] = 48 + np.int64(u % TEN)
        u //= TEN
    return o + n


@kernel
def _fixed(out, o, v, decimals):
    """v / 10**decimals as the shortest float text (what orjson prints for that float): 12.5, 3.0."""
    if v < 0:
        out[o] = 45
        o += 1
        v = -v
    scale = 10 ** decimals
    o = _int(out, o, v // scale)
    out[o] = 46
    o += 1
    frac = v % scale
    if frac == 0:
        out[o] = 48
        return o + 1
    n = decimals
    while frac % 10 == 0:
        frac //= 10
        n -= 1
    for i in range(n - 1, -1, -1):
        out[o + i] = 48 + frac % 10
        frac //= 10
    return o + n


@kernel
def _str(out, o, src, s, e):
    """src[s:e] as JSON string content (orjson's escapes); -1 if it is not ASCII (Python decodes that)."""
    if e <= s:
        return o
    # unsigned offsets (see capture.jit) and no early exit: both loops vectorize; nearly every string is plain
    n = np.uint64(e - s)
    us = np.uint64(s)
    special = False
    for q in range(n):
        x = src[us + q]
        special |= (x >= 128) | (x < 32) | (x == 34) | (x == 92)
    if not special:  # the common case: a straight copy
        return copy_bytes(out, o, src, s, e)
    for p in range(s, e):
        x = src[p]
        if x >= 128:
            return -1
        if x == 34 or x == 92:
            out[o] = 92
            out[o + 1] = x
            o += 2
        elif x < 32:
            out[o] = 92
            if SHORT_ESCAPE[x]:  # \b \t \n \f \r
                out[o + 1] = SHORT_ESCAPE[x]
                o += 2
            else:
                out[o + 1] = 117
                out[o + 2] = 48
                out[o + 3] = 48
                out[o + 4] = HEXD[x >> 4]
                out[o + 5] = HEXD[x & 15]
                o += 6
        else:
            out[o] = x
            o += 1
    return o


@kernel
def _space(x):
    return x == 32 or x == 9 or x == 10 or x == 13 or x == 11 or x == 12


@kernel
def _find(src, s, e, x):
    if e <= s:
        return -1
    us = np.uint64(s)
    for q in range(np.uint64(e - s)):  # unsigned: no wrap-around check per byte (capture.jit)
        if src[us + q] == x:
            return s + np.int64(q)
    return -1


@kernel
def _has_sensitive(src, s, e, words, word_off, starts):
    """Any of the (lower-case) words in src[s:e], ignoring ASCII case: the query may need scrubbing.
    starts[x] != 0: some word starts with byte x (either case); only there are words compared."""
    for p in range(s, e):
        if not starts[src[p]]:
            continue
        for w in range(word_off.shape[0] - 1):
            ws, we = word_off[w], word_off[w + 1]
            n = we - ws
            if p + n > e:
                continue
            same = True
            for q in range(n):
                x = src[p + q]
                if 65 <= x <= 90:
                    x += 32
                if x != words[ws + q]:
                    same = False
                    break
            if same:
                return True
    return False


@kernel
def _cookies(src, s, e, names, name_off, order, fs, fe):
    """Identity.cookies: the first non-empty value of each wanted cookie name (stripped) into fs/fe (-1 = none).

    Same matches as its regex: at the start and after every ';', [ \\t]*, a name (longest first), '=',
    [ \\t]*, an optional '"', then the value up to ';' or '"'."""
    for k in range(fs.shape[0]):
        fs[k] = -1
        fe[k] = -1
    c = s
    while c <= e:
        p = c
        while p < e and (src[p] == 32 or src[p] == 9):
            p += 1
        for oi in range(order.shape[0]):
            k = order[oi]
            ns, ne = name_off[k], name_off[k + 1]
            n = ne - ns
            if p + n >= e or src[p + n] != 61:
                continue
            same = True
            for q in range(n):
                if src[p + q] != names[ns + q]:
                    same = False
                    break
            if not same:
                continue
            v = p + n + 1
            while v < e and (src[v] == 32 or src[v] == 9):
                v += 1
            if v < e and src[v] == 34:
                v += 1
            ve = v
            while ve < e and src[ve] != 59 and src[ve] != 34:
                ve += 1
            if ve > v and fs[k] < 0:
                while v < ve and _space(src[v]):
                    v += 1
                while ve > v and _space(src[ve - 1]):
                    ve -= 1
                fs[k] = v
                fe[k] = ve
            break
        q = _find(src, c, e, 59)
        if q < 0:
            break
        c = q + 1
    return 0


@kernel
def _set_cookie_value(src, s, e, names, ns, ne):
    """identity._set_cookie_value for one Set-Cookie value src[s:e]: (start, end) of the value, or (-1, -1)."""
    n = ne - ns
    if e - s < n + 1 or src[s + n] != 61:
        return -1, -1
    for q in range(n):
        if src[s + q] != names[ns + q]:
            return -1, -1
    v = s + n + 1
    ve = _find(src, v, e, 59)
    if ve < 0:
        ve = e
    while v < ve and _space(src[v]):
        v += 1
    while ve > v and _space(src[ve - 1]):
        ve -= 1
    while v < ve and src[v] == 34:
        v += 1
    while ve > v and src[ve - 1] == 34:
        ve -= 1
    if ve == v:
        return -1, -1
    if ve - v == 7 and src[v] == 100 and src[v + 1] == 101 and src[v + 2] == 108 and src[v + 3] == 101 \
            and src[v + 4] == 116 and src[v + 5] == 101 and src[v + 6] == 100:  # b"deleted"
        return -1, -1
    return v, ve


@kernel
def _hash_pieces(domain0, domain1, src, s, e, src2, s2, e2, key, out, o, scratch):
    """Identity.hash: keyed blake2b of domain + src[s:e] (+ b"\\0" + src2[s2:e2] when s2 >= 0)."""
    buf = scratch[SCRATCH_HASH:]
    buf[0] = domain0
    buf[1] = domain1
    n = copy_bytes(buf, 2, src, s, e)
    if s2 >= 0:
        buf[n] = 0
        n = copy_bytes(buf, n + 1, src2, s2, e2)
    return blake2b_hex(buf, 0, n, key, out, o, scratch)


@kernel
def _ipv4(out, o, a, p):
    for q in range(4):
        if q:
            out[o] = 46
            o += 1
        b = a[p + q]
        for d in range(OCTET[b, 3]):
            out[o + d] = OCTET[b, d]
        o += OCTET[b, 3]
    return o


@kernel
def _head(ref, buf, arena, rec, cbytes, cmeta):
    """Where a head's bytes are, read in place: (this batch's buffer or arena, or the carry store; start)."""
    if ref >= 0:
        if rec[ref, ARENA]:
            return arena, rec[ref, HS]
        return buf, rec[ref, HS]
    c = -1 - ref
    return cbytes, cmeta[c, HS]


@kernel
def _write_all(buf, arena, rec, rsp, rts, cbytes, cmeta, crow, cts, tx, txa, slots, names, name_off,
               order, n_visitor, member_k, words, word_off, word_starts, extra_names, extra_off, extra_slots, flags,
               py_slots, key, nokey, scratch, pre, fs, fe, out, ends, vis, result, given):
    """One JSON line per transaction into out; ends[i] = end of line i, vis[i] = offset of its visitor id."""
    ntx = tx.shape[0]
    host_k, ua_k, ref_k, cookie_k, ctype_k, setc_k, mhdr_k = slots[0], slots[1], slots[2], slots[3], slots[4], \
        slots[5], slots[6]
    o = 0
    for i in range(ntx):
        start = o
        result[i] = PYTHON
        ends[i] = o
        vis[i] = o
        if flags[0]:
            continue  # member key in the query: Python's rules
        if tx[i, TX_ALEN] != 4:
            continue  # IPv6 text is inet_ntop's (Python's)
        kq = tx[i, TX_REQ]
        if kq >= 0:
            qmeta, row, qts = rec[kq], rsp[kq], rts[kq]
        else:
            qmeta, row, qts = cmeta[-1 - kq], crow[-1 - kq], cts[-1 - kq]
        fwd = False
        for k in py_slots:
            if k >= 0 and row[2 * k] >= 0:
                fwd = True
        if fwd:
            continue
        src, hs = _head(kq, buf, arena, rec, cbytes, cmeta)  # the request head is src[hs:]; row spans from hs
        us = np.int64(np.rint(qts * 1e6))
        ps = 0  # the prefix in pre[ps:pe]; the client ip is pre[ps:b1]
        b1 = _ipv4(pre, 0, txa[i], 0)
        pre[b1] = 124
        b2 = _int(pre, b1 + 1, tx[i, TX_CPORT])
        pre[b2] = 124
        b3 = _ipv4(pre, b2 + 1, txa[i], 16)
        pre[b3] = 124
        pe = _int(pre, b3 + 1, tx[i, TX_SPORT])
        pre[pe] = 124
        pe += 1
        # event id: blake2b(id_prefix + b"%d|%d" % (request start in microseconds, index in the connection))
        sb = scratch[SCRATCH_HASH:]
        n = copy_bytes(sb, 0, pre, ps, pe)
        n = _int(sb, n, us)
        sb[n] = 124
        n = _int(sb, n + 1, qmeta[IDX])
        o = _put(out, o, K_EVENT_ID)
        o = blake2b_hex(sb, 0, n, nokey, out, o, scratch)
        o = _put(out, o, K_TS)
        o = _fixed(out, o, us, 6)
        o = _put(out, o, K_CLIENT_IP)
        o = _str(out, o, pre, ps, b1)
        o = _put(out, o, K_CLIENT_PORT)
        for p in range(b1 + 1, b2):
            out[o] = pre[p]
            o += 1
        o = _put(out, o, K_SERVER_IP)
        o = _str(out, o, pre, b2 + 1, b3)
        o = _put(out, o, K_SERVER_PORT)
        for p in range(b3 + 1, pe - 1):
            out[o] = pre[p]
            o += 1
        o = _put(out, o, K_METHOD)
        o = _str(out, o, src, hs, hs + qmeta[FA])
        if o < 0:
            o = start
            continue
        o = _put(out, o, K_HOST)
        vs = row[2 * host_k]
        if vs >= 0:
            ve = hs + row[2 * host_k + 1]
            vs += hs
            if vs < ve and src[vs] == 91:  # [v6]:port
                q = _find(src, vs + 1, ve, 93)
                vs, ve = vs + 1, (ve if q < 0 else q)
            else:
                q = ve - 1
                while q >= vs and src[q] != 58:
                    q -= 1
                if q >= vs:
                    ve = q
            for p in range(vs, ve):
                x = src[p]
                if x >= 128:
                    o = -1
                    break
                out[o] = x + 32 if 65 <= x <= 90 else x
                o += 1
            if o < 0:
                o = start
                continue
            # quotes or control bytes in a host: let orjson escape it the Python way
            for p in range(o - (ve - vs), o):
                if out[p] < 32 or out[p] == 34 or out[p] == 92:
                    o = -1
                    break
            if o < 0:
                o = start
                continue
        us0, ue = hs + qmeta[FB], hs + qmeta[FC]
        qm = _find(src, us0, ue, 63)
        pth_e = ue if qm < 0 else qm
        if src[us0] != 47:  # absolute-form (proxy) requests: Python strips the scheme and authority
            absolute = False
            for p in range(us0, pth_e - 2):
                if src[p] == 58 and src[p + 1] == 47 and src[p + 2] == 47:
                    absolute = True
                    break
            if absolute:
                o = start
                continue
        if qm >= 0 and qm + 1 < ue:
            if _find(src, qm + 1, ue, 35) >= 0 or flags[1] \
                    or _has_sensitive(src, qm + 1, ue, words, word_off, word_starts):
                o = start
                continue
        o = _put(out, o, K_URI)
        o = _str(out, o, src, us0, ue)
        if o < 0:
            o = start
            continue
        o = _put(out, o, K_PATH)
        o = _str(out, o, src, us0, pth_e)
        o = _put(out, o, K_QUERY)
        if qm >= 0:
            o = _str(out, o, src, qm + 1, ue)
        o = _put(out, o, K_REFERRER)
        vs = row[2 * ref_k]
        if vs >= 0:
            vs += hs
            ve = hs + row[2 * ref_k + 1]
            qm2 = _find(src, vs, ve, 63)
            if qm2 >= 0:
                fr = _find(src, qm2 + 1, ve, 35)
                qe = ve if fr < 0 else fr
                if qe == qm2 + 1 or flags[1] or _has_sensitive(src, qm2 + 1, qe, words, word_off, word_starts):
                    o = start
                    continue
            o = _str(out, o, src, vs, ve)
            if o < 0:
                o = start
                continue
        o = _put(out, o, K_UA)
        ua_s = row[2 * ua_k]
        ua_e = row[2 * ua_k + 1]
        if ua_s >= 0:
            ua_s += hs
            ua_e += hs
            o = _str(out, o, src, ua_s, ua_e)
            if o < 0:
                o = start
                continue
        else:
            ua_s = ua_e = hs
        o = _put(out, o, K_STATUS)
        kr = tx[i, TX_RESP]
        rsrc, rhs = src, hs  # the response head, once there is one
        sc_s = sc_e = -1
        answered = kr != NOREF
        rrow = row
        if answered:
            if kr >= 0:
                rmeta, rrow, rts_ = rec[kr], rsp[kr], rts[kr]
            else:
                rmeta, rrow, rts_ = cmeta[-1 - kr], crow[-1 - kr], cts[-1 - kr]
            rsrc, rhs = _head(kr, buf, arena, rec, cbytes, cmeta)
            o = _int(out, o, rmeta[FA])
            o = _put(out, o, K_RESP_BYTES)
            o = _int(out, o, tx[i, TX_BODY])
            o = _put(out, o, K_CTYPE)
            vs = rrow[2 * ctype_k]
            if vs >= 0:
                vs += rhs
                ve = rhs + rrow[2 * ctype_k + 1]
                q = _find(rsrc, vs, ve, 59)
                if q >= 0:
                    ve = q
                while vs < ve and _space(rsrc[vs]):
                    vs += 1
                while ve > vs and _space(rsrc[ve - 1]):
                    ve -= 1
                o0 = o
                o = _str(out, o, rsrc, vs, ve)
                if o < 0:
                    o = start
                    continue
                for p in range(o0, o):
                    if 65 <= out[p] <= 90:
                        out[p] += 32
            o = _put(out, o, K_LATENCY)
            o = _fixed(out, o, np.int64(np.rint((rts_ - qts) * 1e6)), 3)
            if rrow[2 * setc_k] >= 0:
                sc_s = rhs + rrow[2 * setc_k]
                sc_e = rhs + rrow[2 * setc_k + 1]
        else:
            o = _put(out, o, K_NULL)
            o = _put(out, o, K_RESP_BYTES)
            out[o] = 48
            o += 1
            o = _put(out, o, K_CTYPE)
            o = _put(out, o, K_LATENCY)
            o = _put(out, o, K_NULL)
        # visitor: a visitor cookie, else client ip + user agent; a response assigning one is Python's
        o = _put(out, o, K_VISITOR)
        vis[i] = o
        cs = row[2 * cookie_k]
        any_cookie = False
        for k in range(fs.shape[0]):
            fs[k] = -1
        if cs >= 0:
            _cookies(src, hs + cs, hs + row[2 * cookie_k + 1], names, name_off, order, fs, fe)
            for k in range(fs.shape[0]):
                if fs[k] >= 0:
                    any_cookie = True
        done = False
        if any_cookie:
            for k in range(n_visitor):
                if fs[k] >= 0 and fe[k] > fs[k]:
                    o = _hash_pieces(118, 58, src, fs[k], fe[k], src, -1, -1, key, out, o, scratch)
                    done = True
                    break
        given[GIVEN * i + 32] = 0
        if not done and sc_s >= 0:
            for k in range(n_visitor):
                vs, ve = _set_cookie_value(rsrc, sc_s, sc_e, names, name_off[k], name_off[k + 1])
                if vs >= 0:
                    # the response assigns the visitor cookie: the IP+UA id goes in the line, the cookie's id
                    # beside it, for capture.first_requests to hold the event until the cookie comes back
                    _hash_pieces(118, 58, rsrc, vs, ve, rsrc, -1, -1, key, given, GIVEN * i, scratch)
                    given[GIVEN * i + 32] = 1
                    break
        if not done:
            o = _hash_pieces(97, 58, pre, ps, b1, src, ua_s, ua_e, key, out, o, scratch)
        # member: a login Set-Cookie, else the member cookie, else the member header
        o = _put(out, o, K_MEMBER)
        done = False
        if member_k >= 0:
            if sc_s >= 0:
                vs, ve = _set_cookie_value(rsrc, sc_s, sc_e, names, name_off[member_k], name_off[member_k + 1])
                if vs >= 0:
                    o = _hash_pieces(109, 58, rsrc, vs, ve, rsrc, -1, -1, key, out, o, scratch)
                    done = True
            if not done and any_cookie and fs[member_k] >= 0 and fe[member_k] > fs[member_k]:
                o = _hash_pieces(109, 58, src, fs[member_k], fe[member_k], src, -1, -1, key, out, o, scratch)
                done = True
        if not done and mhdr_k >= 0:
            vs = row[2 * mhdr_k]
            if vs >= 0 and row[2 * mhdr_k + 1] > vs:
                o = _hash_pieces(109, 58, src, hs + vs, hs + row[2 * mhdr_k + 1], src, -1, -1, key, out, o,
                                 scratch)
        o = _put(out, o, K_VERSION)
        out[o] = 48 + qmeta[MINOR]
        o += 1
        o = _put(out, o, K_NO_RESPONSE)
        o = _put(out, o, K_FALSE if answered else K_TRUE)
        o = _put(out, o, K_EXTRA)
        first = True
        for x in range(extra_slots.shape[0]):
            k = extra_slots[x]
            vs, ve, xs = row[2 * k], row[2 * k + 1], src
            off = hs
            if vs < 0 or ve == vs:
                vs, ve, xs, off = -1, -1, rsrc, rhs
                if answered:
                    vs, ve = rrow[2 * k], rrow[2 * k + 1]
            if vs < 0 or ve == vs:
                continue
            if not first:
                out[o] = 44
                o += 1
            first = False
            for p in range(extra_off[x], extra_off[x + 1]):
                out[o] = extra_names[p]
                o += 1
            out[o] = 34
            o = _str(out, o + 1, xs, off + vs, off + ve)
            if o < 0:
                break
            out[o] = 34
            o += 1
        if o < 0:
            o = start
            continue
        out[o] = 125
        out[o + 1] = 125
        out[o + 2] = 10
        o += 3
        ends[i] = o
        result[i] = WRITTEN
    return o


def _given_ids(given: np.ndarray, result: np.ndarray) -> dict[int, bytes]:
    """Transaction -> the visitor id its response's Set-Cookie assigns, for the lines numba wrote."""
    rows = given.reshape(-1, GIVEN)
    return {i: rows[i, :32].tobytes() for i in np.flatnonzero((rows[:, 32] == 1) & (result == WRITTEN)).tolist()}


def _head_lengths(refs: np.ndarray, rec: np.ndarray, cmeta: np.ndarray) -> np.ndarray:
    n = np.zeros(len(refs), np.int64)
    here = refs >= 0
    n[here] = rec[refs[here], HE] - rec[refs[here], HS]
    carried = (refs < 0) & (refs != NOREF)
    c = -1 - refs[carried]
    n[carried] = cmeta[c, HE] - cmeta[c, HS]
    return n


class EventWriter:
    """The numba event writer set up from the EventBuilder's settings and the head scanner's slots."""

    def __init__(self, builder, heads):
        idn = builder.identity
        slot = heads.slot_of  # tracked header name -> index of its span pair in a scan row
        self.slots = np.array([slot["host"], slot["user-agent"], slot["referer"], slot["cookie"],
                               slot["content-type"], slot["set-cookie"],
                               slot.get(idn.member_header.decode("latin-1"), -1) if idn.member_header else -1],
                              np.int64)
        # cookie names: the visitor cookies in configured order, then the member cookie
        cookie_names = list(idn.visitor_cookies)
        self.member_k = -1
        if idn.member_cookie:
            if idn.member_cookie in cookie_names:
                self.member_k = cookie_names.index(idn.member_cookie)
            else:
                self.member_k = len(cookie_names)
                cookie_names.append(idn.member_cookie)
        self.names = np.frombuffer(b"".join(cookie_names) or b"\0", np.uint8).copy()
        self.name_off = np.cumsum([0] + [len(c) for c in cookie_names]).astype(np.int64)
        self.order = np.array(sorted(range(len(cookie_names)), key=lambda k: -len(cookie_names[k])), np.int64)
        self.n_visitor = len(idn.visitor_cookies)
        words = sorted(idn.scrub_words)
        ascii_words = all(w.isascii() for w in words)
        self.words = np.frombuffer("".join(words).encode() or b"\0", np.uint8).copy()
        self.word_off = np.cumsum([0] + [len(w.encode()) for w in words]).astype(np.int64)
        self.word_starts = np.zeros(256, np.uint8)
        for w in words:
            first = w.encode()[0]
            self.word_starts[first] = 1
            self.word_starts[ord(chr(first).upper()) if first < 128 else first] = 1
        # flags[0]: every event Python's (member parameter / IP anonymisation rules); [1]: a query is Python's
        self.flags = np.array([bool(idn.member_param or builder.anonymizes_ip), not ascii_words], np.int64)
        # a request carrying a forwarded-for header is Python's (trusted-proxy rules)
        self.py_slots = np.array([slot[h.decode("latin-1")] for h in idn.client_ip_headers] or [-1], np.int64)
        extras = [orjson.dumps(name)[:-1] + b'":' for name, _ in builder.extra]  # '"name":' as JSON text
        self.extra_names = np.frombuffer(b"".join(extras) or b"\0", np.uint8).copy()
        self.extra_off = np.cumsum([0] + [len(e) for e in extras]).astype(np.int64)
        self.extra_slots = np.array([slot[name] for name, _ in builder.extra], np.int64)
        self.extra_names_bytes = sum(len(e) + 4 for e in extras)  # name, quotes and comma
        self.key = key_state(idn.key)
        self.nokey = key_state(b"")
        self._out = np.zeros(1 << 16, np.uint8)
        # the kernel's work space (it allocates nothing): hashing, the event id prefix
        # ("client ip|client port|server ip|server port|"), each wanted cookie's value span
        self._scratch = np.zeros(SCRATCH_HASH + 70000, np.uint8)
        self._pre = np.zeros(128, np.uint8)
        self._fs = np.zeros(len(self.name_off) - 1, np.int64)
        self._fe = np.zeros(len(self.name_off) - 1, np.int64)

    def write(self, batch: FastBatch, carry):
        """(lines buffer, line ends, visitor-id offsets, per-transaction WRITTEN / PYTHON, {transaction: the
        visitor id a Set-Cookie assigns} of the written ones) for the transactions
        the fast path paired in `batch` (heads: records of this batch, or carried ones; carry = FlowTable.carry)."""
        buf, arena, rec, rsp, rts, tx, txa = batch.buf, batch.arena, batch.rec, batch.rsp, batch.rts, batch.tx, \
            batch.txa
        n = len(tx)
        cbytes, cmeta, crow, cts = carry
        # numba does not check bounds: the buffer must hold the worst case. Each header value is written once
        # (at most 6 bytes per byte: \u00XX), the uri twice (uri, path + query; its bytes escape to at most 2),
        # plus the fixed fields and the configured extra header names.
        heads = _head_lengths(tx[:, TX_REQ], rec, cmeta) + _head_lengths(tx[:, TX_RESP], rec, cmeta)
        need = 6 * int(heads.sum()) + (1024 + self.extra_names_bytes) * n
        if self._out.shape[0] < need:
            self._out = np.zeros(need, np.uint8)
        ends = np.empty(n, np.int64)
        vis = np.empty(n, np.int64)
        result = np.empty(n, np.int8)
        given = np.zeros(GIVEN * n, np.uint8)
        end = _write_all(buf, arena, rec, rsp, rts, cbytes, cmeta, crow, cts, tx, txa, self.slots, self.names,
                         self.name_off, self.order, self.n_visitor, self.member_k, self.words, self.word_off,
                         self.word_starts, self.extra_names, self.extra_off, self.extra_slots, self.flags,
                         self.py_slots, self.key,
                         self.nokey, self._scratch, self._pre, self._fs, self._fe, self._out, ends, vis, result,
                         given)
        return self._out[:end], ends, vis, result, _given_ids(given, result)
