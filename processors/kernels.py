"""numba kernels for the per-batch aggregation, each with a pure-numpy twin.

Inputs are flat arrays over one batch of hits: a minute index per hit (0..M-1),
small integer codes per hit (interned dimension values), flags and latencies.
Outputs are dense per-minute matrices that processors/counters.py turns into
Redis increments. The numpy twins (np.add.at) give identical results and are used
when `settings.processing.use_numba` is False (and by the benchmark's comparison).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from config.live_layout import COUNTER_FIELDS, LAT_BUCKETS, LAT_BUCKETS_PER_OCTAVE  # noqa: F401 (K.COUNTER_FIELDS)

# Kinds of hits (processors/enrich.py KIND_* in this order).
K_PAGEVIEW, K_STATIC, K_REDIRECT, K_ERROR, K_BOT, K_OTHER = range(6)


def latency_bucket_np(ms: np.ndarray) -> np.ndarray:
    b = np.floor(np.log2(np.maximum(ms, 0.0) + 1.0) * LAT_BUCKETS_PER_OCTAVE)
    return np.minimum(b, LAT_BUCKETS - 1).astype(np.int64)


def minute_index(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct epoch minutes sorted, index of each hit's minute in them)."""
    minutes = np.floor(ts / 60.0).astype(np.int64)
    uniq, idx = np.unique(minutes, return_inverse=True)
    return uniq, idx.astype(np.int64).reshape(-1)


# -- numba ----------------------------------------------------------------------------------
@njit(cache=True)
def _minute_counters_nb(idx, n_minutes, kind, status, no_resp, member, session_start, goal, goal_value, nbytes):
    out = np.zeros((n_minutes, 14), dtype=np.float64)
    for i in range(idx.shape[0]):
        m = idx[i]
        k = kind[i]
        out[m, 0] += 1.0
        if k == 0:
            out[m, 1] += 1.0
            if member[i]:
                out[m, 9] += 1.0
            else:
                out[m, 10] += 1.0
        if session_start[i]:
            out[m, 2] += 1.0
        s = status[i]
        if 400 <= s < 500:
            out[m, 3] += 1.0
        elif s >= 500:
            out[m, 4] += 1.0
        if no_resp[i]:
            out[m, 5] += 1.0
        if k == 1:
            out[m, 6] += 1.0
        elif k == 2:
            out[m, 7] += 1.0
        elif k == 4:
            out[m, 8] += 1.0
        if goal[i]:
            out[m, 11] += 1.0
            out[m, 13] += goal_value[i]
        out[m, 12] += nbytes[i]
    return out


@njit(cache=True)
def _code_counts_nb(idx, n_minutes, codes, n_codes):
    out = np.zeros((n_minutes, n_codes), dtype=np.int64)
    for i in range(idx.shape[0]):
        c = codes[i]
        if c >= 0:
            out[idx[i], c] += 1
    return out


@njit(cache=True)
def _latency_hist_nb(idx, n_minutes, latency, include):
    out = np.zeros((n_minutes, LAT_BUCKETS), dtype=np.int64)
    for i in range(idx.shape[0]):
        ms = latency[i]
        if include[i] and ms == ms:  # not NaN
            if ms < 0.0:
                ms = 0.0
            b = int(np.floor(np.log2(ms + 1.0) * LAT_BUCKETS_PER_OCTAVE))
            if b > LAT_BUCKETS - 1:
                b = LAT_BUCKETS - 1
            out[idx[i], b] += 1
    return out


@njit(cache=True)
def _last_seen_nb(codes, ts, n_codes):
    out = np.zeros(n_codes, dtype=np.float64)
    for i in range(codes.shape[0]):
        c = codes[i]
        if c >= 0 and ts[i] > out[c]:
            out[c] = ts[i]
    return out


# -- numpy twins ----------------------------------------------------------------------------
def _minute_counters_np(idx, n_minutes, kind, status, no_resp, member, session_start, goal, goal_value, nbytes):
    pv = kind == K_PAGEVIEW
    cols = np.stack([
        np.ones(idx.shape[0]), pv, session_start, (status >= 400) & (status < 500), status >= 500, no_resp,
        kind == K_STATIC, kind == K_REDIRECT, kind == K_BOT, pv & member, pv & ~member, goal,
        nbytes, np.where(goal, goal_value, 0.0)], axis=1).astype(np.float64)
    out = np.zeros((n_minutes, cols.shape[1]), dtype=np.float64)
    np.add.at(out, idx, cols)
    return out


def _code_counts_np(idx, n_minutes, codes, n_codes):
    out = np.zeros((n_minutes, n_codes), dtype=np.int64)
    ok = codes >= 0
    np.add.at(out, (idx[ok], codes[ok]), 1)
    return out


def _latency_hist_np(idx, n_minutes, latency, include):
    out = np.zeros((n_minutes, LAT_BUCKETS), dtype=np.int64)
    ok = include & ~np.isnan(latency)
    np.add.at(out, (idx[ok], latency_bucket_np(latency[ok])), 1)
    return out


def _last_seen_np(codes, ts, n_codes):
    out = np.zeros(n_codes, dtype=np.float64)
    ok = codes >= 0
    np.maximum.at(out, codes[ok], ts[ok])
    return out


def last_seen(use_numba: bool, codes: np.ndarray, ts: np.ndarray, n_codes: int) -> np.ndarray:
    """Latest ts per code (0 = not seen); code -1 = not counted."""
    return (_last_seen_nb if use_numba else _last_seen_np)(codes, ts, n_codes)


def minute_counters(use_numba: bool, *args) -> np.ndarray:
    """M x len(COUNTER_FIELDS) sums; args: idx, n_minutes, kind, status, no_resp, member,
    session_start, goal, goal_value, nbytes."""
    return (_minute_counters_nb if use_numba else _minute_counters_np)(*args)


def code_counts(use_numba: bool, idx: np.ndarray, n_minutes: int, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """M x n_codes counts of each code per minute; code -1 = not counted."""
    if n_codes == 0:
        return np.zeros((n_minutes, 0), dtype=np.int64)
    return (_code_counts_nb if use_numba else _code_counts_np)(idx, n_minutes, codes, n_codes)


def latency_hist(use_numba: bool, idx: np.ndarray, n_minutes: int, latency: np.ndarray,
                 include: np.ndarray) -> np.ndarray:
    return (_latency_hist_nb if use_numba else _latency_hist_np)(idx, n_minutes, latency, include)



# -- Kafka's key hash ---------------------------------------------------------------------
_U32, _MURMUR_M, _MURMUR_SEED = np.uint64(0xFFFFFFFF), np.uint64(0x5BD1E995), np.uint64(0x9747B28C)
_S8, _S13, _S15, _S16, _S24 = np.uint64(8), np.uint64(13), np.uint64(15), np.uint64(16), np.uint64(24)


@njit(cache=True, nogil=True)
def _murmur2_nb(buf, ends, out):  # pragma: no cover - compiled
    """Kafka's murmur2 (the Java client's and librdkafka's murmur2 partitioner) of each key of `buf` (key i ends
    at ends[i]), masked to 31 bits, into out. uint64 throughout: a product of two 32-bit values fits."""
    start = 0
    for j in range(ends.shape[0]):
        end = ends[j]
        length = end - start
        h = (_MURMUR_SEED ^ np.uint64(length)) & _U32
        for p in range(start, start + (length // 4) * 4, 4):
            k = np.uint64(buf[p]) | (np.uint64(buf[p + 1]) << _S8) | (np.uint64(buf[p + 2]) << _S16) | \
                (np.uint64(buf[p + 3]) << _S24)
            k = (k * _MURMUR_M) & _U32
            k ^= k >> _S24
            k = (k * _MURMUR_M) & _U32
            h = (h * _MURMUR_M) & _U32
            h ^= k
        tail = start + (length // 4) * 4
        extra = length % 4
        if extra >= 3:
            h ^= np.uint64(buf[tail + 2]) << _S16
        if extra >= 2:
            h ^= np.uint64(buf[tail + 1]) << _S8
        if extra >= 1:
            h ^= np.uint64(buf[tail])
            h = (h * _MURMUR_M) & _U32
        h ^= h >> _S13
        h = (h * _MURMUR_M) & _U32
        h ^= h >> _S15
        out[j] = np.int64(h & np.uint64(0x7FFFFFFF))
        start = end


def murmur2_positive(keys: list[bytes]) -> np.ndarray:
    """murmur2(key) & 0x7FFFFFFF of each key, as Kafka's partitioners compute it (aiokafka's pure-Python one
    took 2.7-6.5 us a key; this, 0.05 us plus the call)."""
    out = np.empty(len(keys), dtype=np.int64)
    if keys:
        ends = np.cumsum(np.fromiter(map(len, keys), dtype=np.int64, count=len(keys)))
        _murmur2_nb(np.frombuffer(b"".join(keys), dtype=np.uint8), ends, out)
    return out
