"""`visitwire report ...` run as a user would: a subprocess on a chdb history with the generated shop."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sinks.history import open_history
from sinks.testing import fresh_history
from sinks.testing.events import generate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DS = generate(seed=3)
HUMAN = DS.human_pageviews


@pytest.fixture(scope="module")
def history_url(tmp_path_factory):
    with fresh_history(str(tmp_path_factory.mktemp("report-chdb")), rows=DS) as st:
        url = st.url
    return url  # closed: chdb serves one process per data directory, and the CLI opens it next


def report(history_url, tmp_path, *args):
    env = {**os.environ, "VISITWIRE_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "engine.cli", "report", *args, "--clickhouse", history_url],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_products_json_and_csv(history_url, tmp_path, output_dir):
    res = report(history_url, tmp_path, "products", "--json", "--limit", "100")
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["report"] == "products"
    views = Counter(p["product_id"] for p in HUMAN if p["product_id"])
    assert {r["product_id"]: r["views"] for r in body["products"]} == dict(views)
    assert body["summary"][0]["revenue"] == pytest.approx(sum(g["goal_value"] for g in DS.goals
                                                             if g["goal"] == "purchase" and not g["is_bot"]))
    res = report(history_url, tmp_path, "products", "--csv", "--limit", "3")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert res.returncode == 0 and len(rows) == 3
    assert [r["product_id"] for r in rows] == [p for p, _ in sorted(views.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
    (output_dir / "products.csv").write_text(res.stdout)


@pytest.mark.parametrize("kind, title", [
    ("visitors", "Most active visitors"), ("products", "Product usage"), ("funnels", "Funnel steps"),
    ("segments", "Segment sizes"), ("recommendations", "Viewed together"), ("cohorts", "Weekly retention"),
])
def test_every_report_prints_a_readable_table(history_url, tmp_path, output_dir, kind, title):
    res = report(history_url, tmp_path, kind, "--limit", "5")
    assert res.returncode == 0, res.stderr
    assert title in res.stdout and "┃" in res.stdout  # a rich table with a header row
    assert "Traceback" not in res.stderr
    (output_dir / f"{kind}.txt").write_text(res.stdout)


def test_time_range_and_bad_input(history_url, tmp_path):
    mid = DS.now - 21 * 86400
    res = report(history_url, tmp_path, "funnels", "--json", "--from", str(mid))
    assert res.returncode == 0, res.stderr
    first_step = json.loads(res.stdout)["steps"][0]["sessions"]
    assert first_step == len({p["session_id"] for p in HUMAN if p["path"].startswith("/product/") and p["ts"] >= mid})
    res = report(history_url, tmp_path, "segments", "--from", "last tuesday")
    assert res.returncode == 2 and "ISO date" in res.stderr and "Traceback" not in res.stderr
    res = report(history_url, tmp_path, "visitors", "--from", "2026-11-01", "--to", "2026-10-01")
    assert res.returncode == 2 and "must be before" in res.stderr


def test_history_store_away_is_a_clear_message(tmp_path):
    from engine.services import free_port

    res = report(f"clickhouse://default:@127.0.0.1:{free_port()}/visitwire", tmp_path, "visitors")
    assert res.returncode == 2 and "unreachable" in res.stderr and "Traceback" not in res.stderr


def test_report_goes_through_the_running_engine_that_holds_chdb(chdb_history, tmp_path):
    """chdb serves its directory to one process: with an engine running (engine.json), the report
    reads through the engine's POST /api/query instead of opening the store."""
    import asyncio
    import threading

    from aiohttp import web

    from config.settings import load_settings
    from engine.state_file import write_state
    from engine.web.app import create_web_app

    store = chdb_history
    url = store.url
    DS.write_to(store)
    settings = load_settings(web={"token": "s3cret"})
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box = {}

    queries = []

    @web.middleware
    async def count_queries(request, handler):
        if request.path == "/api/query":
            queries.append(request.headers.get("Authorization"))
        return await handler(request)

    async def serve():
        app = create_web_app(settings, None, store)
        app.middlewares.insert(0, count_queries)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"], box["runner"] = site._server.sockets[0].getsockname()[1], runner
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(30)
    data_dir = tmp_path / "data"
    write_state(str(data_dir), web_url=f"http://127.0.0.1:{box['port']}", token="s3cret", history_url=url)
    try:
        env = {**os.environ, "VISITWIRE_DATA_DIR": str(data_dir)}
        res = subprocess.run([sys.executable, "-m", "engine.cli", "report", "products", "--json", "--limit", "100",
                              "--clickhouse", url], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        views = Counter(p["product_id"] for p in HUMAN if p["product_id"])
        assert {r["product_id"]: r["views"] for r in json.loads(res.stdout)["products"]} == dict(views)
        assert queries and set(queries) == {"Bearer s3cret"}  # every query went through the engine
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


class PolicedStore:
    """A store read the way a running engine's POST /api/query reads it: the query API's rules and limits."""

    def __init__(self, store):
        self.store = store

    def query(self, sql, params=None):
        from engine.sql_policy import QueryLimits, police, run_policed
        from sinks.sql_bind import bind

        return run_policed(self.store, police(bind(sql, params)), QueryLimits())


def test_every_report_reads_within_the_query_api_rules(history_url, tmp_path):
    """`visitwire report` reads a chdb store held by a running engine through POST /api/query, so every
    report's SQL must pass its read-only policy, and give the same figures as read directly."""
    from config.settings import load_settings
    from sinks.reads.common import TimeRange
    from sinks.reads.reports import build_report

    settings = load_settings()
    store = open_history(history_url)
    # one fixed "now" for both reads: recency moves with the clock (0.001 day = 86 s) between two reads
    rng = TimeRange.parse(None, int(time.time()) + 86400)
    try:
        for kind in ("visitors", "products", "funnels", "segments", "recommendations", "cohorts"):
            direct = build_report(store, settings, kind, rng, limit=50)
            policed = build_report(PolicedStore(store), settings, kind, rng, limit=50)
            assert policed == direct, kind
            assert any(section.rows for section in direct.sections), kind  # the data is really read
    finally:
        store.close()
