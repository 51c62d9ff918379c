"""A purchase re-scores its member at once: the segment change is on visitwire.segments within
seconds of the order, through the real worker (tansu, chdb), not at the next hourly run; and the
topics a subscriber reads exist from the worker's start, before their first message."""
from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest

from config.events import TOPIC_HITS, TOPIC_PAGEVIEWS, TOPIC_SEGMENTS, TOPIC_SESSIONS
from config.settings import load_settings
from sinks.testing.events import shop_hit

pytestmark = pytest.mark.integration


def test_a_purchase_puts_the_buyers_segment_change_on_the_topic_within_5_s(broker, redis_server, tmp_path):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from processors.worker import InProcessWorker

    s = load_settings(kafka={"bootstrap": broker.url, "partitions": 2, "session_timeout_s": 6,
                             "app_id": f"seg-{uuid.uuid4().hex[:6]}"},
                      redis={"url": redis_server.url, "key_prefix": f"t{uuid.uuid4().hex[:6]}:"},
                      history={"url": f"chdb://{tmp_path / 'chdb'}"},
                      processing={"batch_timeout_s": 0.05},
                      analytics={"first_run_after_s": 3600})  # only the purchase can trigger a re-score

    async def scenario():
        worker = InProcessWorker(s)
        await worker.start()
        producer = AIOKafkaProducer(bootstrap_servers=broker.url, linger_ms=0)
        consumer = AIOKafkaConsumer(TOPIC_SEGMENTS, bootstrap_servers=broker.url, auto_offset_reset="earliest",
                                    group_id=None)
        await producer.start()
        await consumer.start()
        try:
            from confluent_kafka.admin import AdminClient

            meta = AdminClient({"bootstrap.servers": broker.url}).list_topics(timeout=10).topics
            topics = {t: set(meta[t].partitions) if t in meta else None
                      for t in (TOPIC_HITS, TOPIC_PAGEVIEWS, TOPIC_SESSIONS, TOPIC_SEGMENTS)}
            t = time.time()
            browse = [shop_hit("e1", t - 30, "dev1", "m-buyer", "/", "GET", "", "desktop", False, {}),
                      shop_hit("e2", t - 20, "dev1", "m-buyer", "/product/p1", "GET", "", "desktop", False, {})]
            for h in browse:
                await producer.send_and_wait(TOPIC_HITS, orjson.dumps(h), key=b"dev1")
            await worker.wait_processed(2, timeout=60)
            await asyncio.sleep(1.5)  # the page views are stored; no segment yet (no scheduled run)
            ordered = time.time()
            order = shop_hit("e3", ordered, "dev1", "m-buyer", "/order/complete", "POST", "", "desktop", False,
                         {"x-order-amount": "620.00"})
            await producer.send_and_wait(TOPIC_HITS, orjson.dumps(order), key=b"dev1")
            changes = []
            while time.time() - ordered < 15 and not changes:
                batch = await consumer.getmany(timeout_ms=200)
                changes += [orjson.loads(m.value) for msgs in batch.values() for m in msgs]
            return changes, time.time() - ordered, topics
        finally:
            await consumer.stop()
            await producer.stop()
            await worker.stop()

    changes, waited, topics = asyncio.run(scenario())
    # created at the worker's start with the configured partitions, before any page view or change
    assert topics == {t: {0, 1} for t in (TOPIC_HITS, TOPIC_PAGEVIEWS, TOPIC_SESSIONS, TOPIC_SEGMENTS)}
    assert [(c["member_id"], c["segment"], c["previous_segment"]) for c in changes] == [("m-buyer", "vip", "")]
    print(f"segment change on the topic {waited:.2f} s after the order")
    assert waited < 5.0, f"segment change after {waited:.1f} s"
