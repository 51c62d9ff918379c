"""Kafka over TLS (kafka.security_protocol = SSL, kafka.ssl_cafile) through every client visitwire has:
the capture agent's aiokafka producer and topic creation, the worker's Faust app, librdkafka hits
reader and outbox, and the lag probe of `visitwire status`. tansu speaks plain TCP, so a TLS
terminator sits in front of it and tansu advertises the terminator's address: every connection a
client makes is TLS, and a client without TLS is refused."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from engine.proctree import stop
from engine.services import _spawn, free_port, tansu_binary
from certificates import self_signed
from pcapgen import generate_pcap
from tls_terminator import TlsTerminator

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_capture_worker_and_status_over_tls(redis_server, clickhouse_server, tmp_path):
    from sinks.history import open_history

    cert, key = self_signed(tmp_path)
    plain, tls_port = free_port(), free_port()
    broker = _spawn("tansu", [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{plain}",
                              "--advertised-listener-url", f"tcp://127.0.0.1:{tls_port}",
                              "--storage-engine", "memory://tansu/"], None, plain, 20, f"127.0.0.1:{plain}")
    terminator = TlsTerminator(tls_port, plain, cert, key)
    pcap = tmp_path / "site.pcap"
    truth = generate_pcap(str(pcap), 1_772_445_600.0, visitors=30, seed=6, port=8080)
    url = clickhouse_server.url.rsplit("/", 1)[0] + f"/tls_{uuid.uuid4().hex[:8]}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")},
           "VISITWIRE_DATA_DIR": str(tmp_path / "data"), "VISITWIRE_CAPTURE__PORTS": "[8080]",
           "VISITWIRE_KAFKA__BOOTSTRAP": f"127.0.0.1:{tls_port}", "VISITWIRE_KAFKA__SECURITY_PROTOCOL": "SSL",
           "VISITWIRE_KAFKA__SSL_CAFILE": str(cert), "VISITWIRE_KAFKA__SESSION_TIMEOUT_S": "6",
           "VISITWIRE_KAFKA__APP_ID": f"vw-tls-{uuid.uuid4().hex[:6]}", "VISITWIRE_REDIS__URL": redis_server.url,
           "VISITWIRE_REDIS__KEY_PREFIX": f"tls{uuid.uuid4().hex[:6]}:", "VISITWIRE_HISTORY__URL": url,
           "VISITWIRE_HISTORY__FLUSH_INTERVAL_S": "0.3", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "worker.log"
    worker = None
    try:
        cap = subprocess.run([sys.executable, "-m", "engine.cli", "capture", "--pcap", str(pcap), "--kafka",
                              f"127.0.0.1:{tls_port}"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
        assert cap.returncode == 0, cap.stderr[-3000:]
        worker = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker"], env=env, cwd=REPO,
                                  stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        store = open_history(url)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    n = int(store.query("SELECT uniqExact(event_id) AS n FROM hits")[0]["n"])
                except Exception:
                    n = 0
                if n == truth.hits:
                    break
                assert worker.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"{n} of {truth.hits} hits in history:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        finally:
            store.close()
        # The worker commits offsets after the history write it waited on, so lag reaches 0 a moment later.
        deadline = time.monotonic() + 30
        while True:
            status = subprocess.run([sys.executable, "-m", "engine.cli", "status"], env=env, cwd=REPO,
                                    capture_output=True, text=True, timeout=60)
            kafka_line = next(ln for ln in status.stdout.splitlines() if ln.startswith("kafka"))
            if "lag p0=0 p1=0 p2=0 p3=0" in kafka_line or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert " ok " in kafka_line and "lag p0=0 p1=0 p2=0 p3=0" in kafka_line, status.stdout
        plain_status = subprocess.run([sys.executable, "-m", "engine.cli", "status"], cwd=REPO, capture_output=True,
                                      text=True, timeout=60,
                                      env={**env, "VISITWIRE_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT"})
        assert "UNHEALTHY" in next(ln for ln in plain_status.stdout.splitlines() if ln.startswith("kafka"))
    finally:
        if worker is not None:
            stop(worker)
        terminator.stop()
        broker.stop()


def test_sasl_without_credentials_is_one_settings_error():
    from config.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="SASL_SSL needs sasl_username and sasl_password_file"):
        load_settings(kafka={"security_protocol": "SASL_SSL", "sasl_username": "vw"})
    with pytest.raises(SettingsError, match="ssl_cafile: /nonexistent/ca.pem is not a file"):
        load_settings(kafka={"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"})


def test_sasl_settings_are_accepted_by_each_client_library(tmp_path):
    """SASL_SSL settings as far as the libraries check them, by building each client with them (SASL against a
    broker that checks the credentials: tests/engine/test_kafka_sasl.py)."""
    import faust
    from aiokafka import AIOKafkaProducer
    from confluent_kafka import Producer

    from config.kafka_security import aiokafka_kwargs, faust_credentials, librdkafka_config
    from config.settings import load_settings

    cert, _ = self_signed(tmp_path)
    secret = tmp_path / "sasl"
    secret.write_text("pw-from-file\n")
    k = load_settings(kafka={"bootstrap": "127.0.0.1:9", "security_protocol": "SASL_SSL", "sasl_username": "vw",
                             "sasl_password_file": str(secret), "sasl_mechanism": "SCRAM-SHA-256",
                             "ssl_cafile": str(cert)}).kafka
    conf = librdkafka_config(k)
    assert conf["sasl.password"] == "pw-from-file" and conf["security.protocol"] == "sasl_ssl"
    Producer({"bootstrap.servers": k.bootstrap, **conf}).flush(0)  # librdkafka rejects unknown keys / values

    async def build() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=k.bootstrap, **aiokafka_kwargs(k))
        assert producer.client._sasl_mechanism == "SCRAM-SHA-256"
    asyncio.run(build())
    creds = faust_credentials(k)
    assert isinstance(creds, faust.SASLCredentials) and creds.ssl_context is not None
