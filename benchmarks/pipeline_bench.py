"""Processor throughput and end-to-end latency, with and without the numba batch path.

    .venv/bin/python benchmarks/pipeline_bench.py [--hits 100000] [--rate 5000] [--seconds 10] [--batch 5000]
                                                  [--history clickhouse|chdb|list] [--skip-faust]
                                                  [--intake bulk|bulk-assigned|stream ...]
                                                  [--pin] [--profile N] [--sample N]

1. processors alone: HitProcessor.process over the same raw hits, numba vs numpy
   (events/s and the ratio), and the per-batch aggregation alone;
2. through Kafka on real servers, hits read in bulk with librdkafka (own group / Faust-assigned partitions) or by
   the Faust agent (tansu, redis-server, and ClickHouse, embedded chdb or an in-memory sink):
   a backlog of --hits drained by one worker (events/s), then live traffic at --rate/s
   stamped with the send time: event ts -> Redis counters and -> history flush (p50/p99);
   and the CPU each program spent per event of the backlog, until it was all flushed.
Targets (task brief): >= 100k events/s per worker; p99 < 1 s to Redis, < 5 s to history.

--pin: production's layout on two cores: the worker and its children (hits reader, history writer)
on core 0, every server (tansu, redis-server, clickhouse-server: every thread) on core 1, so the
worker's figures are those of one worker with its servers elsewhere (README, Sizing).
--profile N: cProfile of the worker's event loop thread while it drains the backlog, on that thread's CPU
clock (time waiting for the core or for I/O is no cost); the N costliest functions by own time (the profiler
slows the run: rates of a profiled run are not figures). The table by thread says what the others cost.
--sample N: the event loop thread's CPU sampled every 0.5 ms of it (benchmarks/thread_sampler.py, a few us
per sample: the figures stay figures), by function in us per event, inclusive and own; the N costliest.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import sys
import re
import tempfile
import threading
import time
import uuid

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from config.heap import tune_for_batches
from config.settings import load_settings
from processors.agents import KIND_CODE, HitProcessor
from processors.counters import BatchColumns, aggregate
from processors.enrich import columns_of
from sinks.testing.events import crowd

console = Console(width=None if sys.stdout.isatty() else 160)  # wide tables stay readable in a log


TARGET_EVENTS_PER_S, TARGET_REDIS_P99_MS, TARGET_HISTORY_P99_MS = 100_000, 1_000, 5_000  # the task brief's
REPEATS = 3  # best of, alternating paths: the machine is shared, single runs are noisy


def bench_processors(values: list[bytes], batch: int) -> dict:
    tune_for_batches()  # as in a worker
    out = {True: 0.0, False: 0.0}
    for use_numba in (True, False):
        HitProcessor(load_settings(processing={"use_numba": use_numba})).process(values[:batch])  # warm up
    for _ in range(REPEATS):
        for use_numba in (True, False):
            p = HitProcessor(load_settings(processing={"use_numba": use_numba}))
            t0 = time.perf_counter()
            for i in range(0, len(values), batch):
                p.process(values[i:i + batch])
            out[use_numba] = max(out[use_numba], len(values) / (time.perf_counter() - t0))
    return out


def _verdict(figure: str, met: bool) -> str:
    return f"{figure} [{'green' if met else 'red'}]({'target met' if met else 'target NOT met'})[/]"


_TICK = os.sysconf("SC_CLK_TCK")


_CHILDREN = {"sinks.insert_process": "history writer", "processors.hits_reader": "hits reader"}


def _module_of(pid: int) -> str:
    """The module a `python -m module` process runs ("" when unknown)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return ""
    return args[args.index(b"-m") + 1].decode() if b"-m" in args[:-1] else ""


def cpu_by_process() -> dict[str, float]:
    """CPU seconds so far of this process ("worker") and of each program among its descendants (the
    servers, the hits reader and history writer children), from /proc; "machine" = every core's busy time."""
    stats: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    raw = f.read()
            except OSError:  # gone meanwhile
                continue
            name, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()
            stats[int(entry)] = (int(rest[1]), name, (int(rest[11]) + int(rest[12])) / _TICK)
    out: dict[str, float] = {"worker": stats.get(os.getpid(), (0, "", 0.0))[2]}
    parents = {os.getpid()}
    while True:  # breadth-first over the process tree below this one
        kids = {pid for pid, (ppid, _, _) in stats.items() if ppid in parents and pid not in parents}
        if not kids:
            break
        for pid in kids:
            comm = stats[pid][1]
            name = _CHILDREN.get(_module_of(pid), comm) if comm.startswith("python") else comm
            out[name] = out.get(name, 0.0) + stats[pid][2]
        parents |= kids
    for name, (seconds, faults) in worker_threads().items():
        out[f"worker/{name}"] = seconds
        out[f"faults:worker/{name}"] = faults
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    out["machine"] = (sum(ticks) - ticks[3] - ticks[4]) / _TICK  # all but idle and iowait
    return out


def _thread_group(name: str) -> str:
    """A thread's name without its pool number ("visitwire-redis_0" -> "visitwire-redis", "rdk:broker3" ->
    "rdk:broker"): threads of one job are summed."""
    return re.sub(r"[_-]?\d+$", "", name) or name


class _MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2 (malloc.h)
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_heap_bytes() -> int | None:
    """Bytes glibc's malloc holds from the kernel in this process (its arenas plus its own mmaps), None without
    glibc. Memory it grows into is touched for the first time: a minor page fault per 4 KiB."""
    try:
        info = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    info.restype = _MallInfo2
    m = info()
    return m.arena + m.hblkhd


def worker_threads() -> dict[str, tuple[float, int]]:
    """(CPU seconds, minor page faults) so far of this process's threads, by job: Python threads by their name
    (the event loop's is "MainThread"), librdkafka's by the name it gives them (rdk:*); threads that ended are
    not counted. A minor fault is a page of memory the process touches for the first time since it got it
    (the kernel zeroes it): a few microseconds each here."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, tuple[float, int]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:  # ended meanwhile
            continue
        comm, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()
        group = _thread_group(names.get(int(tid), comm))
        seconds, faults = out.get(group, (0.0, 0))
        out[group] = (seconds + (int(rest[11]) + int(rest[12])) / _TICK, faults + int(rest[7]))
    return out


def _tasks(pid: int) -> list[int]:
    """Every thread of a process and of its descendants (affinity is per thread: threads a server
    started before we pin it keep their old mask unless each is pinned)."""
    pids, out = {pid}, []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    raw = f.read()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2:].split()[1]) == pid:
                pids.add(int(entry))
    for p in pids:
        try:
            out += [int(t) for t in os.listdir(f"/proc/{p}/task")]
        except OSError:
            pass
    return out


def pin(servers: list, worker_core: int = 0, server_core: int = 1) -> None:
    """Servers' threads on server_core; this process's threads (and so the children it starts later) on
    worker_core."""
    for svc in servers:
        for tid in _tasks(svc.proc.pid):
            try:
                os.sched_setaffinity(tid, {server_core})
            except OSError:  # a thread that ended meanwhile
                pass
    for tid in _tasks(os.getpid()):
        try:
            os.sched_setaffinity(tid, {worker_core})
        except OSError:
            pass


def bench_aggregation(values: list[bytes], batch: int) -> dict:
    """The per-batch aggregation alone (columns already built), numba vs numpy."""
    s = load_settings()
    p = HitProcessor(s)
    cols_list = []
    for i in range(0, len(values), batch):
        hits = [orjson.loads(raw) for raw in values[i:i + batch]]
        columns = columns_of(hits)
        classes = p.enricher.classify_all(hits, columns)
        cols = BatchColumns(s.processing.feed_length)
        cols.add_hits(columns, [KIND_CODE[c.kind] for c in classes])
        for row, (hit, c) in enumerate(zip(hits, classes)):
            if c.kind == "pageview":
                pv = p.enricher.pageview(hit, c)
                pv["session_id"] = "s"
                cols.add_pageview(row, pv, session_start=False)
        cols_list.append(cols)
    out = {True: 0.0, False: 0.0}
    for use_numba in (True, False):
        aggregate(cols_list[0], use_numba)
    for _ in range(REPEATS):
        for use_numba in (True, False):
            t0 = time.perf_counter()
            for cols in cols_list:
                aggregate(cols, use_numba)
            out[use_numba] = max(out[use_numba], len(values) / (time.perf_counter() - t0))
    return out


async def _produce(bootstrap: str, hits: list[dict], stamp_now: bool = False) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futs = []
        for h in hits:
            if stamp_now:
                h = {**h, "ts": time.time()}
            futs.append(await producer.send("visitwire.hits", orjson.dumps(h), key=h["visitor_id"].encode()))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


# --intake name -> processors.agents.Intake(mode, partitions)
INTAKES = {"bulk": ("bulk", "all"), "bulk-assigned": ("bulk", "assigned"), "stream": ("stream", "assigned")}


async def bench_faust(n_hits: int, rate: int, seconds: float, history_kind: str, use_numba: bool,
                      intake: str = "bulk", batch_size: int = 5000, pinned: bool = False,
                      profile_top: int = 0, sample_top: int = 0) -> dict:
    """intake: one of INTAKES: "bulk" (embedded runtime), "bulk-assigned" (`visitwire worker`), "stream" (Faust
    agent)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from engine.services import start_clickhouse, start_redis, start_tansu
    from processors.agents import Intake
    from processors.worker import InProcessWorker
    from sinks.testing import ListSink

    tansu, redis_svc = start_tansu(), start_redis()
    ch = start_clickhouse() if history_kind == "clickhouse" else None
    cores_before = os.sched_getaffinity(0)
    if pinned:
        pin([svc for svc in (tansu, redis_svc, ch) if svc is not None])
    try:
        s = load_settings(kafka={"bootstrap": tansu.url, "session_timeout_s": 6,
                                 "app_id": f"bench-{uuid.uuid4().hex[:6]}"},
                          redis={"url": redis_svc.url}, processing={"use_numba": use_numba, "batch_size": batch_size},
                          history={"flush_interval_s": 1.0})
        if history_kind == "list":
            history = ListSink(**s.history.batching())  # the product's flush rule (sinks/base.py flush_due)
        else:  # a clickhouse-server, or embedded chdb (visitwire run's default) in a fresh directory
            from sinks.history import open_history
            url = ch.url if ch is not None else f"chdb://{tempfile.mkdtemp(prefix='vw-bench-chdb-')}"
            history = open_history(url, **s.history.batching())
            history.init_schema()
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu.url)
        await admin.start()
        await admin.create_topics([NewTopic("visitwire.hits", s.kafka.partitions, 1)])
        await admin.close()
        traffic = crowd(max(1, n_hits // 13), time.time() - 600, seed=9)
        backlog = traffic.hits[:n_hits]
        await _produce(tansu.url, backlog)
        worker = InProcessWorker(s, history=history, with_extra_agents=False, intake=Intake(*INTAKES[intake]))
        await worker.start()
        try:
            return await _drive(worker, tansu.url, backlog, rate, seconds, use_numba, profile_top, sample_top)
        finally:  # on an error too: a worker left running (its threads, its children) keeps asyncio.run waiting
            await worker.stop()
            if history_kind != "list":
                history.close()
    finally:
        os.sched_setaffinity(0, cores_before)
        tansu.stop(), redis_svc.stop()
        if ch is not None:
            ch.stop()


async def _drive(worker, bootstrap: str, backlog: list[dict], rate: int, seconds: float, use_numba: bool,
                 profile_top: int, sample_top: int = 0) -> dict:
    """The backlog, then live traffic, through a started worker: the figures."""
    profiler = sampler = None
    if sample_top:
        from thread_sampler import ThreadCpuSampler

        sampler = ThreadCpuSampler()
    if profile_top:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU of the event loop thread: waits are not costs
    # the figures count from the first batch on (the worker's start-up is no cost per event); a backlog that
    # fits one batch is taken at once: such a small run counts from here, start-up included
    t_first = (time.perf_counter(), 0)
    cpu_first, heap_first = cpu_by_process(), malloc_heap_bytes()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"backlog (numba={use_numba})", total=len(backlog))
        first_seen = False
        while worker.processed < len(backlog):
            if worker.processed and not first_seen:
                first_seen = True
                t_first = (time.perf_counter(), worker.processed)
                cpu_first = cpu_by_process()
                heap_first = malloc_heap_bytes()
                if profiler is not None:
                    profiler.enable()
                if sampler is not None:
                    sampler.start()
            progress.update(task, completed=worker.processed)
            await asyncio.sleep(0.02)
        t_done = time.perf_counter()
    await worker.drained(120)
    t_drained = time.perf_counter()
    cpu_drained = cpu_by_process()  # all the work the backlog caused, its history flush included
    heap_drained = malloc_heap_bytes()
    n_timed = len(backlog) - t_first[1]
    if profiler is not None:
        profiler.disable()
        _print_profile(profiler, profile_top)
    if sampler is not None:
        sampler.stop()
        console.print(sampler.report(sample_top, per=n_timed), markup=False, highlight=False)
    backlog_rate = n_timed / max(1e-9, t_done - t_first[0])
    drained_rate = n_timed / max(1e-9, t_drained - t_first[0])
    proc_s = worker.rt.processing_s
    # live traffic at a steady rate, stamped when sent
    worker.rt.redis_delay.reset(), worker.rt.history_delay.reset()
    live = crowd(max(1, int(rate * seconds) // 13 + 1), time.time(), seed=10).hits[:int(rate * seconds)]
    start = worker.processed
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"live {rate}/s", total=len(live))
        for i in range(0, len(live), max(1, rate // 10)):
            await _produce(bootstrap, live[i:i + max(1, rate // 10)], stamp_now=True)
            progress.update(task, completed=i)
            lag = t0 + (i + rate // 10) / rate - time.perf_counter()
            if lag > 0:
                await asyncio.sleep(lag)
    while worker.processed < start + len(live):
        await asyncio.sleep(0.05)
    await worker.drained(60)
    f = worker.figures()
    return {"backlog_events_per_s": backlog_rate, "backlog_flushed_events_per_s": drained_rate,
            "processing_share": proc_s / max(1e-9, t_drained - t_first[0]),
            "cpu_us_per_event": {name: (cpu_drained[name] - cpu_first.get(name, 0.0)) / max(1, n_timed) * 1e6
                                 for name in cpu_drained if not name.startswith("faults:")},
            "faults_per_event": {name.removeprefix("faults:"): (cpu_drained[name] - cpu_first.get(name, 0))
                                 / max(1, n_timed) for name in cpu_drained if name.startswith("faults:")},
            "heap_growth_bytes": None if heap_first is None else heap_drained - heap_first, "n_timed": n_timed,
            "cores_busy": (cpu_drained["machine"] - cpu_first["machine"]) / max(1e-9, t_drained - t_first[0]),
            "redis_p50_ms": f["redis_delay_ms"]["p50"], "redis_p99_ms": f["redis_delay_ms"]["p99"],
            "history_p50_ms": f["history_delay_ms"]["p50"], "history_p99_ms": f["history_delay_ms"]["p99"]}


def _print_profile(profiler, top: int) -> None:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    total = sum(v[2] for v in stats.stats.values())  # own time of every function
    stats.sort_stats("tottime").print_stats(top)
    console.print(f"[bold]worker process profile[/] (cProfile on the event loop thread's CPU clock, own time, "
                  f"{total:.2f} s in all, the profiler's own cost included; the other threads are in the table "
                  "by thread)")
    text = out.getvalue()
    console.print(text[text.find("   ncalls"):], markup=False, highlight=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hits", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=5000, help="live hits per second for the latency run")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=5000, help="hits per batch (processing.batch_size), on every path")
    ap.add_argument("--history", choices=("clickhouse", "chdb", "list"), default="clickhouse")
    ap.add_argument("--skip-faust", action="store_true", help="the processors alone: no Kafka runs")
    ap.add_argument("--intake", action="append", choices=tuple(INTAKES),
                    help="only these Kafka runs (repeatable; default all)")
    ap.add_argument("--pin", action="store_true", help="worker (and its children) on core 0, servers on core 1")
    ap.add_argument("--sample", type=int, default=0, metavar="N",
                    help="sample the event loop thread's CPU by function (us per event), the N costliest")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="cProfile the worker while it drains the backlog; print the N costliest functions")
    args = ap.parse_args()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        ap.error("--pin needs two cores (worker on one, servers on the other)")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    traffic = crowd(max(1, args.hits // 13), 1_700_000_000.0, seed=8)
    values = [orjson.dumps(h) for h in traffic.hits[:args.hits]]
    console.print(f"{len(values):,} hits ({sum(len(v) for v in values) / len(values):.0f} B each, "
                  f"{len(traffic.pageview_ids) / len(traffic.hits):.0%} page views)")
    proc = bench_processors(values, args.batch)
    agg = bench_aggregation(values[: min(len(values), 50_000)], args.batch)
    t = Table(title=f"processors alone (one core, same input, best of {REPEATS})")
    t.add_column("stage"), t.add_column("numba ev/s", justify="right"), t.add_column("numpy ev/s", justify="right")
    t.add_column("numba / numpy", justify="right")
    t.add_row("enrich + sessionize + aggregate", f"{proc[True]:,.0f}", f"{proc[False]:,.0f}",
              f"{proc[True] / proc[False]:.2f}x")
    t.add_row("per-batch aggregation only", f"{agg[True]:,.0f}", f"{agg[False]:,.0f}", f"{agg[True] / agg[False]:.2f}x")
    console.print(t)
    if args.skip_faust:
        return 0
    layout = ("worker + its children pinned to core 0, every server to core 1" if args.pin
              else "every program on any core")
    t = Table(title=f"through Kafka: tansu + redis-server + {args.history} history, one worker ({layout})")
    for col in ("hits read by", "numba", "backlog ev/s", "incl. history flush ev/s", "processing share",
                "worker CPU us/ev", "its hits reader us/ev", "Redis p50/p99 ms", "history p50/p99 ms"):
        t.add_column(col, justify="right")
    names = {"bulk": "bulk librdkafka, own group (run)", "bulk-assigned": "bulk librdkafka, Faust-assigned (worker)",
             "stream": "Faust agent stream"}
    runs = []
    for intake, use_numba in (("bulk", True), ("bulk", False), ("bulk-assigned", True), ("stream", True)):
        if args.intake and intake not in args.intake:
            continue
        r = asyncio.run(bench_faust(args.hits, args.rate, args.seconds, args.history, use_numba, intake, args.batch,
                                    pinned=args.pin, profile_top=args.profile, sample_top=args.sample))
        runs.append((f"{intake}, {'numba' if use_numba else 'numpy'}", r))
        t.add_row(names[intake], str(use_numba), f"{r['backlog_events_per_s']:,.0f}",
                  f"{r['backlog_flushed_events_per_s']:,.0f}",
                  f"{r['processing_share']:.0%}", f"{r['cpu_us_per_event']['worker']:.1f}",
                  f"{r['cpu_us_per_event'].get('hits reader', 0.0):.1f}",
                  f"{r['redis_p50_ms']} / {r['redis_p99_ms']}",
                  f"{r['history_p50_ms']} / {r['history_p99_ms']}")
    console.print(t)
    console.print("targets: >= 100,000 ev/s per worker; p99 < 1,000 ms to Redis, < 5,000 ms to history")
    default = dict(runs).get("bulk, numba")  # the embedded runtime's path
    if default is not None:
        redis_p99, history_p99 = default["redis_p99_ms"], default["history_p99_ms"]  # None: nothing measured
        console.print("; ".join([
            _verdict(f"processors alone, numba: {proc[True]:,.0f} ev/s", proc[True] >= TARGET_EVENTS_PER_S),
            _verdict(f"own group (run): Redis p99 {redis_p99} ms",
                     redis_p99 is not None and redis_p99 < TARGET_REDIS_P99_MS),
            _verdict(f"history p99 {history_p99} ms", history_p99 is not None and history_p99 < TARGET_HISTORY_P99_MS),
            f"through Kafka, with every server on this machine: {default['backlog_events_per_s']:,.0f} ev/s backlog, "
            f"{default['backlog_flushed_events_per_s']:,.0f} incl. flush"]))
    console.print("worker CPU us/ev: CPU time of the worker's process (all its threads) per event of the backlog, "
                  "from its first batch until every event is flushed; 100k ev/s on one core needs <= 10. "
                  "The hits reader is the worker's child process that reads and transposes the hits, on another core")
    programs = [name for name in runs[0][1]["cpu_us_per_event"]
                if name not in ("worker", "machine") and not name.startswith("worker/")]
    t = Table(title=f"CPU per event of the backlog until flushed, by program, us (all share the machine's "
                    f"{os.cpu_count()} cores)")
    for col in ("run", "worker", *programs, "whole machine", "cores busy"):
        t.add_column(col, justify="right")
    for label, r in runs:
        cpu = r["cpu_us_per_event"]
        t.add_row(label, *(f"{cpu.get(name, 0.0):.1f}" for name in ("worker", *programs, "machine")),
                  f"{r['cores_busy']:.2f}")
    console.print(t)
    threads = sorted({name for _, r in runs for name in r["cpu_us_per_event"] if name.startswith("worker/")})
    t = Table(title="the worker's process by thread, us of CPU and minor page faults per event (MainThread: the event "
                    "loop and the processors; rdk:*: librdkafka's producer of page views, sessions and the changelog)")
    for col in ("run", *(name.removeprefix("worker/") for name in threads)):
        t.add_column(col, justify="right")
    for label, r in runs:
        t.add_row(label, *(f"{r['cpu_us_per_event'].get(name, 0.0):.1f}" for name in threads))
        t.add_row("  page faults", *(f"{r['faults_per_event'].get(name, 0.0):.2f}" for name in threads))
    console.print(t)
    for label, r in runs:  # where MainThread's faults come from (README, Sizing)
        if r["heap_growth_bytes"] is not None:
            grown, n = r["heap_growth_bytes"], max(1, r["n_timed"])
            console.print(f"{label}: glibc's heap grew {grown / 2**20:,.0f} MiB over the backlog, "
                          f"{grown / n / 1024:.1f} KiB ({grown / n / 4096:.2f} pages) per event: the rows held "
                          "until the history writer has them")
    for label, r in runs:  # the sizing line (README, Operations): what one worker needs of its core
        cpu = r["cpu_us_per_event"]
        reading = sum(cpu.get(name, 0.0) for name in ("worker", "hits reader"))
        own = reading + cpu.get("history writer", 0.0)
        # the goal counts the worker's process and its hits reader (<= 10 us); the history writer child
        # runs on the same core in this layout, so the per-core figure counts it too
        console.print(f"{label}: the worker's process and its hits reader spend {reading:.1f} us of CPU per event "
                      f"(goal <= 10: {1e6 / max(reading, 1e-9):,.0f} events/s); with its history writer "
                      f"{own:.1f} us: {1e6 / max(own, 1e-9):,.0f} events/s per worker core"
                      + ("" if args.pin else " (unpinned: servers shared the cores; use --pin for sizing)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
