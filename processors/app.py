"""The Faust app factory: one app, its topics and the open-sessions table.

Other rooms register extra agents on the same app: put a module name in
`VisitwireApp.extra_agent_modules` (or `EXTRA_AGENT_MODULES` below); the worker imports
each and calls its `register(vw: VisitwireApp, settings, history=..., redis_url=...)`
before the app starts (the worker's history sink and Redis URL, to share them).
Topic values are raw bytes (orjson-encoded JSON records, config/events.py);
Faust's per-event codecs are too slow for the hot path.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, MutableMapping

import faust
import orjson
from aiokafka.partitioner import murmur2

from config.events import TOPIC_HITS, TOPIC_PAGEVIEWS, TOPIC_SEGMENTS, TOPIC_SESSIONS
from config.kafka_security import faust_credentials
from config.settings import Settings
from processors.kernels import murmur2_positive
from processors.outbox import Outbox

log = logging.getLogger(__name__)

# Modules whose `register(vw, settings)` adds agents to the app (e.g. processors.analytics.agents).
EXTRA_AGENT_MODULES: list[str] = ["processors.analytics.agents"]

# Faust's own producer (add-on agents' output; the core's records go through processors/outbox.py) keeps
# one batch per partition in flight, so 16 KB batches (Faust's default) cap output at a few hundred KB
# per broker round trip; brokers take up to ~1 MB per batch.
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
    # Called with [(member_id, ts), ...] once the purchases of a batch are in the history store (the
    # analytics agents re-score those members at once instead of at the next scheduled run).
    purchase_listeners: list[Callable[[list[tuple[str, float]]], None]] = field(default_factory=list)

    def raw_topic(self, name: str, partitions: int | None = None) -> Any:
        """A topic of raw-bytes keys and values (decode values with orjson)."""
        return raw_topic(self.app, name, partitions or self.settings.kafka.partitions)


def raw_topic(app: faust.App, name: str, partitions: int) -> Any:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     partitions=partitions)


@lru_cache(maxsize=100_000)
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF  # pure Python (~5 us); keys (visitor ids) repeat a lot


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of a keyed record, as the capture's producer and the Java client pick it."""
    return _key_hash(key) % partitions


Record = tuple[int, bytes, bytes]  # (partition, key, value)


def _json(value: Any) -> bytes:
    """orjson.dumps(value) in a bytes object of its own size. orjson (3.12 on) returns its output in the buffer it
    wrote into, at least 4 KiB: a flush's changelog records (a ~0.5 KiB session state and its key each) held 8 KiB
    apiece until sent, and the dumps of a state took 4.9-5.7 us against 0.9-1.1 with the copy (20,000 states in
    a row, taskset core 0; as in config/rows.py, EncodedRows.encode)."""
    return b"".join((orjson.dumps(value), b""))


class TableStore(MutableMapping):
    """The sessions table as a plain MutableMapping visitor_id -> state.

    Writes go to the changelog partition the key's hits come from (murmur2 of the key, as the
    capture's producer and the Java client pick it), so they work outside a stream event (the
    session timer, end of input) and a restarted worker restores each partition with its hits.
    """

    END_KEY = b'"__end__"'

    def __init__(self, table: Any, partitions: int, outbox: Outbox):
        self.table = table
        self.partitions = partitions
        self.outbox = outbox
        self._pending: list[Record] = []  # changelog records not yet sent
        self._unsealed: set[int] = set()  # partitions whose changes still need their end marker

    def _record(self, key: str, value: Any) -> None:
        # Encoded as the table's JSON serializers decode them on recovery; sent in seal() through the
        # outbox (Faust's send_changelog costs far more per record).
        k = key.encode()
        self._pending.append((key_partition(k, self.partitions), _json(key), _json(value)))

    def __getitem__(self, key: str) -> dict:
        return self.table.data[key]

    def get(self, key: str, default: Any = None) -> Any:  # faster than the ABC's try/except
        return self.table.data.get(key, default)

    def __setitem__(self, key: str, value: dict) -> None:
        self._record(key, value)
        self.table.data[key] = value

    def set_many(self, items: Iterable[tuple[str, dict]]) -> None:
        """store[key] = value for each pair (encode_many, then set_encoded)."""
        items = items if isinstance(items, list) else list(items)
        self.set_encoded(self.encode_many(items), items)

    def encode_many(self, items: list[tuple[str, dict]]) -> dict[str, Record]:
        """The changelog record of each pair, key -> (partition, key JSON, value JSON), as the values are now: the
        sessionizer encodes them when a flush begins, so it may change the states while the flush runs. The keys'
        partitions are hashed all at once (murmur2_positive): one at a time in Python, each visitor's first cost
        2.7-6.5 us."""
        partitions, dumps, join = self.partitions, orjson.dumps, b"".join
        hashes = murmur2_positive([key.encode() for key, _ in items]).tolist()
        return {key: (h % partitions, join((dumps(key), b"")), join((dumps(value), b"")))  # _json(), inline
                for (key, value), h in zip(items, hashes)}

    def set_encoded(self, records: dict[str, Record], items: Iterable[tuple[str, dict]]) -> None:
        """store[key] = value for each pair, whose changelog record encode_many made (one loop for all of them:
        a flush writes every session the batches touched, and per-item method calls were a tenth of the event
        loop's profile)."""
        data, pending = self.table.data, self._pending
        for key, value in items:
            pending.append(records[key])
            data[key] = value

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
        parts = sorted(self._unsealed)
        # every change is delivered: each partition's batch now holds its marker alone
        await self.outbox.send(topic, [(p, self.END_KEY, b"null") for p in parts])
        await self.outbox.confirm()
        self._unsealed.difference_update(parts)
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
        raise ValueError("kafka.bootstrap is empty: start a broker (visitwire run starts tansu) "
                         "or pass --kafka HOST:PORT")
    k = settings.kafka
    datadir = datadir or os.path.join(tempfile.gettempdir(), "visitwire-faust")
    app = faust.App(
        app_id or k.app_id,
        broker=f"kafka://{k.bootstrap}",
        broker_credentials=faust_credentials(k),  # TLS / SASL (config/kafka_security.py); None: plain
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
        # Faust's default (1200 s) lets one unanswered produce hang an add-on agent for 20 minutes.
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
