"""How fast a Redis update reaches the live screen: SSE push vs a client polling /api/live.

A real redis-server, the processors' writer (HitProcessor -> RedisLiveSink) and the web app
on a loopback port. Each round writes one batch bringing a new visitor and measures the time
until the screen's data shows it: over GET /api/live/stream (woken by the `vw:updates`
announcement) and, as the peer, a client polling GET /api/live once a second.
Also prints the cost of one LiveStateReader.snapshot().

    .venv/bin/python benchmarks/web_live_bench.py --rounds 20
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from config.settings import Settings
from engine.services import free_port, start_redis
from engine.web import start_web
from processors.agents import HitProcessor
from sinks.redis_live import LiveStateReader, RedisLiveSink

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"


def hit(i: int) -> dict:
    return {"event_id": f"bench{i:06d}", "ts": time.time(), "client_ip": "10.0.0.1", "client_port": 40000,
            "server_ip": "10.0.0.2", "server_port": 80, "method": "GET", "host": "shop", "uri": "/", "path": "/",
            "query": "", "referrer": "", "user_agent": UA, "status": 200, "resp_bytes": 100,
            "content_type": "text/html", "latency_ms": 10.0, "visitor_id": f"visitor{i:06d}", "member_id": "",
            "http_version": "1.1", "no_response": False, "extra": {}}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def sse_values(session, url, out: asyncio.Queue):
    async with session.get(url + "/api/live/stream") as resp:
        event = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "snapshot":
                await out.put((time.perf_counter(), orjson.loads(line[5:])["visitors_now"]))


async def poll_values(session, url, out: asyncio.Queue):
    while True:
        async with session.get(url + "/api/live") as resp:
            body = await resp.json()
        await out.put((time.perf_counter(), body["visitors_now"]))
        await asyncio.sleep(1.0)


async def measure(kind: str, url: str, sink, processor, rounds: int, first: int, progress, task) -> list[float]:
    out: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        reader = loop.create_task((sse_values if kind == "sse" else poll_values)(session, url, out))
        _, seen = await out.get()
        latencies = []
        for i in range(first, first + rounds):
            await asyncio.sleep(0.3 + (i % 7) * 0.1)  # writes at varying phases of the 1 s tick
            while not out.empty():
                _, seen = out.get_nowait()
            t0 = time.perf_counter()
            await loop.run_in_executor(None, sink.apply, processor.process([hit(i)]).delta)
            while True:
                t, value = await out.get()
                if value > seen:
                    latencies.append((t - t0) * 1000)
                    seen = value
                    break
            progress.advance(task)
        reader.cancel()
    return latencies


async def main_async(rounds: int) -> Table:
    redis = start_redis()
    settings = Settings(redis={"url": redis.url}, web={"port": free_port()})
    reader = LiveStateReader(redis.url, settings)
    sink = RedisLiveSink(redis.url, settings)
    processor = HitProcessor(settings)
    runner, url = await start_web(settings, reader, None)
    try:
        with Progress(console=Console(stderr=True)) as progress:
            results = {}
            for n, kind in enumerate(("sse", "poll")):
                task = progress.add_task(f"{kind}: new visitor -> screen", total=rounds)
                results[kind] = await measure(kind, url, sink, processor, rounds, n * rounds, progress, task)
        snap_ms = []
        for _ in range(20):
            t0 = time.perf_counter()
            reader.snapshot(60)
            snap_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        await runner.cleanup()
        sink.close()
        reader.close()
        redis.stop()
    table = Table(title=f"Redis write -> screen data, {rounds} rounds each")
    for col in ("client", "p50 ms", "p90 ms", "max ms", "p50 vs polling"):
        table.add_column(col, justify="right")
    base = statistics.median(results["poll"])
    for kind, label in (("sse", "SSE /api/live/stream"), ("poll", "peer: poll /api/live every 1 s")):
        lat = results[kind]
        table.add_row(label, f"{statistics.median(lat):.0f}", f"{pct(lat, 0.9):.0f}", f"{max(lat):.0f}",
                      f"{statistics.median(lat) / base:.2f}x")
    table.caption = f"LiveStateReader.snapshot(60): median {statistics.median(snap_ms):.1f} ms"
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    Console(width=120).print(asyncio.run(main_async(args.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
