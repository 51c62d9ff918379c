"""Session rules: idle gap, maximum length, midnight, timer-driven close, replays."""
from __future__ import annotations

from types import SimpleNamespace

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import ProcessingSettings
from processors.app import TableStore
from processors.sessionizer import (FORGET_AFTER_S, Sessionizer, Watermark, deadline, next_midnight, session_id_for)

S = ProcessingSettings(session_idle_s=1800, session_max_s=4 * 3600, split_at_midnight=True)
DAY0 = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC


def pv(eid: str, ts: float, visitor: str = "v1", path: str = "/", **kw) -> dict:
    return {"event_id": eid, "ts": ts, "visitor_id": visitor, "member_id": kw.get("member_id", ""), "path": path,
            "channel": kw.get("channel", "direct"), "referrer_host": "", "utm_source": "", "utm_medium": "",
            "utm_campaign": "", "browser": "Chrome", "os": "Windows", "device": "desktop", "is_bot": False,
            "goal": kw.get("goal", ""), "goal_value": kw.get("goal_value", 0.0)}


def feed(sz: Sessionizer, *pvs) -> tuple[list[str], list[dict]]:
    closed, ids = [], []
    for p in pvs:
        ids.append(sz.on_pageview(p, closed)[0])
    return ids, closed


def test_idle_gap_splits_sessions_and_fields_are_filled():
    sz = Sessionizer(S, {})
    t = DAY0 + 3600
    ids, closed = feed(sz, pv("a", t, path="/", channel="search"), pv("b", t + 600, path="/cart"),
                       pv("c", t + 600 + 1800, path="/again"))
    assert ids[0] == ids[1] != ids[2]
    assert len(closed) == 1
    s = closed[0]
    assert s["close_reason"] == "idle"
    assert (s["start"], s["end"], s["duration"], s["pageviews"]) == (t, t + 600, 600, 2)
    assert (s["entry_page"], s["exit_page"], s["bounce"], s["channel"]) == ("/", "/cart", False, "search")
    assert s["session_id"] == session_id_for("v1", "a")
    assert "recent" not in s


def test_max_length_closes_a_long_session():
    sz = Sessionizer(ProcessingSettings(session_idle_s=1800, session_max_s=3600), {})
    t = DAY0 + 3600
    ids, closed = feed(sz, *[pv(f"e{i}", t + i * 900) for i in range(6)])  # every 15 min for 75 min
    assert [c["close_reason"] for c in closed] == ["max_length"]
    assert closed[0]["pageviews"] == 4 and len(set(ids)) == 2


def test_midnight_splits_and_can_be_turned_off():
    t = DAY0 + 86400 - 300  # 23:55
    sz = Sessionizer(S, {})
    ids, closed = feed(sz, pv("a", t), pv("b", t + 600))  # 00:05 next day
    assert [c["close_reason"] for c in closed] == ["midnight"] and ids[0] != ids[1]
    sz = Sessionizer(ProcessingSettings(split_at_midnight=False), {})
    ids, closed = feed(sz, pv("a", t), pv("b", t + 600))
    assert closed == [] and ids[0] == ids[1]
    assert next_midnight(t) == DAY0 + 86400


def test_timer_closes_without_new_events_and_same_result_as_event_driven():
    t = DAY0 + 7200
    timer = Sessionizer(S, {})
    feed(timer, pv("a", t, "v1"), pv("b", t + 60, "v1"), pv("c", t + 100, "v2"))
    assert timer.expire(t + 60 + 1799) == []  # not yet idle
    closed = timer.expire(t + 100 + 1800)
    assert sorted(c["visitor_id"] for c in closed) == ["v1", "v2"]
    assert timer.open_count() == 0 and timer.get("v1")["closed"]
    event_driven = Sessionizer(S, {})
    _, by_event = feed(event_driven, pv("a", t, "v1"), pv("b", t + 60, "v1"), pv("z", t + 5000, "v1"))
    assert by_event[0] == next(c for c in closed if c["visitor_id"] == "v1")


def test_the_timer_closes_at_the_last_deadline_in_deadline_order_and_holds_an_entry_per_visitor():
    """Page views move a session's deadline later without queueing a timer entry each: the timer still closes each
    session at its latest deadline, sessions in the order of their deadlines, and its queue stays one entry per
    visitor, not one per page view (30 minutes of page views at the idle default)."""
    t = DAY0 + 3600
    sz = Sessionizer(S, {})
    feed(sz, *[pv(f"a{i}", t + i, "v1") for i in range(200)])  # v1's deadline moves 199 times: t + 199 + 1800
    feed(sz, pv("b", t + 100, "v2"), pv("c", t + 150, "v3"), pv("d", t + 160, "v2"))  # t + 1960, t + 1950
    assert len(sz._heap) <= 3
    assert sz.expire(t + 1949) == []
    assert [c["visitor_id"] for c in sz.expire(t + 1960)] == ["v3", "v2"]
    assert sz.expire(t + 1998) == []
    (v1,) = sz.expire(t + 2000)
    assert (v1["visitor_id"], v1["pageviews"], v1["end"], v1["close_reason"]) == ("v1", 200, t + 199, "idle")
    # one expire far ahead closes the three in deadline order, as a queue entry per page view did
    again = Sessionizer(S, {})
    feed(again, *[pv(f"a{i}", t + i, "v1") for i in range(200)])
    feed(again, pv("b", t + 100, "v2"), pv("c", t + 150, "v3"), pv("d", t + 160, "v2"))
    assert [c["visitor_id"] for c in again.expire(t + 2100)] == ["v3", "v2", "v1"]
    assert len(again._heap) == 3  # the three closed sessions' markers, forgotten FORGET_AFTER_S later
    assert again.expire(t + 1999 + FORGET_AFTER_S) == [] and len(again._heap) == 0 and again.get("v1") is None


def test_watermark_follows_event_time_then_wall_clock():
    wall = [1000.0]
    wm = Watermark(clock=lambda: wall[0])
    assert wm.now() is None
    wm.observe(DAY0)  # old traffic replayed
    wall[0] += 5
    assert wm.now() == DAY0 + 5
    wm.observe(DAY0 - 100)  # late event does not move time back
    assert wm.now() == DAY0 + 5


def test_state_survives_in_the_store_and_index_is_rebuilt_after_restart():
    store: dict = {}
    sz = Sessionizer(S, store)
    t = DAY0 + 3600
    feed(sz, pv("a", t, "v1"), pv("b", t + 10, "v2"))
    assert store == {}  # nothing written before the flush
    sz.begin_flush()
    assert sz.get("v1")["pageviews"] == 1  # readable while the flush is in progress
    sz.commit_flush()
    assert set(store) == {"v1", "v2"}
    restarted = Sessionizer(S, store)  # new worker, table restored from the changelog
    ids, closed = feed(restarted, pv("c", t + 20, "v1"))
    assert ids[0] == session_id_for("v1", "a") and closed == []
    restarted.flush_state()
    closed = restarted.expire(t + 20 + 1800)
    assert sorted(c["pageviews"] for c in closed) == [1, 2]
    restarted.flush_state()
    assert all(st["closed"] for st in store.values())  # small markers against redelivery ...
    restarted.expire(t + 20 + 1800 + FORGET_AFTER_S)
    restarted.flush_state()
    assert store == {}  # ... forgotten later


def test_a_state_changed_in_place_reaches_the_changelog_as_each_flush_began():
    """Page views change a state in place (no copy), one taken from the table and one a flush in progress holds
    alike: the flush writes the changelog record made when it began (the state the rows being stored left), the
    next flush the state's new value."""
    table = SimpleNamespace(data={})  # the Faust table's in-memory dict, as TableStore uses it
    store = TableStore(table, 4, outbox=None)

    def changelog() -> list[tuple[str, dict]]:  # the records the flushes wrote since the last call, decoded
        out = [(orjson.loads(k), orjson.loads(v)) for _, k, v in store._pending]
        store._pending.clear()
        return out

    sz = Sessionizer(S, store)
    t = DAY0 + 3600
    feed(sz, pv("a", t, path="/a"), pv("b", t + 1, path="/b"))
    sz.flush_state()
    assert [(k, v["pageviews"], v["recent"]) for k, v in changelog()] == [("v1", 2, ["a", "b"])]
    feed(sz, pv("c", t + 2, path="/c", goal="signup", goal_value=5.0))  # the table's state, updated
    assert changelog() == []  # nothing written before the flush
    sz.begin_flush()
    held = sz.get("v1")
    frozen = orjson.dumps(held)
    feed(sz, pv("d", t + 3, path="/d"), pv("c", t + 2, path="/c"))  # during the flush: one new, one redelivered
    assert sz.get("v1") is held and held["pageviews"] == 4 and sz.duplicates == 1  # changed in place
    sz.commit_flush()
    (key, written), = changelog()
    assert key == "v1" and orjson.dumps(written) == frozen
    assert (written["pageviews"], written["exit_page"], written["goals"], written["revenue"], written["recent"]) == \
        (3, "/c", 1, 5.0, ["a", "b", "c"])
    feed(sz, pv("e", t + 4, path="/e"))  # committed again: changed in place
    sz.flush_state()
    (key, written), = changelog()
    assert (written["pageviews"], written["exit_page"], written["recent"]) == (5, "/e", ["a", "b", "c", "d", "e"])
    assert table.data["v1"] == written  # the table and its changelog agree after the flush
    restarted = Sessionizer(S, {"v1": written})  # a worker restored from that changelog carries on the same
    ids, closed = feed(restarted, pv("f", t + 5), pv("e", t + 4))
    assert ids == [session_id_for("v1", "a")] * 2 and restarted.get("v1")["pageviews"] == 6 and closed == []


def test_redelivered_pageviews_are_not_counted_twice():
    sz = Sessionizer(S, {})
    t = DAY0 + 3600
    feed(sz, pv("a", t), pv("b", t + 1), pv("a", t), pv("b", t + 1))
    assert sz.get("v1")["pageviews"] == 2 and sz.duplicates == 2
    closed = sz.close_all()
    assert closed[0]["close_reason"] == "shutdown" and closed[0]["pageviews"] == 2


def test_pageviews_redelivered_after_their_session_closed_open_no_new_session():
    sz = Sessionizer(S, {})
    t = DAY0 + 3600
    ids, _ = feed(sz, pv("a", t), pv("b", t + 10))
    closed = sz.expire(t + 10 + 1800)  # timer closed it, then a rebalance redelivers both
    assert len(closed) == 1
    again, more = feed(sz, pv("a", t), pv("b", t + 10))
    assert again == ids and more == [] and sz.open_count() == 0
    # and after an event-driven close the previous session's page views are still recognised
    ids2, closed2 = feed(sz, pv("c", t + 5000), pv("d", t + 9000))
    assert len(closed2) == 1
    again2, _ = feed(sz, pv("c", t + 5000))
    assert again2 == [ids2[0]] and sz.get("v1")["pageviews"] == 1


def test_goals_and_revenue_add_up_including_post_goals():
    sz = Sessionizer(S, {})
    t = DAY0 + 3600
    feed(sz, pv("a", t, member_id="m1"), pv("b", t + 5, goal="signup", goal_value=0.0))
    assert sz.on_goal("v1", "post1", 50.5) and not sz.on_goal("v1", "post1", 50.5)  # redelivery ignored
    assert not sz.on_goal("nobody", "post2", 10)  # no open session: the hit still counts, no session
    s = sz.close_all()[0]
    assert (s["goals"], s["revenue"], s["member_id"]) == (2, 50.5, "m1")


def test_session_ids_are_deterministic_across_replays():
    t = DAY0 + 3600
    runs = []
    for _ in range(2):
        sz = Sessionizer(S, {})
        _, closed = feed(sz, pv("a", t), pv("b", t + 4000), pv("c", t + 9000))
        runs.append([c["session_id"] for c in closed + sz.close_all()])
    assert runs[0] == runs[1] and len(set(runs[0])) == 3


def test_deadline_picks_the_earliest_rule():
    st = {"start": DAY0 + 86400 - 60, "end": DAY0 + 86400 - 30}
    assert deadline(st, S) == (DAY0 + 86400, "midnight")
    st = {"start": DAY0, "end": DAY0 + 10}
    assert deadline(st, S) == (DAY0 + 1810, "idle")


def test_a_lagging_partition_keeps_its_sessions_open():
    sz = Sessionizer(S, {})
    t = DAY0 + 3600
    closed: list = []
    sz.on_pageview(pv("a", t, "fast"), closed, partition=0)
    sz.on_pageview(pv("b", t, "slow"), closed, partition=1)
    # partition 0 has seen traffic an hour later; partition 1 has not caught up yet
    out = sz.expire({0: t + 3600, 1: t + 100})
    assert [c["visitor_id"] for c in out] == ["fast"]
    assert [c["visitor_id"] for c in sz.expire({0: t + 3700, 1: t + 1800})] == ["slow"]
    assert "p" not in out[0]


def test_sessions_of_partitions_moved_to_another_worker_are_forgotten_not_closed():
    store: dict = {}
    sz = Sessionizer(S, store)
    t = DAY0 + 3600
    closed: list = []
    sz.on_pageview(pv("a", t, "stays"), closed, partition=0)
    sz.on_pageview(pv("b", t, "moves"), closed, partition=1)
    sz.flush_state()
    sz.on_pageview(pv("c", t + 5, "moves-too"), closed, partition=1)  # not flushed yet
    assert sz.keep_partitions({0}) == 2
    assert set(store) == {"stays"} and sz.get("moves-too") is None
    # the timer closes only what this worker still owns: the new owner closes the others
    assert [c["visitor_id"] for c in sz.expire(t + 7200)] == ["stays"]


def test_deadline_reason_on_a_tie_is_idle_then_max_length_then_midnight():
    s = ProcessingSettings(session_idle_s=1800, session_max_s=3600, split_at_midnight=True)
    start = DAY0 + 86400 - 3600  # the max length ends at midnight
    assert deadline({"start": start, "end": start + 1800}, s) == (DAY0 + 86400, "idle")  # all three at once
    assert deadline({"start": start, "end": start + 1900}, s) == (DAY0 + 86400, "max_length")  # max = midnight
    early = DAY0 + 86400 - 1800  # midnight first
    assert deadline({"start": early, "end": early + 60}, s) == (DAY0 + 86400, "midnight")
    assert deadline({"closed": True, "forget_at": 5.0}, s) == (5.0, "forget")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=50, unique=True), st.integers(1, 64))
def test_changelog_records_go_to_the_partition_kafkas_murmur2_gives_their_visitor(visitors, partitions):
    """A flush hashes the keys of its changelog records all at once: each record must land on the partition the
    capture's producer and the Java client give that visitor's hits (murmur2 & 0x7fffffff, modulo the count),
    or a restarted worker restores the session with the wrong partition's hits."""
    from aiokafka.partitioner import murmur2

    table = SimpleNamespace(data={})
    store = TableStore(table, partitions, outbox=None)
    store.set_many((v, {"n": i}) for i, v in enumerate(visitors))
    assert [(p, orjson.loads(k)) for p, k, _ in store._pending] == \
        [((murmur2(v.encode()) & 0x7FFFFFFF) % partitions, v) for v in visitors]
    assert table.data == {v: {"n": i} for i, v in enumerate(visitors)}


def test_a_flush_that_failed_writes_every_state_as_the_retry_began():
    """A flush whose history write failed is begun again with what came since: the retry writes each visitor once,
    a state changed meanwhile as it is now and one left alone as it was, and a visitor forgotten meanwhile not
    at all (its deletion, not a stale state)."""
    table = SimpleNamespace(data={})
    store = TableStore(table, 4, outbox=None)
    sz = Sessionizer(S, store)
    t = DAY0 + 3600
    feed(sz, pv("c", t, visitor="v3"))
    sz.flush_state()
    store._pending.clear()
    feed(sz, pv("a", t, visitor="v1"), pv("b", t + 1, visitor="v2"), pv("e", t + 2, visitor="v3"))
    sz.begin_flush()  # the history write fails: commit_flush never runs
    feed(sz, pv("d", t + 3, visitor="v1"))
    sz._put("v3", None)  # forgotten meanwhile (as expire does for a marker)
    sz.begin_flush()  # the retry
    sz.commit_flush()
    written = {orjson.loads(k): (orjson.loads(v) if v != b"null" else None) for _, k, v in store._pending}
    assert set(written) == {"v1", "v2", "v3"} and len(store._pending) == 3
    assert written["v1"]["recent"] == ["a", "d"] and written["v2"]["recent"] == ["b"] and written["v3"] is None
    assert table.data.keys() == {"v1", "v2"} and table.data["v1"]["pageviews"] == 2
