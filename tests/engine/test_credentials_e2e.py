"""The production stack's credentials end to end (issue 19): Kafka with SASL SCRAM-SHA-512, Redis over TLS
with a password, ClickHouse over TLS (its secure port) with a password, every password read from a file.
A capture agent and a worker fill the history and the live counters with a known pcap; `visitwire status`
reaches all three; no password appears in any output or log; a plain-text client is refused by each."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from engine.proctree import stop
from engine.services import _CLICKHOUSE_CONFIG, _CLICKHOUSE_USERS, _spawn, free_port
from certificates import self_signed
from pcapgen import generate_pcap
from sasl_gateway import tansu_behind_gateway

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
KAFKA_PASSWORD = "kafka-secret-2c7e51"
REDIS_PASSWORD = "redis-secret-81d2e7"
CLICKHOUSE_PASSWORD = "clickhouse-secret-4b9f06"


def _status(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "status"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=90)


def _api(web: subprocess.Popen, port: int, path: str) -> dict:
    """GET path of the screen with its token, once it listens."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": "Bearer screen-token"})
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError):
            assert web.poll() is None and time.monotonic() < deadline, "the screen did not answer"
            time.sleep(0.3)


def _tls_redis(tmp_path: Path, cert: Path, key: Path):
    port = free_port()
    argv = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file",
            str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
            "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no", "--daemonize", "no"]
    return _spawn("redis", argv, str(tmp_path / "redis"), port, 10, f"rediss://127.0.0.1:{port}/0")


def _tls_clickhouse(tmp_path: Path, cert: Path, key: Path):
    """ClickHouse 18.16 with its secure native port and a password for `default` (the plain port stays for
    the readiness check and to show it is another port)."""
    workdir = tmp_path / "clickhouse"
    for sub in ("data", "tmp", "user_files", "format_schemas"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    plain, secure = free_port(), free_port()
    tls = (f"  <tcp_port_secure>{secure}</tcp_port_secure>\n  <openSSL><server><certificateFile>{cert}"
           f"</certificateFile><privateKeyFile>{key}</privateKeyFile><verificationMode>none</verificationMode>"
           "<disableProtocols>sslv2,sslv3</disableProtocols></server></openSSL>\n</yandex>")
    (workdir / "config.xml").write_text(_CLICKHOUSE_CONFIG.format(tcp=plain, http=free_port(), d=workdir)
                                        .replace("</yandex>", tls))
    (workdir / "users.xml").write_text(_CLICKHOUSE_USERS.replace("<password></password>",
                                                                 f"<password>{CLICKHOUSE_PASSWORD}</password>"))
    svc = _spawn("clickhouse", ["clickhouse-server", "--config-file", str(workdir / "config.xml")], str(workdir),
                 plain, 60, f"clickhouse://default@127.0.0.1:{secure}/visitwire")
    return svc, secure


def test_capture_worker_and_status_with_every_credential_from_files(tmp_path):
    import redis as redis_lib

    from config.settings import load_settings
    from sinks.history import open_history

    cert, key = self_signed(tmp_path)
    secrets = {}
    for name, value in (("kafka", KAFKA_PASSWORD), ("redis", REDIS_PASSWORD), ("clickhouse", CLICKHOUSE_PASSWORD)):
        secrets[name] = tmp_path / f"{name}_password"
        secrets[name].write_text(value + "\n")
        secrets[name].chmod(0o600)
    broker, gateway, bootstrap = tansu_behind_gateway("SCRAM-SHA-512", {"visitwire": KAFKA_PASSWORD})
    redis_svc = _tls_redis(tmp_path, cert, key)
    clickhouse, secure_port = _tls_clickhouse(tmp_path, cert, key)
    prefix = f"cred{uuid.uuid4().hex[:6]}:"
    redis_url = f"rediss://127.0.0.1:{redis_svc.port}/0?ssl_ca_certs={cert}&ssl_cert_reqs=required"
    history_url = f"clickhouse://default@127.0.0.1:{secure_port}/cred_{uuid.uuid4().hex[:6]}?secure=true&ca_certs={cert}"
    pcap = tmp_path / "site.pcap"
    truth = generate_pcap(str(pcap), 1_772_445_600.0, visitors=25, seed=13, port=8080)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")},
           "VISITWIRE_DATA_DIR": str(tmp_path / "data"), "VISITWIRE_CAPTURE__PORTS": "[8080]",
           "VISITWIRE_KAFKA__BOOTSTRAP": bootstrap, "VISITWIRE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "VISITWIRE_KAFKA__SASL_USERNAME": "visitwire", "VISITWIRE_KAFKA__SASL_PASSWORD_FILE": str(secrets["kafka"]),
           "VISITWIRE_KAFKA__SESSION_TIMEOUT_S": "6", "VISITWIRE_KAFKA__APP_ID": f"vw-cred-{uuid.uuid4().hex[:6]}",
           "VISITWIRE_REDIS__URL": redis_url, "VISITWIRE_REDIS__PASSWORD_FILE": str(secrets["redis"]),
           "VISITWIRE_REDIS__KEY_PREFIX": prefix, "VISITWIRE_HISTORY__URL": history_url,
           "VISITWIRE_HISTORY__PASSWORD_FILE": str(secrets["clickhouse"]), "VISITWIRE_HISTORY__FLUSH_INTERVAL_S": "0.3",
           "VISITWIRE_LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1"}
    settings = load_settings(redis={"url": redis_url, "password_file": str(secrets["redis"])},
                             history={"url": history_url, "password_file": str(secrets["clickhouse"])})
    log = tmp_path / "worker.log"
    worker = None
    outputs = []
    try:
        cap = subprocess.run([sys.executable, "-m", "engine.cli", "capture", "--pcap", str(pcap), "--kafka", bootstrap],
                             env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=180)
        outputs += [cap.stdout, cap.stderr]
        assert cap.returncode == 0, cap.stderr[-3000:]
        worker = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker"], env=env, cwd=REPO,
                                  stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        store = open_history(settings.history.url)
        live = redis_lib.Redis.from_url(settings.redis.url)
        try:
            deadline = time.monotonic() + 150
            while True:  # each table is its own insert: the page views can land a moment after the hits
                try:
                    n = int(store.query("SELECT uniqExact(event_id) AS n FROM hits")[0]["n"])
                    pvs = int(store.query("SELECT uniqExact(event_id) AS n FROM pageviews")[0]["n"])
                except Exception:
                    n = pvs = 0
                live_hits = sum(int(live.hget(k, "hits") or 0) for k in live.scan_iter(f"{prefix}m:*"))
                if (n, pvs, live_hits) == (truth.hits, truth.pageviews, truth.hits):
                    break
                assert worker.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"history {n} hits, {pvs} page views of {truth.hits}, " \
                    f"{truth.pageviews}; live {live_hits}:\n" + log.read_text()[-3000:]
                time.sleep(0.5)
        finally:
            store.close()
            live.close()
        # the screen (`visitwire web`) on the same Redis and ClickHouse: live state and history over TLS
        web_port = free_port()
        web_env = {**env, "VISITWIRE_WEB__PORT": str(web_port), "VISITWIRE_WEB__TOKEN": "screen-token"}
        web = subprocess.Popen([sys.executable, "-m", "engine.cli", "web"], env=web_env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            live = _api(web, web_port, "/api/live")
            totals = _api(web, web_port, f"/api/stats?from={int(truth.start_ts) - 60}&to={int(truth.end_ts) + 60}"
                                         "&metrics=hits,pageviews")
        finally:
            stop(web)
            outputs.append(web.stdout.read())
        assert "visitors_now" in live
        assert (totals["totals"]["hits"], totals["totals"]["pageviews"]) == (truth.hits, truth.pageviews), totals
        status = _status(env)
        outputs += [status.stdout, status.stderr]
        lines = {ln.split()[0]: ln for ln in status.stdout.splitlines()}
        assert {"kafka", "redis", "history"} <= set(lines) and all(" ok " in lines[k] for k in
                                                                   ("kafka", "redis", "history")), status.stdout
        # each server refuses the same client without TLS / SASL
        plain = _status({**env, "VISITWIRE_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT",
                         "VISITWIRE_REDIS__URL": f"redis://127.0.0.1:{redis_svc.port}/0",
                         "VISITWIRE_HISTORY__URL": history_url.split("?")[0]})
        outputs += [plain.stdout, plain.stderr]
        assert plain.returncode == 1
        assert all("UNHEALTHY" in ln for ln in plain.stdout.splitlines()), plain.stdout
        assert {ln.split()[0] for ln in plain.stdout.splitlines()} >= {"kafka", "redis", "history"}, plain.stdout
    finally:
        if worker is not None:
            stop(worker)
        gateway.stop()
        broker.stop()
        redis_svc.stop()
        clickhouse.stop()
    text = "".join(outputs) + log.read_text()
    for secret in (KAFKA_PASSWORD, REDIS_PASSWORD, CLICKHOUSE_PASSWORD):
        assert secret not in text
