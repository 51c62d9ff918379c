"""Log set-up of every command: readable lines on stderr, or one JSON object per line (log_format = "json").

Whatever the format, log records pass a filter that masks URL passwords (a library that logs the URL
it connects to must not leak the secret in it), and one that turns the Kafka clients' flood of errors while
a broker is away into one line and a count a minute (config/kafka_log_flood.py).
"""
from __future__ import annotations

import logging
import sys

from config.kafka_log_flood import kafka_client_errors
from config.redact import redact_text

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level",
                                                          "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactSecrets())
    handler.addFilter(kafka_client_errors)
    root = logging.getLogger()
    for h in list(root.handlers):  # one set-up per process, whichever command ran first
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
