"""The Kafka clients' flood while a broker is away becomes one line, a count a minute and a total."""
from __future__ import annotations

import io
import logging
import re

from config.kafka_log_flood import KafkaClientErrors


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _logging_through(f: KafkaClientErrors) -> tuple[io.StringIO, logging.Handler]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.addFilter(f)
    return out, handler


def _emit(handler: logging.Handler, name: str, level: int, msg: str, *args) -> None:
    handler.handle(logging.LogRecord(name, level, __file__, 1, msg, args, None))


def test_a_broker_away_for_five_minutes_is_a_handful_of_lines_that_count_every_error():
    clock = Clock()
    f = KafkaClientErrors(clock)
    out, h = _logging_through(f)
    for i in range(3000):  # 10 a second, as aiokafka retries: 3,000 lines before
        clock.now += 0.1
        _emit(h, "aiokafka", logging.ERROR, "Unable connect to node with id %d: Connect call failed", 111)
        if i % 10 == 0:
            _emit(h, "processors.outbox", logging.ERROR, "FAIL [rdkafka#producer-1] [thrd:x]: Connection refused")
    lines = out.getvalue().splitlines()
    assert 1 + 4 <= len(lines) <= 1 + 5, lines  # the first, then one a minute
    assert "Unable connect to node with id 111" in lines[0] and "counted, not logged" in lines[0]
    counted = sum(int(re.search(r"Kafka clients: ([\d,]+) errors", x)[1].replace(",", "")) for x in lines[1:])
    assert f.total == 3300 and counted + 1 + f._pending == f.total and f.hidden == f.total - len(lines)


def test_other_lines_pass_untouched_and_a_new_outage_is_said_again():
    clock = Clock()
    f = KafkaClientErrors(clock)
    out, h = _logging_through(f)
    for _ in range(50):
        clock.now += 0.1
        _emit(h, "aiokafka.consumer.fetcher", logging.ERROR, "Failed fetch messages from 111")
        _emit(h, "processors.outbox", logging.WARNING, "13 record(s) for Kafka not delivered at shutdown")
        _emit(h, "aiokafka", logging.INFO, "Discovered coordinator")  # below WARNING: not a client error
    clock.now += KafkaClientErrors.QUIET_S + 1  # the broker was back for a while; now it goes away again
    _emit(h, "aiokafka", logging.ERROR, "Unable to update metadata from [111]")
    lines = out.getvalue().splitlines()
    assert sum("not delivered at shutdown" in x for x in lines) == 50
    assert sum("Discovered coordinator" in x for x in lines) == 50
    assert sum("Failed fetch messages" in x for x in lines) == 1
    assert "Unable to update metadata" in lines[-1] and "counted, not logged" in lines[-1]
    assert f.total == 51 and f.hidden == 49
