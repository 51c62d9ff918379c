"""Metrics and health: the Prometheus listeners of `visitwire capture` / `visitwire worker`, the web
server's /metrics and /health, `visitwire status`, and JSON logs. Figures are checked against the
ground truth of a generated pcap, on the real servers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.proctree import stop
from engine.services import free_port
from pcapgen import generate_pcap

REPO = Path(__file__).resolve().parents[2]
START_TS = 1_772_445_600.0
TOKEN = "metrics-test-token"


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")}
    env.update({"VISITWIRE_DATA_DIR": str(tmp_path / "data"), "VISITWIRE_WEB__TOKEN": TOKEN,
                "VISITWIRE_CAPTURE__PORTS": "[8080]", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def _cli(args: list[str], env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _get(url: str, token: str | None = TOKEN) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} of a Prometheus exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_capture_metrics_count_what_the_pcap_holds(tmp_path):
    """The capture agent's figures equal the pcap's truth; the listener wants the token."""
    from capture.pcapfile import read_pcap_batches
    from capture.decoder import Decoder
    from config.settings import load_settings
    from engine.capture_cmd import _figures, process
    from engine.metrics import CaptureCollector, Metrics
    from engine.metrics_server import MetricsServer

    pcap = tmp_path / "site.pcap"
    truth = generate_pcap(str(pcap), START_TS, visitors=30, seed=3, port=8080)
    s = load_settings(capture={"ports": [8080]}, data_dir=str(tmp_path / "data"))
    decoder, counts, source = Decoder(s, state_dir=s.data_dir), {"events": 0}, read_pcap_batches(str(pcap))
    server = MetricsServer(Metrics(CaptureCollector(lambda: _figures(decoder, source, [], counts))), "127.0.0.1",
                           0, TOKEN).start()
    try:
        process(source, decoder, [], counts=counts)
        status, text = _get(f"{server.url}/metrics")
        assert status == 200
        m = _samples(text)
        assert m[("visitwire_capture_packets_total", ())] == truth.packets
        assert m[("visitwire_capture_transactions_total", ())] == truth.hits
        assert m[("visitwire_capture_events_total", ())] == truth.hits
        assert m[("visitwire_capture_parse_errors_total", (("kind", "parse_errors"),))] == 0
        assert ("visitwire_capture_parse_errors_total", (("kind", "framing_anomalies"),)) in m
        status, body = _get(f"{server.url}/health")
        assert status == 200 and json.loads(body)["components"][0]["component"] == "capture"
        assert _get(f"{server.url}/metrics", token=None)[0] == 401
        assert _get(f"{server.url}/metrics", token="wrong")[0] == 401
    finally:
        server.stop()


def test_metrics_port_taken_is_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pcap = tmp_path / "site.pcap"
        generate_pcap(str(pcap), START_TS, visitors=2, seed=3, port=8080)
        r = _cli(["capture", "--pcap", str(pcap), "--format", "none", "--metrics-port", str(port)], _env(tmp_path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"metrics cannot listen on 127.0.0.1:{port}" in r.stderr


def test_status_names_what_is_unreachable_and_exits_1(tmp_path):
    dead = free_port()
    r = _cli(["status", "--kafka", f"127.0.0.1:{dead}", "--redis", f"redis://127.0.0.1:{dead}/0",
              "--target", f"http://127.0.0.1:{dead}"], _env(tmp_path), timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()}
    assert "UNHEALTHY" in lines["kafka"] and "does not answer" in lines["kafka"]
    assert "UNHEALTHY" in lines["redis"]
    assert "UNHEALTHY" in lines[f"http://127.0.0.1:{dead}"] and "unreachable" in lines[f"http://127.0.0.1:{dead}"]


@pytest.mark.integration
def test_worker_metrics_status_and_json_logs(redis_server, clickhouse_server, tmp_path):
    """A worker with --metrics-port: its stage counters and sink rows equal the pcap's truth, every hits
    partition's lag falls to 0, `visitwire status` says every component is healthy, and its log lines
    are JSON objects."""
    from engine.kafka_lag import group_lag

    pcap = tmp_path / "site.pcap"
    truth = generate_pcap(str(pcap), START_TS, visitors=40, seed=8, port=8080)
    url = clickhouse_server.url.rsplit("/", 1)[0] + f"/metrics_{uuid.uuid4().hex[:8]}"
    app_id = f"vw-metrics-{uuid.uuid4().hex[:8]}"
    port = free_port()
    # a topic of its own on the shared broker: the app id names the groups, the partitions are new
    env = _env(tmp_path, VISITWIRE_KAFKA__APP_ID=app_id, VISITWIRE_REDIS__KEY_PREFIX=f"m{uuid.uuid4().hex[:6]}:",
               VISITWIRE_LOG_FORMAT="json", VISITWIRE_LOG_LEVEL="INFO", VISITWIRE_KAFKA__SESSION_TIMEOUT_S="6",
               VISITWIRE_HISTORY__FLUSH_INTERVAL_S="0.3", VISITWIRE_ANALYTICS__FIRST_RUN_AFTER_S="1")
    from engine.services import start_tansu

    with start_tansu() as broker:
        cap = _cli(["capture", "--pcap", str(pcap), "--kafka", broker.url], env)
        assert cap.returncode == 0, cap.stderr[-2000:]
        before = group_lag(broker.url, f"{app_id}-hits", "visitwire.hits")
        assert len(before) == 4 and all(v["lag"] > 0 for v in before.values()), before
        log = tmp_path / "worker.log"
        worker = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--kafka", broker.url, "--redis",
                                   redis_server.url, "--clickhouse", url, "--metrics-port", str(port)], env=env,
                                  cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True)
        try:
            m: dict = {}
            deadline = time.monotonic() + 120
            while m.get(("visitwire_events_total", (("stage", "hits_committed"),))) != truth.hits:
                assert worker.poll() is None, log.read_text()[-3000:]
                committed = m.get(("visitwire_events_total", (("stage", "hits_committed"),)))
                assert time.monotonic() < deadline, f"committed {committed} of {truth.hits}"
                time.sleep(0.5)
                try:
                    m = _samples(_get(f"http://127.0.0.1:{port}/metrics")[1])
                except (urllib.error.URLError, OSError, ValueError):
                    m = {}
            assert m[("visitwire_events_total", (("stage", "hits_in"),))] == truth.hits
            assert m[("visitwire_events_total", (("stage", "pageviews_out"),))] == truth.pageviews
            assert m[("visitwire_sink_batch_rows_sum", (("sink", "history"), ("table", "hits")))] == truth.hits
            assert m[("visitwire_sink_batch_rows_sum", (("sink", "history"), ("table", "pageviews")))] \
                == truth.pageviews
            assert m[("visitwire_sink_batch_rows_sum", (("sink", "redis"), ("table", "live")))] == truth.hits
            assert m[("visitwire_sink_errors_total", (("sink", "history"),))] == 0
            assert m[("visitwire_redis_errors_total", ())] == 0
            assert m[("visitwire_sink_write_seconds_count", (("sink", "history"), ("table", "hits")))] >= 1
            # the RFM re-score the worker runs first_run_after_s after its start, timed
            deadline = time.monotonic() + 60
            while m.get(("visitwire_segment_rescore_seconds_count", ()), 0) < 1:
                assert time.monotonic() < deadline, {k: v for k, v in m.items() if "rescore" in k[0]}
                time.sleep(1)
                m = _samples(_get(f"http://127.0.0.1:{port}/metrics")[1])
            assert 0 < m[("visitwire_segment_rescore_seconds_sum", ())] < 60
            # the lag is asked of the broker every 10 s: wait for a look after the last commit
            deadline = time.monotonic() + 30
            while True:
                lag = {k[1]: v for k, v in _samples(_get(f"http://127.0.0.1:{port}/metrics")[1]).items()
                       if k[0] == "visitwire_kafka_lag"}
                if len(lag) == 4 and not any(lag.values()):
                    break
                assert time.monotonic() < deadline, lag
                time.sleep(1)
            r = _cli(["status", "--kafka", broker.url, "--redis", redis_server.url, "--clickhouse", url,
                      "--target", f"http://127.0.0.1:{port}"], env, timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
            lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()}
            assert set(lines) >= {"kafka", "redis", "history", f"http://127.0.0.1:{port}"}, r.stdout
            assert "lag p0=0 p1=0 p2=0 p3=0" in lines["kafka"]
            assert all(" ok " in ln for ln in lines.values()), r.stdout
            assert "last flush" in lines[f"http://127.0.0.1:{port}"]
        finally:
            stop(worker)
    records = [json.loads(ln) for ln in log.read_text().splitlines() if ln.startswith("{")]
    assert any("reading hits partitions" in r["message"] for r in records), log.read_text()[-2000:]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


@pytest.mark.integration
def test_web_alone_serves_the_screen_api_and_health(redis_server, clickhouse_server, tmp_path):
    """`visitwire web`: the production stack's screen, on servers that workers fill elsewhere."""
    port = free_port()
    url = clickhouse_server.url.rsplit("/", 1)[0] + f"/web_{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "web", "--redis", redis_server.url, "--clickhouse",
                             url, "--web-port", str(port)], env=_env(tmp_path), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/api/live")
                break
            except (urllib.error.URLError, OSError):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
                time.sleep(0.3)
        assert status == 200 and "visitors_now" in json.loads(body)
        assert _get(f"http://127.0.0.1:{port}/api/live", token=None)[0] == 401
        assert _get(f"http://127.0.0.1:{port}/health")[0] == 200
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root / CAP_NET_RAW")
def test_embedded_engine_metrics_count_live_requests(tmp_path):
    """`visitwire run --iface lo`: the dashboard's /metrics counts what its capture child and worker did,
    and /health reports both; `visitwire status` finds the engine through engine.json."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    site = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    port = site.server_address[1]
    web_port = free_port()
    env = _env(tmp_path, VISITWIRE_WEB__PORT=str(web_port))
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--iface", "lo", "--ports", str(port)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    base = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # capture is up once its child reported its first (empty) batch
            try:
                h = json.loads(_get(f"{base}/health")[1])
                if len(h.get("components", [])) == 2:
                    m = _samples(_get(f"{base}/metrics")[1])
                    if ("visitwire_capture_kernel_packets_total", ()) in m:
                        break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.5)
        browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"}
        for i in range(7):  # a browser's page views (urllib's own User-Agent counts as a bot)
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/p/{i}", headers=browser),
                                   timeout=5).read()
        deadline = time.monotonic() + 60
        while True:
            m = _samples(_get(f"{base}/metrics")[1])
            # the capture child reports its counts to the engine about once a second
            if m.get(("visitwire_events_total", (("stage", "hits_committed"),))) == 7 and \
                    m.get(("visitwire_capture_events_total", ())) == 7:
                break
            assert time.monotonic() < deadline, {k: v for k, v in m.items() if "events" in k[0]}
            time.sleep(0.5)
        assert m[("visitwire_capture_events_total", ())] == 7
        assert m[("visitwire_events_total", (("stage", "pageviews_out"),))] == 7
        assert m[("visitwire_sink_batch_rows_sum", (("sink", "history"), ("table", "hits")))] == 7
        status, body = _get(f"{base}/health")
        assert status == 200 and {c["component"] for c in json.loads(body)["components"]} == {"worker", "capture"}
        r = _cli(["status"], env, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert [ln.split()[:3] for ln in r.stdout.splitlines()] == [["engine", "worker", "ok"],
                                                                    ["engine", "capture", "ok"]], r.stdout
    finally:
        stop(proc, 60)
        site.shutdown()


@pytest.mark.integration
def test_a_worker_whose_redis_writes_keep_failing_is_unhealthy(tmp_path, clickhouse_server):
    """Health of a real worker object whose Redis is away: healthy at first, unhealthy once its live
    writes have failed for longer than the stall limit with no success, naming the error; `visitwire
    status --target` on its listener exits 0, then 1 with that error, while the history it checks is fine."""
    import redis as redis_lib

    from config.live_layout import LiveDelta
    from config.settings import load_settings
    from engine.metrics import STALL_S, Metrics, WorkerCollector
    from engine.metrics_server import MetricsServer
    from processors.worker import InProcessWorker
    from sinks.history import open_history
    from sinks.testing import ListSink

    history_url = clickhouse_server.url.rsplit("/", 1)[0] + f"/status_{uuid.uuid4().hex[:8]}"
    store = open_history(history_url)
    store.init_schema()  # the schema, so that status finds a healthy (empty) history
    store.close()

    s = load_settings(kafka={"bootstrap": f"127.0.0.1:{free_port()}"}, redis={"url": f"redis://127.0.0.1:{free_port()}/0"},
                      data_dir=str(tmp_path))
    worker = InProcessWorker(s, history=ListSink(), with_extra_agents=False)
    metrics = Metrics(WorkerCollector(worker))
    try:
        assert metrics.health()["healthy"]
        with pytest.raises(redis_lib.RedisError):
            worker.live.apply(LiveDelta(counters={29_000_000: {"hits": 1}}, max_ts=1.74e9, events=1))
        assert metrics.health()["healthy"], "one failed write within the stall limit is not yet unhealthy"
        server = MetricsServer(metrics, "127.0.0.1", 0, TOKEN).start()
        # `visitwire status` on this worker's listener alone: ok now, exit 1 naming the error once stalled
        env = _env(tmp_path, VISITWIRE_KAFKA__BOOTSTRAP="", VISITWIRE_REDIS__URL="", VISITWIRE_HISTORY__URL=history_url)
        try:
            r = _cli(["status", "--target", server.url, "--json"], env, timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
            worker.rt.started_at -= STALL_S + 1  # as if the worker had run that long without one success
            h = metrics.health()
            assert not h["healthy"] and "ConnectionError" in h["components"][0]["last_error"]
            assert _samples(metrics.exposition().decode())[("visitwire_sink_errors_total", (("sink", "redis"),))] == 1
            r = _cli(["status", "--target", server.url, "--json"], env, timeout=60)
            assert r.returncode == 1, r.stdout + r.stderr
            parts = {c["component"]: c for c in json.loads(r.stdout)["components"]}
            assert parts["history"]["healthy"], parts  # the worker alone is what is wrong
            assert not parts[f"{server.url} worker"]["healthy"]
            assert "ConnectionError" in parts[f"{server.url} worker"]["last_error"]
        finally:
            server.stop()
    finally:
        worker.live.close()


class _HistorySinkCollector:
    """The history sink's families, as a worker's collector exports them (engine/metrics.sink_metrics)."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        from engine.metrics import sink_metrics

        yield from sink_metrics({"history": self.store})


@pytest.mark.integration
def test_clickhouse_errors_batch_sizes_and_last_write_while_the_server_goes_away(tmp_path):
    """A ClickHouse history killed mid-stream: each failed write attempt counts once in
    visitwire_sink_errors_total{sink=history}, the last-write time stays at the last success, and once
    the server is back the batch sizes add up to every row written."""
    from engine.metrics import Metrics
    from engine.services import start_clickhouse
    from sinks.history import open_history
    from sinks.testing.events import make_hits

    port, workdir = free_port(), str(tmp_path / "clickhouse")
    svc = start_clickhouse(port=port, workdir=workdir)
    store = open_history(svc.url, flush_interval_s=0.05, retry_backoff_s=(0.05, 0.05))  # 3 attempts a flush
    metrics = Metrics(_HistorySinkCollector(store))
    key = (("sink", "history"), ("table", "hits"))
    try:
        hits = make_hits(150, seed=21)
        store.add("hits", hits[:100])
        assert store.flush() == 100
        m = _samples(metrics.exposition().decode())
        assert m[("visitwire_sink_errors_total", (("sink", "history"),))] == 0
        first_write = m[("visitwire_sink_last_write_timestamp_seconds", (("sink", "history"),))]
        assert first_write > 0
        svc.kill()
        store.add("hits", hits[100:])
        with pytest.raises(Exception):
            store.flush()
        m = _samples(metrics.exposition().decode())
        assert m[("visitwire_sink_errors_total", (("sink", "history"),))] == 3
        assert m[("visitwire_sink_last_write_timestamp_seconds", (("sink", "history"),))] == first_write
        assert m[("visitwire_sink_batch_rows_sum", key)] == 100
        svc = start_clickhouse(port=port, workdir=workdir)
        assert store.flush() == 50
        m = _samples(metrics.exposition().decode())
        assert m[("visitwire_sink_errors_total", (("sink", "history"),))] == 3
        assert m[("visitwire_sink_batch_rows_sum", key)] == 150 and m[("visitwire_sink_batch_rows_count", key)] == 2
        assert m[("visitwire_sink_write_seconds_count", key)] == 2
    finally:
        store.close()
        svc.stop()


@pytest.mark.integration
def test_status_max_lag_makes_a_lagging_hits_partition_unhealthy(tmp_path, clickhouse_server):
    """`visitwire status --max-lag N`: a hits partition with more than N uncommitted records is unhealthy
    (exit 1, the partition named); at N or below, or without --max-lag, the lag is only shown."""
    from confluent_kafka import Producer

    from engine.services import start_tansu
    from sinks.history import open_history

    history_url = clickhouse_server.url.rsplit("/", 1)[0] + f"/lag_{uuid.uuid4().hex[:8]}"
    store = open_history(history_url)
    store.init_schema()  # a healthy (empty) history: the exit code is the lag's alone
    store.close()
    with start_tansu() as broker:
        p = Producer({"bootstrap.servers": broker.url, "linger.ms": 0})
        for i in range(5):  # one record per batch: tansu reports end offsets of multi-record batches low
            p.produce("visitwire.hits", b"{}", key=b"v", partition=2)
            p.flush(10)
        env = _env(tmp_path, VISITWIRE_HISTORY__URL=history_url, VISITWIRE_REDIS__URL="")
        out = {}
        for max_lag in (0, 4, 5):
            r = _cli(["status", "--kafka", broker.url, "--max-lag", str(max_lag)], env, timeout=60)
            out[max_lag] = (r.returncode, next(ln for ln in r.stdout.splitlines() if ln.startswith("kafka")))
    assert out[0][0] == 0 and " ok " in out[0][1] and "p2=5" in out[0][1], out
    assert out[4][0] == 1 and "UNHEALTHY" in out[4][1] and "lag over 4 on partition(s) [2]" in out[4][1], out
    assert out[5][0] == 0 and " ok " in out[5][1], out


@pytest.mark.integration
def test_status_never_upgrades_the_history_and_says_to_run_db_init(tmp_path, clickhouse_server):
    """`visitwire status` against a store that lacks the newest migration (a newer binary before `db init`):
    unhealthy, naming the migration and `visitwire db init`, and the store is left as it was; after
    `db init`, history is ok."""
    from sinks.history import open_history
    from sinks.migrations import MIGRATION_COLUMNS, MIGRATIONS_TABLE_DDL, migration_files

    history_url = clickhouse_server.url.rsplit("/", 1)[0] + f"/upgrade_{uuid.uuid4().hex[:8]}"
    newest_version, newest_name, _ = migration_files()[-1]
    older = [(v, n) for v, n, _ in migration_files()[:-1]]
    store = open_history(history_url)
    try:
        store.init_schema()
        store._execute("DROP TABLE schema_migrations")  # the record of a store one migration behind
        store._execute(MIGRATIONS_TABLE_DDL)
        store._insert("schema_migrations", MIGRATION_COLUMNS,
                      [[v for v, _ in older], [n for _, n in older], [0] * len(older)])
    finally:
        store.close()

    def recorded() -> set[str]:
        s = open_history(history_url)
        try:
            return {r["version"] for r in s._select("SELECT version FROM schema_migrations")}
        finally:
            s.close()

    env = _env(tmp_path, VISITWIRE_HISTORY__URL=history_url, VISITWIRE_REDIS__URL="", VISITWIRE_KAFKA__BOOTSTRAP="")
    r = _cli(["status"], env, timeout=60)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("history")), r.stdout + r.stderr)
    assert r.returncode == 1 and "UNHEALTHY" in line, line
    assert newest_name in line and "visitwire db init" in line, line
    assert newest_version not in recorded()  # status changed nothing
    assert _cli(["db", "init"], env, timeout=120).returncode == 0
    r = _cli(["status"], env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert newest_version in recorded()
