"""The metrics listener of `visitwire worker` and `visitwire capture`: GET /metrics and GET /health.

A small threaded HTTP server beside the component's own loop (the capture loop blocks; the worker's
event loop must not wait for a scrape). Like every visitwire listener it needs the token
(`Authorization: Bearer <token>`): web.token, else the data directory's api_token.
"""
from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from config.settings import Settings
from engine.metrics import Metrics

log = logging.getLogger(__name__)


class ListenerError(Exception):
    """The metrics listener cannot start; the message says what to change."""


def start_listener(settings: Settings, *collectors) -> "MetricsServer | None":
    """The /metrics + /health listener on metrics.host:port for these collectors; None when the port is 0.
    The token: web.token, else the data directory's api_token. Raises ListenerError."""
    if not settings.metrics.port:
        return None
    from engine.api_token import TokenFileError, engine_token

    m = settings.metrics
    try:
        return MetricsServer(Metrics(*collectors), m.host, m.port,
                             engine_token(settings.web.token, settings.data_dir)).start()
    except TokenFileError as e:
        raise ListenerError(str(e)) from None
    except OSError as e:
        raise ListenerError(f"metrics cannot listen on {m.host}:{m.port} ({e.strerror}); choose another "
                            "--metrics-port / metrics.port") from None


class MetricsServer:
    def __init__(self, metrics: Metrics, host: str, port: int, token: str):
        if not token:
            raise ValueError("a metrics listener needs a token")
        handler = _handler(metrics, token)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        bound_host, bound_port = self.httpd.server_address[:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self.url = f"http://{shown}:{bound_port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="visitwire-metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        log.info("metrics at %s/metrics", self.url)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(metrics: Metrics, token: str) -> type[BaseHTTPRequestHandler]:
    expected = token.encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "visitwire"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            scheme, _, given = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
                return self._send(401, "application/json", b'{"error": "missing or wrong token: send '
                                  b'\'Authorization: Bearer <token>\' (web.token / VISITWIRE_WEB__TOKEN)"}')
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                return self._send(200, CONTENT_TYPE_LATEST, metrics.exposition())
            if path == "/health":
                h = metrics.health()
                return self._send(200 if h["healthy"] else 503, "application/json", json.dumps(h).encode())
            self._send(404, "application/json", b'{"error": "GET /metrics or /health"}')

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # scrapes every few seconds: not worth a log line
            pass

    return Handler
