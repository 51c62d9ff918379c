"""Where events go: JSON lines on a binary stream (stdout by default).

Every output has write(events) and close(); run_capture treats them alike, so
the Kafka output (capture.kafka_out) plugs in next to this one.
"""
from __future__ import annotations

import sys
from typing import BinaryIO, Iterable

import orjson


class JsonlOutput:
    """One orjson object per line; writes are batched per call (one syscall per batch)."""

    def __init__(self, stream: BinaryIO | None = None):
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.events = 0

    def write(self, events: "Iterable[dict] | EventLines") -> None:
        if isinstance(events, EventLines):
            if events.data:
                self.stream.write(events.data)
                self.events += len(events)
            return
        dumps = orjson.dumps
        lines = [dumps(e) for e in events]
        if lines:
            lines.append(b"")
            self.stream.write(b"\n".join(lines))
            self.events += len(lines) - 1

    def close(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:  # e.g. `visitwire capture ... | head`
            pass


class EventLines:
    """Events as JSON lines (each ends with a newline) with their Kafka keys (visitor ids, bytes)."""

    __slots__ = ("data", "keys")

    def __init__(self, data: bytes, keys: list[bytes]):
        self.data = data
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def lines(self) -> list[bytes]:
        return self.data.split(b"\n")[:-1]

    def dicts(self) -> list[dict]:
        return [orjson.loads(line) for line in self.lines()]
