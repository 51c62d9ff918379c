"""Per-member figures kept per closed day (sinks/reads/member_days.py) equal the slow path over the raw tables,
on embedded chdb and the ClickHouse 18.16 server: over the whole history and from a midnight, with the
scoring window, with visits that go on past midnight, after a late insert into a day already computed, and
all on a data directory written before migration 0220 existed and then upgraded."""
from __future__ import annotations

import dataclasses

import pytest

import sinks.history_store
from sinks.migrations import migration_files
from sinks.reads import day_tables, member_days, rfm
from sinks.reads.common import TimeRange
from sinks.reads.goal_events import GoalConfig
from sinks.testing import fresh_history
from sinks.testing.events import generate

pytestmark = pytest.mark.integration

DS = generate(seed=21)
CFG = GoalConfig.from_settings()
DAY = 86400
MIDNIGHT = (DS.now // DAY - 20) * DAY
WINDOW = rfm.SegmentConfig.from_settings().window_since(DS.now)


def _figures(store, since=None, window=WINDOW):
    """(kept per day, slow path): the same call, once with a range starting a millisecond off midnight, which
    the per-day figures cannot serve (no data lies in that millisecond: both read the same requests)."""
    fast = rfm.member_stats(store, TimeRange(since, DS.now), CFG, window)
    slow = rfm.member_stats(store, TimeRange((since or 0) + 0.001, DS.now), CFG, window)
    return fast, slow


HUMAN_VIEW = next(p for p in DS.pageviews if not p["is_bot"])
ORDER = next(h for h in DS.hits if h["path"] == "/order/complete" and h["member_id"])


def _view(event_id, ts, visitor, member, session):
    return {**HUMAN_VIEW, "event_id": event_id, "ts": ts, "visitor_id": visitor, "member_id": member,
            "session_id": session}


@pytest.fixture(scope="module")
def store(history_place):
    """A data directory written before migration 0220 existed, then upgraded (`visitwire db init`)."""
    older = [m for m in migration_files() if m[0] < "0220"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sinks.history_store, "migration_files", lambda: older)
        with fresh_history(history_place, "md") as st:
            DS.write_to(st)
            mp.undo()
            assert st.init_schema()[0] == "0220_member_days"  # and the later ones
            yield st


def test_kept_figures_equal_the_slow_path(store):
    fast, slow = _figures(store)
    assert len(fast) > 10 and sum(m["orders"] for m in fast) > 5
    assert fast == slow
    assert _figures(store, since=MIDNIGHT) == _figures(store, since=MIDNIGHT)[::-1]  # fast == slow from a midnight
    assert _figures(store, window=None)[0] == _figures(store, window=None)[1]
    days = store.query("SELECT count() AS n FROM member_days_done")[0]["n"]
    assert int(days) > 20  # the closed days were computed once, then read
    assert member_days.refresh(store, CFG, member_days.day_stamps(store, CFG, int(DS.now // DAY))) == 0


def test_a_visit_going_on_past_midnight_counts_once(store):
    """A member's visit from 23:50 to 00:10: one visit, its day figures split over two days."""
    day = int(MIDNIGHT // DAY) - 3
    t0, sid = day * DAY + DAY - 600, "late-night"
    pvs = [_view(f"ln{i}", t0 + i * 600, "v-night", "m-night", sid) for i in range(3)]
    store.write("pageviews", pvs)
    fast, slow = _figures(store)
    assert fast == slow
    night = [m for m in fast if m["member_id"] == "m-night"]
    assert night and night[0]["visits"] == 1 and night[0]["first_seen"] == pytest.approx(t0)
    _, from_midnight = _figures(store, since=(day + 1) * DAY)
    assert [m["visits"] for m in from_midnight if m["member_id"] == "m-night"] == [1]  # carried into the range


def test_a_late_insert_into_a_computed_day_is_computed_again(store):
    before, _ = _figures(store)
    buyer = max(before, key=lambda m: m["orders"])
    day = int(buyer["last_seen"] // DAY) - 1
    t = day * DAY + 3600.0
    store.write("pageviews", [_view("late-pv", t, "v-late", buyer["member_id"], "late-s")])
    store.write("hits", [{**ORDER, "event_id": "late-order", "ts": t + 60, "visitor_id": "v-late",
                          "member_id": buyer["member_id"], "extra": {"x-order-amount": "123.45"}}])
    after, slow = _figures(store)
    assert after == slow
    mine = next(m for m in after if m["member_id"] == buyer["member_id"])
    assert mine["orders"] == buyer["orders"] + 1 and mine["revenue"] == pytest.approx(buyer["revenue"] + 123.45)
    assert mine["visits"] == buyer["visits"] + 1


def test_a_new_day_without_rows_reads_the_closed_days_and_its_first_view_counts_at_once(store):
    """Past midnight with nothing of the new day yet, the kept closed days alone answer (the very same
    snapshot, so scores are reused); the day's first page view is in the next answer."""
    day = int(DS.now // DAY) + 1
    later = day * DAY + 3600.0
    window = rfm.SegmentConfig.from_settings().window_since(later)
    fast = rfm.member_columns(store, TimeRange(None, later), CFG, window)
    assert rfm.member_columns(store, TimeRange(None, later + 60), CFG, window) is fast
    assert fast.stats_rows() == rfm.member_stats(store, TimeRange(0.001, later), CFG, window)
    member = fast.ids[0]
    store.write("pageviews", [_view("new-day-pv", day * DAY + 60, "v-new-day", member, "new-day-s")])
    after = rfm.member_stats(store, TimeRange(None, later), CFG, window)
    assert after == rfm.member_stats(store, TimeRange(0.001, later), CFG, window)
    mine = next(m for m in after if m["member_id"] == member)
    assert mine["last_seen"] == day * DAY + 60 and mine["visits"] == fast.stats_rows([0])[0]["visits"] + 1


def test_days_computed_a_few_at_a_time_give_the_same_figures(store, monkeypatch):
    """The first read after an upgrade computes the days in runs of at most REFRESH_ROWS rows (one query over
    90 days of 10M page views went over the server's memory limit); with runs of a few days, the same figures.
    (Other goal rules: every day's stamp is new, so every day is computed again.)"""
    monkeypatch.setattr(day_tables, "REFRESH_ROWS", 300)
    cfg = dataclasses.replace(CFG, idle_s=CFG.idle_s + 1)
    fast = rfm.member_stats(store, TimeRange(None, DS.now), cfg, WINDOW)
    assert fast == rfm.member_stats(store, TimeRange(0.001, DS.now), cfg, WINDOW) and len(fast) > 10
    rows = {1: 200, 2: 200, 3: 50, 7: 500}  # a run stops before the day that would pass 300; a big day goes alone
    assert day_tables._spans([1, 2, 3, 7], lambda d: rows.get(d, 0)) == [(1, 1), (2, 6), (7, 7)]
    assert day_tables._spans([5], lambda d: 10**9) == [(5, 5)]
