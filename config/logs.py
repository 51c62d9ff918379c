"""Log set-up of every command and of every helper process it starts: readable lines on stderr, or one JSON
object per line (log_format = "json").

Whatever the format, log records pass a filter that masks URL passwords (a library that logs the URL
it connects to must not leak the secret in it), and one that turns the Kafka clients' flood of errors while
a broker is away into one line and a count a minute (config/kafka_log_flood.py). It sits in the leaf because
the helper processes of every room (capture child, hits reader, history writer) set up their logs the same
way: the command's level and format reach them through the environment they inherit.
"""
from __future__ import annotations

import logging
import os
import sys

from config.kafka_log_flood import kafka_client_errors
from config.redact import redact_text

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# not VISITWIRE_LOG_LEVEL: that would become a setting of every later load in this process
_LEVEL_ENV, _FORMAT_ENV = "VISITWIRE_HELPER_LOG_LEVEL", "VISITWIRE_HELPER_LOG_FORMAT"


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def configure_logging(level: str, fmt: str = "text", process: str = "") -> None:
    """`process` names a helper process in text lines (its JSON lines carry it as `process`)."""
    # what the helper processes started from here inherit (configure_helper_logging)
    os.environ[_LEVEL_ENV], os.environ[_FORMAT_ENV] = level, fmt
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level",
                                                          "name": "logger"},
                                           static_fields={"process": process} if process else None))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.replace("%(name)s", f"{process} %(name)s")
                                               if process else TEXT_FORMAT))
    handler.addFilter(RedactSecrets())
    handler.addFilter(kafka_client_errors)
    root = logging.getLogger()
    for h in list(root.handlers):  # one set-up per process, whichever command ran first
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)


def configure_helper_logging(process: str, floor: str = "WARNING") -> None:
    """A helper process's log set-up: its command's format and level (at least `floor`: a helper's INFO lines
    would repeat its command's), with the same masking and flood filters."""
    level = os.environ.get(_LEVEL_ENV, floor)
    if logging.getLevelName(level) < logging.getLevelName(floor):
        level = floor
    configure_logging(level, os.environ.get(_FORMAT_ENV, "text"), process)
