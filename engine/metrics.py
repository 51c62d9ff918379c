"""Prometheus metrics of a worker, a capture agent and the web server, read from the rooms' own figures.

The rooms keep plain counters (Decoder.stats, WorkerRuntime figures, the sinks' Tally objects); the
collectors here turn them into metric families at scrape time, so nothing in the hot paths calls a
metrics library. Names start with `visitwire_`; counters end in `_total`. Broker lag is asked of the
broker (engine/kafka_lag.py) at most every LAG_REFRESH_S, in the scraping thread.

`Metrics(...)` = one registry plus the health of what it watches (`health()`, for `/health` and
`visitwire status`).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric


LAG_REFRESH_S = 10.0
STALL_S = 30.0  # a component failing for this long without one success is unhealthy

# Decoder.stats keys that count input the capture could not read as HTTP, by kind
PARSE_ERROR_KINDS = ("parse_errors", "framing_anomalies", "malformed", "truncated_frames", "unsupported_link",
                     "gaps", "orphan_responses", "late_responses", "non_http", "tls_flows", "http2_flows",
                     "internal_errors")
DROP_KINDS = ("dropped_pending", "dropped_overflow_segments", "dropped_overflow_bytes", "flows_evicted")


def _counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> CounterMetricFamily:
    m = CounterMetricFamily(name, doc, labels=list(labels or ()))
    m.add_metric(list((labels or {}).values()), value)
    return m


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def sink_metrics(sinks: dict[str, Any]) -> Iterator[Metric]:
    """Batch sizes, write latencies, errors and the last write of the history sink (sinks/base.py, per
    table) and the Redis live sink (sinks/redis_live.py, table "live"); `sinks` = {"history": .., "redis": ..}."""
    rows = HistogramMetricFamily("visitwire_sink_batch_rows", "Rows per write to the sink", labels=["sink", "table"])
    secs = HistogramMetricFamily("visitwire_sink_write_seconds", "Seconds per write to the sink",
                                 labels=["sink", "table"])
    errors = CounterMetricFamily("visitwire_sink_errors", "Failed writes to the sink (each retry counts)",
                                 labels=["sink"])
    last = GaugeMetricFamily("visitwire_sink_last_write_timestamp_seconds", "Wall time of the last successful "
                             "write (0 = none yet)", labels=["sink"])
    for kind, sink in sinks.items():
        if hasattr(sink, "batch_rows"):  # a BatchingSink
            sizes, times, at = dict(sink.batch_rows), dict(sink.write_seconds), sink.last_flush_at
        else:
            sizes, times, at = {"live": sink.batch_events}, {"live": sink.write_seconds}, sink.write_seconds.last_at
        for table, t in sorted(sizes.items()):
            rows.add_metric([kind, table], buckets=t.cumulative(), sum_value=t.sum)
        for table, t in sorted(times.items()):
            secs.add_metric([kind, table], buckets=t.cumulative(), sum_value=t.sum)
        errors.add_metric([kind], sink.last_error.count)
        last.add_metric([kind], at)
    yield from (rows, secs, errors, last)


class WorkerCollector:
    """`visitwire worker` (or the embedded runtime's worker): stages, drops, sinks, lag, RFM re-scores."""

    def __init__(self, worker: Any, lag: "LagCache | None" = None):
        self.worker = worker
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        w, rt = self.worker, self.worker.rt
        f = w.figures()
        stages = CounterMetricFamily("visitwire_events", "Events through each worker stage (rate() = events/s)",
                                     labels=["stage"])
        for stage, key in (("hits_in", "processed"), ("hits_committed", "committed"),
                           ("pageviews_out", "pageviews"), ("sessions_out", "sessions")):
            stages.add_metric([stage], f[key])
        yield stages
        drops = CounterMetricFamily("visitwire_worker_dropped_hits", "Hits dropped by the worker, by reason",
                                    labels=["reason"])
        for reason, n in sorted(f["dropped"].items()):
            drops.add_metric([reason], n)
        yield drops
        yield _gauge("visitwire_worker_open_sessions", "Sessions open in this worker", f["open_sessions"])
        yield _gauge("visitwire_worker_held_hits", "Hits processed, waiting for the history flush", rt.held())
        yield _counter("visitwire_worker_processing_seconds", "CPU-bound processing time of hit batches",
                       f["processing_s"])
        yield _counter("visitwire_worker_flush_errors", "Failed flushes (history store or Kafka away)",
                       f["history_errors"])
        yield _counter("visitwire_redis_errors", "Redis live-state writes that failed", f["live_errors"])
        yield _counter("visitwire_hits_reader_restarts", "Hits reader processes started again",
                       f["reader_restarts"])
        yield _gauge("visitwire_worker_last_flush_timestamp_seconds", "Wall time of the last complete flush",
                     rt.last_flush_at)
        delay = GaugeMetricFamily("visitwire_delay_milliseconds", "Event time to sink, quantiles since start",
                                  labels=["sink", "quantile"])
        for sink, key in (("redis", "redis_delay_ms"), ("history", "history_delay_ms")):
            for q, label in (("p50", "0.5"), ("p99", "0.99")):
                if f[key][q] is not None:
                    delay.add_metric([sink, label], f[key][q])
        yield delay
        yield from sink_metrics({"history": w.history, **({"redis": w.live} if w.live is not None else {})})
        analytics = (getattr(w, "extras", None) or {}).get("processors.analytics.agents")
        if analytics is not None and hasattr(analytics, "rescore_seconds"):
            t = analytics.rescore_seconds
            h = HistogramMetricFamily("visitwire_segment_rescore_seconds", "RFM segment re-score durations")
            h.add_metric([], buckets=t.cumulative(), sum_value=t.sum)
            yield h
        if self.lag is not None:
            yield from self.lag.metrics()

    def health(self) -> dict:
        rt, live = self.worker.rt, self.worker.live
        now = time.time()
        # failing = an error since the last success, and no success for STALL_S: history flushes (Kafka
        # included), and the Redis live writes, which a flush does not wait to succeed
        failing = rt.last_error.at > rt.last_flush_at and now - max(rt.last_flush_at, rt.started_at) > STALL_S
        last_live = live.write_seconds.last_at if live is not None else 0.0
        live_failing = live is not None and live.last_error.at > last_live and \
            now - max(last_live, rt.started_at) > STALL_S
        error = live.last_error if live_failing and not failing else rt.last_error
        out = {"component": "worker", "healthy": not (failing or live_failing), "last_flush": rt.last_flush_at or None,
               "held_hits": rt.held(), "last_error": error.text or None, "last_error_at": error.at or None}
        if self.lag is not None:
            out["lag"] = {p: v["lag"] for p, v in self.lag.partitions().items()}
            if self.lag.error:
                out["lag_error"] = self.lag.error
        return out


class CaptureCollector:
    """A capture agent: packets, kernel drops, flows, transactions, parse errors by kind, Kafka output.

    `figures()` returns {"decoder": Decoder.stats, "source": live source stats or None,
    "output": KafkaOutput.stats or None, "events": events handed to the outputs}."""

    def __init__(self, figures: Callable[[], dict]):
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self.figures()
        d = f.get("decoder") or {}
        for key, doc in (("packets", "Packets read"), ("bytes", "Bytes of packets read"),
                         ("flows", "TCP flows seen"), ("transactions", "HTTP request/response pairs"),
                         ("requests", "HTTP requests parsed"), ("no_response", "Requests without a response")):
            yield _counter(f"visitwire_capture_{key}", doc, d.get(key, 0))
        kinds = CounterMetricFamily("visitwire_capture_parse_errors", "Input not read as HTTP, by kind",
                                    labels=["kind"])
        for kind in PARSE_ERROR_KINDS:
            kinds.add_metric([kind], d.get(kind, 0))
        yield kinds
        drops = CounterMetricFamily("visitwire_capture_dropped", "Capture-side drops, by kind", labels=["kind"])
        for kind in DROP_KINDS:
            drops.add_metric([kind], d.get(kind, 0))
        yield drops
        src = f.get("source") or {}
        if src:
            yield _counter("visitwire_capture_kernel_packets", "Packets the kernel ring saw",
                           src.get("kernel_packets", 0))
            yield _counter("visitwire_capture_kernel_drops", "Packets the kernel dropped (ring full)",
                           src.get("kernel_drops", 0))
        yield _counter("visitwire_capture_events", "Events handed to the outputs (rate() = events/s)",
                       f.get("events", 0))
        out = f.get("output") or {}
        if out:
            yield _counter("visitwire_kafka_out_sent", "Events the broker acknowledged", out.get("sent", 0))
            yield _counter("visitwire_kafka_out_dropped", "Events dropped while the broker was away",
                           out.get("dropped_while_broker_away", 0))
            yield _gauge("visitwire_kafka_out_buffered", "Events waiting for the broker", out.get("buffered", 0))
            if "connected" in out:
                yield _gauge("visitwire_kafka_out_connected", "1 while the broker takes events",
                             1 if out["connected"] else 0)

    def health(self) -> dict:
        f = self.figures()
        out, src = f.get("output") or {}, f.get("source") or {}
        error = f.get("error") or ""
        if not error and out.get("connected") is False and out.get("buffered", 0):
            error = f"the broker does not take events ({out['buffered']} buffered)"
        return {"component": "capture", "healthy": not error, "events": f.get("events", 0),
                "kafka_connected": out.get("connected"), "buffered": out.get("buffered"),
                "kernel_drops": src.get("kernel_drops"), "last_error": error or None}


class LagCache:
    """Lag per partition of the hits consumer group, asked of the broker at most every LAG_REFRESH_S."""

    def __init__(self, probe: Callable[[], dict[int, dict]]):
        self.probe = probe
        self._at = 0.0
        self._value: dict[int, dict] = {}
        self._error = ""
        self._lock = threading.Lock()

    def partitions(self) -> dict[int, dict]:
        with self._lock:
            if time.monotonic() - self._at >= LAG_REFRESH_S:
                try:
                    self._value, self._error = self.probe(), ""
                except Exception as e:  # the broker away: say so, keep the worker's metrics
                    self._value, self._error = {}, f"{type(e).__name__}: {e}"
                self._at = time.monotonic()
            return self._value

    @property
    def error(self) -> str:
        return self._error

    def metrics(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("visitwire_kafka_lag", "Hits not yet committed by the worker group, per partition",
                                labels=["topic", "partition"])
        for p, v in sorted(self.partitions().items()):
            lag.add_metric([v["topic"], str(p)], v["lag"])
        yield lag


class Metrics:
    """One registry over some collectors, plus their combined health."""

    def __init__(self, *collectors: Any):
        self.registry = CollectorRegistry(auto_describe=False)
        self.collectors = list(collectors)
        for c in collectors:
            self.registry.register(c)

    def add(self, collector: Any) -> None:
        self.collectors.append(collector)
        self.registry.register(collector)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def health(self) -> dict:
        parts = [c.health() for c in self.collectors if hasattr(c, "health")]
        return {"healthy": all(p["healthy"] for p in parts), "components": parts}
