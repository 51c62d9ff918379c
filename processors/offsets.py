"""Each hits partition's messages in offset order, without holes, before they reach the processor.

Faust (through aiokafka) has been seen to hand the hits agent a partition's messages with one
offset missing: a worker restarted mid-replay on a tansu broker read offsets 0-20 and 22-5343 of
a partition. Once a later offset is flushed and committed, the missing hit is lost for good.

`OffsetGuard.admit(tp, offset)` says what to do with each message:
- TAKE: the next offset of its partition: the one after the last taken, or where reading starts after
  an assignment (`starts_at`: the committed offset, else the log start), or, with neither known, the first seen;
- DUPLICATE: an offset already taken: a redelivery (e.g. Faust seeking back to the committed offset);
- SEEK: a hole; the caller seeks the partition back to `expected(tp)` and drops the message;
- SKIP: a message fetched before that seek; its copy comes again once the hole is filled.
A hole is never skipped on a timer: a re-read can take long behind Faust's buffers. Only the
broker can say offsets are gone (retention removed them): the caller then calls `moved_start`.
A seek can be lost: Faust's fetch loop may still be handing out the rest of the fetch before it, which moves
its read position past the hole, and the re-read copies are then dropped inside Faust (seen on CI: partition 3
stuck at offset 900 for 3 minutes once its last message had arrived). So a hole is also asked again on the
caller's timer (`reseeks_due`), not only when a later message of its partition comes.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

TAKE, DUPLICATE, SEEK, SKIP = "take", "duplicate", "seek", "skip"
RESEEK_AFTER_S = 5.0  # still no sign of the missing offset: seek again (a seek lost in a rebalance)


class OffsetGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._next: dict[Any, int] = {}
        self._hole: dict[Any, list] = {}  # tp -> [expected offset, time of the last seek]
        self.holes_refilled = 0
        self.holes_gone = 0

    def forget(self, tps: Any) -> None:
        """The partitions were revoked: whatever comes next for them starts afresh."""
        for tp in tps:
            self._next.pop(tp, None)
            self._hole.pop(tp, None)

    def expected(self, tp: Any) -> int | None:
        return self._next.get(tp)

    def starts_at(self, tp: Any, offset: int) -> None:
        """The partition was (re)assigned and reading starts at `offset`: a first message after it is a hole.
        Kept if something was already taken since the assignment (that message's successor is next)."""
        self._next.setdefault(tp, offset)

    def reseeks_due(self) -> list:
        """Partitions whose hole was last asked for RESEEK_AFTER_S ago or more; each counts as asked now."""
        now = self._clock()
        due = [tp for tp, hole in self._hole.items() if now - hole[1] >= RESEEK_AFTER_S]
        for tp in due:
            self._hole[tp][1] = now
        return due

    def moved_start(self, tp: Any, offset: int) -> None:
        """The broker no longer has the offsets before `offset` (retention): go on from there."""
        self._next[tp] = offset
        self._hole.pop(tp, None)
        self.holes_gone += 1

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
            self._hole[tp] = [want, now]
            log.warning("hits partition %s: offset %d arrived while %d was expected; re-reading from %d",
                        getattr(tp, "partition", tp), offset, want, want)
            return SEEK
        if now - hole[1] < RESEEK_AFTER_S:
            return SKIP
        hole[1] = now
        return SEEK
