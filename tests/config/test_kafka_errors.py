"""config/kafka_errors.ClientErrors, the librdkafka clients' error_cb, fed librdkafka's error objects
(confluent_kafka.KafkaError) as librdkafka hands them over."""
from __future__ import annotations

import logging

from confluent_kafka import KafkaError

from config.kafka_errors import ClientErrors


def test_each_report_is_counted_and_each_kind_logged_once_without_the_password(caplog):
    caplog.set_level(logging.WARNING, logger="config.kafka_errors")
    errors = ClientErrors("outbox")
    refused = "sasl_ssl://vw:s3cret-pw@10.0.0.5:9093/bootstrap: SASL authentication error: Authentication failed"
    for _ in range(50):  # librdkafka reports every retry
        errors(KafkaError(KafkaError._AUTHENTICATION, refused))
        errors(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    errors(KafkaError(KafkaError._TRANSPORT, "10.0.0.5:9093/bootstrap: Disconnected"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # _AUTHENTICATION and _TRANSPORT; _ALL_BROKERS_DOWN sums up the others
    assert lines[0].startswith("Kafka client error in the outbox: _AUTHENTICATION: sasl_ssl://vw:***@10.0.0.5")
    assert "s3cret-pw" not in " ".join(lines)
    assert errors.counts == {"_AUTHENTICATION": 50, "_ALL_BROKERS_DOWN": 50, "_TRANSPORT": 1}
    assert errors.total == 101
    assert errors.summary() == ("Kafka client errors in the outbox: _AUTHENTICATION 50, _ALL_BROKERS_DOWN 50, "
                                "_TRANSPORT 1")
    assert errors.latest == "_TRANSPORT: 10.0.0.5:9093/bootstrap: Disconnected"


def test_a_refusal_is_kept_until_taken_and_a_probe_logs_nothing(caplog):
    caplog.set_level(logging.DEBUG, logger="config.kafka_errors")
    probe = ClientErrors("lag probe", logs=False)
    probe(KafkaError(KafkaError._TRANSPORT, "h:9/bootstrap: Connect to ipv4#h:9 failed: Connection refused"))
    assert probe.take_refusal() == ""
    probe(KafkaError(KafkaError._SSL, "ssl://h:9/bootstrap: SSL handshake failed: certificate verify failed"))
    assert probe.take_refusal() == ("failed the TLS handshake (ssl://h:9/bootstrap: SSL handshake failed: "
                                    "certificate verify failed)")
    assert probe.take_refusal() == ""  # forgotten once said: a later call says only a new refusal
    probe(KafkaError(KafkaError._AUTHENTICATION, "sasl_plaintext://h:9/bootstrap: SASL authentication error"))
    assert probe.refusal.startswith("refused the SASL login (")
    assert caplog.records == []
