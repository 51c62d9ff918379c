"""The embedded runtime (`visitwire run`): the whole pipeline on one machine.

Process layout: this process runs the Faust worker, the history store (chdb: the process
that writes it serves queries) and the web server in one asyncio loop; capture runs in a
child process (engine/supervisor.py) so the numba hot path has its own core; tansu and
redis-server are children unless the settings point at existing servers.

Shutdown (Ctrl-C / SIGTERM, or the end of a --pcap file) is ordered so nothing accepted
is lost: capture stops and flushes its Kafka producer and reports how many hits the broker
acknowledged -> the worker processes until it has seen that many (we count end to end;
tansu's end offsets were seen to under-report) -> with --pcap, end of input closes the
open sessions -> sinks flush -> web, worker and the children stop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from config.kafka_log_flood import say_kafka_client_errors
from config.redact import redact_url
from config.settings import Settings
from engine.state_file import remove_state, write_state
from engine.supervisor import CaptureChild, CaptureProgress, RuntimeFailure, Supervisor, check_inputs
from engine.watchdog import PipelineLoss, Watchdog

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 300.0   # how long shutdown waits for the worker to catch up with capture
DRAIN_STALL_S = 60.0      # ... and how long it waits while the worker makes no progress at all
FAILED_FLUSH_TIMEOUT_S = 15.0  # after a loss: what the worker processed gets this long to be written
FAILED_STOP_BUDGET_S = 5.0     # ... and the worker this long to stop
CAPTURE_STOP_S = 90.0          # capture's final flush and report (FAILED_: after a loss)
FAILED_CAPTURE_STOP_S = 8.0
WORKER_STOP_TIMEOUT_S = 30.0
PROGRESS_LOG_EVERY_S = 5.0


@dataclass
class RunSummary:
    packets: int = 0
    transactions: int = 0
    hits: int = 0
    processed: int = 0
    written: int = 0      # hits the history holds for the run's time span (uniqExact event_id)
    lost: int = 0         # after a loss (RuntimeFailure/PipelineLoss): published hits not written
    pageviews: int = 0
    sessions: int = 0
    visitors: int = 0
    dropped: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    extra_rows: list[tuple[str, str]] = field(default_factory=list)  # e.g. the demo's shop figures
    stuck: bool = False  # a component did not stop: the process must exit without waiting on it
    decoder: dict = field(default_factory=dict)  # capture's decoder counters (capture.decoder.STAT_KEYS)
    source: dict = field(default_factory=dict)   # live capture: kernel packets / drops
    live_at: float = 0.0      # time.monotonic() when capture was seen live
    stop_at: float = 0.0      # time.monotonic() when capture was told to stop

    @property
    def events_per_s(self) -> float:
        return self.hits / self.elapsed_s if self.elapsed_s > 0 else 0.0


class EmbeddedRuntime:
    """Start with `await start()`, run with `await run_until(stop_event)`, end with `await shutdown()`."""

    def __init__(self, settings: Settings, supervisor: Supervisor, *, pcap: str | None = None,
                 iface: str | None = None, console: Console | None = None, show_progress: bool = True,
                 close_sessions: bool | None = None, compiling=None):
        self.settings = settings          # resolved: kafka.bootstrap / redis.url filled in
        self.supervisor = supervisor
        self.pcap = pcap
        self.iface = iface or settings.capture.iface
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        # End of input closes open sessions: always after a pcap; live runs keep them in the
        # worker's table for the next start (the demo closes them: its broker goes away).
        self.close_sessions = bool(pcap) if close_sessions is None else close_sessions
        self.worker = None
        self.worker_started = False
        self.history = None
        self.live_reader = None
        self.web_runner = None
        self.web_url = ""
        self.capture: CaptureChild | None = None
        self.watchdog: Watchdog | None = None
        self.failed = ""                  # why the run stopped early (PipelineLoss); shutdown skips the drain
        self.summary = RunSummary()
        self._t0 = self._created = time.monotonic()
        self.compiling = compiling  # engine.kernel_cache.Staleness: kernels compile before capture is live

    # -- start ------------------------------------------------------------------------------
    async def start(self) -> None:
        from aiokafka.errors import KafkaError

        from processors.worker import InProcessWorker
        from sinks.base import HistoryError, SinkUnavailable
        from sinks.history import open_history
        from sinks.redis_live import LiveStateReader

        s = self.settings
        try:
            self.history = open_history(s.history.url, min_free_mb=s.history.min_free_mb, **s.history.batching())
            applied = self.history.init_schema()  # what `visitwire db init` does: pending migrations
        except (HistoryError, SinkUnavailable) as e:
            raise RuntimeFailure(f"history store {redact_url(s.history.url)}: {e}; "
                                 "check --clickhouse / history.url") from None
        if applied:
            log.info("history schema: applied %s", ", ".join(applied))
        _check_redis(s.redis.url)
        if self.compiling is not None and "processors" in self.compiling.rooms:
            from engine.kernel_cache import compile_all, every

            # before the worker's own warm-up, which then loads them; recorded for the next start
            await asyncio.to_thread(compile_all, ("processors",), every(10.0, log.info))
        self.worker = InProcessWorker(s, history=self.history)
        try:
            await self.worker.start()
        except (OSError, KafkaError) as e:
            from config.kafka_security import security_hint

            raise RuntimeFailure(f"cannot reach Kafka at {s.kafka.bootstrap} ({e}); check --kafka"
                                 f"{security_hint(s.kafka)}, or leave it out to use the embedded broker") from None
        self.worker_started = True
        self.live_reader = LiveStateReader(s.redis.url, s)
        # up before capture's child loads (a stale cache: compiles) its kernels; the screen says so meanwhile
        self.web_url = await self._start_web()
        write_state(s.data_dir, web_url=self.web_url, token=s.web.token, history_url=s.history.url)
        self.capture = CaptureChild(s, pcap=self.pcap, iface=None if self.pcap else self.iface).start()
        self.watchdog = Watchdog(self.supervisor, s, self.console)
        self._t0 = time.monotonic()

    # -- what the watchdog reads --------------------------------------------------------------
    def capture_sent(self) -> int:
        return self.capture.poll().sent if self.capture is not None else 0

    def worker_processed(self) -> int:
        return self.worker.processed if self.worker is not None else 0

    def worker_runtime(self):
        return getattr(self.worker, "rt", None)

    def fail(self, reason: str) -> None:
        """Stop early: accepted events were lost or cannot be written (the reason has the counts)."""
        self.failed = reason
        self.summary.errors.append(reason)
        self.console.print(f"[red]{reason}", soft_wrap=True)

    async def _start_web(self) -> str:
        from engine.api_token import TokenFileError, engine_token
        from engine.web.app import start_web

        try:  # every engine's API has a token (engine/api_token.py)
            self.settings.web.token = engine_token(self.settings.web.token, self.settings.data_dir)
        except TokenFileError as e:
            raise RuntimeFailure(str(e)) from None

        try:
            self.web_runner, url = await start_web(self.settings, self.live_reader, self.history, self._metrics(),
                                                   startup=self.startup_status)
        except OSError as e:
            raise RuntimeFailure(f"the dashboard cannot listen on {self.settings.web.host}:{self.settings.web.port} "
                                 f"({e.strerror}); choose another port with --web-port") from None
        token = self.settings.web.token
        shown = f"{url}/?token={token}" if token else url
        self.console.print(f"[bold green]dashboard:[/] {shown}", soft_wrap=True)  # one line, copyable
        return url

    def _metrics(self):
        """What the dashboard's /metrics and /health report: this engine's worker and capture child."""
        from engine.metrics import CaptureCollector, Metrics
        from engine.worker_cmd import worker_metrics

        def capture_figures() -> dict:
            p = self.capture.progress if self.capture is not None else None
            if p is None:
                return {}
            return {"decoder": p.decoder, "source": p.source, "events": p.hits, "error": p.error,
                    "output": {"sent": p.sent, "dropped_while_broker_away": p.dropped}}
        return Metrics(worker_metrics(self.settings, self.worker), CaptureCollector(capture_figures))

    def startup_status(self) -> dict | None:
        """None once capture is live; before that what the start waits for (the screen and /api/health)."""
        if self.capture is not None and self.capture.progress.started:
            return None
        elapsed = round(time.monotonic() - self._created, 1)
        if self.compiling is None:
            return {"state": "starting", "elapsed_s": elapsed}
        c = self.compiling
        return {"state": "compiling", "rooms": list(c.rooms), "reason": c.reason, "expected_s": round(c.expected_s),
                "elapsed_s": elapsed}

    def startup_text(self) -> str:
        st = self.startup_status() or {"state": "running"}
        if st["state"] == "compiling":
            return f"compiling kernels, {st['elapsed_s']:.0f} s of about {st['expected_s']} s"
        return "starting capture" if st["state"] == "starting" else "capture"

    # -- run --------------------------------------------------------------------------------
    async def run_until(self, stop: asyncio.Event) -> None:
        """Show progress until `stop` is set, or (pcap mode) the file is processed."""
        assert self.capture is not None
        with self._progress() as progress:
            task = progress.add_task("capture", total=None, packets=0, hits=0, processed=0)
            announced = False
            last_log = time.monotonic()
            while not stop.is_set():
                cp = self.capture.poll()
                if cp.started and not announced:
                    self.summary.live_at = time.monotonic()
                    what = f"reading {self.pcap}" if self.pcap else \
                        f"on {self.iface}, ports {','.join(map(str, self.settings.capture.ports))}"
                    self.console.print(f"[bold green]capture started[/] {what}", soft_wrap=True)
                    announced = True
                processed = self.worker.processed
                progress.update(task, description=self.startup_text(), packets=cp.packets, hits=cp.sent,
                                processed=processed)
                if not self.console.is_terminal and time.monotonic() - last_log >= PROGRESS_LOG_EVERY_S:
                    # no live progress bar without a terminal (service logs, CI): a line now and then
                    if cp.started:
                        log.info("progress: %d packets read, %d hits published, %d events processed",
                                 cp.packets, cp.sent, processed)
                    else:
                        log.info("capture not live yet: %s", self.startup_text())
                    last_log = time.monotonic()
                if self.watchdog is not None:
                    await self.watchdog.check(self)
                if cp.done:
                    if cp.error:
                        raise RuntimeFailure(f"capture stopped: {cp.error}")
                    if self.pcap:
                        return
                    raise RuntimeFailure("capture ended unexpectedly; see the log above")
                try:
                    await asyncio.wait_for(stop.wait(), 0.25)
                except asyncio.TimeoutError:
                    pass

    def _progress(self) -> Progress:
        return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("packets {task.fields[packets]:,}  hits published {task.fields[hits]:,}  "
                                   "events processed {task.fields[processed]:,}"),
                        TimeElapsedColumn(), console=self.console, transient=True,
                        disable=not self.show_progress)

    # -- stop -------------------------------------------------------------------------------
    async def shutdown(self) -> RunSummary:
        """Stop capture, drain the worker, close sessions (pcap), flush, stop everything we started."""
        errors = self.summary.errors
        cp = CaptureProgress()
        if self.capture is not None:
            # after a loss the broker may be gone: capture's final delivery would wait a minute for nothing
            self.summary.stop_at = time.monotonic()
            wait_s = FAILED_CAPTURE_STOP_S if self.failed else CAPTURE_STOP_S
            cp = await asyncio.get_running_loop().run_in_executor(None, self.capture.stop, wait_s)
            if cp.error:
                errors.append(f"capture: {cp.error}")
        if self.worker is not None and self.worker_started and not self.failed:
            try:
                await self._drain(cp.sent)
                if self.close_sessions:
                    await self.worker.end_of_input()
                await self.worker.flush()
            except PipelineLoss as e:
                self.fail(str(e))
            except RuntimeFailure as e:  # the worker stalled or its broker refused it: the summary's line, no traceback
                errors.append(f"worker: {e}")
            except Exception as e:
                log.exception("draining the worker failed")
                errors.append(f"worker: {e}")
        if self.failed and self.worker is not None and self.worker_started:
            # What was read is written if the store takes it; nothing waits on the broker. Its clients'
            # errors while they stop say nothing the loss message did not: keep them out of the log.
            quiet_after_loss()
            try:
                await asyncio.wait_for(self.worker.rt.write_history_only(), FAILED_FLUSH_TIMEOUT_S)
            except (Exception, asyncio.TimeoutError) as e:
                log.warning("after the loss, the history did not take the processed hits either (%s)", e)
        if self.watchdog is not None:
            errors.extend(self.watchdog.notes)
            self.watchdog.close()
        self.summary.elapsed_s = time.monotonic() - self._t0
        self.summary.packets = cp.packets
        self.summary.transactions = int(cp.decoder.get("transactions", cp.hits))
        self.summary.hits = cp.sent
        self.summary.dropped = cp.dropped
        self.summary.decoder, self.summary.source = dict(cp.decoder), dict(cp.source)
        self.summary.processed = self.worker.processed if self.worker is not None else 0
        if self.history is not None and cp.sent:
            self._count_history(cp)
        if self.failed:
            self.summary.lost = max(0, self.summary.hits - self.summary.written)
        await self._stop_components()
        return self.summary

    async def _drain(self, sent: int) -> None:
        """Wait until the worker has processed every hit the broker acknowledged; a worker that makes no
        progress, a broker that lost the hits or a full disk end the wait early with the counts."""
        started = last_move = time.monotonic()
        last_seen, last_log = self.worker.processed, started
        with self._progress() as progress:
            task = progress.add_task("draining", total=sent or None, completed=self.worker.processed,
                                     packets=0, hits=sent, processed=self.worker.processed)
            while self.worker.processed < sent:
                now, processed = time.monotonic(), self.worker.processed
                refused = self.worker.rt.refused  # the broker refused the hits reader or the outbox: no use waiting
                if refused is not None:
                    from config.kafka_security import security_hint

                    raise RuntimeFailure(f"the worker processed {processed:,} of {sent:,} hits and stopped: "
                                         f"{refused}; check --kafka{security_hint(self.settings.kafka)}. "
                                         f"{self._where_the_rest_are(sent - processed)}")
                if processed != last_seen:
                    last_seen, last_move = processed, now
                if now - started > DRAIN_TIMEOUT_S or now - last_move > DRAIN_STALL_S:
                    waited = now - started if now - started > DRAIN_TIMEOUT_S else now - last_move
                    raise RuntimeFailure(f"the worker processed {processed:,} of {sent:,} hits and made no progress "
                                         f"for {waited:.0f} s; {self._where_the_rest_are(sent - processed)}")
                if not self.console.is_terminal and now - last_log >= PROGRESS_LOG_EVERY_S:
                    log.info("draining: %d of %d hits processed", processed, sent)
                    last_log = now
                if self.watchdog is not None:
                    await self.watchdog.check(self)
                progress.update(task, completed=processed, processed=processed)
                await asyncio.sleep(0.1)
        await self.worker.drained()

    def _where_the_rest_are(self, n: int) -> str:
        if any(svc.name == "tansu" for svc in self.supervisor.services):
            return (f"the other {n:,} are lost when this run exits: the embedded broker keeps its topics in "
                    "memory (use --kafka with a durable broker to keep them)")
        return f"the other {n:,} stay in Kafka, uncommitted, and are processed on the next start"

    def _count_history(self, cp: CaptureProgress) -> None:
        """This run's hits / page views / sessions / visitors, from the history store (exact queries). The
        hits written are what the history holds for the run's time span: the sink also writes on its own
        timer, so the worker's flush count alone can miss rows that are there."""
        from sinks.reads.queries import range_totals

        try:
            # first_ts is the packet time of the first batch that completed a transaction; its request may
            # be older by up to the transaction timeout (the run's first hit was left out of the count)
            early = self.settings.capture.transaction_timeout_s + 1
            totals = range_totals(self.history, cp.first_ts - early, cp.last_ts + 1)
            self.summary.written, self.summary.pageviews, self.summary.visitors, self.summary.sessions = \
                totals["hits"], totals["pageviews"], totals["visitors"], totals["sessions"]
        except Exception as e:
            self.summary.errors.append(f"history summary: {e}")

    async def _stop_components(self) -> None:
        if self.web_runner is not None:
            await self.web_runner.cleanup()
            self.web_runner = None
        if self.worker is not None:
            # Not wait_for: a Faust stop stuck on unacked messages may not even end when cancelled.
            # after a loss the broker may be gone: a short stop budget, then exit regardless
            budget = FAILED_STOP_BUDGET_S if self.failed else None
            task = asyncio.ensure_future(self.worker.stop(budget) if budget else self.worker.stop())
            done, _ = await asyncio.wait({task}, timeout=WORKER_STOP_TIMEOUT_S)
            if not done:
                self.summary.stuck = True
                self.summary.errors.append(f"the worker did not stop within {WORKER_STOP_TIMEOUT_S:.0f} s; "
                                           "unflushed hits stay in Kafka and are processed on the next start")
            elif task.exception() is not None:
                log.error("stopping the worker failed", exc_info=task.exception())
                self.summary.errors.append(f"worker stop: {task.exception()}")
            self.worker = None
        if self.history is not None:
            try:
                self.history.close()
            except Exception as e:
                self.summary.errors.append(f"history flush: {e}")
            self.history = None
        if self.live_reader is not None:
            self.live_reader.close()
            self.live_reader = None
        remove_state(self.settings.data_dir)


def quiet_after_loss() -> None:
    """After a loss was reported: the Kafka clients' errors and thread tracebacks while they stop
    against a dead broker say nothing more; keep one debug line each instead of pages."""
    import threading

    for name in ("faust", "mode", "aiokafka", "asyncio", "config.kafka_errors"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    def one_line(args: threading.ExceptHookArgs) -> None:
        log.debug("thread %s ended with %s: %s", getattr(args.thread, "name", "?"), args.exc_type.__name__,
                  args.exc_value)

    threading.excepthook = one_line


def _check_redis(url: str) -> None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, ValueError) as e:
        raise RuntimeFailure(f"cannot reach Redis at {url} ({e}); check --redis, "
                             "or leave it out to use an embedded redis-server") from None


def print_summary(console: Console, s: RunSummary, title: str = "visitwire run") -> None:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    for name, value in (("packets", f"{s.packets:,}"), ("transactions", f"{s.transactions:,}"),
                        ("hits", f"{s.hits:,}"), ("events processed", f"{s.processed:,}"),
                        ("written to history", f"{s.written:,}"),
                        ("page views", f"{s.pageviews:,}"), ("sessions", f"{s.sessions:,}"),
                        ("visitors", f"{s.visitors:,}"), ("elapsed", f"{s.elapsed_s:.1f} s"),
                        ("events/s", f"{s.events_per_s:,.0f}")):
        t.add_row(name, value)
    for name, value in s.extra_rows:
        t.add_row(name, value)
    if s.lost:
        t.add_row("lost (not written)", f"{s.lost:,}")
    if s.dropped:
        t.add_row("[red]dropped (broker away)", f"{s.dropped:,}")
    console.print(t)
    for e in s.errors:
        console.print(f"[red]{e}", soft_wrap=True)


def install_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, console: Console) -> None:
    def on_signal(signame: str) -> None:
        if stop.is_set():
            console.print(f"[yellow]{signame} again: still flushing, please wait")
            return
        console.print(f"[yellow]{signame}: stopping; flushing accepted events first")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)


async def run_runtime(settings: Settings, supervisor: Supervisor, *, pcap: str | None, console: Console,
                      extra=None, close_sessions: bool | None = None) -> RunSummary:
    """Run the pipeline until stopped (or the pcap is done); `extra(runtime, stop)` is an optional
    coroutine run alongside (the demo's crowd and live figures)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    install_stop_signals(loop, stop, console)  # before start: joining the group can take a while
    from engine.kernel_cache import stale

    compiling = stale()  # said before the wait, not after it
    if compiling is not None:
        console.print(f"[yellow]{compiling.line()}", soft_wrap=True)
    rt = EmbeddedRuntime(settings, supervisor, pcap=pcap, console=console, close_sessions=close_sessions,
                         compiling=compiling)
    try:
        with console.status("starting the worker, history store and dashboard"):
            started = await _unless_stopped(rt.start(), stop)
        if started:
            side = asyncio.ensure_future(extra(rt, stop)) if extra else None
            try:
                await rt.run_until(stop)
            except PipelineLoss as e:
                rt.fail(str(e))
            finally:
                stop.set()
                if side is not None:
                    await side
    finally:
        summary = await rt.shutdown()
        say_kafka_client_errors(log)
    return summary


async def _unless_stopped(coro, stop: asyncio.Event) -> bool:
    """Run `coro` unless `stop` is set first (then cancel it); True when it completed."""
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # start-up errors propagate
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False


def quiet_library_logs(settings: Settings) -> None:
    """Faust / mode / aiokafka log every start-up step at INFO; the progress bar says enough."""
    if settings.log_level != "DEBUG":
        for name in ("faust", "mode", "aiokafka"):
            logging.getLogger(name).setLevel(logging.WARNING)


def run_loop(coro, leftover_timeout_s: float = 5.0):
    """asyncio.run, except that tasks left behind (a library stuck stopping) get a bounded wait
    instead of blocking the exit forever."""
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=leftover_timeout_s))
        asyncio.set_event_loop(None)
        if not any(not t.done() for t in pending):
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def run_embedded(settings: Settings, pcap: str | None = None) -> int:
    """`visitwire run`: exit code 0 when everything accepted was processed and flushed."""
    console = Console(stderr=True)
    quiet_library_logs(settings)
    try:
        check_inputs(settings, pcap)
        with Supervisor(settings) as sup:
            s = sup.prepare()
            summary = run_loop(run_runtime(s, sup, pcap=pcap, console=console))
    except RuntimeFailure as e:
        console.print(f"[red]{e}", soft_wrap=True)
        return 2
    print_summary(Console(), summary)
    return exit_code(summary)


def exit_code(summary: RunSummary) -> int:
    code = 1 if summary.errors else 0
    if summary.stuck:  # servers are already stopped; a library thread must not hold the exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code

