"""Kafka SASL (kafka.security_protocol = SASL_PLAINTEXT, sasl_mechanism, sasl_username, sasl_password_file)
through every client visitwire has, against a broker that checks the credentials: the capture agent's
aiokafka producer and topic creation, the worker's Faust app, librdkafka hits reader and outbox, and the
lag probe of `visitwire status`. tansu 0.6.0 cannot check SASL credentials itself (tests/engine/sasl_gateway.py
says why), so a SASL gateway sits in front of it and tansu advertises the gateway's address: every connection
a client makes must authenticate, and a wrong password or a client without SASL is refused."""
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
from engine.services import free_port
from certificates import self_signed
from pcapgen import generate_pcap
from sasl_gateway import tansu_behind_gateway

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "sasl-secret-5f3a9c"


def _broker_behind_gateway(mechanism: str):
    return tansu_behind_gateway(mechanism, {"visitwire": PASSWORD})


def _status(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "status"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=90)


def _kafka_line(r: subprocess.CompletedProcess) -> str:
    return next(ln for ln in r.stdout.splitlines() if ln.startswith("kafka"))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_each_mechanism_authenticates_with_the_settings_and_a_wrong_password_is_refused(tmp_path, mechanism):
    """aiokafka (the capture agent's and topic creation's client), configured by config/kafka_security.py
    from visitwire's settings, delivers a record through the gateway, and `visitwire status` (librdkafka)
    reaches the broker; the same settings with another password deliver nothing and status says UNHEALTHY."""
    from aiokafka import AIOKafkaProducer

    from config.kafka_security import aiokafka_kwargs
    from config.settings import load_settings

    broker, gateway, bootstrap = _broker_behind_gateway(mechanism)
    try:
        settings, status = {}, {}
        for label, password in (("right", PASSWORD), ("wrong", "not-" + PASSWORD)):
            secret = tmp_path / f"{label}.pw"
            secret.write_text(password + "\n")
            settings[label] = load_settings(kafka={"bootstrap": bootstrap, "security_protocol": "SASL_PLAINTEXT",
                                                   "sasl_mechanism": mechanism, "sasl_username": "visitwire",
                                                   "sasl_password_file": str(secret)}).kafka
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")},
                   "VISITWIRE_DATA_DIR": str(tmp_path / "data"), "VISITWIRE_KAFKA__BOOTSTRAP": bootstrap,
                   "VISITWIRE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "VISITWIRE_KAFKA__SASL_MECHANISM": mechanism,
                   "VISITWIRE_KAFKA__SASL_USERNAME": "visitwire", "VISITWIRE_KAFKA__SASL_PASSWORD_FILE": str(secret),
                   "VISITWIRE_REDIS__URL": "", "VISITWIRE_HISTORY__URL": f"chdb://{tmp_path / 'chdb'}"}
            status[label] = _kafka_line(_status(env))

        async def aio(k) -> str:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=4000, **aiokafka_kwargs(k))
            try:
                await producer.start()
                await producer.send_and_wait("sasl-check", b"aiokafka")
                return "delivered"
            except Exception as e:  # the refusal: aiokafka cannot bootstrap
                return type(e).__name__
            finally:
                await producer.stop()

        async def both() -> dict:
            return {label: await aio(k) for label, k in settings.items()}
        sent = asyncio.run(both())
        assert sent["right"] == "delivered" and sent["wrong"] != "delivered", sent
        assert " ok " in status["right"] and "UNHEALTHY" in status["wrong"], status
        assert gateway.authenticated.get("visitwire", 0) >= 2 and gateway.refused >= 2
    finally:
        gateway.stop()
        broker.stop()


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_capture_worker_and_status_over_sasl_scram(redis_server, clickhouse_server, tmp_path, protocol):
    """The production path with SCRAM-SHA-512 (the default mechanism): capture -> topic -> worker -> history
    and `visitwire status`, every client authenticated; the password never reaches a log line. SASL_SSL: a TLS
    terminator in front of the gateway (TLS terminator -> SASL gateway -> tansu), so every connection is TLS
    and then SASL; a client without TLS is refused like one without SASL."""
    from sinks.history import open_history

    tls = self_signed(tmp_path) if protocol == "SASL_SSL" else None
    broker, gateway, bootstrap = tansu_behind_gateway("SCRAM-SHA-512", {"visitwire": PASSWORD}, tls=tls)
    secret = tmp_path / "kafka_password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    pcap = tmp_path / "site.pcap"
    truth = generate_pcap(str(pcap), 1_772_445_600.0, visitors=30, seed=11, port=8080)
    url = clickhouse_server.url.rsplit("/", 1)[0] + f"/sasl_{uuid.uuid4().hex[:8]}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")},
           "VISITWIRE_DATA_DIR": str(tmp_path / "data"), "VISITWIRE_CAPTURE__PORTS": "[8080]",
           "VISITWIRE_KAFKA__BOOTSTRAP": bootstrap, "VISITWIRE_KAFKA__SECURITY_PROTOCOL": protocol,
           "VISITWIRE_KAFKA__SASL_USERNAME": "visitwire", "VISITWIRE_KAFKA__SASL_PASSWORD_FILE": str(secret),
           "VISITWIRE_KAFKA__SESSION_TIMEOUT_S": "6", "VISITWIRE_KAFKA__APP_ID": f"vw-sasl-{uuid.uuid4().hex[:6]}",
           "VISITWIRE_REDIS__URL": redis_server.url, "VISITWIRE_REDIS__KEY_PREFIX": f"sasl{uuid.uuid4().hex[:6]}:",
           "VISITWIRE_HISTORY__URL": url, "VISITWIRE_HISTORY__FLUSH_INTERVAL_S": "0.3", "PYTHONUNBUFFERED": "1",
           "VISITWIRE_LOG_LEVEL": "DEBUG"}
    if tls is not None:
        env["VISITWIRE_KAFKA__SSL_CAFILE"] = str(tls[0])
    without = "SASL_PLAINTEXT" if tls is not None else "PLAINTEXT"  # the same client without TLS / without SASL
    log = tmp_path / "worker.log"
    worker = None
    try:
        cap = subprocess.run([sys.executable, "-m", "engine.cli", "capture", "--pcap", str(pcap), "--kafka",
                              bootstrap], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
        assert cap.returncode == 0, cap.stderr[-3000:]
        assert gateway.authenticated.get("visitwire", 0) >= 1
        worker = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker"], env=env, cwd=REPO,
                                  stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        store = open_history(url)
        try:
            deadline = time.monotonic() + 120
            while True:  # each table is its own insert: the page views can land a moment after the hits
                try:
                    n = int(store.query("SELECT uniqExact(event_id) AS n FROM hits")[0]["n"])
                    pageviews = int(store.query("SELECT uniqExact(event_id) AS n FROM pageviews")[0]["n"])
                except Exception:
                    n = pageviews = 0
                if (n, pageviews) == (truth.hits, truth.pageviews):
                    break
                assert worker.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"{n} of {truth.hits} hits, {pageviews} of {truth.pageviews} " \
                    f"page views in history:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        finally:
            store.close()
        # The worker commits offsets after the history write it waited on, so lag reaches 0 a moment later.
        deadline = time.monotonic() + 30
        while True:
            status = _status(env)
            kafka_line = _kafka_line(status)
            if "lag p0=0 p1=0 p2=0 p3=0" in kafka_line or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert " ok " in kafka_line and "lag p0=0 p1=0 p2=0 p3=0" in kafka_line, status.stdout
        refused_before = gateway.refused
        wrong = tmp_path / "wrong_password"
        wrong.write_text("not-the-password\n")
        refusals = []
        # the lag probe's error_cb (config/kafka_errors.py) says a refused login as such, and what to check
        for bad_env, says in (({**env, "VISITWIRE_KAFKA__SASL_PASSWORD_FILE": str(wrong)},
                               f"Kafka at {bootstrap} refused the SASL login ("),
                              ({**env, "VISITWIRE_KAFKA__SECURITY_PROTOCOL": without},
                               f"check kafka.bootstrap, and kafka.security_protocol ({without})"
                               if tls is not None else "does not answer")):
            bad = _status(bad_env)
            refusals.append(bad.stdout + bad.stderr)
            assert bad.returncode == 1, bad.stdout + bad.stderr
            assert "UNHEALTHY" in _kafka_line(bad) and says in _kafka_line(bad), bad.stdout
        assert gateway.refused > refused_before
    finally:
        if worker is not None:
            stop(worker)
        gateway.stop()
        broker.stop()
    # capture (aiokafka), worker (Faust, librdkafka hits reader and outbox) and status all logged in
    assert gateway.authenticated["visitwire"] >= 4, gateway.authenticated
    assert PASSWORD not in log.read_text() + cap.stderr + cap.stdout + status.stdout + status.stderr + "".join(refusals)


@pytest.mark.parametrize("case", ["wrong password", "no broker", "SASL_SSL wrong password", "SASL_SSL without TLS"])
def test_a_broker_that_refuses_or_is_away_is_one_clear_line_for_worker_and_capture(tmp_path, case):
    """`visitwire worker`, `visitwire capture --kafka` and `visitwire run --kafka` on a broker that refuses their
    credentials (or is not there, or wants TLS they do not speak): exit 1 (run: 2, before it starts) with one line
    naming what to check, no traceback, the password nowhere."""
    tls = self_signed(tmp_path) if case.startswith("SASL_SSL") else None
    broker, gateway, bootstrap = tansu_behind_gateway("SCRAM-SHA-512", {"visitwire": PASSWORD}, tls=tls)
    wrong = tmp_path / "wrong_password"
    wrong.write_text("not-" + PASSWORD + "\n")
    pcap = tmp_path / "site.pcap"
    generate_pcap(str(pcap), 1_772_445_600.0, visitors=3, seed=2, port=8080)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")},
           "VISITWIRE_DATA_DIR": str(tmp_path / "data"), "VISITWIRE_CAPTURE__PORTS": "[8080]",
           "VISITWIRE_REDIS__URL": "redis://127.0.0.1:9/0", "VISITWIRE_HISTORY__URL": f"chdb://{tmp_path / 'chdb'}"}
    if case == "wrong password":
        env.update({"VISITWIRE_KAFKA__BOOTSTRAP": bootstrap, "VISITWIRE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                    "VISITWIRE_KAFKA__SASL_USERNAME": "visitwire", "VISITWIRE_KAFKA__SASL_PASSWORD_FILE": str(wrong)})
        expected = ("sasl_password_file", "sasl_password_file", "sasl_password_file")
    elif tls is not None:  # the wrong password over TLS, or the right one without TLS
        right = tmp_path / "kafka_password"
        right.write_text(PASSWORD + "\n")
        env.update({"VISITWIRE_KAFKA__BOOTSTRAP": bootstrap, "VISITWIRE_KAFKA__SASL_USERNAME": "visitwire",
                    "VISITWIRE_KAFKA__SSL_CAFILE": str(tls[0])})
        if case == "SASL_SSL wrong password":
            env.update({"VISITWIRE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                        "VISITWIRE_KAFKA__SASL_PASSWORD_FILE": str(wrong)})
            expected = ("kafka.security_protocol (SASL_SSL)",) * 3
        else:
            env.update({"VISITWIRE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                        "VISITWIRE_KAFKA__SASL_PASSWORD_FILE": str(right)})
            expected = ("kafka.security_protocol (SASL_PLAINTEXT)",) * 3
    else:
        env["VISITWIRE_KAFKA__BOOTSTRAP"] = f"127.0.0.1:{free_port()}"
        expected = ("check --kafka", "check that the broker is up", "check --kafka")
    try:
        worker = subprocess.run([sys.executable, "-m", "engine.cli", "worker"], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        capture = subprocess.run([sys.executable, "-m", "engine.cli", "capture", "--pcap", str(pcap), "--kafka",
                                  env["VISITWIRE_KAFKA__BOOTSTRAP"]], env=env, cwd=REPO, capture_output=True,
                                 text=True, timeout=120)
        run = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--pcap", str(pcap), "--kafka",
                              env["VISITWIRE_KAFKA__BOOTSTRAP"]], env={**env, "VISITWIRE_REDIS__URL": ""}, cwd=REPO,
                             capture_output=True, text=True, timeout=180)
    finally:
        gateway.stop()
        broker.stop()
    for r, hint, code in zip((worker, capture, run), expected, (1, 1, 2)):
        out = r.stdout + r.stderr
        assert r.returncode == code, out[-3000:]
        assert "Traceback" not in out and "│" not in out, out[-3000:]
        said = [ln for ln in out.splitlines() if hint in ln and not ln.startswith("20")]  # not log lines
        assert len(said) == 1 and env["VISITWIRE_KAFKA__BOOTSTRAP"] in said[0], out[-3000:]
        assert PASSWORD not in out
    if case.endswith("wrong password"):
        assert gateway.refused >= 2 and not gateway.authenticated
        # the capture agent's warning while it buffers names the credentials too
        assert "unreachable" in capture.stderr and "sasl_password_file; delivery resumes" in capture.stderr
