"""Lag of a consumer group per partition, asked of the broker (librdkafka), without joining the group.

On tansu the end offset of a topic written in multi-record batches comes out lower than the records
written (a known broker behaviour), so its lag reads low there; a negative difference is shown as 0.
"""
from __future__ import annotations

from typing import Any

TIMEOUT_S = 5.0


class BrokerUnreachable(Exception):
    """The broker did not answer within the timeout."""


def group_lag(bootstrap: str, group: str, topic: str, timeout: float = TIMEOUT_S,
              extra_config: dict[str, Any] | None = None) -> dict[int, dict]:
    """{partition: {"topic", "committed", "end", "lag"}}; committed None = the group never committed
    there (lag counts from the partition's start). Raises BrokerUnreachable."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "socket.connection.setup.timeout.ms": int(timeout * 1000), "logger": _quiet(),
                         **(extra_config or {})})
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout)
        except KafkaException as e:
            raise BrokerUnreachable(f"Kafka at {bootstrap} does not answer ({e.args[0].str()})") from None
        t = meta.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return {}
        tps = [TopicPartition(topic, p) for p in sorted(t.partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=timeout)}
        out: dict[int, dict] = {}
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            c = committed.get(tp.partition, -1)
            done = c if c >= 0 else low
            out[tp.partition] = {"topic": topic, "committed": c if c >= 0 else None, "end": high,
                                 "lag": max(0, high - done)}
        return out
    except KafkaException as e:
        raise BrokerUnreachable(f"Kafka at {bootstrap}: {e.args[0].str()}") from None
    finally:
        consumer.close()


def _quiet() -> Any:
    """librdkafka's own log lines (connection refused, retries) go to a silent logger: the caller says it once."""
    import logging

    lg = logging.getLogger("visitwire.kafka_lag.librdkafka")
    lg.propagate = False
    lg.addHandler(logging.NullHandler())
    return lg
