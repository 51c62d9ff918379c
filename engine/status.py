"""`visitwire status`: the health of every component, one line each; exit 1 when one is unhealthy.

Asked directly: Kafka (reachable, lag of the hits group per partition), Redis (reachable, last live
write), the ClickHouse history (reachable, newest hit stored). Asked over HTTP (GET /health with the
token): a running engine found through {data_dir}/engine.json, and every metrics listener named by
metrics.targets / --target (workers, capture agents), which report their last flush and last error.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from config.events import TOPIC_HITS
from config.redact import redact_text, redact_url
from config.settings import Settings

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
TIMEOUT_S = 5.0


def check_kafka(s: Settings, max_lag: int) -> dict:
    from config.kafka_security import librdkafka_config, security_hint
    from engine.kafka_lag import BrokerUnreachable, group_lag

    k = s.kafka
    try:
        parts = group_lag(k.bootstrap, f"{k.app_id}-hits", TOPIC_HITS, timeout=TIMEOUT_S,
                          extra_config=librdkafka_config(k))
    except BrokerUnreachable as e:  # under TLS / SASL, a refusal can look like a broker that is away
        return {"component": "kafka", "healthy": False,
                "last_error": f"{e}; check kafka.bootstrap{security_hint(k)}" if security_hint(k) else str(e)}
    lag = {p: v["lag"] for p, v in parts.items()}
    over = {p: n for p, n in lag.items() if max_lag and n > max_lag}
    return {"component": "kafka", "healthy": not over, "lag": lag, "partitions": len(parts),
            "last_error": f"lag over {max_lag} on partition(s) {sorted(over)}" if over else None}


def check_redis(s: Settings) -> dict:
    import redis

    from sinks.redis_live import LiveKeys

    client = redis.Redis.from_url(s.redis.url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        client.ping()
        meta = client.hgetall(LiveKeys(s.redis.key_prefix).meta)
    except redis.RedisError as e:
        return {"component": "redis", "healthy": False, "last_error": redact_text(f"{type(e).__name__}: {e}")}
    finally:
        client.close()
    last = float(meta.get(b"last_write", 0) or 0)
    return {"component": "redis", "healthy": True, "last_flush": last or None,
            "events": int(meta.get(b"events", 0) or 0), "last_error": None}


def check_history(s: Settings) -> dict:
    import os

    from sinks.base import HistoryError, SinkUnavailable
    from sinks.history import open_history
    from sinks.reads.queries import newest_hit

    if s.history.url.startswith("chdb://") and not os.path.isdir(s.history.url.removeprefix("chdb://")):
        return {"component": "history", "healthy": False,
                "last_error": f"no history store at {s.history.url} (check data_dir / history.url)"}
    try:
        store = open_history(s.history.url)
        try:
            pending = store.pending_migrations()
            if pending:  # status reads; it never upgrades the store
                return {"component": "history", "healthy": False,
                        "last_error": f"the history schema lacks {len(pending)} migration(s), the newest "
                                      f"{pending[-1]}: run `visitwire db init` (README: schema upgrades)"}
            newest = newest_hit(store)
        finally:
            store.close()
    except (HistoryError, SinkUnavailable, OSError) as e:
        return {"component": "history", "healthy": False, "last_error": redact_text(str(e))}
    except Exception as e:  # e.g. the schema not created yet: reachable, but say what is wrong
        return {"component": "history", "healthy": False,
                "last_error": redact_text(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")}
    return {"component": "history", "healthy": True, "newest_hit": newest, "last_error": None}


def check_http(name: str, base_url: str, token: str) -> list[dict]:
    """GET {base_url}/health: the components that listener reports, each named after it."""
    req = urllib.request.Request(f"{base_url.rstrip('/')}/health", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 503:
            body = json.loads(e.read())
        else:
            why = "wrong or missing token" if e.code == 401 else f"HTTP {e.code}"
            return [{"component": name, "healthy": False, "last_error": f"{base_url}: {why}"}]
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return [{"component": name, "healthy": False, "last_error": f"{base_url} unreachable ({reason})"}]
    return [{**c, "component": f"{name} {c['component']}"} for c in body.get("components", [])] or \
        [{"component": name, "healthy": bool(body.get("healthy")), "last_error": None}]


def collect(s: Settings, targets: list[str], max_lag: int = 0) -> list[dict]:
    from engine.api_token import TokenFileError, engine_token
    from engine.state_file import read_state

    out: list[dict] = []
    engine = read_state(s.data_dir)
    if engine:
        out += check_http("engine", engine["web_url"], engine.get("token", ""))
    if s.kafka.bootstrap:
        out.append(check_kafka(s, max_lag))
    if s.redis.url:
        out.append(check_redis(s))
    # chdb allows one process per directory: while an engine holds it, its /health speaks for it
    if s.history.url.startswith("clickhouse://") or not engine:
        out.append(check_history(s))
    if targets:
        try:
            token = engine_token(s.web.token, s.data_dir)
        except TokenFileError as e:
            return out + [{"component": t, "healthy": False, "last_error": str(e)} for t in targets]
        for t in targets:
            out += check_http(redact_url(t), t, token)
    return out


def run_status(s: Settings, targets: list[str], max_lag: int = 0, as_json: bool = False) -> int:
    results = collect(s, targets, max_lag)
    if as_json:
        print(json.dumps({"healthy": all(r["healthy"] for r in results), "components": results}, indent=2))
    else:
        if not results:
            print("nothing to check: set kafka.bootstrap / redis.url / history.url, start an engine, "
                  "or name metrics listeners with --target")
        for r in results:
            print(_line(r))
    return EXIT_HEALTHY if results and all(r["healthy"] for r in results) else EXIT_UNHEALTHY


def _line(r: dict[str, Any]) -> str:
    now = time.time()
    parts = [f"{r['component']:<22} {'ok' if r['healthy'] else 'UNHEALTHY':<9}"]
    for key in ("last_flush", "newest_hit", "last_error_at"):
        if r.get(key):
            parts.append(f"{key.replace('_', ' ')} {now - r[key]:.0f} s ago")
    if r.get("lag"):
        lag = r["lag"]
        parts.append("lag " + " ".join(f"p{p}={n}" for p, n in sorted(lag.items(), key=lambda kv: int(kv[0]))))
    for key in ("held_hits", "events", "buffered", "kernel_drops"):
        if r.get(key) is not None:
            parts.append(f"{key.replace('_', ' ')} {r[key]}")
    if r.get("last_error"):
        parts.append(f"last error: {r['last_error']}")
    return "  ".join(parts)
