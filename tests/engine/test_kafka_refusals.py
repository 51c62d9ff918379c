"""A broker that refuses the SASL login of visitwire's librdkafka clients (hits reader, outbox, lag probe, the
watchdog's broker watch), over SASL_SSL (TLS terminator -> SASL gateway -> tansu): each client gets librdkafka's
error report through its error_cb (config/kafka_errors.py), counts it, and says the refusal instead of looking
like a broker away; a worker whose hits reader is refused mid-run stops with one line and exit 1. The same
clients with the right password work through the same gateway (what shows the refusal is the password's)."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from certificates import self_signed
from engine.proctree import descendants, stop
from pcapgen import generate_pcap
from sasl_gateway import tansu_behind_gateway

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "sasl-secret-7d41e0"
WRONG = "not-" + PASSWORD


def _kafka(bootstrap: str, cert: Path, password_file: Path):
    from config.settings import load_settings

    return load_settings(kafka={"bootstrap": bootstrap, "security_protocol": "SASL_SSL", "sasl_username": "visitwire",
                                "sasl_password_file": str(password_file), "ssl_cafile": str(cert)}).kafka


def test_each_librdkafka_client_says_a_refused_login(tmp_path, caplog):
    from config.kafka_security import aiokafka_kwargs, librdkafka_config
    from engine.kafka_lag import BrokerRefused, group_lag
    from engine.watchdog import BrokerWatch
    from processors.agents import ensure_topic
    from processors.hits_reader import HitsReaderProcess, ReadRefused
    from processors.outbox import DeliveryRefused, Outbox

    cert, key = self_signed(tmp_path)
    broker, gateway, bootstrap = tansu_behind_gateway("SCRAM-SHA-512", {"visitwire": PASSWORD}, tls=(cert, key))
    k = {}
    for label, password in (("right", PASSWORD), ("wrong", WRONG)):
        (tmp_path / label).write_text(password + "\n")
        k[label] = _kafka(bootstrap, cert, tmp_path / label)
    topic = "refusal-check"
    caplog.set_level(logging.WARNING)

    async def outbox(kafka) -> str:
        box = Outbox(kafka)
        await box.send(topic, [(0, b"k", b"v")])
        try:
            await box.confirm(4.0)
            return "delivered"
        except DeliveryRefused as e:
            return f"refused: {e}; counted {box.errors.counts['_AUTHENTICATION']}"
        finally:
            box.close(1.0)

    async def reader(kafka) -> str:
        hits = HitsReaderProcess({"config": {"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                                             "auto.offset.reset": "earliest", **librdkafka_config(kafka)},
                                  "topic": topic, "subscribe": False, "batch_size": 10, "timeout_s": 2.0,
                                  "transpose": False})
        await asyncio.get_running_loop().run_in_executor(None, hits.start)
        try:
            await hits.assign([0])
            for _ in range(5):  # the record sent by the outbox above, or the refusal
                batch = await hits.read()
                if batch.values:
                    return f"read {list(batch.values)}"
            return "read nothing"
        except ReadRefused as e:
            return f"refused: {e}"
        finally:
            await asyncio.get_running_loop().run_in_executor(None, hits.close)

    try:
        asyncio.run(ensure_topic(bootstrap, topic, partitions=1, security=aiokafka_kwargs(k["right"])))
        said = {label: asyncio.run(outbox(kafka)) for label, kafka in k.items()}
        read = {label: asyncio.run(reader(kafka)) for label, kafka in k.items()}
        lag = {}
        for label, kafka in k.items():
            try:
                lag[label] = group_lag(bootstrap, "refusal-group", topic, extra_config=librdkafka_config(kafka))
            except BrokerRefused as e:
                lag[label] = f"refused: {e}"
        watches = {label: BrokerWatch(bootstrap, topic, librdkafka_config(kafka)) for label, kafka in k.items()}
        watches["no TLS, no SASL"] = BrokerWatch(bootstrap, topic)  # as the watchdog made it before
        for w in watches.values():
            assert w.check() == ""
    finally:
        for w in locals().get("watches", {}).values():
            w.close()
        gateway.stop()
        broker.stop()

    assert said["right"] == "delivered" and read["right"] == "read [b'v']", (said, read)
    assert lag["right"] == {0: {"topic": topic, "committed": None, "end": 1, "lag": 1}}, lag
    assert watches["right"]._high == {0: 1} and watches["right"].errors.total == 0
    for text in (said["wrong"], read["wrong"], lag["wrong"]):
        assert text.startswith("refused: ") and f"Kafka at {bootstrap} refused the SASL login (" in text, text
    assert int(said["wrong"].rsplit("counted ", 1)[1]) >= 1
    assert watches["wrong"]._high == {} and watches["wrong"].errors.counts["_AUTHENTICATION"] >= 1
    assert watches["no TLS, no SASL"]._high == {}  # what the watchdog saw of a SASL_SSL broker before
    # one line per client and kind (librdkafka reports every retry), the password in none
    logged = [r.getMessage() for r in caplog.records if r.name == "config.kafka_errors"]
    assert sum("in the outbox: _AUTHENTICATION" in m for m in logged) == 1, logged
    assert sum("in the watchdog's broker watch: _AUTHENTICATION" in m for m in logged) == 1, logged
    assert not any(PASSWORD in m for m in logged + [r.getMessage() for r in caplog.records])


def test_a_worker_whose_hits_reader_is_refused_stops_with_one_line(redis_server, tmp_path):
    """The password changes on the broker while a worker runs (rotated; the worker keeps the old one): the
    connections it has stay up, the hits reader that starts again after a crash is refused. The worker says so in
    one line and exits 1, instead of reading nothing for good with a healthy look."""
    cert, key = self_signed(tmp_path)
    broker, gateway, bootstrap = tansu_behind_gateway("SCRAM-SHA-512", {"visitwire": PASSWORD}, tls=(cert, key))
    secret = tmp_path / "kafka_password"
    secret.write_text(PASSWORD + "\n")
    pcap = tmp_path / "site.pcap"
    generate_pcap(str(pcap), 1_772_445_600.0, visitors=5, seed=3, port=8080)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")},
           "VISITWIRE_DATA_DIR": str(tmp_path / "data"), "VISITWIRE_CAPTURE__PORTS": "[8080]",
           "VISITWIRE_KAFKA__BOOTSTRAP": bootstrap, "VISITWIRE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
           "VISITWIRE_KAFKA__SSL_CAFILE": str(cert), "VISITWIRE_KAFKA__SASL_USERNAME": "visitwire",
           "VISITWIRE_KAFKA__SASL_PASSWORD_FILE": str(secret), "VISITWIRE_KAFKA__SESSION_TIMEOUT_S": "6",
           "VISITWIRE_KAFKA__APP_ID": f"vw-refused-{uuid.uuid4().hex[:6]}", "VISITWIRE_REDIS__URL": redis_server.url,
           "VISITWIRE_REDIS__KEY_PREFIX": f"ref{uuid.uuid4().hex[:6]}:",
           "VISITWIRE_HISTORY__URL": f"chdb://{tmp_path / 'chdb'}", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "worker.log"
    worker = None
    try:
        cap = subprocess.run([sys.executable, "-m", "engine.cli", "capture", "--pcap", str(pcap), "--kafka",
                              bootstrap], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
        assert cap.returncode == 0, cap.stderr[-3000:]
        worker = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker"], env=env, cwd=REPO,
                                  stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while "processed " not in log.read_text():  # its hits reader has read the pcap's hits
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        reader = [pid for pid in descendants(worker.pid)
                  if b"processors.hits_reader" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(reader) == 1, descendants(worker.pid)
        gateway.users["visitwire"] = "rotated-" + PASSWORD  # the broker's password changes
        os.kill(reader[0], signal.SIGKILL)
        worker.wait(90)
    finally:
        if worker is not None and worker.poll() is None:
            stop(worker)
        gateway.stop()
        broker.stop()
    out = log.read_text()
    assert worker.returncode == 1, out[-3000:]
    assert "Traceback" not in out and "│" not in out, out[-3000:]
    said = [ln for ln in out.splitlines() if ln.startswith("worker stopped:")]
    assert len(said) == 1, out[-3000:]
    assert f"Kafka at {bootstrap} refused the SASL login" in said[0] and "sasl_password_file" in said[0], said
    assert PASSWORD not in out


def test_a_run_whose_hits_reader_is_refused_ends_with_one_line(tmp_path):
    """`visitwire run --kafka` on a broker that takes aiokafka's login (the start-up check, capture, Faust) and
    refuses the librdkafka clients' (hits reader, outbox), as a broker's per-client rules can: the run ends
    at once with one line naming the refusal and what to check, exit 1; before, its drain waited 60 s for a
    worker that read nothing and logged a traceback."""
    cert, key = self_signed(tmp_path)
    broker, gateway, bootstrap = tansu_behind_gateway("SCRAM-SHA-512", {"visitwire": PASSWORD}, tls=(cert, key))
    gateway.refuse_clients = ("rdkafka",)  # librdkafka's default client.id
    secret = tmp_path / "kafka_password"
    secret.write_text(PASSWORD + "\n")
    pcap = tmp_path / "site.pcap"
    truth = generate_pcap(str(pcap), 1_772_445_600.0, visitors=5, seed=4, port=8080)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")},
           "VISITWIRE_DATA_DIR": str(tmp_path / "data"), "VISITWIRE_CAPTURE__PORTS": "[8080]",
           "VISITWIRE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "VISITWIRE_KAFKA__SSL_CAFILE": str(cert),
           "VISITWIRE_KAFKA__SASL_USERNAME": "visitwire", "VISITWIRE_KAFKA__SASL_PASSWORD_FILE": str(secret),
           "VISITWIRE_KAFKA__APP_ID": f"vw-run-{uuid.uuid4().hex[:6]}", "PYTHONUNBUFFERED": "1"}
    try:
        t0 = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--pcap", str(pcap), "--kafka", bootstrap],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
        took = time.monotonic() - t0
    finally:
        gateway.stop()
        broker.stop()
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    said = [ln for ln in out.splitlines() if "refused the SASL login" in ln and not ln.startswith("20")]
    assert len(said) == 1, out[-3000:]
    assert f"of {truth.hits:,} hits and stopped: Kafka at {bootstrap} refused the SASL login" in said[0], said
    assert "check --kafka, and kafka.security_protocol (SASL_SSL)" in said[0] and "stay in Kafka" in said[0], said
    assert took < 55, f"{took:.0f} s: the drain waited for its stall timeout"
    assert gateway.authenticated.get("visitwire", 0) >= 2  # aiokafka's and Faust's logins were taken
    assert PASSWORD not in out
