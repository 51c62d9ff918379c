"""`visitwire capture`: a packet source -> Decoder -> outputs, plus a summary.

The source is any iterator of FrameBatch (a pcap file here; capture.live adds the
live socket) and the outputs are objects with write(events)/close() (JsonlOutput
here; capture.kafka_out adds Kafka). Expiry runs on the capture clock (packet
timestamps), so replaying a file gives the same events as watching it live.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Iterator

from capture.frames import FrameBatch
from capture.pcapfile import PcapFormatError, read_pcap_batches
from capture.pipeline import Decoder
from config.settings import Settings

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 1.0  # capture-clock seconds between expiry sweeps

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def run_capture(settings: Settings, pcap: str | None, iface: str | None, jsonl: bool, kafka: bool) -> int:
    """Run capture to the end of the file (or until interrupted); returns the process exit code."""
    reader_stats: dict = {}
    try:
        source = open_source(settings, pcap, iface, reader_stats)
        outputs = open_outputs(settings, jsonl, kafka)
    except PcapFormatError as e:
        _say(f"error: {e}")
        return EXIT_USAGE
    except SourceError as e:
        _say(f"error: {e}")
        return EXIT_USAGE
    decoder = Decoder(settings)
    if not pcap:
        # compile/load the numba kernels now, not while the kernel ring fills with the first packets
        from capture.decode import warm_up

        warm_up()
    tune_gc()
    if not pcap:
        _flush_on_sigterm()  # from here on a SIGTERM flushes what was captured
    try:
        process(source, decoder, outputs, progress_total=_size(pcap))
    except PcapFormatError as e:
        _say(f"error: {e}")
        return EXIT_USAGE
    except BrokenPipeError:
        # the reader of stdout went away (e.g. `| head`): not an error, and nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        _say("interrupted; flushing what was captured")
        for out in outputs:
            out.write(decoder.close())
    finally:
        for out in outputs:
            out.close()
    print_summary(decoder.stats, reader_stats)
    if callable(getattr(source, "stats", None)):
        live = source.stats()
        _say(f"kernel: {live['kernel_packets']} packets seen, {live['kernel_drops']} dropped "
             f"({live['mode']} mode on {live['iface']})")
    return EXIT_OK


def tune_gc() -> None:
    # events and per-flow state are acyclic; frequent young-generation sweeps over
    # hundreds of thousands of live objects cost ~10% of decode time
    import gc

    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _flush_on_sigterm() -> None:
    """A service manager stops live capture with SIGTERM: flush and summarize as for Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


class SourceError(Exception):
    """No usable packet source (message says what to do)."""


def open_source(settings: Settings, pcap: str | None, iface: str | None, reader_stats: dict) -> Iterator[FrameBatch]:
    if pcap:
        return read_pcap_batches(pcap, stats=reader_stats)
    try:
        from capture.live import CaptureError, open_live  # provided by the live-capture room
    except ImportError:
        raise SourceError("live capture is not available in this build; use --pcap FILE") from None
    try:
        return open_live(settings, iface or settings.capture.iface)
    except CaptureError as e:
        raise SourceError(str(e)) from None


def open_outputs(settings: Settings, jsonl: bool, kafka: bool) -> list:
    from capture.outputs import JsonlOutput

    outputs: list = []
    if jsonl:
        outputs.append(JsonlOutput())
    if kafka:
        try:
            from capture.kafka_out import KafkaOutput  # provided by the Kafka room
        except ImportError:
            raise SourceError("Kafka output is not available in this build; use --format jsonl") from None
        outputs.append(KafkaOutput.from_settings(settings))
    return outputs


def process(source: Iterable[FrameBatch], decoder: Decoder, outputs: list, progress_total: int = 0) -> None:
    """Feed every batch, sweep expiry on the capture clock, and flush at the end."""
    next_expire = None
    progress = _progress(progress_total)
    try:
        for batch in source:
            lines = decoder.feed_lines(batch)
            # a live source yields empty batches when idle: its packet clock is the wall clock
            now = float(batch.ts[-1]) if len(batch) else time.time()
            expired = []
            if next_expire is None:
                next_expire = now + EXPIRE_EVERY_S
            elif now >= next_expire:
                expired = decoder.expire(now)
                next_expire = now + EXPIRE_EVERY_S
            for events in (lines, expired):
                if len(events):
                    for out in outputs:
                        out.write(events)
            if progress is not None:
                progress[0].update(progress[1], completed=int(batch.offsets[-1]) if len(batch) else 0)
        events = decoder.close()
        for out in outputs:
            out.write(events)
    finally:
        if progress is not None:
            progress[0].stop()


def _progress(total: int):
    # a bar only for a person watching a big file; never mixed into piped output
    if total < (64 << 20) or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    p = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                 TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    task = p.add_task("reading capture", total=total)
    p.start()
    return p, task


def _size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def print_summary(stats: dict, reader_stats: dict) -> None:
    s = stats
    lines = [
        f"packets {s['packets']}  bytes {s['bytes']}  flows {s['flows']}  transactions {s['transactions']}",
        f"no response {s['no_response']}  parse errors {s['parse_errors']}  framing anomalies "
        f"{s['framing_anomalies']}  non-http flows {s['non_http']}  non-tcp packets {s['non_tcp']}",
        f"drops: overflow {s['dropped_overflow_bytes']} bytes ({s['dropped_overflow_segments']} segments), "
        f"truncated frames {s['truncated_frames']}, malformed frames {s['malformed']}, gaps {s['gaps']}",
    ]
    if reader_stats.get("truncated_file"):
        lines.append(f"capture file ends mid-record at byte {reader_stats.get('stopped_at')}: read up to there")
    _say("\n".join(lines))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
