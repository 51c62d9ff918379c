"""Starting and stopping what the embedded runtime needs: servers, the capture child, signals.

- `Supervisor.prepare()` creates the data dir, starts tansu / redis-server children unless
  the settings point at existing ones, and returns settings with their addresses filled in.
- `CaptureChild` runs capture in its own process (the numba hot path gets its own core):
  packets (pcap file or live interface) -> the capture agent's loop (capture/agent.py) -> Kafka.
  It reports progress and final counts over a queue, so the runtime knows exactly how many
  hits reached Kafka (tansu's end offsets were seen to under-report) and can wait for the
  worker to process all of them.
- Everything started is stopped in reverse order, also when start-up fails half way.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from config.logs import configure_logging
from config.settings import Settings
from engine.privileges import PrivilegeError, drop_to, target_user
from engine.services import Service, ServiceError, die_with_parent, start_redis, start_tansu

log = logging.getLogger(__name__)


EMBEDDED_SESSION_TIMEOUT_S = 10.0


class RuntimeFailure(Exception):
    """The runtime cannot start or continue; the message says what to do."""


def chdb_path(history_url: str) -> str | None:
    """The data directory of a chdb:// URL (None for a ClickHouse server URL)."""
    if not history_url.startswith("chdb://"):
        return None
    return history_url[len("chdb://"):] or None


class Supervisor:
    """Owns the servers the runtime started; `close()` stops them in reverse order."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.services: list[Service] = []

    def prepare(self) -> Settings:
        s = self.settings.model_copy(deep=True)
        _make_dir(s.data_dir, "data_dir", "VISITWIRE_DATA_DIR")
        path = chdb_path(s.history.url)
        if path:
            _make_dir(str(Path(path).parent), "history.url", "--clickhouse chdb:///PATH")
        if not s.kafka.bootstrap:
            s.kafka.bootstrap = self._start(start_tansu, "the embedded Kafka broker (tansu)", "--kafka HOST:PORT").url
            # Our own broker has one consumer, this process: joining the group waits on the order of
            # the session timeout, and there is no peer whose failure a long timeout would tolerate.
            s.kafka.session_timeout_s = min(s.kafka.session_timeout_s, EMBEDDED_SESSION_TIMEOUT_S)
        if not s.redis.url:
            s.redis.url = self._start(start_redis, "the embedded redis-server", "--redis redis://HOST:PORT/0").url
        return s

    def _start(self, starter, what: str, flag: str) -> Service:
        try:
            svc = starter()
        except ServiceError as e:
            raise RuntimeFailure(f"could not start {what}: {e}\n"
                                 f"or point visitwire at an existing one with {flag}") from None
        self.services.append(svc)
        log.info("started %s at %s", what, svc.url)
        return svc

    def close(self) -> None:
        while self.services:
            svc = self.services.pop()
            try:
                svc.stop()
            except Exception as e:  # keep stopping the others
                log.warning("stopping %s failed: %s", svc.name, e)

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_dir(path: str, key: str, hint: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise RuntimeFailure(f"cannot create {path} ({key}): {e.strerror}; run as a user who can, "
                             f"or choose another directory with {hint}") from None


# -- the capture child ------------------------------------------------------------------------

@dataclass
class CaptureProgress:
    packets: int = 0
    hits: int = 0             # events the decoder produced
    sent: int = 0             # acknowledged by the broker
    dropped: int = 0          # dropped while the broker was away (bounded buffer)
    started: bool = False     # the source and Kafka output are up (live: packets are being captured)
    first_ts: float = 0.0     # traffic time span of the hits (epoch s)
    last_ts: float = 0.0
    done: bool = False        # the child finished (end of file or stopped) and flushed
    error: str = ""
    decoder: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)


def _capture_main(settings_json: str, pcap: str | None, iface: str | None, out: mp.Queue,
                  stop: mp.Event) -> None:  # pragma: no cover - runs in the child process
    # The parent decides when capture stops (Ctrl-C reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    die_with_parent(mp.parent_process().pid)  # a parent killed -9 still stops capture (SIGTERM above)
    threading.Thread(target=_exit_when_orphaned, args=(stop,), daemon=True, name="visitwire-orphan-watch").start()
    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level, settings.log_format, "capture")
    progress = CaptureProgress()
    try:
        _capture_loop(settings, pcap, iface, out, stop, progress)
    except PrivilegeError as e:
        progress.error = str(e)
    except Exception as e:
        log.exception("capture failed")
        progress.error = f"{type(e).__name__}: {e}"
    progress.done = True
    if _orphaned():  # exit without waiting to flush the queue into a pipe nobody reads
        out.cancel_join_thread()
        return
    try:
        out.put(progress, timeout=5)
    except queue.Full:
        pass


def _orphaned() -> bool:  # pragma: no cover - runs in the child process
    """The run that started this capture child is gone (killed): nobody reads its reports any more."""
    return os.getppid() != mp.parent_process().pid


ORPHAN_EXIT_S = 10.0  # an orphaned capture child delivers what it can in this long, then exits anyway


def _exit_when_orphaned(stop) -> None:  # pragma: no cover - runs in the child process
    """Whatever the main thread is doing: once the parent is gone, stop, and exit ORPHAN_EXIT_S later."""
    while not _orphaned():
        time.sleep(0.5)
    deadline = time.monotonic() + ORPHAN_EXIT_S
    threading.Thread(target=stop.set, daemon=True).start()  # may block on a lock the dead parent held
    time.sleep(max(0.0, deadline - time.monotonic()))
    os._exit(0)


def _capture_loop(settings: Settings, pcap: str | None, iface: str | None, out: mp.Queue, stop,
                  progress: CaptureProgress) -> None:  # pragma: no cover - runs in the child process
    from capture.agent import open_outputs, open_source, run_loop
    from capture.decoder import Decoder
    from engine.kernel_cache import load_or_compile

    # every kernel loaded (or, from a stale cache, compiled) before the source opens: live packets would
    # wait in the kernel ring meanwhile, and the demo's crowd starts only once this child reports `started`
    load_or_compile(("capture",), say=log.info)
    decoder = Decoder(settings, state_dir=settings.data_dir)
    source = open_source(settings, pcap, iface, {})
    live = None if pcap else source  # a live source has stats() and close()
    output = open_outputs(settings, jsonl=False, kafka=True)[0]
    if live is not None:
        # the socket and the Kafka output are open: no packet is parsed with root's rights (as `visitwire capture`)
        done = drop_to(settings.capture.run_as)
        if done:
            log.info("%s", done)
            die_with_parent(mp.parent_process().pid)  # the kernel clears the parent-death signal on a uid change
    last_report = time.monotonic()
    stop_seen = 0.0

    def publish(events, batch) -> None:
        """Events (dicts, or EventLines of `batch`, whose packet times stand in for theirs) to Kafka."""
        if not len(events):
            return
        if batch is not None:
            lo, hi = float(batch.ts.min()), float(batch.ts.max())
        else:
            ts = [e["ts"] for e in events]
            lo, hi = min(ts), max(ts)
        progress.first_ts = min(progress.first_ts, lo) if progress.first_ts else lo
        progress.last_ts = max(progress.last_ts, hi)
        progress.hits += output.send_many(events)

    def after_batch(batch) -> bool:
        """Report every 0.25 s; True (stop reading) once asked to stop: a pcap at once, live at an idle
        tick (the ring is drained) or 2 s later."""
        nonlocal last_report, stop_seen
        progress.packets += len(batch)
        now = time.monotonic()
        if now - last_report >= 0.25:
            _report(out, progress, output, decoder, live)
            last_report = now
        if not stop.is_set():
            return False
        stop_seen = stop_seen or now
        return live is None or not len(batch) or now - stop_seen > 2.0

    progress.started = True
    _report(out, progress, output, decoder, live)
    try:
        run_loop(source, decoder, publish, after_batch)  # end of input: pending requests too
        _report(out, progress, output, decoder, live)
        # orphaned (the run was killed): its embedded broker most likely died with it; do not wait long
        deliver_s = 5.0 if _orphaned() else 60.0
        if not output.flush(timeout=deliver_s):
            log.warning("Kafka did not acknowledge %d event(s) within %.0f s", output.buffered, deliver_s)
    finally:
        output.close(timeout=2 if _orphaned() else 10)
        if live is not None:
            progress.source = live.stats()
            live.close()
    st = output.stats
    progress.sent, progress.dropped = st["sent"], st["dropped_while_broker_away"]
    progress.decoder = dict(decoder.stats)


def _report(out: mp.Queue, progress: CaptureProgress, output, decoder, source) -> None:  # pragma: no cover
    if _orphaned():
        return  # a report would only fill a pipe nobody reads
    st = output.stats
    progress.sent, progress.dropped = st["sent"], st["dropped_while_broker_away"]
    progress.decoder = dict(decoder.stats)
    if source is not None:
        progress.source = source.stats()
    try:
        out.put_nowait(CaptureProgress(**{**progress.__dict__}))
    except queue.Full:
        pass


def check_inputs(settings: Settings, pcap: str | None, iface: str | None = None) -> None:
    """Fail fast, before any server starts, on what the user can fix."""
    if pcap is not None and not os.path.isfile(pcap):
        raise RuntimeFailure(f"pcap file {pcap} not found: check the path given to --pcap")
    if pcap is not None:
        from capture.capture_file import CaptureFileError, check_capture_file

        try:
            check_capture_file(pcap)
        except CaptureFileError as e:
            raise RuntimeFailure(str(e)) from None
    if pcap is None and not (iface or settings.capture.iface):
        raise RuntimeFailure("nothing to capture: give --pcap FILE, or --iface IFACE and --ports PORTS")
    if pcap is None and settings.capture.run_as and os.geteuid() == 0:
        try:
            target_user(settings.capture.run_as)
        except PrivilegeError as e:
            raise RuntimeFailure(str(e)) from None


class CaptureChild:
    """Capture in a child process; `progress` is updated by `poll()`."""

    def __init__(self, settings: Settings, pcap: str | None = None, iface: str | None = None):
        check_inputs(settings, pcap, iface)
        ctx = mp.get_context("spawn")  # no fork of a process holding an event loop and threads
        self._queue: mp.Queue = ctx.Queue(maxsize=1000)
        self._stop = ctx.Event()
        self.progress = CaptureProgress()
        self.process = ctx.Process(target=_capture_main, name="visitwire-capture", daemon=True,
                                   args=(settings.model_dump_json(), pcap, iface, self._queue, self._stop))

    def start(self) -> "CaptureChild":
        self.process.start()
        return self

    def poll(self) -> CaptureProgress:
        """Take the latest reports (non-blocking). A child that died without a final report is an error."""
        try:
            while True:
                self.progress = self._queue.get_nowait()
        except queue.Empty:
            pass
        if not self.progress.done and not self.process.is_alive():
            time.sleep(0.2)  # the final report may still be in the pipe
            try:
                while True:
                    self.progress = self._queue.get_nowait()
            except queue.Empty:
                pass
            if not self.progress.done:
                self.progress.done = True
                self.progress.error = f"capture process exited with code {self.process.exitcode}"
        return self.progress

    def stop(self, timeout: float = 90.0) -> CaptureProgress:
        """Ask capture to stop, flush and report; wait for its final counts."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.poll().done:
            time.sleep(0.05)
        self.process.join(max(0.1, deadline - time.monotonic()))
        if self.process.is_alive():
            log.warning("capture process did not stop in %.0f s; killing it", timeout)
            self.process.kill()
            self.process.join(5)
        return self.poll()
