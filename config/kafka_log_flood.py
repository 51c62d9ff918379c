"""The Kafka clients' flood of errors while a broker is away, made readable.

aiokafka (Faust, the capture agent) and librdkafka (the hits reader, the outbox) retry every ~50-100 ms
and log each failed retry as an ERROR: 710 lines in the 10 s after the embedded broker died, 250 of them
from the hits reader alone. A log handler with `kafka_client_errors` as its filter logs the first of an
outage, then one line a minute with the count; `say_kafka_client_errors` gives the total when the process
ends. In config/ because the worker's hits reader process (processors/) and every command (engine/) use it.
"""
from __future__ import annotations

import logging
import re
import time


# librdkafka's log lines as its `logger` config forwards them: "FAIL [rdkafka#producer-1] [thrd:...]: ..."
_RDKAFKA_LINE = re.compile(r"[A-Z]+ \[rdkafka#")


class KafkaClientErrors(logging.Filter):
    """Warnings and errors of the Kafka client libraries come in floods while a broker is away. The first of
    an outage is logged, saying that the rest are counted; then one line per REPORT_EVERY_S with the count.
    An outage ends after QUIET_S without such an error; `total` counts every one (said at the end of a run)."""

    REPORT_EVERY_S = 60.0
    QUIET_S = 60.0

    def __init__(self, clock=time.monotonic):
        super().__init__()
        self.clock = clock
        self.total = 0          # every Kafka client warning or error seen
        self.hidden = 0         # ... of which not logged
        self._pending = 0       # hidden since the last line
        self._last_line = self._last_seen = float("-inf")

    @staticmethod
    def is_client_error(record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        return record.name.split(".")[0] == "aiokafka" or bool(_RDKAFKA_LINE.match(record.getMessage()))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.is_client_error(record):
            return True
        now = self.clock()
        self.total += 1
        new_outage = now - self._last_seen > self.QUIET_S
        self._last_seen = now
        if new_outage:
            self._pending, self._last_line = 0, now
            self._rewrite(record, "{} (further Kafka client errors are counted, not logged one by one)")
            return True
        if now - self._last_line < self.REPORT_EVERY_S:
            self._pending += 1
            self.hidden += 1
            return False
        count, since = self._pending + 1, now - self._last_line
        self._pending, self._last_line = 0, now
        self._rewrite(record, f"Kafka clients: {count:,} errors in the last {since:.0f} s, the latest: {{}}")
        return True

    @staticmethod
    def _rewrite(record: logging.LogRecord, template: str) -> None:
        record.msg, record.args = template.format(record.getMessage()), ()


kafka_client_errors = KafkaClientErrors()  # one per process: its count is said when the process ends


def say_kafka_client_errors(logger: logging.Logger) -> None:
    """The end of a run (or of the hits reader): how many Kafka client errors were counted instead of logged, if any."""
    f = kafka_client_errors
    if f.hidden:
        logger.warning("Kafka clients reported %s errors in this run; %s of them were counted, not logged",
                       f"{f.total:,}", f"{f.hidden:,}")
