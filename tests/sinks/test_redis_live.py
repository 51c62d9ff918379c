"""Redis live state against a real redis-server: what the dashboard reads back."""
from __future__ import annotations

import time

import orjson
import pytest
import redis

from config.live_layout import LiveDelta, quantiles_from_hist
from config.settings import load_settings
from processors.agents import HitProcessor
from sinks.redis_live import LIVE_TTL_S, LiveStateReader, RedisLiveSink


@pytest.fixture
def live(redis_server, request):
    prefix = f"t{abs(hash(request.node.name)) % 10**8}:"
    s = load_settings(redis={"url": redis_server.url, "key_prefix": prefix},
                      processing={"feed_length": 5, "visitors_now_window_s": 300})
    sink, reader = RedisLiveSink(redis_server.url, s), LiveStateReader(redis_server.url, s)
    yield s, sink, reader
    client = redis.Redis.from_url(redis_server.url)
    for k in client.scan_iter(f"{prefix}*"):
        client.delete(k)
    sink.close(), reader.close()


def _hit(eid, ts, visitor, path="/", **kw):
    base = {"event_id": eid, "ts": ts, "visitor_id": visitor, "member_id": kw.pop("member", ""), "method": "GET",
            "host": "shop.example", "path": path, "query": "", "referrer": kw.pop("referrer", ""),
            "user_agent": kw.pop("ua", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"),
            "status": 200, "content_type": "text/html", "latency_ms": 20.0, "resp_bytes": 10, "extra": {}}
    base.update(kw)
    return orjson.dumps(base)


def test_snapshot_shows_what_was_written(live):
    s, sink, reader = live
    now = time.time()
    p = HitProcessor(s)
    batch = [_hit("a", now - 5, "v1", "/product/p1", member="m1", referrer="https://www.google.com/"),
             _hit("b", now - 4, "v2", "/product/p1"), _hit("c", now - 3, "v2", "/cart"),
             _hit("d", now - 2, "v3", "/gone", status=404, latency_ms=400.0),
             _hit("e", now - 1, "bot", "/", ua="Googlebot/2.1 (+http://www.google.com/bot.html)"),
             # v4 browses anonymously, then logs in: one visitor, a member (not also an anonymous one)
             _hit("g", now - 9, "v4", "/"), _hit("h", now - 8, "v4", "/cart", member="m4"),
             _hit("f", now - 120, "v9", "/old")]
    out = p.process(batch)
    assert sink.apply(out.delta) > 0
    snap = reader.snapshot(minutes=60)
    cur = int(snap["now"] // 60)
    assert snap["minute"] == cur * 60 and len(snap["series"]["minutes"]) == 60
    assert snap["series"]["minutes"][-1] == cur * 60
    assert (snap["visitors_now"], snap["members_now"], snap["anonymous_now"], snap["bots_now"]) == (5, 2, 3, 1)
    assert snap["totals"]["pageviews"] == 6 and snap["totals"]["hits"] == 8
    assert snap["totals"]["errors_4xx"] == 1 and snap["totals"]["bot_hits"] == 1
    assert snap["totals"]["sessions"] == 4
    cur_top = dict(map(tuple, snap["top"]["current"]["pages"]))
    prev_top = dict(map(tuple, snap["top"]["previous"]["pages"]))
    assert cur_top.get("/product/p1", 0) + prev_top.get("/product/p1", 0) == 2
    assert {r[0] for r in snap["top"]["current"]["status"] + snap["top"]["previous"]["status"]} >= {"200", "404"}
    # most recently processed first (arrival order: "/old" came last)
    assert [f["path"] for f in snap["feed"]] == ["/old", "/cart", "/", "/cart", "/product/p1"]  # feed_length 5
    assert snap["feed"][1]["visitor"] == "v4" and snap["feed"][3]["visitor"] == "v2" and snap["feed"][0]["session_id"]
    assert all(v is None or v > 0 for v in snap["series"]["p99_ms"])


def test_counters_accumulate_and_every_key_expires(live, redis_server):
    s, sink, reader = live
    m = 28_000_000
    d = LiveDelta(counters={m: {"hits": 3, "pageviews": 2, "revenue": 10.5}},
                  tops={("pages", m): {"/": 2}}, latency={m: {10: 2}},
                  visitors={"all": {"v1": m * 60.0 + 1}}, feed=[b'{"path":"/"}'] * 8, max_ts=m * 60.0 + 1, events=3)
    sink.apply(d)
    sink.apply(d)
    snap = reader.snapshot(minutes=2, now=m * 60.0 + 30)
    assert snap["series"]["hits"][-1] == 6 and snap["series"]["pageviews"][-1] == 4
    assert snap["series"]["revenue"][-1] == 21.0
    assert snap["top"]["current"]["pages"] == [["/", 4]]
    assert len(snap["feed"]) == 5  # trimmed to feed_length
    client = redis.Redis.from_url(redis_server.url)
    keys = list(client.scan_iter(f"{s.redis.key_prefix}*"))
    assert keys
    for k in keys:
        assert 0 < client.ttl(k) <= LIVE_TTL_S, k


def test_visitors_now_forgets_visitors_outside_the_window(live):
    s, sink, reader = live
    t = 1_800_000_000.0
    sink.apply(LiveDelta(visitors={"all": {"old": t - 400, "recent": t - 100}}, max_ts=t, events=2))
    assert reader.snapshot(minutes=1, now=t)["visitors_now"] == 1
    sink.apply(LiveDelta(visitors={"all": {"old": t - 10}}, max_ts=t, events=1))  # came back
    assert reader.snapshot(minutes=1, now=t)["visitors_now"] == 2


def test_updates_are_announced_on_pubsub(live, redis_server):
    s, sink, reader = live
    sub = redis.Redis.from_url(redis_server.url).pubsub()
    sub.subscribe(f"{s.redis.key_prefix}updates")
    sub.get_message(timeout=1)  # subscribe confirmation
    sink.apply(LiveDelta(counters={100: {"hits": 1}}, max_ts=6000.0, events=1))
    msg = sub.get_message(timeout=2)
    assert msg and orjson.loads(msg["data"]) == {"minute": 6000}
    sub.close()


def test_quantiles_from_histogram():
    assert quantiles_from_hist({}, (0.5,)) == [None]
    from config.live_layout import bucket_mid_ms
    hist = {10: 50, 40: 45, 60: 5}
    assert quantiles_from_hist(hist, (0.5, 0.95, 0.99)) == [round(bucket_mid_ms(10), 2), round(bucket_mid_ms(40), 2),
                                                           round(bucket_mid_ms(60), 2)]


def test_redis_away_raises_a_redis_error(live):
    s, _, _ = live
    sink = RedisLiveSink("redis://127.0.0.1:1/0", s)
    with pytest.raises(redis.RedisError):
        sink.apply(LiveDelta(counters={1: {"hits": 1}}, max_ts=60.0, events=1))


def test_visitors_now_keeps_each_visitors_latest_time_across_thousands_and_late_batches(live):
    _, sink, reader = live
    t = 1_700_000_000.0
    crowd = {f"v{i}": t - (i % 200) for i in range(2500)}  # more visitors than one ZADD of the script takes
    sink.apply(LiveDelta(visitors={"all": crowd}, max_ts=t, events=len(crowd)))
    assert reader.snapshot(minutes=1, now=t)["visitors_now"] == 2500
    # a late batch with an older time for v1 must not move v1 out of the window
    sink.apply(LiveDelta(visitors={"all": {"v1": t - 3000}}, max_ts=t, events=1))
    assert reader.snapshot(minutes=1, now=t)["visitors_now"] == 2500


def test_orders_cart_adds_and_the_goal_feed_per_minute(live):
    from engine.web.live_commerce import add_commerce

    s, sink, reader = live
    now = time.time()
    m0 = (int(now // 60) - 1) * 60  # the previous minute: complete
    p = HitProcessor(s)
    batch = [_hit("p1", m0 + 1, "v1", "/product/p1"),
             _hit("c1", m0 + 2, "v1", "/cart/add", method="POST", status=303, query="product=p1&qty=2"),
             _hit("o1", m0 + 3, "v1", "/order/complete", method="POST", member="m1",
                  extra={"x-order-amount": "42.50", "x-order-items": "p1:2:15.00,p7:1:12.50"}),
             _hit("p2", m0 + 4, "v2", "/product/p2"), _hit("c2", m0 + 5, "v2", "/cart/add", method="POST", status=303),
             _hit("c3", m0 + 61, "v2", "/cart/add", method="POST", status=303),
             _hit("o2", m0 + 62, "v2", "/order/complete", method="POST", extra={"x-order-amount": "10"}),
             # a refused order (400) is no conversion
             _hit("o3", m0 + 63, "v3", "/order/complete", method="POST", status=400, extra={"x-order-amount": "99"})]
    sink.apply(p.process(batch).delta)
    snap = add_commerce(reader.snapshot(minutes=60, now=m0 + 70), s)
    se = snap["series"]
    assert (se["orders"][-2:], se["carts"][-2:], se["revenue"][-2:]) == ([1, 1], [2, 1], [42.5, 10.0])
    assert snap["commerce"]["orders"] == 2 and snap["commerce"]["revenue"] == 52.5
    assert snap["commerce"]["sessions"] == 2 and snap["commerce"]["conversion_rate"] == 1.0
    # newest first (feed_length 5), each with the whole ids the screen links to
    feed = snap["goal_feed"]
    assert [(g["goal"], g["value"]) for g in feed] == [("purchase", 10.0), ("add_to_cart", 0.0), ("add_to_cart", 0.0),
                                                       ("purchase", 42.5), ("add_to_cart", 0.0)]
    assert feed[3]["visitor_id"] == "v1" and feed[3]["member_id"] == "m1" and feed[0]["member_id"] == ""
    # units per product, carted and ordered, in their minute (the top lists of the live products card)
    prev = snap["top"]["previous"]
    assert dict(map(tuple, prev["cart_products"])) == {"p1": 2}
    assert dict(map(tuple, prev["order_products"])) == {"p1": 2, "p7": 1}
