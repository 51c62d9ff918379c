"""BLAKE2b (RFC 7693) in numba: the same ids as hashlib.blake2b, without leaving the kernel.

The event writer (capture.eventwriter) hashes every transaction's event id and
visitor key inside numba; calling back into hashlib per event would cost more than
the rest of the event. Only what the events use is here: 16-byte digests, with or
without a key of at most 64 bytes. tests/capture/test_eventwriter.py checks it
against hashlib.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from capture.jit import inline_kernel, kernel

IV = np.array([0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
               0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179], np.uint64)
SIGMA = np.array([
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
], np.int64)
# the message word order of each of the 12 rounds, flat; unsigned, so indexing it needs no negative-index check
SIG = SIGMA[[r % 10 for r in range(12)]].reshape(-1).astype(np.uint64)
DIGEST = 16
HEX = np.frombuffer(b"0123456789abcdef", np.uint8).copy()


@inline_kernel
def _rotr(x, n):
    return (x >> np.uint64(n)) | (x << np.uint64(64 - n))


@inline_kernel
def _g(a, b, c, d, x, y):
    a = a + b + x
    d = _rotr(d ^ a, 32)
    c = c + d
    b = _rotr(b ^ c, 24)
    a = a + b + y
    d = _rotr(d ^ a, 16)
    c = c + d
    b = _rotr(b ^ c, 63)
    return a, b, c, d


@kernel
def _compress(h, block, t, last):
    """One 128-byte block (uint8[128], read as 16 little-endian words) into the state h; t = bytes hashed so
    far including this block. The working vector lives in scalars (registers), not an array."""
    m = block.view(np.uint64)
    v0, v1, v2, v3, v4, v5, v6, v7 = h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
    v8, v9, v10, v11, v12, v13, v14, v15 = IV[0], IV[1], IV[2], IV[3], IV[4], IV[5], IV[6], IV[7]
    v12 ^= np.uint64(t)
    if last:
        v14 = ~v14
    for r in range(12):
        b = 16 * r
        v0, v4, v8, v12 = _g(v0, v4, v8, v12, m[SIG[b]], m[SIG[b + 1]])
        v1, v5, v9, v13 = _g(v1, v5, v9, v13, m[SIG[b + 2]], m[SIG[b + 3]])
        v2, v6, v10, v14 = _g(v2, v6, v10, v14, m[SIG[b + 4]], m[SIG[b + 5]])
        v3, v7, v11, v15 = _g(v3, v7, v11, v15, m[SIG[b + 6]], m[SIG[b + 7]])
        v0, v5, v10, v15 = _g(v0, v5, v10, v15, m[SIG[b + 8]], m[SIG[b + 9]])
        v1, v6, v11, v12 = _g(v1, v6, v11, v12, m[SIG[b + 10]], m[SIG[b + 11]])
        v2, v7, v8, v13 = _g(v2, v7, v8, v13, m[SIG[b + 12]], m[SIG[b + 13]])
        v3, v4, v9, v14 = _g(v3, v4, v9, v14, m[SIG[b + 14]], m[SIG[b + 15]])
    h[0] ^= v0 ^ v8
    h[1] ^= v1 ^ v9
    h[2] ^= v2 ^ v10
    h[3] ^= v3 ^ v11
    h[4] ^= v4 ^ v12
    h[5] ^= v5 ^ v13
    h[6] ^= v6 ^ v14
    h[7] ^= v7 ^ v15


def key_state(key: bytes) -> np.ndarray:
    """The state after the key block: a keyed hash starts from it (the key block is the same every time).
    uint64[9]: h[0:8] and, in [8], the byte count already hashed (0 without a key, 128 with one)."""
    if len(key) > 64:
        raise ValueError("a blake2b key is at most 64 bytes")
    st = np.zeros(9, np.uint64)
    st[:8] = IV
    st[0] ^= np.uint64(0x01010000 | (len(key) << 8) | DIGEST)
    if key:
        block = np.zeros(128, np.uint8)
        block[:len(key)] = np.frombuffer(key, np.uint8)
        _keyed_start(st, block)
    return st


@njit(cache=True)
def _keyed_start(st, block):
    h = st[:8].copy()
    _compress(h, block, 128, False)
    st[:8] = h
    st[8] = 128


@kernel
def blake2b_hex(data, s, n, start, out, o, scratch):
    """hashlib.blake2b(data[s:s + n], key=K, digest_size=16).hexdigest() written as 32 ASCII bytes at out[o:];
    start = key_state(K). scratch: uint8[320] work space. Returns o + 32.

    Keyed with nothing left to hash (n == 0) is the one case where the key block is the last block: it is
    not served from the prepared state."""
    block = scratch[:128]
    h = scratch[256:320].view(np.uint64)  # scratch, not np.empty: an allocation per hash costs more than a block
    for i in range(8):
        h[i] = start[i]
    t = np.int64(start[8])
    if n == 0 and t > 0:
        raise ValueError("empty keyed input")
    p = 0
    while n - p > 128:
        for i in range(128):
            block[i] = data[s + p + i]
        p += 128
        t += 128
        _compress(h, block, t, False)
    rest = n - p
    for i in range(rest):
        block[i] = data[s + p + i]
    for i in range(rest, 128):
        block[i] = 0
    t += rest
    _compress(h, block, t, True)
    return _hex(h, out, o)


@kernel
def _hex(h, out, o):
    for i in range(DIGEST):
        byte = (h[i // 8] >> np.uint64(8 * (i % 8))) & np.uint64(0xFF)
        out[o + 2 * i] = HEX[byte >> np.uint64(4)]
        out[o + 2 * i + 1] = HEX[byte & np.uint64(15)]
    return o + 2 * DIGEST
