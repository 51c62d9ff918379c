"""Retention as README's Operations section says: history tables are partitioned by month, and
`visitwire query --unsafe "ALTER TABLE t DROP PARTITION YYYYMM"` drops one month and nothing else."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sinks.testing.events import make_hits

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_dropping_a_month_keeps_the_next(clickhouse_history):
    store = clickhouse_history
    url = store.url
    jan, feb = (datetime(2026, m, 10, tzinfo=timezone.utc).timestamp() for m in (1, 2))
    hits = [{**h, "ts": jan + i} for i, h in enumerate(make_hits(30, seed=1, prefix="jan"))] + \
           [{**h, "ts": feb + i} for i, h in enumerate(make_hits(20, seed=2, prefix="feb"))]
    store.add("hits", hits)
    store.flush()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")}
    for table in ("hits", "hits_per_minute"):
        r = subprocess.run([sys.executable, "-m", "engine.cli", "query", "--unsafe", "--clickhouse", url,
                            f"ALTER TABLE {table} DROP PARTITION 202601"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    left = store.query("SELECT uniqExact(event_id) AS n, min(ts_epoch) AS first FROM hits")[0]
    rollup = store.query("SELECT sum(n) AS n FROM (SELECT uniqExactMerge(hits) AS n FROM hits_per_minute "
                         "GROUP BY minute)")[0]
    assert int(left["n"]) == 20 and float(left["first"]) >= feb
    assert int(rollup["n"]) == 20
