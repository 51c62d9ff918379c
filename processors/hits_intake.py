"""visitwire.hits read in bulk with librdkafka (confluent-kafka), offsets committed after the history flush.

aiokafka unpacks every record in Python (a ConsumerRecord each, ~5 µs): at the rates the
processors now reach, reading the topic cost as much as processing it. librdkafka fetches,
decompresses and unpacks in its own threads, outside the GIL, and the consumer itself lives in a
child process (processors/hits_reader.py) that hands over each batch already transposed for the
processor: the worker's process only processes.

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
from typing import Any

from config.events import TOPIC_HITS
from config.settings import Settings
from processors.hits_reader import HitsReaderProcess, ReadError, ReaderGone, ReadRefused, ValuesGone

log = logging.getLogger(__name__)


class BulkHitsConsumer:
    """The hits of this worker's partitions, a batch (up to processing.batch_size) at a time, to
    `runtime.on_records(values, partitions, offsets, transposed)`; `offsets` maps partition -> next offset.
    The librdkafka consumer lives in a child process (processors/hits_reader.py); one that exits is
    started again, and reading resumes from the committed offsets."""

    def __init__(self, settings: Settings, runtime: Any, follow: bool = False):
        self.settings = settings
        self.rt = runtime
        self.following = follow
        self.reader: HitsReaderProcess | None = None
        self._task: asyncio.Future | None = None
        self._wanted: set[int] | None = None   # follow: the partitions Faust gave this worker
        self._applied: set[int] | None = None
        self._holding = follow                 # follow: nothing to read before the first assignment
        self._batch_lock: asyncio.Lock | None = None
        self._generation = 0  # changes with every assignment: batches read before it are dropped
        self.reader_restarts = 0

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
        from config.kafka_security import aiokafka_kwargs, librdkafka_config
        from processors.agents import ensure_topic

        k = self.settings.kafka
        p = self.settings.processing
        self._batch_lock = asyncio.Lock()
        if wait_for is not None:  # the sessions table restored from its changelog first
            try:
                await asyncio.wait_for(wait_for(), wait_timeout)
            except asyncio.TimeoutError:
                log.warning("sessions table recovery not finished after %.0f s; processing anyway", wait_timeout)
        await ensure_topic(k.bootstrap, TOPIC_HITS, k.partitions, security=aiokafka_kwargs(k))
        session_ms = int(k.session_timeout_s * 1000)
        self.reader = HitsReaderProcess({
            "config": {
                "bootstrap.servers": k.bootstrap, "group.id": f"{k.app_id}-hits", "enable.auto.commit": False,
                "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
                "session.timeout.ms": session_ms, "heartbeat.interval.ms": max(300, session_ms // 5),
                "max.partition.fetch.bytes": 8 << 20, "fetch.max.bytes": 64 << 20,
                "topic.metadata.refresh.interval.ms": 10_000, **librdkafka_config(k)},
            "topic": TOPIC_HITS, "subscribe": not self.following,
            "batch_size": p.batch_size, "timeout_s": p.batch_timeout_s,
            "transpose": self.rt.processor.decoder is not None})
        await asyncio.get_running_loop().run_in_executor(None, self.reader.start)
        self._task = asyncio.ensure_future(self._run())

    async def commit(self, offsets: dict[int, int]) -> None:
        """Commit partition -> next offset, for the partitions this worker still reads (the others moved:
        their new owner re-reads from the last commit, and history deduplicates)."""
        await self.reader.commit(offsets)

    async def _apply_assignment(self) -> None:
        wanted = self._wanted or set()
        await self.reader.assign(sorted(wanted))
        self._applied = set(wanted)
        self._generation += 1
        log.info("reading hits partitions %s", sorted(wanted) or "none (all owned by other workers)")

    async def _restart_reader(self, error: Exception) -> None:
        """The reader process exited: batches read but not yet committed are read again by a new one."""
        self.reader_restarts += 1
        log.warning("%s; starting a new one, which reads from the committed offsets", error)
        self._applied = None
        self._generation += 1
        await asyncio.get_running_loop().run_in_executor(None, self.reader.start)

    async def _run(self) -> None:
        """Ask for the next batch as soon as this one arrives, so it is read while this one is processed.
        One read at a time: with a second one waiting, the reader's consumer was always inside consume(), and
        librdkafka's synchronous offset commits took up to 20 s instead of milliseconds (measured on tansu),
        holding the flush and, through back-pressure, the processing. A batch read under an assignment that
        has changed since (a rebalance) is dropped: not processed, not committed, read again from the
        committed offsets."""
        reading: tuple[int, asyncio.Future] | None = None  # (assignment generation, read asked for)
        try:
            while True:
                try:
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
                        reading = self._generation, self.reader.read()
                    (generation, future), reading = reading, None
                    batch = await future
                except ReaderGone as e:
                    if reading is not None:
                        _discard(reading[1])
                        reading = None
                    await self._restart_reader(e)
                    continue
                except ReadRefused as e:  # the broker will not take it: say so and stop, as a worker that starts
                    self.rt.refused = e
                    log.error("the hits reader stops: %s", e)
                    return
                except ReadError as e:  # e.g. librdkafka refused a call; the reader itself is still there
                    log.warning("reading hits: %s; trying again in a second", e)
                    await asyncio.sleep(1.0)
                    continue
                if generation != self._generation or self._holding:
                    continue  # read before a rebalance moved partitions
                reading = self._generation, self.reader.read()  # the next, read while this one is processed
                if not batch.values:
                    continue
                lost: ValuesGone | None = None
                async with self._batch_lock:
                    if self._holding:
                        continue  # a rebalance began meanwhile: not processed, not committed, read again
                    try:
                        await self.rt.on_records(batch.values, batch.partitions, batch.offsets, batch.transposed)
                    except ValuesGone as e:  # the processor fell back on values the reader no longer had
                        lost = e
                    except Exception:
                        log.exception("processing a batch of %d hits failed; they will be replayed after a "
                                      "restart", len(batch.values))
                        raise
                if lost is not None:  # the batch is not processed (the values are its first step): read it again
                    log.error("a batch of %d hits could not be processed: %s; stopping the hits reader",
                              len(batch.values), lost)
                    _discard(reading[1])
                    reading = None
                    await asyncio.get_running_loop().run_in_executor(None, self.reader.close)
                    await self._restart_reader(lost)
        finally:
            if reading is not None:
                _discard(reading[1])  # a read already running ends by itself within batch_timeout_s

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
        if self.reader is not None:
            # the child finishes the consume call in flight (within batch_timeout_s), then leaves the group
            await asyncio.get_running_loop().run_in_executor(None, self.reader.close)


def _discard(read: asyncio.Future) -> None:
    """Drop a read asked for: cancelled if still waiting, its failure (if any) taken so asyncio does not
    log it as never retrieved."""
    if not read.cancel() and not read.cancelled():
        read.exception()
