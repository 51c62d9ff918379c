"""Alert rules on the live figures and the webhook: live state on a real redis-server, the web app serving
it, and a receiving HTTP server standing in for the team's chat hook."""
from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config.settings import load_settings
from engine.web.app import create_web_app
from processors.agents import HitProcessor
from sinks.redis_live import LiveStateReader, RedisLiveSink

pytestmark = pytest.mark.integration


def _hit(eid, ts, path, status=200, method="GET", extra=None):
    return orjson.dumps({"event_id": eid, "ts": ts, "visitor_id": f"v{eid}", "member_id": "", "method": method,
                         "host": "shop.example", "path": path, "query": "", "referrer": "",
                         "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36",
                         "status": status, "content_type": "text/html", "latency_ms": 20.0, "resp_bytes": 10,
                         "extra": extra or {}})


def test_rules_join_the_banner_and_the_webhook_hears_each_start_and_end(redis_server):
    prefix = f"alert{int(time.time() * 1000) % 10**8}:"
    rules = [{"name": "orders came in", "metric": "orders", "above": 0},
             {"name": "shop is empty", "metric": "visitors_now", "below": 1},
             {"name": "revenue record", "metric": "revenue", "above": 1000}]
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    async def scenario():
        receiver = web.Application()
        receiver.router.add_post("/hook", hook)
        hook_server = TestServer(receiver)
        await hook_server.start_server()
        s = load_settings(redis={"url": redis_server.url, "key_prefix": prefix},
                          web={"alert_rules": rules, "alert_webhook": str(hook_server.make_url("/hook")),
                               "alert_check_s": 0.2})
        if time.time() % 60 > 50:
            await asyncio.sleep(11)  # the hits below belong to the minute before this one
        m0 = (int(time.time() // 60) - 1) * 60
        batch = [_hit(str(i), m0 + 1 + i, "/", status=404 if i % 2 else 200) for i in range(10)]
        batch.append(_hit("o", m0 + 20, "/order/complete", method="POST", extra={"x-order-amount": "99.5"}))
        batch.append(_hit("now", time.time(), "/"))  # the live clock is event time: traffic goes on
        sink = RedisLiveSink(redis_server.url, s)
        sink.apply(HitProcessor(s).process(batch).delta)
        app = create_web_app(s, LiveStateReader(redis_server.url, s), None)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            live = await (await client.get("/api/live")).json()
            messages = [a["message"] for a in live["alerts"]]
            assert "orders came in: orders 1 is above 0" in messages
            assert not any(m.startswith("error rate") for m in messages)  # this minute: no error yet
            assert not any("shop is empty" in m or "revenue record" in m for m in messages)
            for _ in range(50):
                if len(received) >= 1:
                    break
                await asyncio.sleep(0.1)
            assert [(r["state"], r.get("name", r["kind"])) for r in received] == [("firing", "orders came in")]
            # the figures go away: both alerts end, and the empty shop starts one
            client_r = redis.Redis.from_url(redis_server.url)
            for k in client_r.scan_iter(f"{prefix}*"):
                client_r.delete(k)
            for _ in range(50):
                if len(received) >= 3:
                    break
                await asyncio.sleep(0.1)
            assert sorted((r["state"], r.get("name", r["kind"])) for r in received[1:]) == \
                [("firing", "shop is empty"), ("resolved", "orders came in")]
            assert all(r["at"] > m0 and r["message"] for r in received)
        finally:
            await client.close()
            await hook_server.close()
            sink.close()

    asyncio.run(scenario())


def test_a_webhook_that_is_away_costs_one_log_line_per_change(redis_server, caplog):
    from engine.services import free_port

    prefix = f"alertaway{int(time.time() * 1000) % 10**8}:"
    s = load_settings(redis={"url": redis_server.url, "key_prefix": prefix},
                      web={"alert_rules": [{"name": "shop is empty", "metric": "visitors_now", "below": 1}],
                           "alert_webhook": f"http://127.0.0.1:{free_port()}/hook", "alert_check_s": 0.1})

    async def scenario():
        client = TestClient(TestServer(create_web_app(s, LiveStateReader(redis_server.url, s), None)))
        await client.start_server()
        await asyncio.sleep(1.0)  # about ten checks, one change
        await client.close()

    asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if "alert webhook" in r.getMessage()]
    assert len(lines) == 1 and "unreachable" in lines[0] and "shop is empty" in lines[0]
