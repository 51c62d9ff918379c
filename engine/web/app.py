"""The web server: live screen (static single page) + JSON API on one port.

engine/runtime.py calls `start_web(settings, live_reader, history_store)` inside
the asyncio loop that also runs the Faust worker; tests build the app with
`create_web_app` and aiohttp's test server. Either collaborator may be None
(the routes that need it answer 503 with what to configure).
"""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import warnings
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from engine.web import api
from engine.web.alerting import AlertNotifier
from engine.web.auth import token_middleware
from engine.web.live_stream import LiveHub
from sinks.base import SinkUnavailable
from sinks.reads.stats import StatsError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
ANALYTICS_ROUTES_MODULE = "engine.web.analytics_routes"


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every /api error is JSON {"error": ...}: bad parameters 400, store away 503, bugs 500 (logged)."""
    try:
        return await handler(request)
    except StatsError as e:
        return api.error(400, str(e))
    except web.HTTPException as e:
        if not request.path.startswith("/api/") or e.content_type == "application/json" or e.status < 400:
            raise
        return api.error(e.status, e.reason if e.status != 404 else f"no such endpoint {request.path}: "
                                                                     "see GET /api/openapi.json")
    except Exception as e:
        if _is_backend_down(e):
            log.warning("%s %s: backend unavailable: %s", request.method, request.path, e)
            what = "live state (Redis)" if request.path.startswith("/api/live") else "history store"
            return api.error(503, f"{what} unavailable: {e}; check that it runs, then retry")
        log.exception("%s %s failed", request.method, request.path)
        return api.error(500, f"internal error ({type(e).__name__}); see the server log")


def _is_backend_down(e: Exception) -> bool:
    import redis

    return isinstance(e, (SinkUnavailable, ConnectionError, TimeoutError, redis.ConnectionError, redis.TimeoutError))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format; collected in a thread (the broker lag probe may wait on the network)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    metrics = request.app["metrics"]
    body = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition) if metrics else b""
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health_endpoint(request: web.Request) -> web.Response:
    """The health of what this engine runs (worker, capture); 503 when one is unhealthy."""
    metrics = request.app["metrics"]
    h = await asyncio.get_running_loop().run_in_executor(None, metrics.health) if metrics else \
        {"healthy": True, "components": []}
    return web.json_response(h, status=200 if h["healthy"] else 503)


def _analytics_routes():
    """The analytics room's routes, when that module exists (a broken module still fails loudly)."""
    if importlib.util.find_spec(ANALYTICS_ROUTES_MODULE) is None:
        return None
    module = importlib.import_module(ANALYTICS_ROUTES_MODULE)
    return module.routes


def _redis_url_of(live_reader) -> str:
    """The Redis the reader uses (the embedded one has no URL in settings), for the pub/sub channel."""
    url = getattr(live_reader, "redis_url", "")
    if url:
        return url
    pool = getattr(getattr(live_reader, "client", None), "connection_pool", None)
    kw = getattr(pool, "connection_kwargs", None) or {}
    auth = f":{quote(kw['password'], safe='')}@" if kw.get("password") else ""
    if kw.get("path"):
        return f"unix://{auth}{kw['path']}?db={kw.get('db', 0)}"
    if kw.get("host"):
        return f"redis://{auth}{kw['host']}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
    return ""


def create_web_app(settings, live_reader, history_store, metrics=None, startup=None) -> web.Application:
    """`metrics`: an engine.metrics.Metrics whose collectors /metrics and /health serve (none: empty).
    `startup()`: what the engine is doing before it captures (e.g. compiling kernels), a dict for
    /api/health and the screen's banner; None: running."""
    app = web.Application(middlewares=[json_errors, token_middleware(settings.web.token)],
                          client_max_size=1 << 20)
    # Plain string keys (agreed with the analytics routes: request.app["history"]), so aiohttp's
    # "use AppKey" advice is silenced here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["settings"] = settings
        app["live"] = live_reader
        app["history"] = history_store
        app["hub"] = None
        app["metrics"] = metrics
        app["startup"] = startup
    redis_url = _redis_url_of(live_reader) or settings.redis.url
    keys = getattr(live_reader, "keys", None)
    channel = getattr(keys, "updates", None) or f"{settings.redis.key_prefix}updates"

    async def snapshot():
        return await api.live_payload(app)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["hub"] = LiveHub(snapshot, redis_url, channel)

    async def close_hub(app: web.Application) -> None:
        await app["hub"].close()

    app.on_shutdown.append(close_hub)
    if settings.web.alert_webhook and live_reader is not None:
        notifier = AlertNotifier(snapshot, settings.web.alert_webhook, settings.web.alert_check_s)

        async def start_notifier(app: web.Application) -> None:
            notifier.start()

        async def stop_notifier(app: web.Application) -> None:
            await notifier.stop()

        app.on_startup.append(start_notifier)
        app.on_shutdown.append(stop_notifier)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            app["alert_notifier"] = notifier
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/health", health_endpoint)
    app.router.add_routes(api.routes)
    extra = _analytics_routes()
    if extra is not None:
        app.router.add_routes(extra)
        from engine.web.screen_routes import routes as screen_routes

        app.router.add_routes(screen_routes)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)
    return app


async def start_web(settings, live_reader, history_store, metrics=None, startup=None) -> tuple[web.AppRunner, str]:
    """Serve on settings.web.host:port (port 0 = any free one); returns the runner and the dashboard URL."""
    app = create_web_app(settings, live_reader, history_store, metrics, startup)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.web.host, settings.web.port)
    try:
        await site.start()
    except OSError:  # port taken / not allowed: the caller says which flag to change
        await runner.cleanup()
        raise
    port = settings.web.port
    if port == 0:
        port = site._server.sockets[0].getsockname()[1]  # the kernel's choice
    host = settings.web.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"  # no trailing slash: callers append "/?token=..."
    log.info("dashboard at %s", url)
    return runner, url
