"""`visitwire web`: the live screen and JSON API alone, on a Redis and a ClickHouse history that workers
elsewhere fill (the production stack's screen); until SIGINT / SIGTERM."""
from __future__ import annotations

import asyncio
import signal

from rich.console import Console

from config.redact import redact_url
from config.settings import Settings


def run_web(settings: Settings) -> int:
    from engine.api_token import TokenFileError, engine_token
    from engine.metrics import Metrics
    from engine.web.app import start_web
    from sinks.history import open_history
    from sinks.redis_live import LiveStateReader

    console = Console(stderr=True)
    try:  # like every listener: a token (web.token, else the data directory's own)
        settings.web.token = engine_token(settings.web.token, settings.data_dir)
    except TokenFileError as e:
        console.print(f"[red]{e}")
        return 2

    async def main() -> int:
        history = open_history(settings.history.url)
        live = LiveStateReader(settings.redis.url, settings)
        try:
            runner, url = await start_web(settings, live, history, Metrics())
        except OSError as e:
            console.print(f"[red]the screen cannot listen on {settings.web.host}:{settings.web.port} ({e.strerror}); "
                          "choose another --web-port / web.port")
            live.close(), history.close()
            return 2
        console.print(f"[green]screen at[/] {url} (live: {redact_url(settings.redis.url)}, history: "
                      f"{redact_url(settings.history.url)})", soft_wrap=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            live.close()
            history.close()
        return 0

    return asyncio.run(main())
