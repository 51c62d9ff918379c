"""`visitwire demo` end to end: shop + crowd + live capture on lo + embedded broker + worker + chdb.

Runs the real command as a subprocess (root: live capture needs CAP_NET_RAW), then checks
what a user would look at: the printed dashboard URL and live figures, Redis live state,
and the history store.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from config.settings import Settings
from engine.services import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _query(env: dict, url: str, sql: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "engine.cli", "query", "--clickhouse", url, " ".join(sql.split())],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return orjson.loads(r.stdout.splitlines()[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_demo_shows_pageviews_sessions_members_and_purchases(tmp_path, redis_server):
    prefix = f"demo{uuid.uuid4().hex[:6]}:"
    history_url = f"chdb://{tmp_path / 'chdb'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")}
    env.update({"VISITWIRE_DATA_DIR": str(tmp_path / "data"), "VISITWIRE_HISTORY__URL": history_url,
                "VISITWIRE_REDIS__URL": redis_server.url, "VISITWIRE_REDIS__KEY_PREFIX": prefix,
                "VISITWIRE_WEB__PORT": str(free_port()), "PYTHONUNBUFFERED": "1"})
    started = time.time()
    r = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--duration", "40", "--visitors", "30",
                        "--seed", "3"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "dashboard:" in r.stderr and "?token=" in r.stderr  # the URL to open, with the generated token
    assert "visitors now" in r.stderr and "top pages" in r.stderr  # live figures while it ran
    assert not (tmp_path / "data" / "engine.json").exists()
    summary = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 2:
            summary[cells[0]] = int(cells[1].replace(",", "")) if cells[1].replace(",", "").isdigit() else cells[1]
    # Live capture on lo saw every request the shop served, and the worker processed each one.
    assert summary["hits"] == summary["requests served by the shop"] == summary["events processed"] > 100
    served = summary["requests served by the shop"]
    assert summary["transactions captured"] == f"{served:,} of {served:,} (all)"
    # set-up compiled every kernel the live run uses: none was compiled (numba writes its cache files then)
    # while the crowd browsed, and no compile was announced
    fresh = [p.name for room in ("capture", "processors") for p in (REPO / room / "__pycache__").glob("*.nb?")
             if p.stat().st_mtime >= started]
    assert fresh == [] and "not compiled for this machine" not in r.stderr
    assert summary["page views"] > 0 and summary["sessions"] > 0 and summary["orders placed"] > 0

    from sinks.redis_live import LiveStateReader

    reader = LiveStateReader(redis_server.url, Settings(redis={"url": redis_server.url, "key_prefix": prefix}))
    try:
        snap = reader.snapshot(minutes=10)
    finally:
        reader.close()
    totals = snap["totals"]
    assert totals["pageviews"] > 0 and totals["sessions"] > 0 and totals["hits"] > totals["pageviews"]
    assert totals["goals"] > 0 and totals["revenue"] > 0
    assert totals["member_pageviews"] > 0 and totals["bot_hits"] > 0

    h = _query(env, history_url, """
        SELECT (SELECT uniqExact(event_id) FROM pageviews) AS pageviews,
               (SELECT count() FROM sessions FINAL) AS sessions,
               (SELECT uniqExact(member_id) FROM pageviews WHERE member_id != '') AS members,
               (SELECT sum(revenue) FROM sessions FINAL) AS revenue,
               (SELECT uniqExact(event_id) FROM hits WHERE path = '/order/complete' AND status = 200) AS orders,
               (SELECT uniqExact(event_id) FROM hits WHERE status = 404) AS not_found,
               (SELECT uniqExact(event_id) FROM hits WHERE status = 500) AS errors,
               (SELECT uniqExact(visitor_id) FROM pageviews WHERE is_bot = 0) AS visitors""")
    assert h["pageviews"] > 0 and h["sessions"] > 0 and h["visitors"] > 1
    assert h["members"] > 0
    assert h["orders"] > 0 and float(h["revenue"]) > 0
    assert h["not_found"] + h["errors"] > 0
