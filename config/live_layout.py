"""Layout of the live state: the per-minute counters, the latency histogram and `LiveDelta` (what one
batch changes). The contract between the processors that fill them (processors/kernels.py,
processors/counters.py) and the Redis live state that stores and reads them (sinks/redis_live.py),
kept here so neither room reaches into the other."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

# Per-minute counter columns, in the order processors.kernels.minute_counters() fills them.
COUNTER_FIELDS = ("hits", "pageviews", "sessions", "errors_4xx", "errors_5xx", "no_response", "static",
                  "redirects", "bot_hits", "member_pageviews", "anon_pageviews", "goals", "bytes", "revenue")

# Latency histogram: bucket b holds latencies in [2^(b/8) - 1, 2^((b+1)/8) - 1) ms (about 9% wide).
LAT_BUCKETS_PER_OCTAVE = 8
LAT_BUCKETS = 256


def bucket_mid_ms(b: int) -> float:
    """Representative latency of a bucket (geometric middle), for quantiles on read."""
    lo = 2.0 ** (b / LAT_BUCKETS_PER_OCTAVE) - 1.0
    hi = 2.0 ** ((b + 1) / LAT_BUCKETS_PER_OCTAVE) - 1.0
    return (lo + hi) / 2.0


def quantiles_from_hist(hist: dict[int, int], qs: Iterable[float]) -> list[float | None]:
    """Quantiles (ms) of a bucketed latency histogram; None when empty."""
    total = sum(hist.values())
    qs = list(qs)
    if total == 0:
        return [None] * len(qs)
    items = sorted(hist.items())
    out = []
    for q in qs:
        rank = max(1, math.ceil(q * total))
        acc = 0
        for b, c in items:
            acc += c
            if acc >= rank:
                out.append(round(bucket_mid_ms(b), 2))
                break
    return out


@dataclass
class LiveDelta:
    """What one batch changes in the live state; minute = epoch seconds // 60."""
    counters: dict[int, dict[str, float]] = field(default_factory=dict)
    tops: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    latency: dict[int, dict[int, int]] = field(default_factory=dict)
    visitors: dict[str, dict[str, float]] = field(default_factory=dict)  # set -> visitor -> last ts
    feed: list[bytes] = field(default_factory=list)  # page view JSON, oldest first
    goal_feed: list[bytes] = field(default_factory=list)  # goal conversion JSON, oldest first
    max_ts: float = 0.0
    events: int = 0
