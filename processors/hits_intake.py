"""visitwire.hits read in bulk with librdkafka (confluent-kafka), offsets committed after the history flush.

aiokafka unpacks every record in Python (a ConsumerRecord each, ~5 µs): at the rates the
processors now reach, reading the topic cost as much as processing it. librdkafka fetches,
decompresses and unpacks in its own threads, outside the GIL; `consume(n)` hands over a
batch of messages built in C, and this loop only takes their values, partitions and offsets.

Offsets are committed by `WorkerRuntime.flush()` after the history flush, in the group
`<app_id>-hits`.
- follow=False: this consumer joins `<app_id>-hits` and gets every partition (one worker:
  the embedded runtime).
- follow=True: it joins no group; it reads the partitions Faust's group gave this worker
  (`follow(partitions)`, from the runtime on each assignment), co-partitioned with the
  sessions table, so several `visitwire worker`s split the hits. `hold()` stops it while a
  rebalance moves partitions; reading resumes from the committed offsets.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from config.events import TOPIC_HITS
from config.settings import Settings

log = logging.getLogger(__name__)


class BulkHitsConsumer:
    """The hits of this worker's partitions, a batch (up to processing.batch_size) at a time, to
    `runtime.on_records(values, partitions, offsets)`; `offsets` maps partition -> next offset."""

    def __init__(self, settings: Settings, runtime: Any, follow: bool = False):
        self.settings = settings
        self.rt = runtime
        self.following = follow
        self.consumer: Any = None
        self._task: asyncio.Future | None = None
        self._wanted: set[int] | None = None   # follow: the partitions Faust gave this worker
        self._applied: set[int] | None = None
        self._holding = follow                 # follow: nothing to read before the first assignment
        self._batch_lock: asyncio.Lock | None = None
        self._errors = 0
        self._next_error_log = 1
        self._generation = 0  # changes with every assignment: batches read before it are dropped
        # consume() blocks (GIL released) in its own thread; commits and assignments go through another,
        # so a commit never waits for a consume call to time out
        self._reading = ThreadPoolExecutor(1, thread_name_prefix="visitwire-hits-read")
        self._control = ThreadPoolExecutor(1, thread_name_prefix="visitwire-hits-commit")

    def follow(self, partitions: set[int]) -> None:
        self._wanted = set(partitions)
        self._holding = False

    async def hold(self) -> None:
        """A rebalance: take no more batches; returns once the batch in progress is processed."""
        self._holding = True
        self._applied = None  # re-assign on resume: positions restart at the committed offsets
        if self._batch_lock is not None:
            async with self._batch_lock:
                pass

    async def start(self, wait_for: Any = None, wait_timeout: float = 120.0) -> None:
        from confluent_kafka import Consumer

        from processors.agents import ensure_topic

        k = self.settings.kafka
        self._batch_lock = asyncio.Lock()
        if wait_for is not None:  # the sessions table restored from its changelog first
            try:
                await asyncio.wait_for(wait_for(), wait_timeout)
            except asyncio.TimeoutError:
                log.warning("sessions table recovery not finished after %.0f s; processing anyway", wait_timeout)
        await ensure_topic(k.bootstrap, TOPIC_HITS, k.partitions)
        session_ms = int(k.session_timeout_s * 1000)
        self.consumer = Consumer({
            "bootstrap.servers": k.bootstrap, "group.id": f"{k.app_id}-hits", "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms, "heartbeat.interval.ms": max(300, session_ms // 5),
            "max.partition.fetch.bytes": 8 << 20, "fetch.max.bytes": 64 << 20,
            "topic.metadata.refresh.interval.ms": 10_000, "logger": log})
        if not self.following:
            self.consumer.subscribe([TOPIC_HITS])
        self.rt.commit_offsets = self.commit
        self._task = asyncio.ensure_future(self._run())

    async def commit(self, offsets: dict[int, int]) -> None:
        """Commit partition -> next offset, for the partitions this worker still reads (the others moved:
        their new owner re-reads from the last commit, and history deduplicates)."""
        from confluent_kafka import TopicPartition

        def commit_mine() -> None:
            mine = {tp.partition for tp in self.consumer.assignment()}
            wanted = [TopicPartition(TOPIC_HITS, p, off) for p, off in sorted(offsets.items()) if p in mine]
            if wanted:
                self.consumer.commit(offsets=wanted, asynchronous=False)
        await asyncio.get_running_loop().run_in_executor(self._control, commit_mine)

    async def _apply_assignment(self) -> None:
        from confluent_kafka import TopicPartition

        wanted = self._wanted or set()
        # no offset given: each partition starts at the committed offset of <app_id>-hits, or the earliest
        await asyncio.get_running_loop().run_in_executor(
            self._control, self.consumer.assign, [TopicPartition(TOPIC_HITS, p) for p in sorted(wanted)])
        self._applied = set(wanted)
        self._generation += 1
        log.info("reading hits partitions %s", sorted(wanted) or "none (all owned by other workers)")

    def _read(self, n: int, timeout_s: float) -> tuple[list[bytes], list[int], dict[int, int], bytes | None]:
        """In the reading thread: up to n hits (values, partitions, next offset per partition), and the
        values transposed for the processor (its numba scan runs without the GIL, beside the processing
        of the previous batch)."""
        messages = self.consumer.consume(n, timeout_s)
        failed = [m for m in messages if m.error() is not None]
        if failed:  # e.g. a broker away for a moment; librdkafka retries by itself
            self._errors += len(failed)
            if self._errors >= self._next_error_log:  # the 1st, 2nd, 4th, 8th ... error: an outage stays readable
                self._next_error_log = 2 * self._errors
                log.warning("reading hits: %s (%d such errors so far)", failed[0].error(), self._errors)
            messages = [m for m in messages if m.error() is None]
        # a column at a time (list comprehensions), and each partition's next offset from its last message
        values = [m.value() for m in messages]
        partitions = [m.partition() for m in messages]
        offsets: dict[int, int] = {}
        todo = len(set(partitions))
        for m in reversed(messages):
            if m.partition() not in offsets:
                offsets[m.partition()] = m.offset() + 1
                if len(offsets) == todo:
                    break
        return values, partitions, offsets, self.rt.transpose(values) if values else None

    async def _run(self) -> None:
        """Read the next batch while this one is processed. A batch read under an assignment that has changed
        since (a rebalance) is dropped: not processed, not committed, read again from the committed offsets."""
        loop = asyncio.get_running_loop()
        p = self.settings.processing

        def start_reading() -> tuple[int, asyncio.Future]:
            return self._generation, loop.run_in_executor(self._reading, self._read, p.batch_size, p.batch_timeout_s)
        reading: tuple[int, asyncio.Future] | None = None  # (assignment generation, read in progress)
        try:
            while True:
                if self.following:
                    if self._holding or self._wanted is None:
                        await asyncio.sleep(0.05)
                        continue
                    if self._wanted != self._applied:
                        await self._apply_assignment()
                    if not self._applied:
                        await asyncio.sleep(0.2)
                        continue
                if reading is None:
                    reading = start_reading()
                generation, future = reading
                values, partitions, offsets, transposed = await future
                reading = None
                if generation != self._generation or self._holding:
                    continue  # read before a rebalance moved partitions
                reading = start_reading()  # the next batch, while this one is processed
                if not values:
                    continue
                async with self._batch_lock:
                    if self._holding:
                        continue  # a rebalance began meanwhile: not processed, not committed, read again
                    try:
                        await self.rt.on_records(values, partitions, offsets, transposed)
                    except Exception:
                        log.exception("processing a batch of %d hits failed; they will be replayed after a "
                                      "restart", len(values))
                        raise
        finally:
            if reading is not None:
                reading[1].cancel()  # a read already running ends by itself within batch_timeout_s

    async def stop_reading(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def close(self) -> None:
        await self.stop_reading()
        loop = asyncio.get_running_loop()
        # the consume call in flight returns within batch_timeout_s; then nothing uses the consumer
        await loop.run_in_executor(None, self._reading.shutdown)
        self._control.shutdown()
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await loop.run_in_executor(None, consumer.close)
