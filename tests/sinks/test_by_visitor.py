"""One member's or visitor's reads (profile, activity) use copies of pageviews / hits sorted by visitor id
(migration 0230), on embedded chdb and the ClickHouse 18.16 server: on a data directory written before 0230
existed and then upgraded (the copies filled from the rows already there), each member's page views and goal
requests are those the whole-table reads give and the identity rule's truth, and its profile's figures are
the truth; rows written after the upgrade (the materialized views) reach the profile and the activity."""
from __future__ import annotations

from collections import defaultdict

import pytest

import sinks.history_store
from sinks.migrations import migration_files
from sinks.reads import customers, profiles
from sinks.reads.common import TimeRange
from sinks.reads.goal_events import GoalConfig
from sinks.reads.members import member_goals, member_pageviews
from sinks.testing import fresh_history
from sinks.testing.events import generate

pytestmark = pytest.mark.integration

DS = generate(seed=17)
CFG = GoalConfig.from_settings()
OWNER = DS.owners()
MEMBERS = sorted({m for m in OWNER.values() if m})
HUMAN_IDS = {p["event_id"] for p in DS.human_pageviews}
PURCHASES = {g["event_id"]: g["goal_value"] for g in DS.human_goals if g["goal"] == CFG.purchase}


@pytest.fixture(scope="module")
def store(history_place):
    """A data directory written before migration 0230 existed, then upgraded (`visitwire db init`)."""
    older = [m for m in migration_files() if m[0] < "0230"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sinks.history_store, "migration_files", lambda: older)
        with fresh_history(history_place, "bv") as st:
            DS.write_to(st)
            mp.undo()
            assert st.init_schema()[0] == "0230_by_visitor"  # and the later ones
            yield st


def test_each_members_rows_are_the_whole_tables_and_the_truth(store):
    everyone, params = member_pageviews(TimeRange())
    whole_pv = defaultdict(set)
    for r in store.query(f"SELECT a_member, event_id FROM {everyone}", params):
        whole_pv[r["a_member"]].add(r["event_id"])
    goals, gparams = member_goals(CFG, TimeRange())
    whole_goals = defaultdict(set)
    for r in store.query(f"SELECT a_member, event_id FROM {goals}", gparams):
        whole_goals[r["a_member"]].add(r["event_id"])
    assert len(MEMBERS) > 10 and sum(map(len, whole_goals.values())) > 10
    for m in MEMBERS:
        one, params = member_pageviews(TimeRange(), member=m)
        got = {r["event_id"] for r in store.query(f"SELECT event_id FROM {one}", params)}
        assert got == whole_pv[m] == {e for e, o in OWNER.items() if o == m and e in HUMAN_IDS}, m
        mine, gparams = member_goals(CFG, TimeRange(), m)
        got = {r["event_id"] for r in store.query(f"SELECT event_id FROM {mine}", gparams)}
        assert got == whole_goals[m], m


def test_every_members_profile_is_the_truth(store):
    for m in MEMBERS:
        got = profiles.member_profile(store, m, cfg=CFG, now=DS.now)
        views = sum(1 for e in HUMAN_IDS if OWNER[e] == m)
        if not views:  # only a goal request of its own: no profile (as before 0230)
            assert got is None
            continue
        orders = [v for e, v in PURCHASES.items() if OWNER.get(e) == m]
        assert got["pageviews"] == views, m
        assert got["purchases"] == len(orders), m
        assert got["revenue"] == pytest.approx(round(sum(orders), 2)), m


def test_rows_written_after_the_upgrade_reach_the_profile_and_activity(store):
    view = next(p for p in DS.human_pageviews if p["member_id"])
    order = next(h for h in DS.hits if h["event_id"] in PURCHASES and h["member_id"])
    t0 = DS.now - 3600
    pvs = [{**view, "event_id": f"new-pv{i}", "ts": t0 + 60 * i, "visitor_id": "v-new", "member_id": "m-new",
            "session_id": "s-new"} for i in range(3)]
    store.write("pageviews", pvs)
    store.write("hits", [{**order, "event_id": "new-order", "ts": t0 + 150, "visitor_id": "v-new",
                          "member_id": "m-new"}])
    prof = profiles.member_profile(store, "m-new", cfg=CFG, now=DS.now)
    assert (prof["visitor_ids"], prof["pageviews"], prof["visits"], prof["purchases"]) == (["v-new"], 3, 1, 1)
    assert prof["revenue"] == pytest.approx(round(PURCHASES[order["event_id"]], 2))
    act = customers.member_activity(store, "m-new", CFG, min_support=2)
    assert [v["pageviews"] for v in act["visits"]] == [3]
    assert [o["value"] for o in act["orders"]] == [round(PURCHASES[order["event_id"]], 2)]
    seen = customers.visitor_activity(store, "v-new", CFG, min_support=2)
    assert [v["session_id"] for v in seen["visits"]] == ["s-new"] and len(seen["goals"]) == 1
