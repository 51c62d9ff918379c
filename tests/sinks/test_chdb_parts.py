"""The embedded history store lets go of merged-away data parts within seconds: each insert makes a part in its
table and in every materialized view's, merges replace them, and the parts they replace stay in memory until
chdb's cleanup thread removes them (with chdb's defaults it backs off to every 300 s: up to 1,200 held at the
soak's rate, README "Faults, losses and durability"), and its read caches are bounded."""
from __future__ import annotations

import time

import pytest

from sinks.testing.events import make_hits, make_pageviews

pytestmark = pytest.mark.integration


def _outdated(store) -> int:
    return int(store._query("SELECT value FROM system.metrics WHERE metric = 'PartsOutdated'", "CSV").bytes())


def _merged_away_parts_held_after(store, round_: int, wait_s: float) -> list[int]:
    """Insert as a quiet site's flushes do (a few rows, one insert per table), then wait up to wait_s for chdb
    to hold at most 20 merged-away parts; the counts seen."""
    for i in range(20):
        store.write("hits", make_hits(5, seed=i, prefix=f"r{round_}-{i}-"))
        store.write("pageviews", make_pageviews(5, seed=100 * round_ + i))
    held = [_outdated(store)]
    deadline = time.monotonic() + wait_s
    while held[-1] > 20 and time.monotonic() < deadline:
        time.sleep(0.5)
        held.append(_outdated(store))
    return held


def test_merged_away_parts_are_freed_within_seconds(chdb_history):
    _merged_away_parts_held_after(chdb_history, 1, 60)  # chdb's first cleanup, whenever it comes
    held = _merged_away_parts_held_after(chdb_history, 2, 20)  # chdb's default: 30-40 s after the first
    assert held[-1] <= 20, f"merged-away parts still held 20 s after the inserts: {held[0]} -> {held[-1]}"
    assert len(chdb_history.query("SELECT event_id FROM hits FINAL")) == 200  # the rows themselves stay


def test_read_caches_are_bounded(chdb_history):
    # chdb's defaults are a dedicated server's (5 GiB mark caches) and would grow with the screen's reads
    rows = chdb_history._query("SELECT name, value FROM system.server_settings WHERE name IN "
                               "('mark_cache_size', 'index_mark_cache_size')", "CSV").bytes().decode()
    sizes = {name.strip('"'): int(value.strip('"')) for name, value in (r.split(",") for r in rows.split())}
    assert sizes == {"mark_cache_size": 256 << 20, "index_mark_cache_size": 64 << 20}
