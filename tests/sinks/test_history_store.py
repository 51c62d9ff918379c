"""History store on both backends: ClickHouse 18.16 server and embedded chdb, same expectations."""
from __future__ import annotations

import math

import pytest

from sinks.base import HistoryError
from sinks.history import open_history
from sinks.history_columns import TABLES
from sinks.migrations import migration_files
from sinks.reads import queries as hq
from sinks.testing import fresh_history_url
from sinks.testing.events import ROWS_T0 as T0, make_hits, make_pageviews, make_sessions

pytestmark = pytest.mark.integration


@pytest.fixture
def store(history_place):
    # A store of its own per test (not yet migrated): tests do not see each other's rows.
    s = open_history(fresh_history_url(history_place), flush_interval_s=0.05)
    yield s
    s.close()


def _write(store, table, rows):
    store.add(table, rows)
    store.flush()


def test_init_twice_applies_nothing_the_second_time(store):
    every = [name for _, name, _ in migration_files()]
    assert every[0] == "0001_base"
    assert store.init_schema() == every
    assert store.init_schema() == []
    versions = store.query("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in versions] == [v for v, _, _ in migration_files()]  # one row each
    tables = {r["name"] for r in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")}
    assert {"hits", "pageviews", "sessions", "segments", "pageviews_per_minute", "hits_per_minute",
            "latency_per_minute"} <= tables


def test_a_migration_interrupted_after_an_added_column_runs_again(store):
    """0200_geo adds two columns; a db init that died after the first (recorded nothing) is run again:
    it applies 0200 and the migrations after it instead of failing on 'column already exists'."""
    import time

    from sinks.migrations import MIGRATION_COLUMNS, MIGRATIONS_TABLE_DDL

    store._execute(MIGRATIONS_TABLE_DDL)
    pending = []
    for version, name, statements in migration_files():
        if version < "0200":
            for stmt in statements:
                store._execute(stmt)
            store._insert("schema_migrations", MIGRATION_COLUMNS, [[version], [name], [int(time.time())]])
        elif version == "0200":
            store._execute(statements[0])  # ADD COLUMN country; then the process died
            pending.append(name)
        else:
            pending.append(name)
    assert store.init_schema() == pending
    cols = {r["name"] for r in store.query("SELECT name FROM system.columns WHERE database = currentDatabase() "
                                           "AND table = 'pageviews'")}
    assert {"country", "city"} <= cols
    assert store.init_schema() == []


def test_table_columns_match_the_event_fields(store):
    # config/events.py and the DDL must not drift apart: every converted column exists with that name.
    store.init_schema()
    for table, cols in TABLES.items():
        rows = store.query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = %(t)s",
                           {"t": table})
        assert [r["name"] for r in rows] == [c.name for c in cols], table


def test_written_rows_read_back_exactly(store):
    hits = make_hits(700)
    _write(store, "hits", hits[:300])
    _write(store, "hits", hits[300:])
    _write(store, "pageviews", make_pageviews(400))
    _write(store, "sessions", make_sessions(120))
    assert hq.event_counts(store) == {"hits": 700, "pageviews": 400, "sessions": 120, "segments": 0}

    no_resp = next(h for h in hits if h["status"] is None)
    row = store.query("SELECT * FROM hits WHERE event_id = %(id)s", {"id": no_resp["event_id"]})[0]
    assert row["status"] is None and row["latency_ms"] is None and row["no_response"] == 1
    assert math.isclose(row["ts_epoch"], no_resp["ts"], abs_tol=1e-6)
    assert dict(zip(row["extra_keys"], row["extra_values"])) == no_resp["extra"]
    assert row["client_ip"] == no_resp["client_ip"] and row["path"] == no_resp["path"]


def test_hits_without_extras_read_back_with_empty_extras_beside_hits_with_them(store):
    """A batch where no hit has extras leaves those columns out of its insert; the store fills them in."""
    plain = [dict(h, extra={}) for h in make_hits(40)[:20]]
    with_extras = make_hits(40)[20:]
    _write(store, "hits", plain)
    _write(store, "hits", with_extras)
    rows = store.query("SELECT event_id, extra_keys, extra_values FROM hits ORDER BY event_id")
    want = {h["event_id"]: h["extra"] for h in plain + with_extras}
    assert {r["event_id"]: dict(zip(r["extra_keys"], r["extra_values"])) for r in rows} == want
    assert sum(1 for r in rows if r["extra_keys"] == [] and r["extra_values"] == []) == len(plain)


def test_same_batch_twice_changes_no_count_rollup_or_query(store):
    hits, pvs, sessions = make_hits(500), make_pageviews(300), make_sessions(80)
    _write(store, "hits", hits)
    _write(store, "pageviews", pvs)
    _write(store, "sessions", sessions)
    lo, hi = T0, T0 + 600

    def results():
        return {
            "counts": hq.event_counts(store),
            "pv": hq.pageviews_per_interval(store, lo, hi, 60),
            "pv5": hq.pageviews_per_interval(store, lo, hi, 300, include_bots=True),
            "hits": hq.hits_per_interval(store, lo, hi, 120),
            "lat": hq.latency_quantiles(store, lo, hi),
            "top": hq.top(store, "path", lo, hi, 3),
            "sess": hq.sessions_summary(store, lo, hi),
        }
    before = results()
    assert before["counts"]["hits"] == 500 and sum(r["pageviews"] for r in before["pv"]) > 0
    # At-least-once redelivery: the whole batch again, and an overlapping slice in another order.
    _write(store, "hits", hits)
    _write(store, "hits", list(reversed(hits[100:300])))
    _write(store, "pageviews", pvs)
    _write(store, "sessions", sessions)
    assert store.query("SELECT count() AS n FROM hits")[0]["n"] > 500  # duplicates really are stored...
    assert results() == before  # ...and no answer changes


def test_rollups_equal_the_raw_table_computation(store):
    pvs, hits = make_pageviews(600, seed=5), make_hits(600, seed=6)
    _write(store, "pageviews", pvs)
    _write(store, "hits", hits)
    lo, hi = T0, T0 + 300

    for interval in (60, 120):
        rolled = hq.pageviews_per_interval(store, lo, hi, interval, host="shop.example")
        raw = {}
        for p in pvs:
            if p["host"] == "shop.example" and not p["is_bot"]:
                t = int(p["ts"]) // interval * interval
                raw.setdefault(t, [set(), set()])
                raw[t][0].add(p["event_id"])
                raw[t][1].add(p["visitor_id"])
        assert rolled == [{"t": t, "pageviews": len(raw.get(t, [()])[0]), "visitors": len(raw.get(t, [(), ()])[1])}
                          for t in range(lo, hi, interval)]

    per_minute = hq.hits_per_interval(store, lo, hi, 60)
    raw_sql = store.query(
        "SELECT intDiv(toUInt32(ts), 60) * 60 AS t, uniqExact(event_id) AS hits, "
        "uniqExactIf(event_id, no_response = 1 OR ifNull(status, 0) >= 500) AS errors "
        "FROM hits GROUP BY t ORDER BY t")
    assert [(r["t"], r["hits"], r["errors"]) for r in per_minute] == \
        [(int(r["t"]), int(r["hits"]), int(r["errors"])) for r in raw_sql]
    assert sum(r["hits"] for r in per_minute) == 600

    lat = hq.latency_quantiles(store, lo, hi, (0.5, 0.95))
    answered = sorted(h["latency_ms"] for h in hits if h["latency_ms"] is not None)
    assert lat["hits"] == len(answered)
    for q, key in ((0.5, "p50"), (0.95, "p95")):
        exact = answered[math.ceil(q * len(answered)) - 1]
        # The bucket's upper edge: never below the exact quantile, at most one bucket (2^(1/4)) above.
        assert exact <= lat[key] <= exact * 2 ** 0.25 + 1e-3, (key, exact, lat[key])


def test_top_pages_and_session_versions(store):
    pvs = make_pageviews(300, seed=9)
    _write(store, "pageviews", pvs)
    top = hq.top(store, "path", T0, T0 + 600, limit=2)
    humans = [p for p in pvs if not p["is_bot"]]
    want = sorted({p["path"] for p in humans}, key=lambda v: (-sum(p["path"] == v for p in humans), v))[:2]
    assert [r["value"] for r in top] == want
    assert top[0]["pageviews"] == sum(p["path"] == want[0] for p in humans)
    with pytest.raises(HistoryError, match="cannot rank by"):
        hq.top(store, "visitor_id; DROP TABLE hits", T0, T0 + 600)

    first = make_sessions(1)[0] | {"pageviews": 1, "bounce": True, "duration": 0.0}
    first["end"] = first["start"]
    later = first | {"pageviews": 4, "bounce": False, "end": first["start"] + 90, "duration": 90.0}
    _write(store, "sessions", [first])
    _write(store, "sessions", [later])
    summary = hq.sessions_summary(store, T0, T0 + 600)
    assert summary["sessions"] == 1 and summary["avg_pageviews"] == 4 and summary["bounce_rate"] == 0


def test_bad_rows_are_dropped_and_counted_not_fatal(store):
    good = make_hits(3)
    bad = [{"ts": T0}, dict(good[0], event_id="bad-ts", ts="yesterday"), None,
           dict(good[0], event_id="bad-n", latency_ms=float("nan")),
           dict(good[0], event_id="bad-port", client_port=70000),
           dict(good[0], event_id="bad-status", status=10**20)]
    odd_but_fine = dict(good[0], event_id="odd", status=404.0, client_port="8080", extra=None, member_id=None)
    _write(store, "hits", good + bad + [odd_but_fine])
    assert store.rows_dropped == len(bad)
    assert hq.event_counts(store)["hits"] == 4
    odd = store.query("SELECT status, client_port, extra_keys, member_id FROM hits WHERE event_id = 'odd'")
    assert odd == [{"status": 404, "client_port": 8080, "extra_keys": [], "member_id": ""}]
    with pytest.raises(HistoryError, match="unknown history table"):
        store.write("visitors", good)


def test_segments_latest_per_member(store):
    rows = [{"member_id": "m1", "ts": T0, "segment": "new", "previous_segment": "", "r": 5, "f": 1, "m": 1},
            {"member_id": "m1", "ts": T0 + 3600, "segment": "vip", "previous_segment": "new", "r": 5, "f": 5, "m": 5},
            {"member_id": "m2", "ts": T0, "segment": "new", "previous_segment": "", "r": 3, "f": 1, "m": 1}]
    _write(store, "segments", rows)
    _write(store, "segments", rows)
    assert hq.segment_counts(store) == {"new": 1, "vip": 1}


def test_bad_url_and_bad_sql_say_what_to_do(store):
    with pytest.raises(HistoryError, match="clickhouse://user:pass@host:9000/db"):
        open_history("clickhouse:///nohost")
    with pytest.raises(HistoryError, match="neither"):
        open_history("mysql://x")
    with pytest.raises(HistoryError):
        store.query("SELEC nonsense")


def test_newest_hit_is_the_latest_stored_hit_and_none_before_any(store):
    store.init_schema()
    assert hq.newest_hit(store) is None
    hits = make_hits(40, seed=6)
    _write(store, "hits", hits)
    assert hq.newest_hit(store) == pytest.approx(max(h["ts"] for h in hits), abs=1e-3)
