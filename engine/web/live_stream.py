"""One live-snapshot loop shared by every Server-Sent-Events client.

The loop wakes on each `vw:updates` pub/sub message (the processors announce
updated minutes) and at least once a second, reads one snapshot from Redis
(in a thread: the reader is synchronous) and hands the same bytes to every
connected screen. Ten open screens cost one Redis read per tick, not ten.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Callable

import orjson

log = logging.getLogger(__name__)

MIN_GAP_S = 0.25  # burst of announcements -> at most 4 pushes per second
MAX_GAP_S = 1.0  # quiet Redis -> still one push per second (clock, trend, "visitors now" decay)


async def call_maybe_async(fn: Callable, *args: Any) -> Any:
    """Run a blocking reader call in the default executor; await it directly if it is a coroutine."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background loop and wait until it has ended (its cancellation is not an error)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


class LiveHub:
    def __init__(self, snapshot: Callable[[], Any], redis_url: str, channel: str):
        self._snapshot = snapshot  # coroutine function returning the JSON-able payload
        self._redis_url = redis_url
        self._channel = channel
        self._clients: set[asyncio.Queue] = set()
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self.pushes = 0
        self.announcements = 0

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=1)
        self._clients.add(q)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="visitwire-live-hub")
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._clients.discard(q)

    async def close(self) -> None:
        for q in list(self._clients):
            _offer(q, None)  # None tells the stream handler to end
        self._clients.clear()
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        listener = asyncio.get_running_loop().create_task(self._listen(), name="visitwire-live-pubsub")
        try:
            last = 0.0
            while self._clients:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, MAX_GAP_S - (time.monotonic() - last)))
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                gap = time.monotonic() - last
                if gap < MIN_GAP_S:
                    await asyncio.sleep(MIN_GAP_S - gap)
                last = time.monotonic()
                try:
                    payload = await self._snapshot()
                    data = b"event: snapshot\ndata: " + orjson.dumps(payload, default=str) + b"\n\n"
                except Exception as e:  # Redis away: tell the screens, keep trying every second
                    log.warning("live snapshot failed: %s", e)
                    data = b"event: problem\ndata: " + orjson.dumps(
                        {"error": f"live state unavailable: {e}; check that Redis is running"}) + b"\n\n"
                for q in list(self._clients):
                    _offer(q, data)
                self.pushes += 1
        finally:
            listener.cancel()

    async def _listen(self) -> None:
        """Wake the loop on each pub/sub announcement; without Redis the 1 s tick still runs."""
        if not self._redis_url:
            return
        import redis.asyncio as aioredis

        while True:
            client = aioredis.from_url(self._redis_url)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.announcements += 1
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("live updates channel %s: %s; retrying in 2s", self._channel, e)
                await asyncio.sleep(2)
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:
                    pass


def _offer(q: asyncio.Queue, item: Any) -> None:
    # A slow screen only ever needs the newest snapshot: replace what it has not read yet.
    while True:
        try:
            q.put_nowait(item)
            return
        except asyncio.QueueFull:
            try:
                q.get_nowait()
            except asyncio.QueueEmpty:
                pass
