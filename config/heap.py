"""Memory settings for the processes that allocate a batch's objects, keep them about a second and free them
all together: the worker and its two helpers (hits reader, history writer).

- The garbage collector runs less often: a batch allocates tens of thousands of containers (hits, page
  views, session states, history columns) that live until the history flush; with CPython's default the
  collector ran ~100 times a second and rescanned them, ~25% of a worker's time in pipeline_bench.
- glibc keeps the memory it was given instead of handing it back after every free. By default it trims
  the top of its heap as soon as 128 KiB there are free, and orjson.dumps grows its output at the top of
  the heap and frees the rest: each dumps of a page view cost two page faults and 5.5 us instead of 1.1 us
  (a fault is a zeroed page from the kernel); in pipeline_bench the worker took 1.3 faults per event.
  Large buffers (a batch's text, its pickles) stay in the heap below MMAP_THRESHOLD instead of a fresh
  mmap each. Memory stays bounded: the heap keeps at most its peak (the held batches are bounded by the
  worker's back-pressure), and free space above TRIM_THRESHOLD at its top is still returned.
"""
from __future__ import annotations

import ctypes
import gc

GC_YOUNG_THRESHOLD = 50_000  # allocations between young-generation collections (CPython's default: 700)
TRIM_THRESHOLD = 128 << 20  # free bytes at the heap's top before glibc returns them (default 128 KiB)
MMAP_THRESHOLD = 32 << 20  # allocations from here on get their own mmap (glibc's largest; default 128 KiB)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def tune_for_batches() -> bool:
    """Apply both settings to this process; False when the C library is not glibc (its malloc keeps its own
    defaults then; only the collector's threshold changes)."""
    young, middle, old = gc.get_threshold()
    if young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # setting these fixes both thresholds (glibc otherwise moves them with each large free)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
