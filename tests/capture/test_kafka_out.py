"""KafkaOutput against a real tansu broker: delivery, keys, outages and the bounded buffer."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

import orjson
import pytest

from capture.kafka_out import KafkaOutput
from config.events import HIT_FIELD_NAMES
from engine.services import free_port, start_tansu

pytestmark = pytest.mark.integration


def make_hits(n: int, start: int = 0, visitors: int = 37) -> list[dict]:
    hits = []
    for i in range(start, start + n):
        hit = {name: "" for name in HIT_FIELD_NAMES}
        hit.update(event_id=f"{i:016x}", ts=1_700_000_000.0 + i / 1000, client_ip="10.0.0.%d" % (i % 250),
                   client_port=40000 + i % 20000, server_port=80, method="GET", uri=f"/product/{i}",
                   path=f"/product/{i}", status=200, resp_bytes=i * 3, latency_ms=1.5,
                   visitor_id=f"v{i % visitors:04d}", http_version="1.1", no_response=False, extra={})
        hits.append(hit)
    return hits


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[tuple[int, bytes, dict]]:
    """(partition, key, value) of every record in the topic, reading until `expect` arrived or timeout."""
    from aiokafka import AIOKafkaConsumer

    async def run():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        out = []
        try:
            deadline = time.monotonic() + timeout
            while len(out) < expect and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    out.extend((tp.partition, r.key, orjson.loads(r.value)) for r in records)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(run())


@pytest.mark.parametrize("compression", ["auto", "lz4"])
def test_events_arrive_intact_keyed_by_visitor(tansu, compression):
    topic = f"hits-{uuid.uuid4().hex[:8]}"
    hits = make_hits(3000)
    with KafkaOutput(tansu.url, topic=topic, partitions=4, compression=compression) as out:
        out.send_many(hits[:1000])
        # one bad event (not JSON-serializable) is counted and skipped, the rest of its batch goes out
        out.send_many(hits[1000:1500] + [{"visitor_id": "x", "ts": object()}] + hits[1500:])
        assert out.flush(30), f"not delivered: {out.stats}"
        assert out.stats["sent"] == 3000 and out.stats["buffered"] == 0
        assert out.stats["unserializable"] == 1
    records = consume_all(tansu.url, topic, 3000)
    assert len(records) == 3000
    assert sorted((v for _, _, v in records), key=lambda h: h["event_id"]) == hits
    partitions_of_visitor: dict[bytes, set[int]] = {}
    for part, key, value in records:
        assert key == value["visitor_id"].encode()
        partitions_of_visitor.setdefault(key, set()).add(part)
    # one visitor, one partition (ordering for sessionization); visitors spread over partitions
    assert all(len(p) == 1 for p in partitions_of_visitor.values())
    assert len(set().union(*partitions_of_visitor.values())) > 1
    # a visitor's hits keep their order within the partition
    for key in partitions_of_visitor:
        ids = [v["event_id"] for _, k, v in records if k == key]
        assert ids == sorted(ids)


def test_broker_restart_buffered_events_are_delivered(caplog):
    port = free_port()
    broker = start_tansu(port=port)
    topic = "visitwire.hits"
    out = KafkaOutput(broker.url, topic=topic, partitions=2, request_timeout_ms=2000)
    try:
        out.send_many(make_hits(200))
        assert out.flush(30)
        broker.kill()
        with caplog.at_level(logging.WARNING, logger="capture.kafka_out"):
            later = make_hits(500, start=200)
            for i in range(0, 500, 50):  # the capture loop keeps calling in while the broker is away
                out.send_many(later[i:i + 50])
                time.sleep(0.05)
            deadline = time.monotonic() + 20
            while out.stats["connected"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not out.stats["connected"]
            assert out.stats["buffered"] > 0
            assert not out.flush(0.5)
            broker = start_tansu(port=port)  # the broker comes back on the same address, empty
            assert out.flush(60), f"buffered events not delivered after the broker returned: {out.stats}"
        warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert f"Kafka at {broker.url} unreachable" in warnings[0] and "oldest dropped beyond" in warnings[0]
        records = consume_all(broker.url, topic, 500)
        got = {v["event_id"] for _, _, v in records}
        assert {h["event_id"] for h in later} <= got
        assert out.stats["dropped_while_broker_away"] == 0
    finally:
        out.close(5)
        broker.stop()


def test_buffer_is_bounded_while_broker_is_away_then_newest_are_delivered():
    port = free_port()
    out = KafkaOutput(f"127.0.0.1:{port}", topic="visitwire.hits", max_buffered=100, partitions=1,
                      request_timeout_ms=1000)
    broker = None
    try:
        hits = make_hits(250)
        out.send_many(hits)
        assert out.stats["buffered"] == 100
        assert out.stats["dropped_while_broker_away"] == 150
        assert not out.flush(1.0)
        broker = start_tansu(port=port)
        assert out.flush(60), out.stats
        records = consume_all(broker.url, "visitwire.hits", 100)
        assert sorted(v["event_id"] for _, _, v in records) == [h["event_id"] for h in hits[150:]]
    finally:
        out.close(5)
        if broker:
            broker.stop()
