"""Two tansu 0.6.0 broker defects visitwire designs around, each in its smallest reproduction.

    .venv/bin/python benchmarks/tansu_broker_repro.py

1. End offsets of multi-record batches. One producer batch of 10 records into an empty partition reads as
   high watermark 1, a second as 11, while a consumer reads 20 records at offsets 0..19 (Kafka: 10, then
   20). tansu answers ListOffsets with the last batch's base offset + 1. So broker lag (`visitwire status`,
   visitwire_kafka_lag) is a lower bound on tansu, and tests count records end to end instead.
2. SASL credentials. `--authentication` makes every client authenticate, but no login can succeed: PLAIN
   gets no shared mechanism (tansu offers SCRAM-SHA-256/512 and OAUTHBEARER), and SCRAM users come from
   the storage engine, which keeps none in this build: `tansu user create` is refused by an authenticating
   broker (not authenticated), exits 0 against one without `--authentication`, and DescribeUserScramCredentials
   then finds no such user. So visitwire's SASL test puts its own gateway in front of tansu
   (tests/engine/sasl_gateway.py).

Exit code 0 when both behave as Kafka does, 1 while either defect is there.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.services import _spawn, free_port, start_tansu, tansu_binary  # noqa: E402


def _high_watermark(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "repro"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5, cached=False)[1]
    finally:
        c.close()


def end_offsets() -> bool:
    """True when the end offset counts every record of multi-record batches."""
    with start_tansu() as svc:
        admin = AdminClient({"bootstrap.servers": svc.url})
        admin.create_topics([NewTopic("batches", 1)])["batches"].result(10)
        producer = Producer({"bootstrap.servers": svc.url, "linger.ms": 200})
        highs = []
        for batch in range(2):
            for i in range(10):
                producer.produce("batches", f"{batch}-{i}".encode(), partition=0)
            producer.flush(10)  # the 10 records leave as one batch (linger 200 ms)
            highs.append(_high_watermark(svc.url, "batches"))
        consumer = Consumer({"bootstrap.servers": svc.url, "group.id": "reader", "enable.auto.commit": False})
        consumer.assign([TopicPartition("batches", 0, 0)])
        offsets, deadline = [], time.monotonic() + 15
        while len(offsets) < 20 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                offsets.append(m.offset())
        consumer.close()
    print(f"1. two batches of 10 records: high watermark {highs[0]} then {highs[1]} (Kafka: 10 then 20); "
          f"a consumer read {len(offsets)} records at offsets "
          f"{min(offsets, default=None)}..{max(offsets, default=None)}")
    return highs == [10, 20]


def _user_create(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([tansu_binary(), "user", "create", "--broker", url, "--mechanism", "scram256", "alice",
                           "s3cret"], capture_output=True, text=True, timeout=30)


def _scram_login(bootstrap: str) -> str:
    errors: list = []
    said = _Kept()
    logger = logging.getLogger("repro.librdkafka")
    logger.propagate, logger.handlers = False, [said]
    p = Producer({"bootstrap.servers": bootstrap, "security.protocol": "sasl_plaintext",
                  "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "alice", "sasl.password": "s3cret",
                  "message.timeout.ms": 4000, "error_cb": lambda e: errors.append(e)}, logger=logger)
    p.produce("any", b"x", on_delivery=lambda e, _m: errors.append(e))
    p.flush(10)
    line = next((ln for ln in said.lines if "SASL" in ln), "")
    return "delivered" if errors == [None] else (line.split(": ", 2)[-1][:120] or str(errors[0]))


class _Kept(logging.Handler):
    """librdkafka's log lines, kept instead of printed."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def sasl_users() -> bool:
    """True when a SCRAM user can be created and then log in."""
    ok = False
    with start_tansu() as plain:  # without --authentication: the user store itself
        made = _user_create(f"tcp://{plain.url}")
        admin = AdminClient({"bootstrap.servers": plain.url})
        try:
            described = admin.describe_user_scram_credentials(["alice"])["alice"].result(10)
            found = f"found {described}"
        except Exception as e:  # the broker has no such user
            found = f"not found ({str(e)[:80]})"
    print(f"2. tansu user create against a broker without --authentication: exit {made.returncode}; "
          f"DescribeUserScramCredentials then: {found}")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    svc = _spawn("tansu", [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                           "--storage-engine", "memory://tansu/", "--authentication"], None, port, 20,
                 f"127.0.0.1:{port}")
    try:
        made = _user_create(url)
        said = (made.stderr.strip().splitlines() or [""])[-1][-100:]
        login = _scram_login(f"127.0.0.1:{port}")
        print(f"   against a broker with --authentication: exit {made.returncode} ({said}); "
              f"a SCRAM-SHA-256 login then: {login}")
        ok = made.returncode == 0 and login == "delivered"
    finally:
        svc.stop()
    return ok


def main() -> int:
    results = [end_offsets(), sasl_users()]
    print("both behave as Kafka does" if all(results) else "tansu defect(s) reproduced")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
