"""Lag of a consumer group per partition, asked of the broker (librdkafka), without joining the group.

On tansu the end offset of a topic written in multi-record batches comes out lower than the records
written (a known broker behaviour), so its lag reads low there; a negative difference is shown as 0.
"""
from __future__ import annotations

from typing import Any

from config.kafka_errors import ClientErrors

TIMEOUT_S = 5.0


class BrokerUnreachable(Exception):
    """The broker did not answer within the timeout."""


class BrokerRefused(BrokerUnreachable):
    """The broker refused this client's SASL login or TLS handshake: its settings are to check, not the broker."""


def group_lag(bootstrap: str, group: str, topic: str, timeout: float = TIMEOUT_S,
              extra_config: dict[str, Any] | None = None) -> dict[int, dict]:
    """{partition: {"topic", "committed", "end", "lag"}}; committed None = the group never committed
    there (lag counts from the partition's start). Raises BrokerUnreachable."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    errors = ClientErrors("lag probe", logs=False)  # the caller says the outcome
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "socket.connection.setup.timeout.ms": int(timeout * 1000), "logger": _quiet(),
                         "error_cb": errors, **(extra_config or {})})
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout)
        except KafkaException as e:
            raise _failure(consumer, errors, bootstrap, f"does not answer ({e.args[0].str()})") from None
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
        raise _failure(consumer, errors, bootstrap, e.args[0].str()) from None
    finally:
        consumer.close()


def _failure(consumer: Any, errors: ClientErrors, bootstrap: str, what: str) -> BrokerUnreachable:
    """Why a call failed: the broker's refusal when librdkafka reported one, else the failure and the latest
    report (e.g. "Connection refused")."""
    consumer.poll(0)  # serves the error reports queued during the call to `errors` (error_cb)
    if errors.refusal:
        return BrokerRefused(f"Kafka at {bootstrap} {errors.refusal}")
    latest = f"; latest client error: {errors.latest}" if errors.latest else ""
    return BrokerUnreachable(f"Kafka at {bootstrap} {what}{latest}")


def _quiet() -> Any:
    """librdkafka's own log lines (connection refused, retries) go to a silent logger: the caller says it once."""
    import logging

    lg = logging.getLogger("visitwire.kafka_lag.librdkafka")
    lg.propagate = False
    lg.addHandler(logging.NullHandler())
    return lg
