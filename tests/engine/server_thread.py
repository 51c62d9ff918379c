"""An asyncio server in a daemon thread of its own: how the tests' stand-ins in front of tansu (the SASL gateway,
the TLS terminator) listen while the test's own code runs."""
from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ServerThread:
    """`client` serves each connection to 127.0.0.1:`port` (TLS with `context`) until stop()."""

    def __init__(self, client: Handler, port: int, context: ssl.SSLContext | None = None):
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(client, "127.0.0.1", port, ssl=context))
            ready.set()
            self.loop.run_forever()
        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
