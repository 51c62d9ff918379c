"""Plain counters the rooms keep about their own work, read by the engine's metrics endpoint.

A `Tally` is a histogram without a metrics library: the sinks and processors record sizes and
durations into it, and engine/metrics.py exports it as a Prometheus histogram. It lives in the
config leaf because the recording rooms and the exporting room both use it.
"""
from __future__ import annotations

import bisect
import threading
import time

from config.redact import redact_text

# batch sizes (rows) and durations (seconds): powers of about 4 / 2.5 cover 1 row .. 1M rows, 1 ms .. 60 s
ROW_BOUNDS = (1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000)
SECOND_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Tally:
    """Count, sum, last value and per-bucket counts of observations (thread-safe: sinks flush in threads)."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0
        self.last = 0.0
        self.last_at = 0.0  # wall time of the last observation, 0 = never
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.buckets[bisect.bisect_left(self.bounds, value)] += 1
            self.count += 1
            self.sum += value
            self.last = value
            self.last_at = time.time()

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations <= it) pairs ending with +Inf, the Prometheus histogram form."""
        with self._lock:
            out, running = [], 0
            for bound, n in zip([*map(str, self.bounds), "+Inf"], self.buckets):
                running += n
                out.append((bound, running))
            return out


class LastError:
    """The latest error of a component: its text and when (for `visitwire status`)."""

    def __init__(self) -> None:
        self.text = ""
        self.at = 0.0
        self.count = 0

    def record(self, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.text = redact_text(text)[:500]  # an error naming a URL must not carry its password
        self.at = time.time()
        self.count += 1
