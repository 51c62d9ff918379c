"""The Faust app factory: one app, its topics and the open-sessions table.

Other rooms register extra agents on the same app: put a module name in
`VisitwireApp.extra_agent_modules` (or `EXTRA_AGENT_MODULES` below); the worker imports
each and calls its `register(vw: VisitwireApp, settings)` before the app starts.
Topic values are raw bytes (orjson-encoded JSON records, config/events.py);
Faust's per-event codecs are too slow for the hot path.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator, MutableMapping

import faust
from aiokafka.partitioner import murmur2

from config.events import TOPIC_HITS, TOPIC_PAGEVIEWS, TOPIC_SEGMENTS, TOPIC_SESSIONS
from config.settings import Settings

# Modules whose `register(vw, settings)` adds agents to the app (e.g. processors.analytics.agents).
EXTRA_AGENT_MODULES: list[str] = ["processors.analytics.agents"]


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


class TableStore(MutableMapping):
    """str-keyed view of a Faust table whose keys travel as raw bytes in the changelog.

    Writes go to the changelog partition the key's hits come from (murmur2 of the key, as the
    capture's producer and the Java client pick it), so they work outside a stream event (the
    session timer, end of input) and a restarted worker restores each partition with its hits.
    """

    def __init__(self, table: Any, partitions: int):
        self.table = table
        self.partitions = partitions

    def _partition(self, key: bytes) -> int:
        return (murmur2(key) & 0x7FFFFFFF) % self.partitions

    def __getitem__(self, key: str) -> dict:
        return self.table[key.encode()]

    def get(self, key: str, default: Any = None) -> Any:  # faster than the ABC's try/except
        return self.table.get(key.encode(), default)

    def __setitem__(self, key: str, value: dict) -> None:
        k = key.encode()
        self.table.send_changelog(self._partition(k), k, value)
        self.table.data[k] = value

    def __delitem__(self, key: str) -> None:
        k = key.encode()
        if k not in self.table.data:
            raise KeyError(key)
        self.table.send_changelog(self._partition(k), k, None, value_serializer="raw")
        del self.table.data[k]

    def __iter__(self) -> Iterator[str]:
        for k in list(self.table.keys()):
            yield k.decode() if isinstance(k, bytes) else k

    def __len__(self) -> int:
        return len(self.table)


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
        producer_linger=0.005,
        logging_config=None,
    )
    n = k.partitions
    schema = faust.Schema(key_type=bytes, key_serializer="raw", value_serializer="json")
    table = app.Table("sessions", default=None, partitions=n, schema=schema,
                      help="Open sessions by visitor_id (processors/sessionizer.py state).")
    return VisitwireApp(
        app=app, settings=settings,
        hits_topic=raw_topic(app, TOPIC_HITS, n), pageviews_topic=raw_topic(app, TOPIC_PAGEVIEWS, n),
        sessions_topic=raw_topic(app, TOPIC_SESSIONS, n), segments_topic=raw_topic(app, TOPIC_SEGMENTS, n),
        sessions_table=table,
    )
