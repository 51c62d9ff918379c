"""How capture's numba kernels are compiled.

`kernel` is njit with the on-disk cache and without numba's reference counting (NRT).
With NRT, every call of one kernel from another increfs and decrefs each array it
passes (atomic operations, plus a decref on every return path): the flow table's
per-packet helpers take some thirty arrays, and that traffic cost more than their
own work. A `kernel` must therefore not allocate arrays, use typed containers, or
return an array to a caller that counts references (an njit function); it may read,
write and slice the arrays it is given.

numba also checks every signed array index for a negative value (Python's
wrap-around), and that check stops LLVM from vectorizing a loop. Byte loops on the hot
path index with unsigned offsets (np.uint64) for that reason: copying a 140-byte
header value went from 260 to 30 ns.
"""
import numpy as np
from numba import njit

kernel = njit(cache=True, _nrt=False)
inline_kernel = njit(cache=True, _nrt=False, inline="always")
# called per packet or per value: LLVM inlines it into its caller (the flow table's helpers take some thirty
# arrays, and passing that many, seven to nine words each, cost more than the call's work)
hot_kernel = njit(cache=True, _nrt=False, forceinline=True)


@hot_kernel
def copy_bytes(dst, d, src, s, e):
    """src[s:e] into dst from d (non-negative offsets); returns d + (e - s). Unsigned, so it vectorizes."""
    if e <= s:
        return d
    ud, us = np.uint64(d), np.uint64(s)
    for q in range(np.uint64(e - s)):
        dst[ud + q] = src[us + q]
    return d + (e - s)
