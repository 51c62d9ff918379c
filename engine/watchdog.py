"""The embedded runtime's watchdog: what the pipeline depends on still holds its data, or the run says so.

Checked about once a second while `visitwire run` / `demo` runs and drains:
- a dead embedded redis-server is started again on its port: the worker and the screen reconnect;
  the live counters start again from empty (the history has every event). Said once, counted, and
  the run ends non-zero because its live figures are incomplete;
- a dead embedded broker (tansu, memory storage) took its topics with it: the hits that capture had
  published and the worker had not read are gone. Restarting it would hand the worker and capture a
  broker without their topics and offsets, so the run stops at once with the count (PipelineLoss);
- a broker whose hits-topic end offsets went backwards, or whose hits topic vanished (an external
  broker restarted with memory storage), stops the run the same way, within seconds instead of
  waiting out the drain;
- a history write refused for lack of disk space (sinks/disk_space.py) stops the run; the worker's
  Kafka offsets stay uncommitted.
The hits reader child is watched by the worker itself (processors/hits_intake.py restarts it).
"""
from __future__ import annotations

import asyncio
import logging
import time

from config.events import TOPIC_HITS
from config.kafka_errors import ClientErrors
from config.kafka_security import librdkafka_config
from engine.services import Service, ServiceError, start_redis
from sinks.disk_space import DiskFull

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
BROKER_CHECK_EVERY_S = 2.0


class PipelineLoss(Exception):
    """Accepted events were lost or cannot be written; the message gives the counts and what to do."""


class BrokerWatch:
    """Notices a broker that lost the hits topic's data: end offsets that went backwards, or the topic gone."""

    def __init__(self, bootstrap: str, topic: str, extra_config: dict | None = None):
        self.bootstrap, self.topic = bootstrap, topic
        self.extra_config = extra_config or {}  # TLS / SASL (config/kafka_security.py): without it, a broker that
        # wants them refused every check, and the watch saw a broker "away" for the whole run
        self.errors = ClientErrors("watchdog's broker watch")  # a refusal: one line, then counted
        self._high: dict[int, int] = {}   # the highest end offset seen per partition
        self._consumer = None

    def _client(self):
        if self._consumer is None:
            from confluent_kafka import Consumer

            self._consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "visitwire-broker-watch",
                                       "enable.auto.commit": False, "socket.timeout.ms": 2000,
                                       "log_level": 0, "error_cb": self.errors, **self.extra_config})
        return self._consumer

    def check(self) -> str:
        """"" while the broker's data is consistent (or it cannot be asked right now), else what went wrong."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            md = self._client().list_topics(self.topic, timeout=2.0)
            meta = md.topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                return f"the topic {self.topic} is gone from the broker" if self._high else ""
            for p in meta.partitions:
                _, high = self._client().get_watermark_offsets(TopicPartition(self.topic, p), timeout=2.0,
                                                              cached=False)
                if high < self._high.get(p, 0):
                    return (f"the end offset of {self.topic} partition {p} went back from {self._high[p]} to {high}: "
                            "the broker lost data (restarted with memory storage?)")
                self._high[p] = max(high, self._high.get(p, 0))
        except KafkaException:
            self._client().poll(0)  # serves librdkafka's error reports to self.errors (a refusal is logged once)
            return ""  # away or slow: not a loss by itself; the drain's own checks cover a broker that stays away
        return ""

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self.errors.total:
            log.debug("%s", self.errors.summary())  # a run whose broker went away has said so already


class Watchdog:
    """`await check(runtime)` about once a second; raises PipelineLoss when the run must stop."""

    def __init__(self, supervisor, settings, console):
        self.supervisor, self.settings, self.console = supervisor, settings, console
        self.restarts: dict[str, int] = {}
        self.notes: list[str] = []        # what went wrong but did not stop the run (for the summary)
        self.broker = BrokerWatch(settings.kafka.bootstrap, TOPIC_HITS, librdkafka_config(settings.kafka))
        self._next = 0.0
        self._next_broker = 0.0

    async def check(self, runtime) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + CHECK_EVERY_S
        for svc in list(self.supervisor.services):
            if not svc.alive():
                await self._on_dead(svc, runtime)
        error = getattr(runtime.worker_runtime(), "last_flush_error", None)
        if isinstance(error, DiskFull):
            raise PipelineLoss(f"{error}. {self._unwritten(runtime)}")
        if now >= self._next_broker:
            self._next_broker = now + BROKER_CHECK_EVERY_S
            problem = await asyncio.to_thread(self.broker.check)
            if problem:
                raise PipelineLoss(f"{problem}. {self._unread(runtime)}")

    async def _on_dead(self, svc: Service, runtime) -> None:
        code = svc.proc.returncode
        if svc.name == "tansu":
            raise PipelineLoss(f"the embedded Kafka broker (tansu) exited with code {code}; it keeps topics in "
                               f"memory, so they are gone. {self._unread(runtime)}")
        if svc.name == "redis":
            try:
                new = await asyncio.to_thread(start_redis, svc.port)
            except ServiceError as e:
                raise PipelineLoss(f"the embedded redis-server exited with code {code} and could not be "
                                   f"started again ({e}); live state is unavailable") from None
            self.supervisor.services[self.supervisor.services.index(svc)] = new
            self.restarts["redis"] = self.restarts.get("redis", 0) + 1
            note = (f"the embedded redis-server exited with code {code}; started again on port {svc.port}. "
                    "Live counters before the restart are lost (the history has every event)")
            self.notes.append(note)
            self.console.print(f"[yellow]{note}", soft_wrap=True)
            log.warning(note)

    @staticmethod
    def _unread(runtime) -> str:
        sent, processed = runtime.capture_sent(), runtime.worker_processed()
        lost = max(0, sent - processed)
        return (f"{lost:,} of {sent:,} hits that capture published had not been read by the worker and "
                "cannot be recovered; stopping")

    @staticmethod
    def _unwritten(runtime) -> str:
        wr = runtime.worker_runtime()
        held = runtime.worker_processed() - getattr(wr, "committed", 0)
        return (f"{held:,} processed hits are held with their Kafka offsets uncommitted (with --kafka they are read "
                "again on the next start; the embedded broker keeps them in memory only); the summary counts what "
                "the history holds; stopping")

    def close(self) -> None:
        self.broker.close()
