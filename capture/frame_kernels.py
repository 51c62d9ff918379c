"""L2-L4 header decode of a whole FrameBatch in one numba kernel.

For every frame the kernel finds the IP/TCP headers (Ethernet with any number of
802.1Q/QinQ tags, Linux SLL/SLL2, BSD NULL/LOOP, raw IP), skips IPv6 extension
headers, and reports the flow key, direction, seq number, flags and payload span.
Payload sizes come from the IP length, not the captured length: segment offload
gives packets larger than the MTU and a snaplen cut leaves fewer bytes than declared
(the difference is reported so the reassembler treats it as a gap).

Python never touches the bytes of pure ACKs: `needs_python` selects the frames
with payload or SYN/FIN/RST.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from capture.frames import FrameBatch
from capture.jit import hot_kernel, inline_kernel, jit, kernel

KIND_TCP = 0
KIND_NON_TCP = 1       # not IP, not TCP, or a fragment
KIND_MALFORMED = 2     # headers cut short or inconsistent
KIND_UNSUPPORTED = 3   # link type we do not decode

TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_ACK = 0x10


class Decoded(NamedTuple):
    kind: np.ndarray      # int8, KIND_*
    fhash: np.ndarray     # int64, direction-independent flow key
    dirn: np.ndarray      # int8, 0 when src is the canonical 'a' endpoint
    sport: np.ndarray     # int32
    dport: np.ndarray     # int32
    seq: np.ndarray       # int64 (uint32 value)
    ack: np.ndarray       # int64 (uint32 value), the acknowledgment number
    flags: np.ndarray     # int32, TCP flags
    poff: np.ndarray      # int64, payload start in buf
    plen: np.ndarray      # int32, payload bytes captured
    pwire: np.ndarray     # int32, payload bytes on the wire (from the IP length)
    src_off: np.ndarray   # int64, source address in buf
    dst_off: np.ndarray   # int64
    alen: np.ndarray      # int8, 4 or 16
    truncated: np.ndarray  # bool, captured fewer bytes than the packet had


@jit(inline="always")
def _be16(buf, p):
    return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])


@jit(inline="always")
def _be32(buf, p):
    return (np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16) | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3])


@jit()
def _decode(buf, offsets, caplens, wirelens, linktypes):
    n = offsets.shape[0]
    kind = np.full(n, 2, np.int8)
    fhash = np.zeros(n, np.int64)
    dirn = np.zeros(n, np.int8)
    sport = np.zeros(n, np.int32)
    dport = np.zeros(n, np.int32)
    seq = np.zeros(n, np.int64)
    ack = np.zeros(n, np.int64)
    flags = np.zeros(n, np.int32)
    poff = np.zeros(n, np.int64)
    plen = np.zeros(n, np.int32)
    pwire = np.zeros(n, np.int32)
    src_off = np.zeros(n, np.int64)
    dst_off = np.zeros(n, np.int64)
    alen = np.zeros(n, np.int8)
    truncated = np.zeros(n, np.bool_)
    for i in range(n):
        o = offsets[i]
        cap = np.int64(caplens[i])
        end = o + cap
        wire_end = o + max(np.int64(wirelens[i]), cap)
        truncated[i] = wirelens[i] > caplens[i]
        lt = linktypes[i]
        et = np.int64(-1)
        p = o
        if lt == 1:  # Ethernet
            if cap < 14:
                continue
            et = _be16(buf, o + 12)
            p = o + 14
        elif lt == 113:  # Linux SLL
            if cap < 16:
                continue
            et = _be16(buf, o + 14)
            p = o + 16
        elif lt == 276:  # Linux SLL2
            if cap < 20:
                continue
            et = _be16(buf, o)
            p = o + 20
        elif lt == 0 or lt == 108:  # BSD NULL (host order) / OpenBSD LOOP (network order)
            if cap < 4:
                continue
            fam = _be32(buf, o)
            if fam > 0xFFFF:  # little-endian host wrote it
                fam = np.int64(buf[o]) | (np.int64(buf[o + 1]) << 8)
            p = o + 4
            if fam == 2:
                et = 0x0800
            elif fam == 10 or fam == 24 or fam == 28 or fam == 30:
                et = 0x86DD
            else:
                kind[i] = 1
                continue
        elif lt == 101 or lt == 228 or lt == 229 or lt == 12 or lt == 14:  # raw IP
            if cap < 1:
                continue
            v = buf[o] >> 4
            et = 0x0800 if v == 4 else (0x86DD if v == 6 else -1)
        else:
            kind[i] = 3
            continue
        # 802.1Q / 802.1ad / old QinQ tags, any depth
        while (et == 0x8100 or et == 0x88A8 or et == 0x9100) and p + 4 <= end:
            et = _be16(buf, p + 2)
            p += 4
        l4 = np.int64(0)
        ip_end = np.int64(0)
        if et == 0x0800:
            if p + 20 > end or (buf[p] >> 4) != 4:
                continue
            ihl = np.int64(buf[p] & 0x0F) * 4
            if ihl < 20 or p + ihl > end:
                continue
            total = _be16(buf, p + 2)
            if (_be16(buf, p + 6) & 0x3FFF) != 0 or buf[p + 9] != 6:
                kind[i] = 1  # fragment or not TCP
                continue
            ip_end = p + total if total >= ihl else wire_end  # 0 = segment offload
            src_off[i] = p + 12
            dst_off[i] = p + 16
            alen[i] = 4
            l4 = p + ihl
        elif et == 0x86DD:
            if p + 40 > end or (buf[p] >> 4) != 6:
                continue
            plen6 = _be16(buf, p + 4)
            nh = np.int64(buf[p + 6])
            q = p + 40
            ip_end = q + plen6 if plen6 > 0 else wire_end  # 0 = jumbogram / offload
            ok = True
            while True:
                if nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140 or nh == 51:
                    if q + 2 > end:
                        ok = False
                        break
                    nxt = np.int64(buf[q])
                    # the length byte counts 8-byte units after the first; AH's (51) 4-byte words after the first two
                    q += (np.int64(buf[q + 1]) + 2) * 4 if nh == 51 else (np.int64(buf[q + 1]) + 1) * 8
                    nh = nxt
                elif nh == 44:  # fragment header: only an unfragmented one is TCP we can read
                    if q + 8 > end:
                        ok = False
                        break
                    if (_be16(buf, q + 2) & 0xFFF9) != 0:
                        nh = -1
                        break
                    nh = np.int64(buf[q])
                    q += 8
                else:
                    break
            if not ok:
                continue
            if nh != 6:
                kind[i] = 1
                continue
            src_off[i] = p + 8
            dst_off[i] = p + 24
            alen[i] = 16
            l4 = q
        else:
            kind[i] = 1
            continue
        if l4 + 20 > end:
            truncated[i] = True
            continue
        doff = np.int64(buf[l4 + 12] >> 4) * 4
        if doff < 20 or l4 + doff > end:
            truncated[i] = True
            continue
        ps = l4 + doff
        pw = ip_end - ps
        if pw < 0:
            continue
        pc = min(end, ip_end) - ps
        if pc < 0:
            pc = 0
        if pc < pw:
            truncated[i] = True
        sp = _be16(buf, l4)
        dp = _be16(buf, l4 + 2)
        # direction-independent key: order the endpoints, then FNV-1a over both
        al = np.int64(alen[i])
        so = src_off[i]
        do = dst_off[i]
        cmp = 0
        for k in range(al):
            if buf[so + k] != buf[do + k]:
                cmp = -1 if buf[so + k] < buf[do + k] else 1
                break
        if cmp == 0:
            cmp = -1 if sp <= dp else 1
        if cmp < 0:
            ao, ap, bo, bp = so, sp, do, dp
            dirn[i] = 0
        else:
            ao, ap, bo, bp = do, dp, so, sp
            dirn[i] = 1
        h = np.uint64(14695981039346656037)
        prime = np.uint64(1099511628211)
        for k in range(al):
            h = (h ^ np.uint64(buf[ao + k])) * prime
        h = (h ^ np.uint64(ap >> 8)) * prime
        h = (h ^ np.uint64(ap & 0xFF)) * prime
        for k in range(al):
            h = (h ^ np.uint64(buf[bo + k])) * prime
        h = (h ^ np.uint64(bp >> 8)) * prime
        h = (h ^ np.uint64(bp & 0xFF)) * prime
        h = (h ^ np.uint64(al)) * prime
        fhash[i] = np.int64(h)
        sport[i] = sp
        dport[i] = dp
        seq[i] = _be32(buf, l4 + 4)
        ack[i] = _be32(buf, l4 + 8)
        flags[i] = buf[l4 + 13]
        poff[i] = ps
        plen[i] = pc
        pwire[i] = pw
        kind[i] = 0
    return kind, fhash, dirn, sport, dport, seq, ack, flags, poff, plen, pwire, src_off, dst_off, alen, truncated


def decode_batch(batch: FrameBatch) -> Decoded:
    """Decode every frame's L2-L4 headers (one numba call per batch)."""
    return Decoded(*_decode(batch.buf, batch.offsets, batch.caplens, batch.wirelens, batch.linktypes))


def needs_python(d: Decoded) -> np.ndarray:
    """Indices of TCP frames that carry payload or SYN/FIN/RST (pure ACKs are only counted)."""
    return np.flatnonzero((d.kind == KIND_TCP) & ((d.pwire > 0) | ((d.flags & (TH_SYN | TH_FIN | TH_RST)) != 0)))


# -- HTTP heads that fit in one packet ---------------------------------------------------
# The common case: a request or response head starts at the first payload byte and ends
# inside the same packet. This kernel finds its request/status line and the value spans of
# the header names we track, so Python never runs a regex over it. Anything unusual
# (folding, duplicate tracked headers, bare CR/LF, odd versions) is left to the Python
# parser (kind 0), which gives the same answer on the slow path.

HEAD_NONE = 0
HEAD_REQUEST = 1
HEAD_RESPONSE = 2


class Heads(NamedTuple):
    kind: np.ndarray     # int8, HEAD_*
    end: np.ndarray      # int32, head length incl. the blank line (relative to payload start)
    a: np.ndarray        # int32, request: method end; response: status code
    b: np.ndarray        # int32, request: uri start
    c: np.ndarray        # int32, request: uri end
    minor: np.ndarray    # int8, HTTP/1.<minor>
    spans: np.ndarray    # int32 [n, 2K], value start/end of each tracked name, -1 when absent


@hot_kernel
def _at(buf, p):
    """buf[p] for p >= 0, indexed unsigned: no wrap-around check per byte (see capture.jit)."""
    return buf[np.uint64(p)]


@inline_kernel
def _lower(x):
    return x + 32 if 65 <= x <= 90 else x


# SWAR constants: a word has a zero byte when (w - ONES) & ~w & HIGHS is not 0
ONES = np.uint64(0x0101010101010101)
HIGHS = np.uint64(0x8080808080808080)
CRS = np.uint64(0x0D0D0D0D0D0D0D0D)
LFS = np.uint64(0x0A0A0A0A0A0A0A0A)


@inline_kernel
def _line_end(buf, words, p, e):
    """The first CR or LF in buf[p:e] (e when none). words: buf as little-endian uint64 words; eight bytes are
    tested at once (header values such as User-Agent and Cookie run to a hundred bytes or more)."""
    while p < e and p & 7:
        x = buf[p]
        if x == 13 or x == 10:
            return p
        p += 1
    while p + 8 <= e:
        w = words[p >> 3]
        a = w ^ CRS
        b = w ^ LFS
        if ((a - ONES) & ~a & HIGHS) | ((b - ONES) & ~b & HIGHS):
            break
        p += 8
    while p < e and buf[p] != 13 and buf[p] != 10:
        p += 1
    return p


@kernel
def scan_one_head(buf, s, e, names, name_off, spans, r):
    """One HTTP head starting at s, complete before e, with every rule of the one-packet fast path.

    Fills spans[r] (value spans of the tracked header names, relative to s).

    Returns (kind, head length, a, b, c, minor); kind 0 = not a simple complete head."""
    k_names = name_off.shape[0] - 1
    for q in range(2 * k_names):
        spans[r, q] = -1
    words = buf[:buf.shape[0] - buf.shape[0] % 8].view(np.uint64)
    fa = 0
    fb = 0
    fc = 0
    minor = 0
    if e - s < 16:
        return 0, 0, 0, 0, 0, 0
    p = s
    is_resp = False
    if _at(buf, s) == 72 and _at(buf, s + 1) == 84 and _at(buf, s + 2) == 84 and _at(buf, s + 3) == 80 \
            and _at(buf, s + 4) == 47:
        if _at(buf, s + 5) != 49 or _at(buf, s + 6) != 46 or (_at(buf, s + 7) != 48 and _at(buf, s + 7) != 49) \
                or _at(buf, s + 8) != 32:
            return 0, 0, 0, 0, 0, 0
        code = 0
        for q in range(s + 9, s + 12):
            dg = _at(buf, q)
            if dg < 48 or dg > 57:
                return 0, 0, 0, 0, 0, 0
            code = code * 10 + (dg - 48)
        if _at(buf, s + 12) != 32 and _at(buf, s + 12) != 13:
            return 0, 0, 0, 0, 0, 0
        is_resp = True
        fa = code
        minor = _at(buf, s + 7) - 48
        p = s + 12
    else:
        while p < e and 65 <= _at(buf, p) <= 90:
            p += 1
        if p == s or p - s > 20 or p >= e or _at(buf, p) != 32:
            return 0, 0, 0, 0, 0, 0
        fa = p - s
        p += 1
        fb = p - s
        while p < e and _at(buf, p) > 32 and _at(buf, p) != 127:
            p += 1
        if p == fb + s or p + 10 > e or _at(buf, p) != 32:
            return 0, 0, 0, 0, 0, 0
        fc = p - s
        if not (_at(buf, p + 1) == 72 and _at(buf, p + 2) == 84 and _at(buf, p + 3) == 84 and _at(buf, p + 4) == 80
                and _at(buf, p + 5) == 47 and _at(buf, p + 6) == 49 and _at(buf, p + 7) == 46
                and (_at(buf, p + 8) == 48 or _at(buf, p + 8) == 49)):
            return 0, 0, 0, 0, 0, 0
        minor = _at(buf, p + 8) - 48
        p += 9
    if is_resp:
        while p < e and _at(buf, p) != 13 and _at(buf, p) != 10:
            p += 1
    if p + 1 >= e or _at(buf, p) != 13 or _at(buf, p + 1) != 10:
        return 0, 0, 0, 0, 0, 0
    p += 2
    done = False
    while p < e:
        ls = p
        p = _line_end(buf, words, p, e)
        if p + 1 >= e or _at(buf, p) != 13 or _at(buf, p + 1) != 10:
            return 0, 0, 0, 0, 0, 0
        le = p
        p += 2
        if le == ls:
            done = True
            break
        if _at(buf, ls) == 32 or _at(buf, ls) == 9:
            return 0, 0, 0, 0, 0, 0
        colon = ls
        while colon < le and _at(buf, colon) != 58:
            colon += 1
        if colon == le:
            continue
        ne = colon
        while ne > ls and (_at(buf, ne - 1) == 32 or _at(buf, ne - 1) == 9):
            ne -= 1
        nlen = ne - ls
        match = -1
        for k in range(k_names):
            if name_off[k + 1] - name_off[k] != nlen:
                continue
            same = True
            for q in range(nlen):
                if _lower(_at(buf, ls + q)) != names[name_off[k] + q]:
                    same = False
                    break
            if same:
                match = k
                break
        if match < 0:
            continue
        if spans[r, 2 * match] >= 0:
            return 0, 0, 0, 0, 0, 0
        vs = colon + 1
        while vs < le and (_at(buf, vs) == 32 or _at(buf, vs) == 9):
            vs += 1
        ve = le
        while ve > vs and (_at(buf, ve - 1) == 32 or _at(buf, ve - 1) == 9):
            ve -= 1
        spans[r, 2 * match] = vs - s
        spans[r, 2 * match + 1] = ve - s
    if not done:
        return 0, 0, 0, 0, 0, 0
    return (HEAD_RESPONSE if is_resp else HEAD_REQUEST), p - s, fa, fb, fc, minor


@jit()
def _scan_heads(buf, poff, plen, names, name_off):
    n = poff.shape[0]
    k_names = name_off.shape[0] - 1
    kind = np.zeros(n, np.int8)
    hend = np.zeros(n, np.int32)
    fa = np.zeros(n, np.int32)
    fb = np.zeros(n, np.int32)
    fc = np.zeros(n, np.int32)
    minor = np.zeros(n, np.int8)
    spans = np.full((n, 2 * k_names), -1, np.int32)
    for i in range(n):
        kind[i], hend[i], fa[i], fb[i], fc[i], minor[i] = scan_one_head(
            buf, poff[i], poff[i] + plen[i], names, name_off, spans, i)
    return kind, hend, fa, fb, fc, minor, spans


def scan_heads(batch_buf: np.ndarray, poff: np.ndarray, plen: np.ndarray, names: np.ndarray,
               name_off: np.ndarray) -> Heads:
    """Find complete one-packet heads among the given payloads (names: lower-case, concatenated)."""
    return Heads(*_scan_heads(batch_buf, poff, plen, names, name_off))
