"""A batch of raw hit JSON -> columns, without a dict per hit.

Decoding every hit into a dict (orjson) and then taking the dicts apart into columns cost
about 5 µs a hit, more than all the rest of the processing. Here a numba kernel scans the
batch once, finds each top-level field's value and checks its JSON type against what
processing accepts (the rules of processors.enrich.validate_hit), then writes the batch
again *transposed*: one JSON array per field, `[[event_id, ...], [ts, ...], ...]`, which a
single orjson.loads turns into the columns. Values are copied as they are on the wire, so
orjson still does all the decoding (escapes, UTF-8, numbers) and rejects anything that is
not JSON.

Any hit the kernel cannot vouch for (not an object, a field of the wrong type, a duplicate
or escaped key, a value it cannot delimit) makes `ColumnDecoder.decode` answer None, and the
caller takes the batch the slow way, hit by hit, to count and log what is wrong.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import orjson
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from config.rows import SPLIT_MARK, head_columns

# What a field's value may be, as a set of JSON kinds (bit flags).
STRING, NUMBER, INTEGER, NULL, OBJECT, ANY = 1, 2, 4, 8, 16, 64
# kinds found on the wire (INTEGER: a number without fraction or exponent)
_KIND_STRING, _KIND_FLOAT, _KIND_INT, _KIND_NULL, _KIND_OBJECT, _KIND_OTHER = 1, 2, 4, 8, 16, 32

# required[field]: may be absent, must be present, must be a non-empty string
OPTIONAL, PRESENT, NON_EMPTY = 0, 1, 2

_NOT_SEEN = -1

# Without numba's reference counting: with it, each call of a helper increfs and decrefs every array it
# is passed (atomic operations), which cost more than scanning the value itself. These kernels therefore
# allocate nothing. The helpers are inlined by LLVM into the scan loop. They run without the GIL.
_kernel = njit(cache=True, _nrt=False, nogil=True)
_inlined = njit(cache=True, _nrt=False, forceinline=True, nogil=True)


def _compile_names(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [n.encode() for n in names]
    blob = np.frombuffer(b"".join(encoded) + bytes(8), dtype=np.uint8).copy()  # padding: _key_is reads words
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    return blob, offsets


@_inlined
def _skip_ws(buf, p, end):
    while p < end:
        c = buf[p]
        if c != 32 and c != 10 and c != 13 and c != 9:
            break
        p += 1
    return p


@intrinsic
def _load8(typingctx, arr, i):
    """arr[i:i+8] (a uint8 array) as a little-endian uint64, one unaligned load; the caller keeps i + 8 <= len."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.load(builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer()), align=1)
    return types.uint64(arr, i), codegen


@intrinsic
def _ctz(typingctx, word):
    """The number of trailing zero bits of a non-zero uint64 (one instruction)."""
    def codegen(context, builder, sig, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))
    return types.uint64(types.uint64), codegen


ONES = np.uint64(0x0101010101010101)
HIGHS = np.uint64(0x8080808080808080)
QUOTES = np.uint64(0x2222222222222222)
BACKSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)
SPACES = np.uint64(0x2020202020202020)
ZEROS = np.uint64(0x3030303030303030)  # '0' in each byte
SIXES = np.uint64(0x7676767676767676)  # byte ^ '0' + 0x76 reaches the high bit when the byte is not a digit


@_inlined
def _string_end(buf, p, end):
    """p at the opening quote: the index after the closing quote, or -1 (unterminated / control byte).
    Eight bytes are tested at once (User-Agents and referrers run to a hundred bytes and more); the first
    quote, backslash or control byte among them is the lowest bit of the test's answer (a borrow only
    passes a byte upwards). A word may run past the hit into the next one: what is found there is too far."""
    p += 1
    n_buf = buf.shape[0]
    while p < end:
        if p + 8 <= n_buf:
            w = _load8(buf, p)
            a = w ^ QUOTES
            b = w ^ BACKSLASHES
            found = ((a - ONES) & ~a & HIGHS) | ((b - ONES) & ~b & HIGHS) | ((w - SPACES) & ~w & HIGHS)
            if not found:
                p += 8
                continue
            p += np.int64(_ctz(found) >> np.uint64(3))
            if p >= end:
                return -1
            c = buf[p]
            if c == 34:
                return p + 1
            if c == 92:
                p += 2
                continue
            return -1
        c = buf[p]
        if c == 34:
            return p + 1
        if c == 92:
            p += 2
            continue
        if c < 32:
            return -1
        p += 1
    return -1


@_inlined
def _nested_end(buf, p, end):
    """p at '{' or '[': the index after its matching close, or -1."""
    depth = 0
    while p < end:
        c = buf[p]
        if c == 34:
            p = _string_end(buf, p, end)
            if p < 0:
                return -1
            continue
        if c == 123 or c == 91:
            depth += 1
        elif c == 125 or c == 93:
            depth -= 1
            if depth == 0:
                return p + 1
        p += 1
    return -1


@_inlined
def _value(buf, p, end):
    """(end of the value starting at p, its kind), end -1 when it is not a JSON value the kernel can delimit."""
    c = buf[p]
    if c == 34:
        return _string_end(buf, p, end), _KIND_STRING
    if c == 123:
        return _nested_end(buf, p, end), _KIND_OBJECT
    if c == 91:
        return _nested_end(buf, p, end), _KIND_OTHER
    if c == 45 or 48 <= c <= 57:
        kind = _KIND_INT
        q = p + 1
        n_buf = buf.shape[0]
        while q < end:
            if q + 8 <= n_buf:  # a run of digits (timestamps, latencies) eight at a time, as in _string_end
                t = _load8(buf, q) ^ ZEROS
                other = ((t + SIXES) | t) & HIGHS  # the high bit of each byte that is not a digit
                if not other:
                    q += 8
                    continue
                q += np.int64(_ctz(other) >> np.uint64(3))
                if q >= end:
                    break
            d = buf[q]
            if 48 <= d <= 57:
                q += 1
            elif d == 46 or d == 101 or d == 69 or d == 43 or d == 45:
                kind = _KIND_FLOAT
                q += 1
            else:
                break
        return min(q, end), kind
    if c == 110 and p + 4 <= end and buf[p + 1] == 117 and buf[p + 2] == 108 and buf[p + 3] == 108:
        return p + 4, _KIND_NULL
    if c == 116 and p + 4 <= end and buf[p + 1] == 114 and buf[p + 2] == 117 and buf[p + 3] == 101:
        return p + 4, _KIND_OTHER
    if c == 102 and p + 5 <= end and buf[p + 1] == 97 and buf[p + 2] == 108 and buf[p + 3] == 115 \
            and buf[p + 4] == 101:
        return p + 5, _KIND_OTHER
    return -1, 0


@_inlined
def _is_name(buf, ks, names, name_off, f):
    """Whether the bytes at ks start with field f's name."""
    a, b = name_off[f], name_off[f + 1]
    for q in range(b - a):
        if buf[ks + q] != names[a + q]:
            return False
    return True


@_inlined
def _key_is(buf, ks, end, names, name_off, f):
    """f when the key starting at ks (after its quote) is field f's name, closed by a quote; else -1.
    A name of up to 16 bytes is compared as two words (its first 8 bytes and its last 8, which overlap)."""
    a = name_off[f]
    size = name_off[f + 1] - a
    if ks + size >= end or buf[ks + size] != 34:
        return -1
    if size > 16 or ks + 8 > end:
        return f if _is_name(buf, ks, names, name_off, f) else -1
    diff = _load8(buf, ks) ^ _load8(names, a)  # names has 8 bytes of padding after its last name
    if size < 8:
        diff &= (np.uint64(1) << np.uint64(8 * size)) - np.uint64(1)
    else:
        diff |= _load8(buf, ks + size - 8) ^ _load8(names, a + size - 8)
    return f if diff == 0 else -1


@_inlined
def _field_of(buf, ks, ke, names, name_off):
    """Index of the field named buf[ks:ke]; -1 if none."""
    for f in range(name_off.shape[0] - 1):
        if name_off[f + 1] - name_off[f] == ke - ks and _is_name(buf, ks, names, name_off, f):
            return f
    return -1


@_kernel
def _scan(buf, starts, ends, names, name_off, accept, required, spans, order):
    """Value span of each field of each hit into spans[hit, field] = (start, end); -1 when absent.
    Returns the first hit that is not a plain object with acceptable fields, or -1 when all are.
    order[j]: the field of the j-th key of the previous hit (work space, n_fields long): a producer writes
    its keys in one order, so each key is first compared with the name expected there."""
    n_fields = name_off.shape[0] - 1
    for j in range(n_fields):
        order[j] = j
    for i in range(starts.shape[0]):
        for f in range(n_fields):
            spans[i, f, 0] = _NOT_SEEN
        p = _skip_ws(buf, starts[i], ends[i])
        end = ends[i]
        if p >= end or buf[p] != 123:
            return i
        p = _skip_ws(buf, p + 1, end)
        j = 0  # position of the key in this hit
        if p < end and buf[p] == 125:
            p += 1
        else:
            while True:
                if p >= end or buf[p] != 34:
                    return i
                ks = p + 1
                f = _key_is(buf, ks, end, names, name_off, order[j] if j < n_fields else 0)
                if f >= 0:  # the usual case: the key the previous hit had here, no need to scan it
                    ke = ks + name_off[f + 1] - name_off[f] + 1
                else:
                    ke = _string_end(buf, p, end)
                    if ke < 0:
                        return i
                    for q in range(ks, ke - 1):
                        if buf[q] == 92:  # an escaped key: let orjson read this hit
                            return i
                    f = _field_of(buf, ks, ke - 1, names, name_off)
                p = _skip_ws(buf, ke, end)
                if p >= end or buf[p] != 58:
                    return i
                p = _skip_ws(buf, p + 1, end)
                if p >= end:
                    return i
                ve, kind = _value(buf, p, end)
                if ve < 0:
                    return i
                if f >= 0:
                    if spans[i, f, 0] != _NOT_SEEN or (accept[f] & kind) == 0:
                        return i  # a duplicate key (orjson keeps the last) or a type processing rejects
                    spans[i, f, 0] = p
                    spans[i, f, 1] = ve
                    if j < n_fields:
                        order[j] = f
                j += 1
                p = _skip_ws(buf, ve, end)
                if p < end and buf[p] == 44:
                    p = _skip_ws(buf, p + 1, end)
                    continue
                if p < end and buf[p] == 125:
                    p += 1
                    break
                return i
        if _skip_ws(buf, p, end) != end:
            return i
        for f in range(n_fields):
            if required[f] != OPTIONAL and spans[i, f, 0] == _NOT_SEEN:
                return i
            if required[f] == NON_EMPTY and spans[i, f, 1] - spans[i, f, 0] <= 2:  # the empty string ""
                return i
    return -1


@_kernel
def _transpose(buf, spans, out, cursor, head):
    """`[[field 0 of every hit], [field 1 ...], ...]` into out; returns its length. Each field's array gets
    its own region of out, and the hits are copied in order (reading buf once, front to back). With
    0 < head < fields, two documents: `[[field 0], ... [field head-1]][[field head], ...]`."""
    n, n_fields = spans.shape[0], spans.shape[1]
    for f in range(n_fields):
        cursor[f] = 0
    # each field's values' length, hit by hit: spans in memory order (field by field, a hit's next span was
    # 352 bytes on, another cache line each: 0.20 us a hit of the 100k crowd, now 0.13)
    for i in range(n):
        for f in range(n_fields):
            s, e = spans[i, f, 0], spans[i, f, 1]
            cursor[f] += 4 if s == _NOT_SEEN else e - s
    o = 1
    for f in range(n_fields):
        size = cursor[f]
        cursor[f] = o + 1  # after the field's '['
        o += size + n + 2  # '[' + values + (n - 1) commas + ']' + the ',' or ']' after it
        if f + 1 == head:
            o += 1  # the second document's '['
    out[0] = 91
    for f in range(n_fields):
        out[cursor[f] - 1] = 91
    for i in range(n):
        for f in range(n_fields):
            o = cursor[f]
            s, e = spans[i, f, 0], spans[i, f, 1]
            if s == _NOT_SEEN:
                out[o] = 110
                out[o + 1] = 117
                out[o + 2] = 108
                out[o + 3] = 108
                o += 4
            else:
                uo, us = np.uint64(o), np.uint64(s)
                for q in range(np.uint64(e - s)):
                    out[uo + q] = buf[us + q]
                o += e - s
            out[o] = 44  # ',' between values; the last one of a field becomes its ']'
            cursor[f] = o + 1
    for f in range(n_fields):
        out[cursor[f] - 1] = 93
        out[cursor[f]] = 44 if f + 1 < n_fields else 93
        if f + 1 == head and head < n_fields:
            out[cursor[f]] = 93
            out[cursor[f] + 1] = 91
    return cursor[n_fields - 1] + 1


class JoinedValues(Sequence[bytes]):
    """Raw values as one bytes object and the offset where each ends: a batch that crosses a pipe as two
    objects instead of one per value, and that the column decoder scans as it is. A value is cut out
    only when asked for (the hit-by-hit path)."""

    def __init__(self, data: bytes, ends: np.ndarray):
        self.data = data
        self.ends = ends

    @classmethod
    def of(cls, values: Sequence[bytes]) -> "JoinedValues":
        """TypeError when some value is not bytes."""
        data = b"".join(values)
        return cls(data, np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values))))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self.ends)
        if not -n <= i < n:
            raise IndexError("value index out of range")
        i %= n
        return self.data[int(self.ends[i - 1]) if i else 0:int(self.ends[i])]

    def __iter__(self) -> Iterator[bytes]:
        start = 0
        for end in self.ends.tolist():
            yield self.data[start:end]
            start = end


class ColumnDecoder:
    """Decodes batches of hit JSON into {field: list of values} for the given fields.

    `accept[field]` is the set of JSON kinds (STRING | NUMBER | INTEGER | NULL | OBJECT | ANY)
    a value may have; `required[field]` is OPTIONAL (the default), PRESENT or NON_EMPTY (a string
    of at least one character). `head`: decode() reads only the first `head` fields; the text still holds
    every field (config/rows.py text_columns reads them all), in two documents."""

    def __init__(self, fields: Sequence[str], accept: dict[str, int], required: dict[str, int],
                 head: int | None = None):
        self.fields = tuple(fields)
        self.head = len(self.fields) if head is None else head
        self._names, self._name_off = _compile_names(self.fields)
        self._accept = np.array([_kinds(accept.get(f, ANY)) for f in self.fields], dtype=np.int64)
        self._required = np.array([required.get(f, 0) for f in self.fields], dtype=np.int64)

    def decode(self, values: Sequence[Any], text: bytes | None = None) -> tuple[dict[str, list], bytes] | None:
        """(the batch's first `head` columns, the JSON text of all of them, see transpose), or None when some
        value is not bytes of a hit the kernel vouches for. `text`: transpose(values), when it was already
        made (e.g. by the process that read the values)."""
        text = self.transpose(values) if text is None else text
        if text is None:
            return None
        try:
            # the other columns are checked too: the history writer decodes them (a worker that only reads
            # the head decodes 16 of 22 hit columns: 0.8 instead of 1.1 us a hit)
            cols = head_columns(text)
            if self.head < len(self.fields) and len(cols) != self.head:
                return None
        except (orjson.JSONDecodeError, ValueError):
            return None
        return dict(zip(self.fields, cols)), text

    def transpose(self, values: Sequence[Any]) -> bytes | None:
        """The batch as `[[field 0 of each hit], ...]` JSON text, or None when the kernel cannot vouch for
        some hit. The kernels release the GIL: a reading thread can do this while a batch is processed."""
        n = len(values)
        if not n:
            return self._text_of_empty()
        if not isinstance(values, JoinedValues):
            try:
                values = JoinedValues.of(values)
            except TypeError:  # str or dict values (tests, the Faust agent path): the slow path reads them
                return None
        buf = np.frombuffer(values.data, dtype=np.uint8)
        ends = values.ends
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1]
        spans = np.empty((n, len(self.fields), 2), dtype=np.int64)
        order = np.empty(len(self.fields), dtype=np.int64)
        if _scan(buf, starts, ends, self._names, self._name_off, self._accept, self._required, spans, order) >= 0:
            return None
        out = np.empty(len(buf) + n * len(self.fields) * 5 + 4 * len(self.fields) + 40, dtype=np.uint8)
        cursor = np.empty(len(self.fields), dtype=np.int64)
        size = _transpose(buf, spans, out, cursor, self.head)
        if self.head < len(self.fields):  # the second document ends with the first's length
            mark = np.frombuffer(SPLIT_MARK % (int(cursor[self.head - 1]) + 1), dtype=np.uint8)
            out[size - 1:size - 1 + len(mark)] = mark
            size += len(mark) - 1
        return out[:size].tobytes()

    def _text_of_empty(self) -> bytes:
        first = b"[" + b",".join([b"[]"] * self.head) + b"]"
        if self.head == len(self.fields):
            return first
        return first + b"[" + b",".join([b"[]"] * (len(self.fields) - self.head)) + SPLIT_MARK % len(first)


def _kinds(accept: int) -> int:
    """Wire kinds (the _KIND_* bits) allowed by an accept set."""
    if accept & ANY:
        return 0xFF
    kinds = 0
    if accept & STRING:
        kinds |= _KIND_STRING
    if accept & NUMBER:
        kinds |= _KIND_FLOAT | _KIND_INT
    if accept & INTEGER:
        kinds |= _KIND_INT
    if accept & NULL:
        kinds |= _KIND_NULL
    if accept & OBJECT:
        kinds |= _KIND_OBJECT
    return kinds
