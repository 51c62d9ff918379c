"""`visitwire db init` and `visitwire query` as a user runs them (a real process, real stores)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from engine.state_file import write_state
from sinks.history import open_history
from sinks.migrations import migration_files
from sinks.testing.events import make_hits, make_pageviews

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def visitwire(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**clean, **(env or {})})


def _db_url(server) -> str:
    return server.url.rsplit("/", 1)[0] + f"/cli_{uuid.uuid4().hex[:10]}"


def test_db_init_twice_then_query_prints_json_rows(clickhouse_server):
    url = _db_url(clickhouse_server)
    first = visitwire("db", "init", "--clickhouse", url)
    assert first.returncode == 0, first.stderr
    assert f"{len(migration_files())} migration(s) applied: 0001_base" in first.stdout
    second = visitwire("db", "init", "--clickhouse", url)
    assert second.returncode == 0 and "0 migration(s) applied" in second.stdout

    hits = make_hits(25, seed=21)
    store = open_history(url)
    store.write("hits", hits)
    store.close()
    out = visitwire("query", "SELECT event_id, status, extra_keys FROM hits ORDER BY event_id LIMIT 3",
                    "--clickhouse", url)
    assert out.returncode == 0, out.stderr
    rows = [orjson.loads(line) for line in out.stdout.splitlines()]
    want = sorted(hits, key=lambda h: h["event_id"])[:3]
    assert rows == [{"event_id": h["event_id"], "status": h["status"], "extra_keys": list(h["extra"])} for h in want]

    bad = visitwire("query", "SELECT nope FROM hits", "--clickhouse", url)
    assert bad.returncode == 2 and "ClickHouse error" in bad.stderr and "Traceback" not in bad.stderr

    # The CLI follows the API's rules: a DROP is refused (exit 2, table intact) unless --unsafe is given.
    drop = visitwire("query", "DROP TABLE hits", "--clickhouse", url)
    assert drop.returncode == 2 and "refused" in drop.stderr and "--unsafe" in drop.stderr
    read = visitwire("query", f"SELECT count() AS n FROM {url.rsplit('/', 1)[1]}.hits", "--clickhouse", url)
    assert read.returncode == 0 and orjson.loads(read.stdout) == {"n": len(hits)}, read.stderr
    outside = visitwire("query", "SELECT * FROM system.tables", "--clickhouse", url)
    assert outside.returncode == 2 and "outside the visitwire database" in outside.stderr
    unsafe = visitwire("query", "DROP TABLE hits", "--unsafe", "--clickhouse", url)
    assert unsafe.returncode == 0, unsafe.stderr
    gone = visitwire("query", "SELECT count() FROM hits", "--clickhouse", url)
    assert gone.returncode == 2 and "hits" in gone.stderr


@pytest.mark.parametrize("url, message", [
    ("clickhouse://default:@127.0.0.1:1/visitwire", "start the server or fix history.url"),
    ("clickhouse:///visitwire", "has no host"),
    ("postgres://localhost/x", "history.url must start with clickhouse://"),
])
def test_db_init_on_a_bad_url_says_what_to_do(url, message):
    res = visitwire("db", "init", "--clickhouse", url)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


class _QueryApi(BaseHTTPRequestHandler):
    """Stands in for the engine's POST /api/query: answers from the chdb store this process holds."""
    store = None
    token = ""

    def do_POST(self):  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/api/query" or self.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(401, {"error": "missing or wrong token"})
        self._send(200, {"rows": self.store.query(orjson.loads(body)["sql"])})

    def _send(self, code, obj):
        data = orjson.dumps(obj)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_query_goes_through_the_running_engine_that_holds_chdb(tmp_path):
    data_dir, url = tmp_path / "data", f"chdb://{tmp_path}/data/chdb"
    store = open_history(url)  # this process is "the engine": it holds the chdb directory
    pvs = make_pageviews(40, seed=22)
    store.write("pageviews", pvs)
    _QueryApi.store, _QueryApi.token = store, "s3cret"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _QueryApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"VISITWIRE_DATA_DIR": str(data_dir), "VISITWIRE_HISTORY__URL": url}
    try:
        write_state(str(data_dir), web_url=f"http://127.0.0.1:{server.server_port}", token="s3cret", history_url=url)
        res = visitwire("query", "SELECT uniqExact(event_id) AS n, uniqExact(visitor_id) AS v FROM pageviews", env=env)
        assert res.returncode == 0, res.stderr
        assert [orjson.loads(line) for line in res.stdout.splitlines()] == \
            [{"n": 40, "v": len({p["visitor_id"] for p in pvs})}]

        write_state(str(data_dir), web_url=f"http://127.0.0.1:{server.server_port}", token="wrong", history_url=url)
        denied = visitwire("query", "SELECT 1", env=env)
        assert denied.returncode == 2 and "HTTP 401" in denied.stderr and "wrong token" in denied.stderr
    finally:
        server.shutdown()
        store.close()


def test_query_opens_chdb_directly_when_the_engine_is_gone(tmp_path):
    data_dir, url = tmp_path / "data", f"chdb://{tmp_path}/data/chdb"
    store = open_history(url)  # an engine that wrote history, then exited
    store.write("hits", make_hits(25, seed=23))
    store.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (data_dir / "engine.json").write_text(orjson.dumps({"pid": int(dead.stdout), "web_url": "http://127.0.0.1:9",
                                                        "token": "x", "history_url": url}).decode())
    res = visitwire("query", "SELECT uniqExact(event_id) AS n FROM hits",
                    env={"VISITWIRE_DATA_DIR": str(data_dir), "VISITWIRE_HISTORY__URL": url})
    assert res.returncode == 0, res.stderr
    assert orjson.loads(res.stdout) == {"n": 25}


def test_db_init_on_a_chdb_directory_another_process_holds(chdb_history):
    res = visitwire("db", "init", "--clickhouse", chdb_history.url)
    assert res.returncode == 2
    assert "another process" in res.stderr and "one process per directory" in res.stderr
    assert "Traceback" not in res.stderr
