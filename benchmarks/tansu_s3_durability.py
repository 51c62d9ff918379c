"""Can the embedded broker be durable with what installs here? tansu's s3:// storage on a local S3
(moto's server, from PyPI) against the memory:// storage `visitwire run` / `demo` use.

    pip install 'moto[server]'   # anywhere: the script runs its moto_server (--moto PATH, else PATH)
    .venv/bin/python benchmarks/tansu_s3_durability.py [--records 100000]

For each storage: one tansu, a topic of 4 partitions, --records hit-sized records (~330 B, keyed like
visitor ids) produced with acks=all; then the broker is killed with SIGKILL, started again on the same
storage, and a consumer counts what it can still read. Prints the acknowledged and recovered counts and
the CPU the broker (and moto) spent per record.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.services import free_port, tansu_binary  # noqa: E402

PARTITIONS = 4


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_port(port: int, seconds: float = 20) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f} s")


def run(storage: str, records: int, env: dict) -> dict:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                                 "--storage-engine", storage], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _wait_port(port)
        return proc

    broker, bootstrap = start(), f"127.0.0.1:{port}"
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: its futures die with it
        admin.create_topics([NewTopic("hits", PARTITIONS)])["hits"].result(30)
        acked: list[bool] = []
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
        t0 = time.monotonic()
        for i in range(records):
            producer.produce("hits", b'{"n":%08d,"path":"/p","ua":"' % i + b"x" * 300 + b'"}', key=b"v%d" % (i % 997),
                             on_delivery=lambda e, _m: acked.append(e is None))
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(120)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(broker.pid)
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        broker = start()
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "count", "enable.auto.commit": False})
        consumer.assign([TopicPartition("hits", p, 0) for p in range(PARTITIONS)])
        seen: set[bytes] = set()
        idle = time.monotonic()
        while time.monotonic() - idle < 8:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                seen.add(m.value()[:14])
                idle = time.monotonic()
        consumer.close()
    finally:
        broker.terminate()
        broker.wait()
    return {"acked": sum(acked), "recovered": len(seen), "wall": wall, "broker_cpu": cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--moto", default=shutil.which("moto_server") or "", help="moto_server to run")
    a = ap.parse_args()
    if not a.moto:
        print("moto_server not found: pip install 'moto[server]' (in any environment) and pass --moto PATH")
        return 2
    mport = free_port()
    moto = subprocess.Popen([a.moto, "-H", "127.0.0.1", "-p", str(mport)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(mport)
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{mport}/tansu", method="PUT"), timeout=10)
        s3_env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT": f"http://127.0.0.1:{mport}",
                  "AWS_ALLOW_HTTP": "true"}
        results = {"memory://tansu/": run("memory://tansu/", a.records, dict(os.environ))}
        moto_before = cpu_seconds(moto.pid)
        results["s3://tansu/ (moto)"] = run("s3://tansu/", a.records, s3_env)
        results["s3://tansu/ (moto)"]["moto_cpu"] = cpu_seconds(moto.pid) - moto_before
    finally:
        moto.terminate()
        moto.wait()
    print(f"{'storage':<20} {'acked':>9} {'after kill -9':>14} {'produce wall s':>15} {'broker us/rec':>14} "
          f"{'moto us/rec':>12}")
    for name, r in results.items():
        per = 1e6 / max(1, r["acked"])
        moto_us = f"{r['moto_cpu'] * per:.0f}" if "moto_cpu" in r else "-"
        print(f"{name:<20} {r['acked']:>9,} {r['recovered']:>14,} {r['wall']:>15.1f} {r['broker_cpu'] * per:>14.1f} "
              f"{moto_us:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
