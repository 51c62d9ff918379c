"""Why the embedded broker's memory grows in a long run: tansu 0.6's memory storage cannot be trimmed.

    .venv/bin/python benchmarks/tansu_retention_repro.py [--mb 40]

`visitwire run` / `demo` start tansu with `--storage-engine memory://tansu/` (engine/services.py), which keeps
every record of every topic until the broker stops (benchmarks/soak.py: ~4 MB a minute at 25 hits/s). The
bound would be to delete what every consumer group has committed. This script tries each way against a
tansu started as the runtime starts it, and prints what happened:

1. Kafka DeleteRecords (API key 21), which tansu advertises in ApiVersions;
2. the topic configs `retention.ms` / `retention.bytes` / `cleanup.policy=delete`, then --mb MB produced;
3. DeleteTopics (the only call that frees memory; unusable while capture and the worker use the topic).

Exit code 0 when DeleteRecords works (then the runtime can trim on a schedule), 1 while it does not.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.protocol.admin import ApiVersionRequest
from aiokafka.structs import TopicPartition
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as CTopicPartition

from engine.services import Service, start_tansu
from proc_memory import rss_mb

DELETE_RECORDS = 21  # the Kafka API key


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "repro", "log_level": 0})
    try:
        return c.get_watermark_offsets(CTopicPartition(topic, 0), timeout=5, cached=False)
    finally:
        c.close()


async def produce(bootstrap: str, topic: str, mb: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for _ in range(mb * 1000):
            await producer.send(topic, b"x" * 1000)
        await producer.flush()
    finally:
        await producer.stop()


async def repro(svc: Service, mb: int) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=svc.url)
    await admin.start()
    try:
        versions = await admin._client.send(admin._client.get_random_node(), ApiVersionRequest())
        advertised = {key: (lo, hi) for key, lo, hi in versions.api_versions}.get(DELETE_RECORDS)
        print(f"1. ApiVersions advertises DeleteRecords: {advertised}")
        await admin.create_topics([NewTopic("plain", 1, 1)])
        await produce(svc.url, "plain", 1)
        try:
            result = await asyncio.wait_for(
                admin.delete_records({TopicPartition("plain", 0): RecordsToDelete(before_offset=500)}), 15)
            print(f"   DeleteRecords below offset 500 answered {result}; watermarks now "
                  f"{watermarks(svc.url, 'plain')}")
            works = watermarks(svc.url, "plain")[0] == 500
        except Exception as e:  # what the client sees: the broker closes the connection
            print(f"   DeleteRecords below offset 500: {type(e).__name__}: {e}")
            works = False
        panic = [line for line in Path(svc.log_path).read_text(errors="replace").splitlines()
                 if "panicked" in line or "not yet implemented" in line]
        print(f"   tansu log: {' / '.join(panic) or '(nothing)'}; broker still running: {svc.alive()}")

        configs = {"retention.ms": "1000", "retention.bytes": "1000", "cleanup.policy": "delete", "segment.ms": "500"}
        await admin.create_topics([NewTopic("retained", 1, 1, topic_configs=configs)])
        before = rss_mb(svc.proc.pid)
        await produce(svc.url, "retained", mb)
        await asyncio.sleep(5)  # more than retention.ms: a broker that applies it has trimmed by now
        low, high = watermarks(svc.url, "retained")
        print(f"2. topic with {configs}: {mb} MB produced, 5 s later low watermark {low} of {high}; "
              f"tansu RSS {before:.0f} -> {rss_mb(svc.proc.pid):.0f} MB")

        await admin.delete_topics(["retained", "plain"])
        await asyncio.sleep(2)
        print(f"3. DeleteTopics: tansu RSS {rss_mb(svc.proc.pid):.0f} MB")
        return works
    finally:
        await admin.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=40, help="MB of 1 KB records to produce into the retained topic")
    args = ap.parse_args()
    svc = start_tansu(workdir=tempfile.mkdtemp(prefix="tansu-repro-"))
    t0 = time.monotonic()
    try:
        works = asyncio.run(repro(svc, args.mb))
    finally:
        svc.stop()
    print(f"\nDeleteRecords {'works' if works else 'does not work'} on this tansu "
          f"({time.monotonic() - t0:.0f} s; log {svc.log_path})")
    return 0 if works else 1


if __name__ == "__main__":
    sys.exit(main())
