"""The history store: visit events kept in ClickHouse (server) or chdb (embedded).

`open_history(url)` picks the backend from the URL:
  clickhouse://user:pass@host:9000/db -> ClickHouseHistory (sinks/clickhouse.py, native protocol)
  chdb:///path                        -> ChdbHistory (sinks/chdb_store.py, in this process)

Tables (DDL in config/migrations/*.sql): `hits`, `pageviews`, `sessions`, `segments`, whose
columns are the fields of config/events.py, except that
  * ts / start / end are DateTime('UTC') (whole seconds) plus ts_epoch / start_epoch / end_epoch
    (Float64, the exact float seconds),
  * booleans are UInt8, Hit.extra is two parallel arrays extra_keys / extra_values;
and the per-minute rollups `pageviews_per_minute`, `hits_per_minute`, `latency_per_minute`
fed by materialized views.

Exact queries despite replays (writes are at-least-once; ReplacingMergeTree only collapses
duplicates when it merges parts, some time later):
  * count events with uniqExact(event_id), never count();
  * read sessions with FINAL (or argMax(col, end) GROUP BY session_id), so the latest version wins;
  * read rollups with uniqExactMerge(pageviews) / uniqExactMerge(visitors) / uniqExactMerge(hits):
    they hold sets of ids, so a replayed batch adds nothing.
sinks/reads/queries.py has ready-made queries written this way.

Query parameters: `%(name)s` placeholders, filled in as SQL literals by `bind()` on both
backends (sinks/sql_bind.py). Where the rest lives: sinks/history_columns.py (event fields ->
columns), sinks/migrations.py (the DDL files), sinks/history_store.py (the base of both backends).
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlparse

from sinks.base import HistoryError
from sinks.history_store import HistoryStore


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _tls(url: str, query: str) -> dict:
    """TLS options of a clickhouse:// URL: ?secure=true (port 9440), &verify=false, &ca_certs=/path/ca.pem."""
    from urllib.parse import parse_qsl

    out: dict = {}
    for key, value in parse_qsl(query):
        if key in ("secure", "verify"):
            if value.lower() not in _TRUE + _FALSE:
                raise HistoryError(f"history URL: {key}={value!r} must be true or false")
            out[key] = value.lower() in _TRUE
        elif key == "ca_certs":
            out[key] = value
        else:
            raise HistoryError(f"history URL: unknown option {key!r}; known: secure, verify, ca_certs")
    return out


def open_history(url: str, min_free_mb: int = 0, **batching: Any) -> HistoryStore:
    """A history store for `url`; batching kwargs go to BatchingSink (flush_interval_s, max_batch_rows).

    Does not connect yet: the schema is created/migrated on first use, so opening never fails
    because the server is away (writes then raise SinkUnavailable until it is back)."""
    parsed = urlparse(url)
    if parsed.scheme == "clickhouse":
        from sinks.clickhouse import ClickHouseHistory

        if not parsed.hostname:
            raise HistoryError(f"history URL {url!r} has no host: use clickhouse://user:pass@host:9000/db")
        db = parsed.path.strip("/") or "default"
        if not re.match(r"^\w+$", db):
            raise HistoryError(f"database name {db!r} in {url!r} must be letters, digits or _")
        try:
            port = parsed.port or 9000
        except ValueError:
            raise HistoryError(f"history URL {url!r} has a bad port: use clickhouse://user:pass@host:9000/db") from None
        return ClickHouseHistory(url, host=parsed.hostname, port=port, user=unquote(parsed.username or "default"),
                                 password=unquote(parsed.password or ""), database=db, tls=_tls(url, parsed.query),
                                 **batching)
    if parsed.scheme == "chdb":
        from sinks.chdb_store import ChdbHistory

        path = parsed.path if not parsed.netloc else "/" + parsed.netloc + parsed.path
        if not path or path == "/":
            raise HistoryError(f"history URL {url!r} has no directory: use chdb:///var/lib/visitwire/chdb")
        return ChdbHistory(url, path=path, min_free_mb=min_free_mb, **batching)
    raise HistoryError(f"history URL {url!r} is neither clickhouse://user:pass@host:9000/db nor chdb:///path")
