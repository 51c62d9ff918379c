"""The Faust app factory: one app, its topics and the open-sessions table.

Other rooms register extra agents on the same app: put a module name in
`VisitwireApp.extra_agent_modules` (or `EXTRA_AGENT_MODULES` below); the worker imports
each and calls its `register(vw: VisitwireApp, settings, history=..., redis_url=...)`
before the app starts (the worker's history sink and Redis URL, to share them).
Topic values are raw bytes (orjson-encoded JSON records, config/events.py);
Faust's per-event codecs are too slow for the hot path.
"""
from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Iterator, MutableMapping

import faust
import orjson
from aiokafka.partitioner import murmur2

from config.events import TOPIC_HITS, TOPIC_PAGEVIEWS, TOPIC_SEGMENTS, TOPIC_SESSIONS
from config.settings import Settings

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


async def send_batched(producer: Any, topic: str, records: Iterable[tuple[int, bytes, bytes]]) -> None:
    """Queue (partition, key, value) records as whole batches, one per partition (aiokafka create_batch /
    send_batch): one await per batch, not per record. Like send(), this only queues them; the producer's
    flush() waits until they are delivered."""
    by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for p, k, v in records:
        by_partition[p].append((k, v))
    for p, kvs in by_partition.items():
        batch = producer.create_batch()
        for k, v in kvs:
            if batch.append(key=k, value=v, timestamp=None) is None:  # full: send it, start the next
                await producer.send_batch(batch, topic, partition=p)
                batch = producer.create_batch()
                batch.append(key=k, value=v, timestamp=None)  # an empty batch takes any one record
        await producer.send_batch(batch, topic, partition=p)


async def send_keyed(producer: Any, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    """Queue (key, value) records on the partitions their keys hash to (see send_batched)."""
    n = len(await producer.partitions_for(topic))
    await send_batched(producer, topic, ((key_partition(k, n), k, v) for k, v in records))


class TableStore(MutableMapping):
    """The sessions table as a plain MutableMapping visitor_id -> state.

    Writes go to the changelog partition the key's hits come from (murmur2 of the key, as the
    capture's producer and the Java client pick it), so they work outside a stream event (the
    session timer, end of input) and a restarted worker restores each partition with its hits.
    """

    END_KEY = b'"__end__"'

    def __init__(self, table: Any, partitions: int):
        self.table = table
        self.partitions = partitions
        self._pending: list[tuple[int, bytes, bytes]] = []  # changelog records not yet sent

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
        producer = self.table.app.producer
        topic = self.table.changelog_topic.get_topic_name()
        parts = {p for p, _, _ in pending}
        try:
            await send_batched(kafka_producer(self.table.app), topic, pending)
            if not parts:
                return 0
            await producer.flush()
            for p in sorted(parts):
                fut = await producer.send(topic, self.END_KEY, b"null", p, None, None)
                await fut  # one at a time: each marker its own batch
        except BaseException:
            self._pending = pending + self._pending  # resent by the next seal (same values: harmless)
            raise
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
        # fail it sooner: the flush is retried on the next tick with the same changelog records.
        producer_request_timeout=30.0,
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
