"""Running the processors: the Faust app + agents + sinks, with offsets acked only after history flush.

- `InProcessWorker(settings, history=None, redis_url=None, intake=Intake())`: runs inside
  the caller's asyncio loop (the embedded runtime, `visitwire worker`, tests, the benchmark):
  `await start()`, `processed`, `await drained()`, `await end_of_input()`, `await flush()`,
  `await stop()`, `figures()`. The intake (processors.agents.Intake): "bulk" reads the hits with
  librdkafka (processors/hits_intake.py), on every partition in its own group (one worker) or on
  the partitions Faust's group assigns this worker, co-partitioned with the sessions table;
  "stream" through the Faust agent (`stream.take_events`), also co-partitioned.

Exactly-once history from at-least-once Kafka: every consumed message gets an extra
reference (`message.incref()`) so Faust cannot commit its offset when the batch is
done (bulk mode: offsets are committed by hand); `flush()` writes the history sink,
then the frozen session-table changes (changelog), then releases the references /
commits the offsets. A crash at
any point replays uncommitted hits; the history store deduplicates them by event_id /
session_id, and sessions remember recent event ids to skip redelivered page views.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import redis

from config.events import TOPIC_HITS, TOPIC_PAGEVIEWS, TOPIC_SEGMENTS, TOPIC_SESSIONS
from config.heap import tune_for_batches
from config.live_layout import quantiles_from_hist
from config.rows import EncodedRows
from config.settings import Settings
from config.kafka_errors import KafkaRefused
from config.kafka_security import aiokafka_kwargs
from config.stats import LastError
from processors.agents import BatchOutput, HitProcessor, Intake, ensure_topic, register_agents
from processors.app import TableStore, VisitwireApp, create_app
from processors.hits_intake import BulkHitsConsumer
from processors.offsets import SEEK, TAKE, OffsetGuard
from processors.outbox import DeliveryFailed, Outbox
from processors.kernels import LAT_BUCKETS, latency_bucket_np
from sinks.base import BatchingSink
from sinks.redis_live import RedisLiveSink

log = logging.getLogger(__name__)

BACKPRESSURE_FACTOR = 4  # stop taking batches while this many max_batch_rows wait for the history store
KAFKA_FLUSH_TIMEOUT_S = 15.0  # changelog seal + producer flush inside one history flush
REVOKE_FLUSH_TIMEOUT_S = 10.0  # flush before partitions move on a rebalance
STOP_BUDGET_S = 20.0  # SIGTERM -> exit, even with a backlog (well under an orchestrator's 30 s grace)


class DelayStats:
    """Histogram of event-ts -> now delays (ms), for the pipeline's end-to-end latency figures."""

    def __init__(self):
        self.hist = np.zeros(LAT_BUCKETS, dtype=np.int64)

    def record(self, ts: np.ndarray, now: float | None = None) -> None:
        if len(ts):
            delay_ms = ((time.time() if now is None else now) - ts) * 1000.0
            np.add.at(self.hist, latency_bucket_np(delay_ms), 1)

    @property
    def count(self) -> int:
        return int(self.hist.sum())

    def quantiles(self, qs=(0.5, 0.99)) -> list[float | None]:
        nz = np.nonzero(self.hist)[0]
        return quantiles_from_hist({int(b): int(self.hist[b]) for b in nz}, qs)

    def reset(self) -> None:
        self.hist[:] = 0


class WorkerRuntime:
    """What the agent and the timer call: process, emit, flush, ack."""

    def __init__(self, vw: VisitwireApp, history: BatchingSink, live: RedisLiveSink | None, intake: Intake):
        self.vw = vw
        self.intake = intake
        self.settings = vw.settings
        self.history = history
        self.live = live
        self.outbox = Outbox(vw.settings.kafka)  # page views, sessions and changelog records until delivered
        self.table_store = TableStore(vw.sessions_table, vw.settings.kafka.partitions, self.outbox)
        self.processor = HitProcessor(vw.settings, self.table_store)
        # batches processed, not yet durable: (hits, their ts, Faust release callback, bulk offsets)
        self._held: list[tuple[int, np.ndarray, Any, dict | None]] = []
        self.offsets = OffsetGuard()  # Faust agent path only
        # bulk: the reader of the hits, on every partition or following Faust's assignment (it commits offsets)
        self.bulk = BulkHitsConsumer(vw.settings, self, follow=intake.follows_group) \
            if intake.mode == "bulk" else None
        self.faust_leaked = 0           # hits Faust delivered although its intake is paused (ignored)
        self._between_assignments = False
        self._held_n = 0
        self._purchases: list[tuple[str, float]] = []  # of the held batches, for vw.purchase_listeners
        self._flush_lock = asyncio.Lock()
        self._flush_task: asyncio.Task | None = None
        self._live_thread = ThreadPoolExecutor(1, thread_name_prefix="visitwire-redis")  # one: deltas in order
        self._live_write: asyncio.Future | None = None  # the latest batch's Redis write
        self._last_flush = time.monotonic()
        self.backpressure_rows = BACKPRESSURE_FACTOR * getattr(history, "max_batch_rows", 100_000)
        # figures
        self.processed = 0          # hits taken from the topic (including dropped ones)
        self.committed = 0          # hits whose history rows are flushed and offsets released
        self.last_flush_error: BaseException | None = None  # why the last flush failed; None once one succeeds
        self.refused: KafkaRefused | None = None  # the broker refused the hits reader or the outbox: stop
        self.pageviews_out = 0
        self.sessions_out = 0
        self.session_updates_out = 0  # records of open sessions (close_reason "open")
        self.live_errors = 0
        self.history_errors = 0
        self.redis_delay = DelayStats()
        self.history_delay = DelayStats()
        self.processing_s = 0.0
        self.last_error = LastError()  # the latest failed flush (visitwire status, metrics)
        self.last_flush_at = 0.0       # wall time of the latest complete flush, 0 = none yet
        self.started_at = time.time()

    # -- input ------------------------------------------------------------------------------
    async def on_events(self, events: list[Any]) -> None:
        """A batch from the Faust agent: hold each message so Faust cannot commit it before flush().

        Only each partition's next offset is taken (processors/offsets.py); a message that is not
        taken keeps its extra reference for good: its offset is acked by the copy that is taken."""
        taken = []
        guard = self.offsets
        for e in events:
            m = e.message
            m.incref()  # released in flush(): no offset commit before the history has the rows
            verdict = guard.admit(m.tp, m.offset)
            if verdict is TAKE:
                taken.append(e)
            elif verdict is SEEK:
                await self._seek_back(m.tp)
        if not taken:
            return
        consumer = self.vw.app.consumer

        def release() -> None:
            for e in taken:
                e.message.ack(consumer)
        await self.on_batch([e.value for e in taken], [e.message.partition for e in taken], release, None)

    async def _seek_back(self, tp: Any) -> None:
        consumer = self.vw.app.consumer
        want = self.offsets.expected(tp)
        try:
            start = (await consumer.earliest_offsets(tp)).get(tp)
            if start is not None and start > want:
                log.warning("hits partition %s: offsets %d-%d were removed by retention before they were "
                            "read; going on from %d", tp.partition, want, start - 1, start)
                self.offsets.moved_start(tp, start)
                want = start
            await consumer.seek(tp, want)
        except Exception as e:  # e.g. the partition was revoked meanwhile: its next owner reads it
            log.warning("could not re-read hits partition %s (%s: %s)", tp.partition, type(e).__name__, e)

    def start_where_committed(self) -> None:
        """Stream intake: after each assignment Faust seeks its partitions to their committed offsets (or, with
        none committed, lets them start at the log start). The guard learns those starts, so a hole before the
        first message of an assignment is re-read too instead of being taken as where the partition starts."""
        consumer = self.vw.app.consumer
        seek_to_committed = consumer.seek_to_committed

        async def seek_and_note_starts() -> Any:
            committed = await seek_to_committed()
            starts = {tp: committed.get(tp) for tp in consumer.assignment() if tp.topic == TOPIC_HITS}
            unset = [tp for tp, offset in starts.items() if offset is None or offset < 0]  # none committed
            if unset:
                starts.update(await consumer.earliest_offsets(*unset))
            known = {tp: offset for tp, offset in starts.items() if offset is not None and offset >= 0}
            for tp, offset in known.items():
                self.offsets.starts_at(tp, offset)
            log.info("hits partitions start at %s", {tp.partition: o for tp, o in sorted(known.items())})
            return committed
        consumer.seek_to_committed = seek_and_note_starts

    def follow_assignments(self) -> None:
        """Bulk intake following Faust's group. After each assignment Faust restores the new partitions'
        sessions, then resumes its stream partitions and seeks them (seek_to_committed, wrapped here to
        pause its own intake of the hits partitions again). The bulk reader gets them once recovery is
        complete (on_rebalance_complete; a seek can also come earlier, mid-rebalance)."""
        consumer = self.vw.app.consumer
        seek_to_committed = consumer.seek_to_committed

        async def seek_and_pause() -> Any:
            committed = await seek_to_committed()
            consumer.pause_partitions({tp for tp in consumer.assignment() if tp.topic == TOPIC_HITS})
            return committed
        consumer.seek_to_committed = seek_and_pause

        async def on_rebalance_complete(sender: Any = None, **kwargs: Any) -> None:
            if self.bulk is not None and not self._between_assignments:
                self.bulk.follow({tp.partition for tp in consumer.assignment() if tp.topic == TOPIC_HITS})
        self.vw.app.on_rebalance_complete.connect(on_rebalance_complete)

    async def on_records(self, values: list[bytes], partitions: list[int], offsets: dict[Any, int],
                         transposed: bytes | None = None) -> None:
        """A batch from the bulk consumer; `offsets` = next offset to commit per partition; `transposed`: the
        values already transposed by the processor's decoder (in the hits reader process)."""
        await self.on_batch(values, partitions, None, offsets, transposed)

    async def on_batch(self, values: list[Any], partitions: list[int], release: Any, offsets: dict | None,
                       transposed: bytes | None = None) -> None:
        t0 = time.perf_counter()
        out = self.processor.process(values, partitions, transposed)
        self.processing_s += time.perf_counter() - t0
        self.processed += len(values)
        await self._emit(out)
        self._held.append((len(values), out.ts, release, offsets))
        self._held_n += len(values)
        if out.purchases:
            self._purchases += out.purchases
        if self._held_n >= self.backpressure_rows:
            await self.flush()  # history slow or away: stop consuming until it catches up
        elif self.history.due() or self._held_due():
            self._flush_soon()

    async def _emit(self, out: BatchOutput) -> None:
        h = self.history
        if out.hits:
            h.add("hits", out.hits)
        # page views and sessions are encoded once, for their topics and for the history writer alike
        pageviews = EncodedRows.encode(out.pageviews)
        sessions = EncodedRows.encode(out.sessions)
        # open sessions as they go, before any close of the same batch: the latest record of a session wins
        updates = EncodedRows.encode(out.session_updates)
        if pageviews:
            h.add("pageviews", pageviews)
            self.pageviews_out += len(pageviews)
        if updates:
            h.add("sessions", updates)
            self.session_updates_out += len(updates)
        if sessions:
            h.add("sessions", sessions)
            self.sessions_out += len(sessions)
        await self._send(TOPIC_PAGEVIEWS, pageviews)
        await self._send(TOPIC_SESSIONS, updates)
        await self._send(TOPIC_SESSIONS, sessions)
        if self.live is not None and out.delta.events:
            await self._write_live(out)

    async def _write_live(self, out: BatchOutput) -> None:
        """Apply the batch's delta in the Redis thread while the next batch is processed (Redis works on
        the pipeline meanwhile instead of this loop waiting for it); one write at a time, in batch order."""
        await self.live_written()
        fut = asyncio.get_running_loop().run_in_executor(self._live_thread, self.live.apply, out.delta)
        fut.add_done_callback(partial(self._count_live_write, out.ts))
        self._live_write = fut

    async def live_written(self) -> None:
        """Wait for the Redis writes handed over so far (their outcome is counted by _count_live_write)."""
        fut = self._live_write
        if fut is not None:
            await asyncio.wait({fut})  # the thread takes them in order: the latest done means all are
            if self._live_write is fut:
                self._live_write = None

    def _count_live_write(self, ts: np.ndarray, fut: asyncio.Future) -> None:
        error = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if error is None:
            self.redis_delay.record(ts)
            return
        self.live_errors += 1
        self.last_error.record(error)
        if self.live_errors & (self.live_errors - 1) == 0:
            log.warning("redis live state: %s (%d batch(es) not counted live so far); check redis.url",
                        error, self.live_errors, exc_info=None if isinstance(error, redis.RedisError) else error)

    async def _send(self, topic: str, records: EncodedRows) -> None:
        """Queue the records keyed by visitor; flush() confirms their delivery before offsets are committed."""
        if records:
            await self.outbox.send_keyed(topic, [(r["visitor_id"].encode(), text)
                                                 for r, text in zip(records, records.texts)])

    # -- timer ------------------------------------------------------------------------------
    async def on_tick(self) -> None:
        for tp in self.offsets.reseeks_due():  # a hole whose re-read was lost (processors/offsets.py)
            log.warning("hits partition %s: offset %s still missing; re-reading again",
                        getattr(tp, "partition", tp), self.offsets.expected(tp))
            await self._seek_back(tp)
        closed = self.processor.tick()
        if closed:
            await self._emit(BatchOutput(sessions=closed))
        if self._held_due() or self.history.due():
            await self.flush()

    def _held_due(self) -> bool:
        """The held batches are due by the history store's rule (flush_due), counted in hits: a hit is the row
        of every table (its page view, its session's record), so the hits decide for them all. An order goes
        at the interval whatever the count: its buyer is re-scored after the flush (segments within 5 s)."""
        age = time.monotonic() - self._last_flush
        if self._purchases and age >= self.history.flush_interval_s:
            return True
        return self.history.flush_due(self._held_n, age)

    def _flush_soon(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.ensure_future(self.flush())

    async def flush(self) -> bool:
        """History rows -> store, then session changes -> table, then release offsets. False if the
        history store is away (everything stays held and is retried on the next tick)."""
        async with self._flush_lock:
            held, self._held, self._held_n = self._held, [], 0
            purchases, self._purchases = self._purchases, []
            self.processor.sessions.begin_flush()
            try:
                await asyncio.to_thread(self.history.flush)
                self.processor.sessions.commit_flush()
                # changelog durable and recoverable before offsets move; bounded, so a broker that
                # stops answering fails this flush (retried next tick) instead of holding the lock forever
                await asyncio.wait_for(self._seal_and_confirm_delivery(), KAFKA_FLUSH_TIMEOUT_S)
            except (Exception, asyncio.TimeoutError) as e:  # SinkUnavailable, or Kafka away for the changelog
                self.history_errors += 1
                self.last_error.record(e)
                self.last_flush_error = e
                if isinstance(e, KafkaRefused):
                    self.refused = e
                log.log(logging.ERROR if isinstance(e, DeliveryFailed) else logging.WARNING,
                        "flush failed (%s: %s): %d hit(s) held, offsets not committed; retrying next second",
                        type(e).__name__, e, sum(h[0] for h in held))
                self._held = held + self._held
                self._held_n = sum(h[0] for h in self._held)
                self._purchases = purchases + self._purchases
                return False
            for listener in self.vw.purchase_listeners if purchases else ():
                try:
                    listener(purchases)  # stored now: the listener can read them back
                except Exception:  # an add-on's failure must not stop the flush
                    log.exception("purchase listener failed")
            await self.live_written()  # every sink has the batches before their offsets move
            now = time.time()
            offsets: dict[Any, int] = {}
            for n, ts, release, batch_offsets in held:
                if release is not None:
                    release()
                if batch_offsets:
                    offsets.update(batch_offsets)  # batches are in order: later offsets win
                self.history_delay.record(ts, now)
            if offsets and self.bulk is not None:
                try:
                    await self.bulk.commit(offsets)
                except Exception as e:  # the rows are stored: a lost commit only means a deduplicated replay
                    log.warning("offset commit failed (%s); those hits will be replayed and deduplicated", e)
            self.committed += sum(h[0] for h in held)
            self._last_flush = time.monotonic()
            self.last_flush_at = now
            self.last_flush_error = None
            return True

    async def write_history_only(self) -> None:
        """After a loss (broker gone, disk full): write what is held to the history, nothing to Kafka;
        offsets stay uncommitted. Raises what the store raises."""
        async with self._flush_lock:
            await asyncio.to_thread(self.history.flush)

    async def on_revoked(self, revoked: Any, timeout: float = REVOKE_FLUSH_TIMEOUT_S) -> None:
        """Rebalance: make what was processed durable and commit it before the partitions move."""
        self.offsets.forget(revoked or ())
        if self.bulk is not None and revoked:
            self._between_assignments = True
            try:
                await asyncio.wait_for(self.bulk.hold(), timeout)
            except asyncio.TimeoutError:  # a batch that outlasts this is committed late: replayed, deduplicated
                log.warning("rebalance: the batch in progress did not finish within %.0f s", timeout)
        if not revoked or not self._held:
            return
        try:
            if await asyncio.wait_for(self.flush(), timeout) and self.bulk is None:
                await asyncio.wait_for(self.vw.app.consumer.commit(), timeout)
        except Exception as e:  # the next owner replays those hits; history and sessions dedup them
            log.warning("flush before a rebalance failed (%s: %s); the next owner replays those hits",
                        type(e).__name__, e)

    def on_assigned(self, assigned: Any) -> None:
        """Rebalance done: sessions of hits partitions now owned elsewhere leave this worker's memory."""
        self._between_assignments = False  # the bulk reader resumes once these are recovered
        keep = {tp.partition for tp in assigned if tp.topic == TOPIC_HITS}
        n = self.processor.keep_partitions(keep)
        if n:
            log.info("rebalance: %d open session(s) of partitions now owned by another worker forgotten here", n)

    async def _seal_and_confirm_delivery(self) -> None:
        await self.table_store.seal()
        await self.outbox.confirm()

    async def end_of_input(self) -> int:
        """pcap mode: close every open session (close_reason 'shutdown') and flush; returns how many."""
        closed = self.processor.end_of_input()
        if closed:
            await self._emit(BatchOutput(sessions=closed))
        await self.flush()
        return len(closed)

    def held(self) -> int:
        return self._held_n

    async def close(self) -> None:
        """After the last batch: let the Redis write in progress finish, then end its thread; deliver what
        the outbox still has in flight."""
        await self.live_written()
        self._live_thread.shutdown()
        await asyncio.to_thread(self.outbox.close)


class InProcessWorker:
    """The processors inside the caller's event loop (embedded runtime, tests, benchmark)."""

    def __init__(self, settings: Settings, history: BatchingSink | None = None, redis_url: str | None = None,
                 app_id: str | None = None, with_extra_agents: bool = True, intake: Intake = Intake()):
        self.settings = settings
        self._own_history = history is None
        if history is None:
            from sinks.history import open_history
            history = open_history(settings.history.url, min_free_mb=settings.history.min_free_mb,
                                   **settings.history.batching())
        self.history = history
        url = redis_url if redis_url is not None else settings.redis.url
        self.live = RedisLiveSink(url, settings) if url else None
        self.vw = create_app(settings, app_id=app_id)
        self.rt = WorkerRuntime(self.vw, history, self.live, intake)
        self.bulk = self.rt.bulk
        register_agents(self.vw, self.rt)
        self.extras: dict[str, Any] = {}
        if with_extra_agents:
            for name in self.vw.extra_agent_modules:
                self.extras[name] = self._register_extra(name, history, url)
        self._started = False

    def _register_extra(self, name: str, history: BatchingSink, redis_url: str) -> Any:
        try:
            module = importlib.import_module(name)
            return module.register(self.vw, self.settings, history=history, redis_url=redis_url or None)
        except Exception:  # an add-on must not take the core pipeline down with it
            log.exception("agents of %s not registered; the core processors run without them "
                          "(fix that module or remove it from processors/app.py EXTRA_AGENT_MODULES)", name)
            return None

    @property
    def app(self):
        return self.vw.app

    @property
    def processed(self) -> int:
        return self.rt.processed

    async def start(self) -> None:
        tune_for_batches()  # config/heap.py: fewer collections, no page faults per orjson.dumps
        k = self.settings.kafka
        # every topic visitwire publishes exists from the start, with the configured partitions
        await ensure_topic(k.bootstrap, TOPIC_HITS, TOPIC_PAGEVIEWS, TOPIC_SESSIONS, TOPIC_SEGMENTS,
                           partitions=k.partitions, security=aiokafka_kwargs(k))
        self.history.prepare()
        await asyncio.to_thread(self.rt.processor.warm_up)
        await self.vw.app.start()
        self._started = True
        if self.bulk is not None:
            await self.bulk.start(wait_for=self.vw.app.tables.recovery.completed.wait)

    async def drained(self, timeout: float = 60.0) -> None:
        """Wait until every hit taken so far is flushed to history and its offset released."""
        deadline = time.monotonic() + timeout
        while self.rt.held() or self.rt.committed < self.rt.processed:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.rt.held()} hit(s) still wait for the history store after {timeout:.0f} s")
            await self.rt.flush()
            await asyncio.sleep(0.05)

    async def wait_processed(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.rt.processed < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"processed {self.rt.processed} of {n} hits within {timeout:.0f} s")
            await asyncio.sleep(0.05)
        await self.drained(max(1.0, deadline - time.monotonic()))

    async def end_of_input(self) -> int:
        return await self.rt.end_of_input()

    async def flush(self) -> bool:
        return await self.rt.flush()

    def figures(self) -> dict[str, Any]:
        rt = self.rt
        r50, r99 = rt.redis_delay.quantiles()
        h50, h99 = rt.history_delay.quantiles()
        marks = [wm.max_ts for wm in rt.processor.watermarks.values() if wm.max_ts is not None]
        return {"processed": rt.processed, "committed": rt.committed, "last_event_ts": max(marks, default=None),
                "pageviews": rt.pageviews_out,
                "sessions": rt.sessions_out, "dropped": dict(rt.processor.drops),
                "open_sessions": rt.processor.sessions.open_count(), "live_errors": rt.live_errors,
                "faust_leaked": rt.faust_leaked, "reader_restarts": self.bulk.reader_restarts if self.bulk else 0,
                "history_errors": rt.history_errors, "processing_s": round(rt.processing_s, 3),
                "redis_delay_ms": {"p50": r50, "p99": r99}, "history_delay_ms": {"p50": h50, "p99": h99}}

    def _pause_faust_intake(self) -> None:
        """Stop the Faust agent's intake: no new messages reach the agent, the queued ones are dropped
        (never acked, so never committed: the next owner of the partition reads them again)."""
        app = self.vw.app
        try:
            consumer = app.consumer
            consumer.stop_flow()
            app.flow_control.suspend()
            consumer.pause_partitions(consumer.assignment())
            app.flow_control.clear()
        except Exception as e:  # not started / already stopping: nothing to pause
            log.debug("pausing intake: %s", e)

    async def stop(self, budget_s: float = STOP_BUDGET_S) -> None:
        """Flush what was processed (sessions stay open in the table), commit it, stop the app, all
        within about `budget_s` even with a backlog: hits not flushed by then stay uncommitted and are
        redelivered to the next worker (the history store dedups them by event_id)."""
        if self._started:
            deadline = time.monotonic() + budget_s

            def left(cap: float) -> float:
                return max(0.5, min(cap, deadline - time.monotonic()))
            try:
                if self.bulk is not None:
                    try:  # let the batch in progress finish, so the flush below commits it too
                        await asyncio.wait_for(self.bulk.hold(), left(budget_s * 0.25))
                    except asyncio.TimeoutError:
                        pass
                    await self.bulk.stop_reading()
                else:
                    self._pause_faust_intake()
                try:  # the current batch: history rows, changelog, then offsets (bulk: commits them too)
                    await asyncio.wait_for(self.rt.flush(), left(budget_s * 0.5))
                except asyncio.TimeoutError:
                    log.warning("stop: history flush did not finish in time; %d hit(s) left uncommitted "
                                "for redelivery", self.rt.held())
                if self.bulk is None:
                    try:  # the Faust agent's acked offsets, now rather than at the next commit interval
                        await asyncio.wait_for(self.vw.app.consumer.commit(), left(5.0))
                    except Exception as e:
                        log.warning("stop: offset commit failed (%s: %s); those hits will be redelivered "
                                    "and deduplicated", type(e).__name__, e)
            finally:
                if self.bulk is not None:
                    await self.bulk.close()
                try:
                    await asyncio.wait_for(self.vw.app.stop(), left(budget_s))
                except asyncio.TimeoutError:
                    log.warning("stop: the Faust app did not stop within %.0f s; exiting anyway (what was "
                                "flushed is committed, the rest is redelivered)", budget_s)
                self._started = False
        await self.rt.close()
        if self.live is not None:
            self.live.close()
        if self._own_history:
            self.history.close()
