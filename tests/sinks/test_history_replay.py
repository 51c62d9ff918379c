"""Property: however a batch is redelivered (slices, repeats, any order), answers equal the distinct events."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinks.reads import queries as hq
from sinks.testing import fresh_history
from sinks.testing.events import ROWS_T0 as T0, make_pageviews

pytestmark = pytest.mark.integration
_example = itertools.count()


@pytest.fixture(scope="module")
def shared_store(history_place):
    with fresh_history(history_place, "replay") as store:
        yield store


deliveries = st.lists(st.tuples(st.integers(0, 59), st.integers(1, 60), st.booleans()), min_size=1, max_size=6)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), extra=deliveries)
def test_any_redelivery_pattern_gives_the_distinct_answer(shared_store, seed, extra):
    host = f"replay{next(_example)}.example"  # each example reads only its own rows
    pvs = [p | {"host": host, "event_id": f"{host}-{p['event_id']}"} for p in make_pageviews(60, seed=seed)]
    shared_store.write("pageviews", pvs)  # the first delivery: everything
    for start, length, backwards in extra:  # then redeliveries of arbitrary slices
        part = pvs[start:start + length]
        shared_store.write("pageviews", part[::-1] if backwards else part)

    humans = [p for p in pvs if not p["is_bot"]]
    per_5min = hq.pageviews_per_interval(shared_store, T0, T0 + 300, 300, host=host)
    assert per_5min == [{"t": T0, "pageviews": len(humans), "visitors": len({p["visitor_id"] for p in humans})}]
    top = hq.top(shared_store, "path", T0, T0 + 300, limit=1, host=host)
    best = min({p["path"] for p in humans}, key=lambda v: (-sum(p["path"] == v for p in humans), v))  # ties: by value
    assert top[0]["value"] == best
    assert top[0]["pageviews"] == sum(p["path"] == best for p in humans)
