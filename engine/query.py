"""`visitwire query "SQL"`: run SQL on the history store and print the rows as JSON lines.

chdb serves its data directory to the one process that opened it, so when a running engine
holds the chdb store ({data_dir}/engine.json names it and its pid is alive) the query goes to
its `POST /api/query` ({"sql": ...} -> {"rows": [...]}, `Authorization: Bearer <token>`).
A ClickHouse server is always queried directly.

The same rules as the API apply (engine/sql_policy.py: one SELECT over visitwire's tables, with
limits), unless `--unsafe` is given, which runs any statement directly on the store.
"""
from __future__ import annotations

import sys
import urllib.error
import urllib.request
from typing import Any

import orjson

from engine.sql_policy import QueryRefused, police, query_limits, run_policed, store_database
from engine.state_file import read_state
from sinks.base import HistoryError, SinkUnavailable
from sinks.history import open_history


class QueryError(Exception):
    """The query could not run; the message says what to do."""


def engine_info(data_dir: str, history_url: str) -> dict | None:
    """The running engine's {"pid", "web_url", "token", ...} when it holds this chdb store, else None."""
    info = read_state(data_dir)
    if not info or not info.get("web_url"):
        return None
    if info.get("history_url", history_url) != history_url:
        return None  # it holds another directory; this one is free to open here
    return info


def query_engine(info: dict, sql: str, timeout: float = 60.0) -> list[dict]:
    url = info["web_url"].rstrip("/") + "/api/query"
    req = urllib.request.Request(url, data=orjson.dumps({"sql": sql}), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {info.get('token', '')}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = orjson.loads(resp.read())
    except urllib.error.HTTPError as e:
        detail = e.read()[:2000].decode("utf-8", "replace")
        try:
            detail = orjson.loads(detail).get("error", detail)
        except (orjson.JSONDecodeError, AttributeError):
            pass
        raise QueryError(f"the running engine ({url}) rejected the query: HTTP {e.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise QueryError(f"the running engine (pid {info['pid']}) did not answer at {url} ({e}); "
                         "wait for it to start, or stop it to query the chdb store directly") from None
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        raise QueryError(f"the running engine ({url}) answered without a 'rows' list")
    return body["rows"]


def query_direct(settings: Any, sql: str, unsafe: bool = False) -> list[dict]:
    store = open_history(settings.history.url)
    try:
        if unsafe:
            return store.query(sql)
        return run_policed(store, police(sql, database=store_database(store)), query_limits(settings))
    finally:
        store.close()


def fetch_rows(settings: Any, sql: str, unsafe: bool = False) -> list[dict]:
    url = settings.history.url
    info = engine_info(settings.data_dir, url) if url.startswith("chdb://") else None
    if info and unsafe:
        raise QueryError(f"--unsafe runs on the store directly, but the running engine (pid {info['pid']}) holds "
                         f"{url}: stop it first, or leave out --unsafe to read through its API")
    return query_engine(info, sql) if info else query_direct(settings, sql, unsafe)


def run_query(settings: Any, sql: str, unsafe: bool = False) -> int:
    """Print the rows as JSON lines (one object per row); exit code 0, or 2 with a message on stderr."""
    if not sql.strip():
        print("visitwire query: give the SQL to run, e.g. visitwire query \"SELECT count() FROM hits\"",
              file=sys.stderr)
        return 2
    try:
        rows = fetch_rows(settings, sql, unsafe)
    except QueryRefused as e:
        print(f"visitwire query: refused: {e} (--unsafe runs any statement directly on the store)", file=sys.stderr)
        return 2
    except (QueryError, HistoryError, SinkUnavailable) as e:
        print(f"visitwire query: {e}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    for row in rows:
        out.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    out.flush()
    return 0
