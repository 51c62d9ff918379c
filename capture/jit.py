"""How capture's numba kernels are compiled, and called without numba when set-up built them ahead of time.

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

When set-up's ahead-of-time build (capture/aot.py) matches these sources and this machine, a kernel is
a `Kernel` that calls the build, and numba is not imported at all: that is half of a short run's CPU.
A call with argument types the build lacks hands every kernel to numba first (`use_numba`), which
then loads its cache or compiles, as it does when there is no build.
"""
from __future__ import annotations

import functools
import logging
import sys

import numpy as np

from capture import aot

log = logging.getLogger(__name__)
_BUILD = aot.load()
_kernels: list[Kernel] = []   # made while the build was in use: what use_numba hands over
_dispatchers: list = []       # numba's, once numba is in use
_numba = [_BUILD is None]


def jit(**options):
    """numba's njit(cache=True, **options); a `Kernel` calling the ahead-of-time build while there is one."""
    def decorate(py_func):
        if _numba[0]:
            from numba import njit

            d = njit(cache=True, **options)(py_func)
            _dispatchers.append(d)
            return d
        k = Kernel(py_func, options, _BUILD.entries(py_func))
        _kernels.append(k)
        return k
    return decorate


class Kernel:
    """A kernel called through the ahead-of-time build, for the argument types it was built for."""

    def __init__(self, py_func, options: dict, entries: list) -> None:
        functools.update_wrapper(self, py_func)
        self.py_func, self.options, self.entries = py_func, options, entries
        self.dispatcher = None  # numba's, after use_numba()

    def __call__(self, *args):
        if self.dispatcher is None:
            for accepts, compiled in self.entries:
                if accepts(args):
                    return compiled(*args)
            log.warning("capture kernel %s.%s called with argument types the ahead-of-time build lacks: "
                        "numba compiles or loads it (extend capture/warm.py)", self.__module__, self.__qualname__)
            use_numba()
        return self.dispatcher(*args)


def use_numba() -> None:
    """From now on every kernel is numba's dispatcher, in every capture module that names it (numba reads a
    kernel's callees from its module's globals when it compiles it)."""
    if _numba[0]:
        return
    from numba import njit

    _numba[0] = True
    for k in _kernels:
        k.dispatcher = njit(cache=True, **k.options)(k.py_func)
        _dispatchers.append(k.dispatcher)
    for name, module in list(sys.modules.items()):
        if name.startswith("capture.") and module is not None:
            for attr, value in list(vars(module).items()):
                if isinstance(value, Kernel) and value.dispatcher is not None:
                    setattr(module, attr, value.dispatcher)


def dispatchers() -> list:
    """numba's dispatchers of every capture kernel (after use_numba, or when there is no build)."""
    return list(_dispatchers)


kernel = jit(_nrt=False)
inline_kernel = jit(_nrt=False, inline="always")
# called per packet or per value: LLVM inlines it into its caller (the flow table's helpers take some thirty
# arrays, and passing that many, seven to nine words each, cost more than the call's work)
hot_kernel = jit(_nrt=False, forceinline=True)


@hot_kernel
def copy_bytes(dst, d, src, s, e):
    """src[s:e] into dst from d (non-negative offsets); returns d + (e - s). Unsigned, so it vectorizes."""
    if e <= s:
        return d
    ud, us = np.uint64(d), np.uint64(s)
    for q in range(np.uint64(e - s)):
        dst[ud + q] = src[us + q]
    return d + (e - s)
