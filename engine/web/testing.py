"""The real web app served from a background thread, for browser tests and benchmarks that drive Chromium from
the main thread (Playwright's sync API blocks it, so the app needs an event loop of its own)."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Iterator

from aiohttp.test_utils import TestServer

from config.settings import load_settings
from engine.web.app import create_web_app


@contextlib.contextmanager
def served_app(store: Any, settings: Any = None) -> Iterator[str]:
    """Serves create_web_app(settings, no live state, `store`) on a free loopback port; yields its base URL."""
    loop = asyncio.new_event_loop()
    stop, url, failed = asyncio.Event(), [], []

    async def serve() -> None:
        try:
            server = TestServer(create_web_app(settings or load_settings(), None, store))
            await server.start_server()
        except BaseException as e:  # said in the caller's thread
            failed.append(e)
            return
        url.append(str(server.make_url("/")))
        await stop.wait()
        await server.close()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    while not url and not failed and thread.is_alive():
        thread.join(0.05)
    if failed:
        raise failed[0]
    try:
        yield url[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
