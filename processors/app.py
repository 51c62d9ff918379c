"""The Faust app factory: one app, its topics and the open-sessions table.

Other rooms register extra agents on the same app: put a module name in
`VisitwireApp.extra_agent_modules` (or `EXTRA_AGENT_MODULES` below); the worker imports
each and calls its `register(vw: VisitwireApp, settings, history=..., redis_url=...)`
before the app starts (the worker's history sink and Redis URL, to share them).
Topic values are raw bytes (orjson-encoded JSON records, config/events.py);
Faust's per-event codecs are too slow for the hot path.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Iterator, MutableMapping

import faust
import orjson
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from config.events import TOPIC_HITS, TOPIC_PAGEVIEWS, TOPIC_SEGMENTS, TOPIC_SESSIONS
from config.settings import Settings

log = logging.getLogger(__name__)

# Modules whose `register(vw, settings)` adds agents to the app (e.g. processors.analytics.agents).
EXTRA_AGENT_MODULES: list[str] = ["processors.analytics.agents"]

# Producer batch size: the producer keeps one batch per partition in flight, so 16 KB batches (Faust's
# default) cap output at a few hundred KB per broker round trip; brokers take up to ~1 MB per batch.
PRODUCER_BATCH_BYTES = 512 * 1024


@dataclass
class VisitwireApp:
    app: faust.App
    settings: Settings
    hits_topic: Any
    pageviews_topic: Any
    sessions_topic: Any
    segments_topic: Any
    sessions_table: Any
    extra_agent_modules: list[str] = field(default_factory=lambda: list(EXTRA_AGENT_MODULES))

    def raw_topic(self, name: str, partitions: int | None = None) -> Any:
        """A topic of raw-bytes keys and values (decode values with orjson)."""
        return raw_topic(self.app, name, partitions or self.settings.kafka.partitions)

    @property
    def output_topics(self) -> list[Any]:
        return [self.pageviews_topic, self.sessions_topic, self.segments_topic]


def raw_topic(app: faust.App, name: str, partitions: int) -> Any:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     partitions=partitions)


@lru_cache(maxsize=100_000)
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF  # pure Python (~5 us); keys (visitor ids) repeat a lot


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of a keyed record, as the capture's producer and the Java client pick it."""
    return _key_hash(key) % partitions


def kafka_producer(app: faust.App) -> Any:
    """The aiokafka producer under Faust's (Faust has no batch API); raises NotReady before start."""
    return app.producer._ensure_producer()


class DeliveryFailed(Exception):
    """Records queued on the producer were not delivered; they are kept and sent again by the next flush."""


Record = tuple[int, bytes, bytes]  # (partition, key, value)


class Outbox:
    """Records on their way to Kafka, sent as whole batches (aiokafka create_batch / send_batch, one per
    partition: one await per batch, not per record) and tracked until delivered.

    The producer's flush() waits for delivery but does not say when a batch failed (e.g. it expired
    while the broker was away): those records would be lost while the hits that made them are committed.
    `confirm()` waits for every batch's own delivery future and raises DeliveryFailed if one failed,
    keeping its records; the next send or confirm sends them again, before anything newer, so each
    partition keeps its order. `send` never fails for a broker that is away: what the producer does not
    take stays queued, and confirm() reports it."""

    def __init__(self, app: faust.App):
        self.app = app
        self._in_flight: list[tuple[str, int, list[tuple[bytes, bytes]], Any]] = []  # (topic, partition, records, future)
        # (topic, records, keyed) not yet handed to the producer: new, or back from a failed delivery; oldest
        # first. keyed: records are (key, value), their partition still to be found; else (partition, key, value).
        self._queued: list[tuple[str, list, bool]] = []

    @property
    def undelivered(self) -> int:
        """Records not yet handed to the producer (e.g. kept after a failed delivery)."""
        return sum(len(records) for _, records, _ in self._queued)

    async def send(self, topic: str, records: Iterable[Record]) -> None:
        """Queue (partition, key, value) records behind any kept from a failed delivery."""
        self._queued.append((topic, list(records), False))
        await self._hand_over()

    async def send_keyed(self, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Queue (key, value) records for the partitions their keys hash to."""
        self._queued.append((topic, list(records), True))
        await self._hand_over()

    async def confirm(self) -> None:
        """Wait until everything sent so far is delivered; DeliveryFailed (records kept) if some was not."""
        try:
            await self._send_queued()
        except KafkaError as e:
            raise DeliveryFailed(f"{self.undelivered} record(s) not delivered: the producer did not take them "
                                 f"({type(e).__name__}: {e}); kept to be sent again by the next flush") from e
        await self.app.producer.flush()
        in_flight, self._in_flight = self._in_flight, []
        errors: list[BaseException] = []
        for i, (topic, partition, kvs, future) in enumerate(in_flight):
            try:
                await future
            except asyncio.CancelledError:  # confirm() itself timed out: these are still on their way
                self._in_flight = in_flight[i:] + self._in_flight
                raise
            except Exception as e:
                errors.append(e)
                self._queued.append((topic, [(partition, k, v) for k, v in kvs], False))
        if errors:
            topics = ", ".join(sorted({t for t, _, _ in self._queued}))
            raise DeliveryFailed(f"{self.undelivered} record(s) to {topics} not delivered "
                                 f"({type(errors[0]).__name__}: {errors[0]}); kept to be sent again by the next flush")

    async def _hand_over(self) -> None:
        try:
            await self._send_queued()
        except KafkaError as e:  # broker away or topic unknown for now: confirm() tries again and reports it
            log.debug("records kept queued for the next flush: %s: %s", type(e).__name__, e)

    async def _send_queued(self) -> None:
        queued, self._queued = self._queued, []
        for i, (topic, records, keyed) in enumerate(queued):
            try:
                await self._send_now(topic, records, keyed)
            except BaseException:
                self._queued += queued[i + 1:]  # behind what _send_now put back of item i
                raise

    async def _send_now(self, topic: str, records: list, keyed: bool) -> None:
        """Hand the records to the producer, batch by batch; what send_batch did not take goes back to
        the queue (in order), so nothing is dropped if the producer refuses midway."""
        producer = kafka_producer(self.app)
        if keyed:
            try:
                n = len(await producer.partitions_for(topic))
            except BaseException:
                self._queued.append((topic, records, True))
                raise
            records = [(key_partition(k, n), k, v) for k, v in records]
        by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        for p, k, v in records:
            by_partition[p].append((k, v))
        pending = list(by_partition.items())
        while pending:
            p, kvs = pending[0]
            taken, batch = self._fill_batch(producer, kvs)
            try:
                future = await producer.send_batch(batch, topic, partition=p)
            except BaseException:
                self._queued.append((topic, [(q, k, v) for q, rest in pending for k, v in rest], False))
                raise
            self._in_flight.append((topic, p, kvs[:taken], future))
            if taken < len(kvs):
                pending[0] = (p, kvs[taken:])
            else:
                pending.pop(0)

    @staticmethod
    def _fill_batch(producer: Any, kvs: list[tuple[bytes, bytes]]) -> tuple[int, Any]:
        """(how many of kvs went in, the batch): as many as fit; an empty batch takes any one record."""
        batch = producer.create_batch()
        for i, (k, v) in enumerate(kvs):
            if batch.append(key=k, value=v, timestamp=None) is None:
                if i == 0:
                    raise ValueError(f"a record of {len(v)} bytes does not fit in an empty producer batch")
                return i, batch
        return len(kvs), batch


class TableStore(MutableMapping):
    """The sessions table as a plain MutableMapping visitor_id -> state.

    Writes go to the changelog partition the key's hits come from (murmur2 of the key, as the
    capture's producer and the Java client pick it), so they work outside a stream event (the
    session timer, end of input) and a restarted worker restores each partition with its hits.
    """

    END_KEY = b'"__end__"'

    def __init__(self, table: Any, partitions: int, outbox: Outbox | None = None):
        self.table = table
        self.partitions = partitions
        self.outbox = outbox or Outbox(table.app)
        self._pending: list[Record] = []  # changelog records not yet sent
        self._unsealed: set[int] = set()  # partitions whose changes still need their end marker

    def _record(self, key: str, value: Any) -> None:
        # Encoded as the table's JSON serializers decode them on recovery; sent in seal() straight
        # through the producer (Faust's send_changelog costs far more per record).
        k = key.encode()
        self._pending.append((key_partition(k, self.partitions), orjson.dumps(key), orjson.dumps(value)))

    def __getitem__(self, key: str) -> dict:
        return self.table.data[key]

    def get(self, key: str, default: Any = None) -> Any:  # faster than the ABC's try/except
        return self.table.data.get(key, default)

    def __setitem__(self, key: str, value: dict) -> None:
        self._record(key, value)
        self.table.data[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self.table.data:
            raise KeyError(key)
        # JSON null rather than a Kafka tombstone (null value): a restored null is dropped by
        # purge_deleted(), so recovery never depends on how a broker hands tombstones back.
        self._record(key, None)
        del self.table.data[key]

    def forget(self, key: str) -> None:
        """Drop a key here only (no changelog record): its partition moved to another worker."""
        self.table.data.pop(key, None)

    async def seal(self) -> int:
        """Send the changes made so far and make them recoverable: flush, then write a lone end
        marker per touched partition. tansu reports a partition's end offset as the last record
        *batch*'s base offset + 1, so Faust's recovery stops at the first record of the last batch;
        a marker alone in its batch makes that end cover every real change. Returns the partitions
        sealed."""
        pending, self._pending = self._pending, []
        topic = self.table.changelog_topic.get_topic_name()
        self._unsealed.update(p for p, _, _ in pending)
        await self.outbox.send(topic, pending)  # the outbox keeps them until delivered
        if not self._unsealed:
            return 0
        await self.outbox.confirm()
        producer = self.table.app.producer
        parts = sorted(self._unsealed)
        for p in parts:
            fut = await producer.send(topic, self.END_KEY, b"null", p, None, None)
            await fut  # one at a time: each marker its own batch
            self._unsealed.discard(p)
        return len(parts)

    def purge_deleted(self) -> int:
        """Forget keys restored as null (deleted sessions, end markers) so len() counts sessions only."""
        data = self.table.data
        gone = [k for k, v in list(data.items()) if v is None]
        for k in gone:
            del data[k]
        return len(gone)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.table.data.keys()))

    def __len__(self) -> int:
        return len(self.table.data)


def create_app(settings: Settings, *, app_id: str | None = None, datadir: str | None = None) -> VisitwireApp:
    """A Faust app on settings.kafka.bootstrap with the visitwire topics and the sessions table."""
    if not settings.kafka.bootstrap:
        raise ValueError("kafka.bootstrap is empty: start a broker (visitwire run starts tansu) or pass --kafka HOST:PORT")
    k = settings.kafka
    datadir = datadir or os.path.join(tempfile.gettempdir(), "visitwire-faust")
    app = faust.App(
        app_id or k.app_id,
        broker=f"kafka://{k.bootstrap}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        topic_partitions=k.partitions,
        topic_replication_factor=1,
        broker_session_timeout=k.session_timeout_s,
        broker_heartbeat_interval=max(0.5, min(3.0, k.session_timeout_s / 5)),
        broker_commit_interval=1.0,
        broker_max_poll_records=max(500, settings.processing.batch_size),
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        stream_buffer_maxsize=max(4096, 2 * settings.processing.batch_size),
        # Our runtime holds each message (incref) until the history store has its rows. Faust must not
        # wait for those on a rebalance or stop (it would wait for a flush that needs the very timer /
        # agent it is stopping: a worker that never stops or never rejoins). Held messages are simply not
        # committed and come back to whoever owns the partition next (history dedups by event_id).
        stream_wait_empty=False,
        producer_linger=0.005,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        # Faust's default (1200 s) lets one unanswered produce hold a history flush for 20 minutes;
        # fail it sooner: the flush is retried on the next tick with the same records (Outbox).
        producer_request_timeout=k.producer_request_timeout_s,
        logging_config=None,
    )
    n = k.partitions
    # Keys as JSON strings: the changelog is decoded with the table's serializers on recovery.
    schema = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")
    table = app.Table("sessions", default=None, partitions=n, schema=schema,
                      help="Open sessions by visitor_id (processors/sessionizer.py state).")
    return VisitwireApp(
        app=app, settings=settings,
        hits_topic=raw_topic(app, TOPIC_HITS, n), pageviews_topic=raw_topic(app, TOPIC_PAGEVIEWS, n),
        sessions_topic=raw_topic(app, TOPIC_SESSIONS, n), segments_topic=raw_topic(app, TOPIC_SEGMENTS, n),
        sessions_table=table,
    )
