"""Publishing visit events (Hit dicts) to Kafka without ever blocking or crashing the capture loop.

The capture loop calls `send_many(events)`: events are serialized (orjson) and put in a
bounded in-memory queue. A background thread runs its own asyncio loop with an aiokafka
producer that drains the queue in per-partition record batches (key = visitor_id, so one
visitor's hits stay in order on one partition).

When the broker goes away the queue keeps filling up to `max_buffered` events; beyond
that the oldest are dropped and counted. One warning is logged per outage, and the
producer reconnects (re-creating the topic if the broker lost it) when the broker returns.
Delivery is at-least-once: a batch that failed mid-flight is sent again, and sinks
de-duplicate on the deterministic event_id.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import Iterable

import orjson

from capture.outputs import EventLines

from config.events import TOPIC_HITS
from config.kafka_security import security_hint

log = logging.getLogger(__name__)

_CHUNK = 20_000          # events taken from the queue per round trip
_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 2.0


_THREAD_NAME = "visitwire-kafka-out"
_AIOKAFKA_LOGGERS = ("aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.producer.producer",
                     "aiokafka.producer.sender", "aiokafka.admin.client")
_outage_owners: set[int] = set()  # ids of outputs currently in an outage (already warned once)
_CONNECTION_NOISE = ("Unable connect", "Unable to update metadata", "Got error produce response")


class _QuietDuringOutage(logging.Filter):
    """aiokafka logs an ERROR per reconnect attempt and per failed request; our one warning says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.threadName.startswith(_THREAD_NAME):
            return True  # other aiokafka users (the Faust workers) keep their logs
        return not (_outage_owners or str(record.msg).startswith(_CONNECTION_NOISE))


_quiet = _QuietDuringOutage()
for _name in _AIOKAFKA_LOGGERS:
    logging.getLogger(_name).addFilter(_quiet)


def _on_loopback(bootstrap: str) -> bool:
    hosts = [h.strip().rsplit(":", 1)[0].strip("[]") for h in bootstrap.split(",") if h.strip()]
    return all(h == "localhost" or h.startswith("127.") or h == "::1" for h in hosts)


def _compression(wanted: str | None, bootstrap: str) -> str | None:
    """"auto": lz4 for a remote broker; none on loopback, where compressing only costs CPU
    (measured: lz4 halves, gzip cuts to a third the events/s delivered to a local tansu)."""
    from aiokafka.codec import has_gzip, has_lz4

    available = {"lz4": has_lz4(), "gzip": has_gzip()}
    if wanted == "auto":
        return "lz4" if available["lz4"] and not _on_loopback(bootstrap) else None
    if wanted and not available.get(wanted, False):
        raise ValueError(f"Kafka compression {wanted!r} is not available here: install cramjam (lz4) "
                         "or pass compression=None")
    return wanted


class KafkaOutput:
    """Bounded, non-blocking Kafka publisher for Hit dicts, keyed by visitor_id."""

    def __init__(self, bootstrap: str, topic: str = TOPIC_HITS, max_buffered: int | None = None,
                 partitions: int | None = None, linger_ms: int = 20, request_timeout_ms: int = 5000,
                 compression: str | None = "auto", security: dict | None = None):
        if max_buffered is None or partitions is None:
            from config.settings import CaptureSettings, KafkaSettings

            max_buffered = max_buffered or CaptureSettings().max_buffered_events
            partitions = partitions or KafkaSettings().partitions
        if not bootstrap:
            raise ValueError("KafkaOutput needs a bootstrap address such as 127.0.0.1:9092")
        self.bootstrap = bootstrap
        self.security = dict(security or {})  # aiokafka's TLS / SASL arguments (config/kafka_security.py)
        self.topic = topic
        self.max_buffered = max_buffered
        self.partitions = partitions
        self.linger_ms = linger_ms
        self.request_timeout_ms = request_timeout_ms
        self.compression = _compression(compression, bootstrap)
        self._queue: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._lock = threading.Lock()
        self._sent = 0
        self._dropped = 0
        self._unserializable = 0
        self._inflight = 0
        self._connected = False
        self._outages = 0
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._wakeup: asyncio.Event | None = None
        self._idle = threading.Event()  # set while nothing is queued or in flight
        self._idle.set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name=f"{_THREAD_NAME}-{id(self):x}", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    # -- called from the capture loop -----------------------------------------------------------
    def send_many(self, events: "Iterable[dict] | EventLines") -> int:
        """Queue events for delivery; returns how many were queued. Never blocks on the network."""
        if isinstance(events, EventLines):
            items = list(zip(events.keys, events.lines()))  # already JSON, keyed by visitor id
        else:
            try:
                items = [((e.get("visitor_id") or "").encode(), orjson.dumps(e)) for e in events]
            except (orjson.JSONEncodeError, AttributeError, TypeError):
                items = self._serializable(events)
        if not items:
            return 0
        with self._lock:
            self._queue.extend(items)
            over = len(self._queue) - self.max_buffered
            if over > 0:
                for _ in range(over):
                    self._queue.popleft()
                self._dropped += over
            self._idle.clear()
        self._poke()
        return len(items)

    def _serializable(self, events: Iterable[dict]) -> list[tuple[bytes, bytes]]:
        """Slow path: skip (count, log once) what cannot become JSON instead of stopping capture."""
        items = []
        for e in events:
            try:
                items.append(((e.get("visitor_id") or "").encode(), orjson.dumps(e)))
            except (orjson.JSONEncodeError, AttributeError, TypeError) as err:
                if not self._unserializable:
                    log.warning("dropping an event that cannot be serialized to JSON (%s); further ones are "
                                "only counted in stats['unserializable']", err)
                self._unserializable += 1
        return items

    def send(self, event: dict) -> int:
        return self.send_many([event])

    write = send_many  # the agent's output interface: write(events) / close()

    @classmethod
    def from_settings(cls, settings) -> "KafkaOutput":
        from config.kafka_security import aiokafka_kwargs

        return cls(settings.kafka.bootstrap, max_buffered=settings.capture.max_buffered_events,
                   partitions=settings.kafka.partitions, security=aiokafka_kwargs(settings.kafka))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is acknowledged by the broker (or timeout); True when all are."""
        self._poke()
        return self._idle.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to `timeout`), then stop the producer thread."""
        if self._stopping:
            return
        if not self.flush(timeout):
            log.warning("closing Kafka output with %d event(s) undelivered to %s", self.buffered, self.bootstrap)
        self._stopping = True
        self._poke()
        self._thread.join(timeout=max(2.0, self.request_timeout_ms / 1000 + 2))
        log.info("Kafka output to %s/%s: %d sent, %d dropped while the broker was away, %d undelivered",
                 self.bootstrap, self.topic, self._sent, self._dropped, self.buffered)

    @property
    def buffered(self) -> int:
        return len(self._queue) + self._inflight

    @property
    def stats(self) -> dict:
        return {"sent": self._sent, "buffered": self.buffered, "dropped_while_broker_away": self._dropped,
                "connected": self._connected, "outages": self._outages, "unserializable": self._unserializable}

    def __enter__(self) -> "KafkaOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _poke(self) -> None:
        if self._wakeup is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._wakeup.set)
            except RuntimeError:
                pass  # loop already stopped

    # -- producer thread ------------------------------------------------------------------------
    def _thread_main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.close()

    async def _run(self) -> None:
        self._wakeup = asyncio.Event()
        self._ready.set()
        backoff = _RETRY_MIN_S
        while not self._stopping:
            producer = None
            try:
                producer = await self._connect()
                if self._outages:
                    log.warning("Kafka at %s is back; delivering %d buffered event(s)", self.bootstrap, self.buffered)
                self._connected = True
                _outage_owners.discard(id(self))
                backoff = _RETRY_MIN_S
                await self._pump(producer)
            except Exception as e:  # any broker/network failure: keep buffering, reconnect
                if self._connected or self._outages == 0:
                    self._outages += 1
                    # a broker refusing the credentials (or the TLS) fails the same way as one that is away
                    log.warning("Kafka at %s unreachable (%s); buffering %d events, oldest dropped beyond %d. "
                                "Check the broker address / that it is running%s; delivery resumes when it is back.",
                                self.bootstrap, type(e).__name__, self.buffered, self.max_buffered,
                                security_hint(self.security))
                self._connected = False
                _outage_owners.add(id(self))
                await self._sleep(backoff)
                backoff = min(backoff * 2, _RETRY_MAX_S)
            finally:
                if producer is not None:
                    try:
                        await asyncio.wait_for(producer.stop(), 3)
                    except Exception:
                        pass
        self._connected = False
        _outage_owners.discard(id(self))

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        self._wakeup.clear()

    async def _connect(self):
        from aiokafka import AIOKafkaProducer

        await self._ensure_topic()
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=self.linger_ms, **self.security,
                                    compression_type=self.compression, acks=1,
                                    request_timeout_ms=self.request_timeout_ms,
                                    max_batch_size=1 << 20, enable_idempotence=False)
        try:
            await asyncio.wait_for(producer.start(), self.request_timeout_ms / 1000)
            parts = await asyncio.wait_for(producer.partitions_for(self.topic), self.request_timeout_ms / 1000)
        except BaseException:
            try:
                await asyncio.wait_for(producer.stop(), 3)
            except Exception:
                pass
            raise
        self._parts = sorted(parts)
        return producer

    async def _ensure_topic(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=self.request_timeout_ms,
                                    **self.security)
        await asyncio.wait_for(admin.start(), self.request_timeout_ms / 1000)
        try:
            existing = await admin.list_topics()
            if self.topic not in existing:
                try:
                    await admin.create_topics([NewTopic(self.topic, self.partitions, 1)])
                    log.info("created Kafka topic %s with %d partitions", self.topic, self.partitions)
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

    def _take(self) -> list[tuple[bytes, bytes]]:
        with self._lock:
            n = min(_CHUNK, len(self._queue))
            chunk = [self._queue.popleft() for _ in range(n)]
            self._inflight = n
        return chunk

    def _give_back(self, chunk: list[tuple[bytes, bytes]]) -> None:
        """A chunk that was not acknowledged goes back to the front (bounded like everything else)."""
        with self._lock:
            self._queue.extendleft(reversed(chunk))
            self._inflight = 0
            over = len(self._queue) - self.max_buffered
            if over > 0:
                for _ in range(over):
                    self._queue.popleft()
                self._dropped += over

    async def _pump(self, producer) -> None:
        from aiokafka.partitioner import murmur2

        nparts = len(self._parts)
        part_of: dict[bytes, int] = {}  # murmur2 in Python is slow; visitors repeat, so cache
        while True:
            chunk = self._take()
            if not chunk:
                with self._lock:
                    if not self._queue:
                        self._idle.set()
                if self._stopping:
                    return
                await self._sleep(self.linger_ms / 1000)
                continue
            try:
                by_part: dict[int, list[tuple[bytes, bytes]]] = collections.defaultdict(list)
                if len(part_of) > 200_000:
                    part_of.clear()
                for item in chunk:
                    part = part_of.get(item[0])
                    if part is None:
                        # same partition choice as the Java client's default partitioner
                        part = part_of[item[0]] = self._parts[(murmur2(item[0]) & 0x7FFFFFFF) % nparts]
                    by_part[part].append(item)
                futures = []
                for part, items in by_part.items():
                    batch = producer.create_batch()
                    for key, value in items:
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            futures.append(await producer.send_batch(batch, self.topic, partition=part))
                            batch = producer.create_batch()
                            batch.append(key=key, value=value, timestamp=None)
                    futures.append(await producer.send_batch(batch, self.topic, partition=part))
                await asyncio.wait_for(asyncio.gather(*futures), self.request_timeout_ms / 1000 + 5)
            except BaseException:
                self._give_back(chunk)
                raise
            with self._lock:
                self._inflight = 0
                self._sent += len(chunk)
