"""Layout of the per-minute live counters: the contract between the processors that fill
them (processors/kernels.py) and the Redis live state that stores and reads them
(sinks/redis_live.py), kept here so neither room reaches into the other."""
from __future__ import annotations

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
