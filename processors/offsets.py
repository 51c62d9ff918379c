"""Each hits partition's messages in offset order, without holes, before they reach the processor.

Faust (through aiokafka) has been seen to hand the hits agent a partition's messages with one
offset missing: a worker restarted mid-replay on a tansu broker read offsets 0-20 and 22-5343 of
a partition. Once a later offset is flushed and committed, the missing hit is lost for good.

`OffsetGuard.admit(tp, offset)` says what to do with each message:
- TAKE: the next offset of its partition (or the first one seen, when nothing is known);
- DUPLICATE: an offset already taken since the partition was (re)assigned: a redelivery;
- SEEK: a hole; the caller seeks the partition back to `expected(tp)` and drops the message;
- SKIP: a message fetched before that seek; its copy comes again after the hole is filled.
A hole still there after MAX_RESEEKS re-reads is real (retention or compaction removed those
offsets): it is logged and the partition goes on from the message that arrived.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

TAKE, DUPLICATE, SEEK, SKIP = "take", "duplicate", "seek", "skip"
RESEEK_AFTER_S = 2.0  # messages fetched before a seek drain well within this
MAX_RESEEKS = 3


class OffsetGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._next: dict[Any, int] = {}
        self._hole: dict[Any, list] = {}  # tp -> [expected offset, time of the last seek, seeks so far]
        self.holes_refilled = 0
        self.holes_accepted = 0

    def start_at(self, offsets: Mapping[Any, int | None]) -> None:
        """The partitions were (re)assigned: each is read from this offset (None: unknown, take the first)."""
        for tp, offset in offsets.items():
            self._hole.pop(tp, None)
            if offset is None:
                self._next.pop(tp, None)
            else:
                self._next[tp] = offset

    def forget(self, tps: Any) -> None:
        for tp in tps:
            self._next.pop(tp, None)
            self._hole.pop(tp, None)

    def expected(self, tp: Any) -> int | None:
        return self._next.get(tp)

    def admit(self, tp: Any, offset: int) -> str:
        want = self._next.get(tp)
        if want is None or offset == want:
            self._next[tp] = offset + 1
            if self._hole.pop(tp, None) is not None:
                self.holes_refilled += 1
            return TAKE
        if offset < want:
            return DUPLICATE
        now = self._clock()
        hole = self._hole.get(tp)
        if hole is None or hole[0] != want:
            self._hole[tp] = [want, now, 1]
            log.warning("hits partition %s: offset %d arrived while %d was expected; re-reading from %d",
                        getattr(tp, "partition", tp), offset, want, want)
            return SEEK
        if now - hole[1] < RESEEK_AFTER_S:
            return SKIP
        if hole[2] >= MAX_RESEEKS:
            del self._hole[tp]
            self._next[tp] = offset + 1
            self.holes_accepted += 1
            log.warning("hits partition %s: offsets %d-%d are still missing after %d re-reads (removed by "
                        "retention or compaction?); going on from %d", getattr(tp, "partition", tp), want,
                        offset - 1, MAX_RESEEKS, offset)
            return TAKE
        hole[1] = now
        hole[2] += 1
        return SEEK
