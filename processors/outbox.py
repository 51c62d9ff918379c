"""Records on their way to Kafka (page views, sessions, the sessions changelog), tracked until delivered.

librdkafka (confluent-kafka) partitions, batches and sends them in its own threads: `produce()`
costs about 1 µs a record here, where aiokafka built batches and requests in Python on the
worker's event loop (several µs a record, beside the processing).

Nothing is lost while a broker is away: `send` queues what the producer does not take, and
`confirm()` waits until every record sent so far is delivered. A record librdkafka gives up
on (kafka.producer_request_timeout_s) comes back through its error report; confirm() keeps
it, raises DeliveryFailed, and the next send or confirm sends it again before anything newer.
The worker commits hit offsets only after confirm() succeeded.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from config.kafka_errors import ClientErrors, KafkaRefused
from config.settings import KafkaSettings

log = logging.getLogger(__name__)

Record = tuple[int, bytes, bytes]  # (partition, key, value)
UNASSIGNED = -1  # a keyed record whose partition librdkafka had not picked yet


class DeliveryFailed(Exception):
    """Records were not delivered; they are kept and sent again by the next send or confirm."""


class DeliveryRefused(DeliveryFailed, KafkaRefused):
    """... because the broker refused the producer's login or TLS handshake (the records are kept all the same)."""


class Outbox:
    """`send(topic, [(partition, key, value)])`, `send_keyed(topic, [(key, value)])` (the partition the
    key hashes to, as the Java client and capture's producer pick it), then `await confirm()`."""

    def __init__(self, settings: KafkaSettings):
        from confluent_kafka import Producer

        from config.kafka_security import librdkafka_config

        self._bootstrap = settings.bootstrap
        self.errors = ClientErrors("outbox")  # librdkafka's error reports, served by flush()
        self._producer = Producer({
            "bootstrap.servers": settings.bootstrap,
            "partitioner": "murmur2_random",  # Java's murmur2 for keyed records: the visitor's hits partition
            "linger.ms": 5,
            "message.timeout.ms": max(1, int(settings.producer_request_timeout_s * 1000)),
            "queue.buffering.max.messages": 1_000_000,  # a backlog's flush interval of records, with room
            "queue.buffering.max.kbytes": 1 << 20,
            "delivery.report.only.error": True,  # reports cost a Python call each: only the failures
            "on_delivery": self._on_delivery_failed,
            "logger": log,
            "error_cb": self.errors,
            **librdkafka_config(settings),  # TLS / SASL (config/kafka_security.py)
        })
        self._failed: list[tuple[str, int, bytes, bytes]] = []  # reported by librdkafka, not yet queued again
        # (topic, records, keyed) the producer has not taken: new while its queue was full, or back from a
        # failed delivery; oldest first. keyed: (key, value) records, else (partition, key, value).
        self._queued: list[tuple[str, list, bool]] = []
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="visitwire-outbox")  # flush() blocks

    @property
    def undelivered(self) -> int:
        """Records not handed to the producer (kept after a failed delivery, or not taken yet)."""
        return sum(len(records) for _, records, _ in self._queued) + len(self._failed)

    async def send(self, topic: str, records: Iterable[Record]) -> None:
        """Queue (partition, key, value) records behind any kept from a failed delivery."""
        self._queued.append((topic, list(records), False))
        self._hand_over()

    async def send_keyed(self, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Queue (key, value) records for the partitions their keys hash to."""
        self._queued.append((topic, list(records), True))
        self._hand_over()

    async def prepare(self, topics: Iterable[str], timeout_s: float = 10.0) -> None:
        """Learn the topics' partitions now, so the first records need not wait for them."""
        loop = asyncio.get_running_loop()
        for topic in topics:
            await loop.run_in_executor(self._flusher, self._producer.list_topics, topic, timeout_s)

    async def confirm(self, timeout_s: float = 10.0) -> None:
        """Wait until everything sent so far is delivered; DeliveryFailed (records kept) if some was not."""
        self._requeue_failed()
        self._hand_over()
        in_flight = await asyncio.get_running_loop().run_in_executor(self._flusher, self._producer.flush, timeout_s)
        self._requeue_failed()
        refusal = self.errors.take_refusal()  # reported while flush() waited
        if self._queued or in_flight:
            topics = ", ".join(sorted({t for t, _, _ in self._queued})) or "their topics"
            if refusal:
                raise DeliveryRefused(f"{self.undelivered + in_flight} record(s) to {topics} not delivered: Kafka "
                                      f"at {self._bootstrap} {refusal}; kept to be sent again by the next flush")
            raise DeliveryFailed(f"{self.undelivered + in_flight} record(s) to {topics} not delivered yet "
                                 "(broker away or slow? check kafka.bootstrap); "
                                 "kept to be sent again by the next flush")

    def close(self, timeout_s: float = 5.0) -> int:
        """Deliver what is in flight (up to timeout_s), then disconnect (a broker shutting down waits for its
        clients); returns how many records were left undelivered."""
        left = self._producer.flush(timeout_s) + self.undelivered
        self._flusher.shutdown()
        if left:
            log.warning("%d record(s) for Kafka not delivered at shutdown; their hits are not committed either "
                        "and are processed again by the next worker", left)
            self._producer.purge()  # close() would wait for them without end
        self._producer.close()
        if self.errors.total:
            log.warning("%s", self.errors.summary())
        return left

    def _on_delivery_failed(self, error: Any, message: Any) -> None:
        # in the thread that runs flush(); only failures are reported (delivery.report.only.error)
        if error is not None:
            if not self._failed:
                log.warning("a record to %s was not delivered (%s); it is kept and sent again", message.topic(), error)
            self._failed.append((message.topic(), message.partition(), message.key(), message.value()))

    def _requeue_failed(self) -> None:
        """Reported failures go ahead of everything queued, in report order (each partition's order holds)."""
        failed, self._failed = self._failed, []
        self._queued[:0] = [(topic, [(key, value)], True) if partition == UNASSIGNED else
                            (topic, [(partition, key, value)], False) for topic, partition, key, value in failed]

    def _hand_over(self) -> None:
        """Give the producer every queued record, oldest first; what a full queue refuses stays queued."""
        produce = self._producer.produce
        while self._queued:
            topic, records, keyed = self._queued[0]
            done = 0
            try:
                if keyed:
                    for key, value in records:
                        produce(topic, value, key)
                        done += 1
                else:
                    for partition, key, value in records:
                        produce(topic, value, key, partition)
                        done += 1
            except BufferError:  # librdkafka's queue is full (broker away for long): the rest waits
                self._queued[0] = (topic, records[done:], keyed)
                self._producer.poll(0)
                return
            self._queued.pop(0)
