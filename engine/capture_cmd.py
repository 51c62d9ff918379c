"""`visitwire capture`: the capture agent (capture/agent.py) run from the command line: a pcap file or a
live interface -> JSON lines and/or Kafka, a progress bar for a big file at a terminal, and a summary
on stderr.
"""
from __future__ import annotations

import os
import sys

from capture.agent import EventOutput, PacketSource, SourceError, open_outputs, open_source, run_loop, tune_gc
from capture.pcapfile import PcapFormatError
from capture.decoder import Decoder
from config.kafka_security import security_hint
from config.settings import Settings
from engine.privileges import PrivilegeError, drop_to

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def run_capture(settings: Settings, pcap: str | None, iface: str | None, jsonl: bool, kafka: bool) -> int:
    """Run capture to the end of the file (or until interrupted); returns the process exit code."""
    reader_stats: dict = {}
    try:
        source = open_source(settings, pcap, iface, reader_stats)
        if not pcap:
            # compile/load the numba kernels now, not while the kernel ring fills with the first packets
            # (and while the cache under the install is still writable to us)
            from capture.warm import warm_up

            warm_up()
        outputs = open_outputs(settings, jsonl, kafka)
    except PcapFormatError as e:
        _say(f"error: {e}")
        return EXIT_USAGE
    except SourceError as e:
        _say(f"error: {e}")
        return EXIT_USAGE
    decoder = Decoder(settings, state_dir=settings.data_dir)
    counts = {"events": 0}
    listener = None
    if settings.metrics.port:  # prometheus_client and http.server only when asked for: 0.03 cpu-s a start
        from engine.metrics import CaptureCollector
        from engine.metrics_server import ListenerError, start_listener

        try:
            listener = start_listener(settings, CaptureCollector(lambda: _figures(decoder, source, outputs, counts)))
        except ListenerError as e:
            _say(f"error: {e}")
            return EXIT_USAGE
        _say(f"metrics at {listener.url}/metrics and /health (Authorization: Bearer <token>)")
    if not pcap:
        # socket, outputs and listener are open: no packet is parsed with root's rights
        try:
            done = drop_to(settings.capture.run_as)
        except PrivilegeError as e:
            _say(f"error: {e}")
            for out in outputs:
                out.close()
            if listener is not None:
                listener.stop()
            return EXIT_USAGE
        if done:
            _say(done)
    tune_gc()
    if not pcap:
        _flush_on_sigterm()  # from here on a SIGTERM flushes what was captured
    try:
        process(source, decoder, outputs, progress_total=_size(pcap), counts=counts)
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
        if listener is not None:
            listener.stop()
    print_summary(decoder.stats, reader_stats)
    if callable(getattr(source, "stats", None)):
        live = source.stats()
        _say(f"kernel: {live['kernel_packets']} packets seen, {live['kernel_drops']} dropped "
             f"({live['mode']} mode on {live['iface']})")
    undelivered = undelivered_events(outputs)
    if undelivered:
        _say("error: " + undelivered)
        return EXIT_FAILED
    return EXIT_OK


def _figures(decoder: Decoder, source, outputs: list, counts: dict) -> dict:
    """What the metrics listener exports, read from the capture thread's own counters."""
    live = source.stats() if callable(getattr(source, "stats", None)) else None
    kafka = next((o.stats for o in outputs if isinstance(getattr(o, "stats", None), dict)), None)
    return {"decoder": decoder.stats, "source": live, "output": kafka, "events": counts["events"]}


def undelivered_events(outputs: list[EventOutput]) -> str:
    """What the outputs accepted but could not deliver, in one line ("" when everything was delivered)."""
    lost = []
    for out in outputs:
        stats = getattr(out, "stats", None)
        if not isinstance(stats, dict):
            continue
        dropped, buffered = stats.get("dropped_while_broker_away", 0), stats.get("buffered", 0)
        if dropped or buffered:
            where = getattr(out, "bootstrap", "the output")
            # a broker refusing the credentials (or the TLS) looks like one that is away to the client
            lost.append(f"{dropped + buffered} event(s) not delivered to Kafka at {where} ({dropped} dropped while "
                        f"the broker was away, {buffered} still undelivered at exit; {stats.get('sent', 0)} "
                        "delivered): check that the broker is up and --kafka points at it"
                        + security_hint(getattr(out, "security", None) or {}) + ", then capture again")
    return "; ".join(lost)


def _flush_on_sigterm() -> None:
    """A service manager stops live capture with SIGTERM: flush and summarize as for Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def process(source: PacketSource, decoder: Decoder, outputs: list[EventOutput], progress_total: int = 0,
            counts: dict | None = None) -> None:
    """The capture loop to every output, with a progress bar for a big file read at a terminal;
    counts["events"] adds up the events handed over (the metrics listener reads it)."""
    progress = _progress(progress_total)
    counts = counts if counts is not None else {"events": 0}

    def publish(events, batch) -> None:
        if len(events):
            counts["events"] += len(events)
            for out in outputs:
                out.write(events)

    def show(batch) -> bool:
        if progress is not None and len(batch):
            progress[0].update(progress[1], completed=int(batch.offsets[-1]))
        return False

    try:
        run_loop(source, decoder, publish, show)
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
        f"{s['framing_anomalies']}  non-http flows {s['non_http']} (TLS {s['tls_flows']}, HTTP/2 {s['http2_flows']})  "
        f"non-tcp packets {s['non_tcp']}",
        f"drops: overflow {s['dropped_overflow_bytes']} bytes ({s['dropped_overflow_segments']} segments), "
        f"truncated frames {s['truncated_frames']}, malformed frames {s['malformed']}, gaps {s['gaps']}"
        + (f", request bodies not read {s['bodies_dropped']}" if s.get("bodies_dropped") else ""),
    ]
    if reader_stats.get("truncated_file"):
        lines.append(f"capture file ends mid-record at byte {reader_stats.get('stopped_at')}: read up to there")
    _say("\n".join(lines))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
