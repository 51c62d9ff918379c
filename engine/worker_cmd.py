"""`visitwire worker`: the processors (processors/worker.py) on the partitions Faust's group gives this
worker, until SIGINT / SIGTERM, with what they did on the console (stderr)."""
from __future__ import annotations

import asyncio
import logging
import os
import signal

import redis
from aiokafka.errors import KafkaError
from rich.console import Console

from config.kafka_errors import KafkaRefused
from config.kafka_log_flood import say_kafka_client_errors
from config.redact import redact_text, redact_url
from config.settings import Settings
from engine.metrics_server import ListenerError, start_listener
from processors.agents import Intake
from processors.worker import InProcessWorker
from sinks.base import SinkUnavailable


def run_worker(settings: Settings) -> int:
    """`visitwire worker`: run until SIGINT / SIGTERM; 0 on a clean stop."""
    console = Console(stderr=True)

    async def main() -> int:
        # the partitions Faust's group gives this worker (co-partitioned with the sessions table), so
        # workers scale out; in bulk, or through a Faust agent when processing.intake = "stream"
        worker = InProcessWorker(settings, intake=Intake(settings.processing.intake, "assigned"))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():  # a second signal: do not wait for the flush
                console.print("[red]second signal: exiting now; unflushed hits are redelivered to the next worker")
                os._exit(130)
            stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        listener = start_listener(settings, worker_metrics(settings, worker))
        if listener is not None:
            console.print(f"metrics at {listener.url}/metrics and /health (Authorization: Bearer <token>)")
        await worker.start()
        console.print(f"[green]worker started[/] kafka={settings.kafka.bootstrap} "
                      f"redis={redact_url(settings.redis.url)} history={redact_url(settings.history.url)}")
        last = 0
        ticks = 0
        try:
            while not stop.is_set() and worker.rt.refused is None:
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
                ticks += 1
                if ticks % 10:  # the figures every 10 s; a refusal (checked each second) stops the worker
                    continue
                f = worker.figures()
                if f["processed"] != last:
                    console.print(f"processed {f['processed']:,} hits, {f['pageviews']:,} page views, "
                                  f"{f['sessions']:,} sessions closed, {f['open_sessions']:,} open")
                    last = f["processed"]
        finally:
            console.print("[yellow]stopping: flushing processed hits (open sessions stay in the table)")
            if listener is not None:
                listener.stop()
            await worker.stop()
            f = worker.figures()
            console.print(f"stopped after {f['processed']:,} hits, {f['pageviews']:,} page views, "
                          f"{f['sessions']:,} sessions closed; {f['committed']:,} hits committed")
            say_kafka_client_errors(logging.getLogger(__name__))
        if worker.rt.refused is not None:
            raise worker.rt.refused
        return 0

    try:
        return asyncio.run(main())
    except ListenerError as e:
        console.print(f"[red]{e}")
        return 2
    except SinkUnavailable as e:
        console.print(f"[red]history store unavailable: {e}; check --clickhouse / history.url")
        return 1
    except KafkaRefused as e:  # the hits reader's or the outbox's login refused while running
        console.print(f"[red]{kafka_refused(settings, e)}", soft_wrap=True)
        return 1
    except KafkaError as e:  # the broker unreachable or refusing this client: one line, not a traceback
        console.print(f"[red]{kafka_unreachable(settings, e)}", soft_wrap=True)
        return 1
    except (OSError, redis.RedisError) as e:
        console.print(f"[red]cannot reach a service: {e}; check --kafka / --redis")
        return 1


def kafka_unreachable(settings: Settings, e: Exception) -> str:
    """The line a worker that cannot start on its broker says: where, why, and what to check (the
    credentials too when the broker wants SASL, whose refusal aiokafka reports as a failed bootstrap)."""
    from config.kafka_security import security_hint

    k = settings.kafka
    return (f"cannot start on Kafka at {k.bootstrap}: {redact_text(str(e) or type(e).__name__)}; "
            f"check --kafka / kafka.bootstrap and that the broker runs{security_hint(k)}")


def kafka_refused(settings: Settings, e: Exception) -> str:
    """The line a running worker says when the broker refuses its hits reader or outbox (librdkafka's error_cb,
    config/kafka_errors.py): the refusal and what to check; hits not committed are read again by the next one."""
    from config.kafka_security import security_hint

    return (f"worker stopped: {redact_text(str(e))}; check kafka.bootstrap ({settings.kafka.bootstrap})"
            f"{security_hint(settings.kafka)}; hits not committed are read again by the next worker")


def worker_metrics(settings: Settings, worker: InProcessWorker):
    """The worker's metrics: its stages and sinks, and its group's lag on the hits topic."""
    from config.events import TOPIC_HITS
    from config.kafka_security import librdkafka_config
    from engine.kafka_lag import group_lag
    from engine.metrics import LagCache, WorkerCollector

    k = settings.kafka
    lag = LagCache(lambda: group_lag(k.bootstrap, f"{k.app_id}-hits", TOPIC_HITS,
                                     extra_config=librdkafka_config(k)))
    return WorkerCollector(worker, lag)
