"""The capture agent's parts: where packets come from, where events go, and the one loop between them.

Sources yield FrameBatch objects (a pcap file, or the live socket of capture.live); outputs take
events (JSON lines on stdout, capture.outputs; Kafka, capture.kafka_out). `run_loop` feeds every
batch to the Decoder, sweeps expiry and publishes what comes out; `visitwire capture`
(engine/capture_cmd.py) and the embedded runtime's capture child (engine/supervisor.py) both run it.

The clock rule: expiry runs on the capture clock, the time of the newest packet, so replaying a file
gives the events that watching it live gave. A batch without packets (only a live source is ever
idle) moves the clock to the wall clock. The decoder is swept every EXPIRE_EVERY_S of that clock.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Protocol

from capture.capture_file import CaptureFileError, check_capture_file
from capture.frames import FrameBatch
from capture.pcapfile import read_pcap_batches
from capture.decoder import Decoder
from config.settings import Settings

EXPIRE_EVERY_S = 1.0  # capture-clock seconds between expiry sweeps


class PacketSource(Protocol):
    """Batches of frames in capture order.

    A file source ends at its end. A live source runs until closed; when no packet arrives it yields
    an empty batch at least every flush interval (capture.live: 0.2 s), so a call to next() blocks
    no longer than that and expiry runs without traffic. A batch's buffer may be reused once the
    next batch is asked for: the decoder copies what it keeps."""

    def __iter__(self) -> Iterator[FrameBatch]: ...


class EventOutput(Protocol):
    """Where events go. `write(events)` takes a list of event dicts or an EventLines (JSON lines with
    their keys) and never blocks on the network: an output that cannot deliver now buffers, and beyond
    its bound drops the oldest and counts them. `close()` delivers what it still holds (bounded wait)."""

    def write(self, events: Any) -> Any: ...

    def close(self) -> None: ...


class SourceError(Exception):
    """No usable packet source (message says what to do)."""


def open_source(settings: Settings, pcap: str | None, iface: str | None, reader_stats: dict) -> PacketSource:
    if pcap:
        try:
            check_capture_file(pcap)  # not a capture, or a link type we do not decode: say so now
        except CaptureFileError as e:
            raise SourceError(str(e)) from None
        return read_pcap_batches(pcap, stats=reader_stats)
    try:
        from capture.live import CaptureError, open_live  # provided by the live-capture room
    except ImportError:
        raise SourceError("live capture is not available in this build; use --pcap FILE") from None
    try:
        return open_live(settings, iface or settings.capture.iface)
    except CaptureError as e:
        raise SourceError(str(e)) from None


def open_outputs(settings: Settings, jsonl: bool, kafka: bool) -> list[EventOutput]:
    from capture.outputs import JsonlOutput

    outputs: list[EventOutput] = []
    if jsonl:
        outputs.append(JsonlOutput())
    if kafka:
        try:
            from capture.kafka_out import KafkaOutput  # provided by the Kafka room
        except ImportError:
            raise SourceError("Kafka output is not available in this build; use --format jsonl") from None
        outputs.append(KafkaOutput.from_settings(settings))
    return outputs


def run_loop(source: Iterable[FrameBatch], decoder: Decoder, publish: Callable[[Any, FrameBatch | None], None],
             after_batch: Callable[[FrameBatch], bool] | None = None) -> None:
    """feed -> expire -> publish for every batch, then close: `publish(events, batch)` gets the events a batch
    completed (with that batch: its packet times stand in for theirs) and `publish(events, None)` the
    expired and, at the end, the pending ones. `after_batch(batch)` returning True ends the input early;
    the decoder is closed either way."""
    next_expire = None
    for batch in source:
        if len(batch):
            publish(decoder.feed_lines(batch), batch)
        now = float(batch.ts[-1]) if len(batch) else time.time()
        if next_expire is None:
            next_expire = now + EXPIRE_EVERY_S
        elif now >= next_expire:
            publish(decoder.expire(now), None)
            next_expire = now + EXPIRE_EVERY_S
        if after_batch is not None and after_batch(batch):
            break
    publish(decoder.close(), None)


def tune_gc() -> None:
    # events and per-flow state are acyclic; frequent young-generation sweeps over
    # hundreds of thousands of live objects cost ~10% of decode time
    import gc

    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
