"""Live analytics on real servers: Redis profiles, and the Faust agents on tansu announcing segments."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict

import orjson
import pytest
import redis

from config.events import TOPIC_PAGEVIEWS, TOPIC_SEGMENTS
from config.settings import load_settings
from processors.analytics.live import LiveProfiles
from sinks.testing.events import generate

pytestmark = pytest.mark.integration

DS = generate(seed=9, visitors=40, members=12)
ORDERED = sorted(DS.pageviews, key=lambda p: (p["ts"], p["event_id"]))
HUMAN = [p for p in ORDERED if not p["is_bot"]]


def truth(visitor_id):
    pvs = [p for p in HUMAN if p["visitor_id"] == visitor_id]
    by = defaultdict(list)
    for p in pvs:
        by[p["session_id"]].append(p["ts"])
    return {"first_seen": pvs[0]["ts"], "last_seen": pvs[-1]["ts"], "pageviews": len(pvs), "visits": len(by),
            "total_time_s": round(sum(max(t) - min(t) for t in by.values()), 3)}


@pytest.fixture
def client(redis_server):
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def test_live_profiles_follow_the_page_views(client):
    live = LiveProfiles(client, key_prefix=f"t{uuid.uuid4().hex[:6]}:")
    for i in range(0, len(ORDERED), 100):  # as the agent gets them: batches in time order
        live.apply(ORDERED[i:i + 100])
    vid = max({p["visitor_id"] for p in HUMAN}, key=lambda v: truth(v)["pageviews"])
    got = live.visitor(vid, now=DS.now)
    for k, v in truth(vid).items():
        assert got[k] == pytest.approx(v, abs=1e-3), k
    live.apply(ORDERED[-300:])  # redelivery of a batch: nothing counted twice
    assert live.visitor(vid, now=DS.now)["pageviews"] == truth(vid)["pageviews"]
    assert live.skipped >= 300 - sum(1 for p in ORDERED[-300:] if p["is_bot"])
    # login links every visitor id of the member, and the profile holds its pre-login page views too
    visitors = {p["visitor_id"] for p in DS.pageviews if p["member_id"] == "m000"}
    assert set(live.member_visitors("m000")) == visitors
    bot = next(p["visitor_id"] for p in ORDERED if p["is_bot"])
    assert live.visitor(bot, now=DS.now) is None  # bots get no profile


def test_live_profiles_are_bounded_and_expire(client):
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    live = LiveProfiles(client, key_prefix=prefix, max_profiles=5, ttl_s=60)
    live.apply(HUMAN)
    newest = sorted({p["visitor_id"]: p["ts"] for p in HUMAN}.items(), key=lambda kv: kv[1])[-5:]
    assert set(live.recent_visitors(10)) == {v for v, _ in newest}
    assert live.evicted == len({p["visitor_id"] for p in HUMAN}) - 5
    assert len(client.keys(f"{prefix}an:p:*:sections")) <= 5
    assert 0 < client.ttl(live.profile_key(newest[-1][0])) <= 60


def test_agents_keep_profiles_and_announce_segment_changes(tansu, redis_server, chdb_history, tmp_path):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from processors.analytics.agents import register
    from processors.app import create_app

    settings = load_settings(kafka={"bootstrap": tansu.url, "partitions": 1, "session_timeout_s": 6,
                                    "app_id": f"an-{uuid.uuid4().hex[:6]}"},
                             redis={"url": redis_server.url, "key_prefix": f"t{uuid.uuid4().hex[:6]}:"},
                             analytics={"first_run_after_s": 1.0})  # hourly after that
    store = chdb_history
    store.write("pageviews", DS.pageviews)
    members = {p["member_id"] for p in DS.pageviews if p["member_id"]}

    async def main():
        vw = create_app(settings, datadir=str(tmp_path / "faust"))
        agents = register(vw, settings, history=store, redis_url=redis_server.url)
        await vw.app.start()
        try:
            producer = AIOKafkaProducer(bootstrap_servers=tansu.url)
            await producer.start()
            for p in HUMAN:
                await producer.send(TOPIC_PAGEVIEWS, orjson.dumps(p), key=p["visitor_id"].encode())
            await producer.send(TOPIC_PAGEVIEWS, b"{not json", key=b"x")
            await producer.send(TOPIC_PAGEVIEWS, orjson.dumps({**HUMAN[0], "ts": "soon"}), key=b"x")
            await producer.stop()
            deadline = time.monotonic() + 60
            while (agents.pageviews_seen < len(HUMAN) or not agents.rfm_runs or not agents.recommendation_pairs) \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            consumer = AIOKafkaConsumer(TOPIC_SEGMENTS, bootstrap_servers=tansu.url, auto_offset_reset="earliest",
                                        group_id=None)
            await consumer.start()
            got = {}
            try:
                while len(got) < len(members) and time.monotonic() < deadline:
                    batch = await consumer.getmany(timeout_ms=500)
                    for msgs in batch.values():
                        for m in msgs:
                            rec = orjson.loads(m.value)
                            got[rec["member_id"]] = rec
            finally:
                await consumer.stop()
            return agents, got
        finally:
            await vw.app.stop()

    agents, announced = asyncio.run(main())
    assert agents.pageviews_seen == len(HUMAN) and agents.bad_records == 2  # counted, logged, not a crash
    vid = HUMAN[-1]["visitor_id"]
    live = agents.live.visitor(vid, now=DS.now)
    assert live["pageviews"] == truth(vid)["pageviews"]
    # every member announced once with its first segment, the same as stored in the history
    assert set(announced) == members
    stored = {r["member_id"]: r["segment"] for r in
              store.query("SELECT member_id, argMax(segment, ts_epoch) AS segment FROM segments "
                          "GROUP BY member_id")}
    assert {m: r["segment"] for m, r in announced.items()} == stored
    assert all(r["previous_segment"] == "" and 1 <= r["r"] <= 5 for r in announced.values())
    assert agents.recommendation_pairs > 0
