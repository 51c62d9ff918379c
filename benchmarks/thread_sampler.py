"""A sampling profiler of the main thread's CPU time, for benchmarks (Linux).

cProfile costs ~1 us per Python call: on code made of many small calls it inflates them several times and
hides what the C calls (orjson, librdkafka's produce) cost. This one asks the kernel for a signal after every
`interval_s` of the main thread's own CPU (timer_create on CLOCK_THREAD_CPUTIME_ID, delivered to that thread:
time spent waiting for I/O or for the core is never sampled). At each signal it charges the CPU the thread
used since the previous sample to the Python stack it is in. Signals that arrive during one long C call
coalesce into one; the charge by elapsed CPU keeps their time. Its own cost: a few us per sample.

    sampler = ThreadCpuSampler(0.0005); sampler.start(); ...; sampler.stop(); print(sampler.report(25))
"""
from __future__ import annotations

import ctypes
import gc
import signal
import threading
import time
from collections import Counter
from types import FrameType

_CLOCK_THREAD_CPUTIME_ID = 3
_SIGEV_THREAD_ID = 4
_SYS_GETTID = 186  # x86_64


class _SigEvent(ctypes.Structure):
    _fields_ = [("sigev_value", ctypes.c_void_p), ("sigev_signo", ctypes.c_int), ("sigev_notify", ctypes.c_int),
                ("sigev_tid", ctypes.c_int), ("_pad", ctypes.c_int * 11)]


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


def _label(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for root in ("/site-packages/", "/work/"):
        if root in path:
            path = path.split(root, 1)[1]
    return f"{path}:{code.co_name}"


class ThreadCpuSampler:
    """Samples the thread that calls start() (it must be the main thread: Python runs signal handlers there)."""

    def __init__(self, interval_s: float = 0.0005):
        self.interval_s = interval_s
        self.inclusive: Counter[str] = Counter()  # CPU s with the function anywhere on the stack
        self.own: Counter[str] = Counter()        # CPU s with the function on top
        self.total = 0.0
        self._last = 0.0
        self._timer = ctypes.c_void_p()
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._old = None
        self.gc_seconds = [0.0, 0.0, 0.0]  # the cyclic collector's CPU by generation, in any thread
        self.gc_runs = [0, 0, 0]
        self._gc_started = 0.0

    def start(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("ThreadCpuSampler.start() must run on the main thread")
        self._old = signal.signal(signal.SIGPROF, self._on_signal)
        gc.callbacks.append(self._on_gc)
        ev = _SigEvent(sigev_signo=signal.SIGPROF, sigev_notify=_SIGEV_THREAD_ID,
                       sigev_tid=self._libc.syscall(_SYS_GETTID))
        if self._libc.timer_create(_CLOCK_THREAD_CPUTIME_ID, ctypes.byref(ev), ctypes.byref(self._timer)):
            raise OSError(ctypes.get_errno(), "timer_create failed")
        sec, nsec = divmod(int(self.interval_s * 1e9), 1_000_000_000)
        spec = _ITimerSpec(_TimeSpec(sec, nsec), _TimeSpec(sec, nsec))
        self._last = time.thread_time()
        if self._libc.timer_settime(self._timer, 0, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timer_settime failed")

    def stop(self) -> None:
        self._libc.timer_delete(self._timer)
        gc.callbacks.remove(self._on_gc)
        signal.signal(signal.SIGPROF, self._old or signal.SIG_DFL)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":  # the collector holds the GIL: its start and stop run on one thread, back to back
            self._gc_started = time.thread_time()
        else:
            self.gc_seconds[info["generation"]] += time.thread_time() - self._gc_started
            self.gc_runs[info["generation"]] += 1

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = time.thread_time()
        spent, self._last = now - self._last, now
        if frame is None:
            return
        self.total += spent
        self.own[_label(frame)] += spent
        seen = set()
        while frame is not None:
            label = _label(frame)
            if label not in seen:  # recursion counts once
                seen.add(label)
                self.inclusive[label] += spent
            frame = frame.f_back

    def report(self, top: int, per: int = 1) -> str:
        """The `top` functions by inclusive and by own CPU, in us per `per` (e.g. per event)."""
        scale = 1e6 / max(1, per)
        runs = enumerate(zip(self.gc_runs, self.gc_seconds))
        lines = [f"main thread CPU sampled: {self.total * scale:.2f} us per event in all",
                 "garbage collector (any thread), by generation: " + ", ".join(
                     f"{g}: {n} runs {s * scale:.3f} us" for g, (n, s) in runs)]
        for title, counts in (("inclusive (anywhere on the stack)", self.inclusive), ("own (on top)", self.own)):
            lines.append(f"  {title}:")
            lines += [f"    {s * scale:7.3f}  {label}" for label, s in counts.most_common(top)]
        return "\n".join(lines)
