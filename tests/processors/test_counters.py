"""Per-batch aggregation: the numba and numpy paths agree, and both match the ground truth."""
from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.live_layout import bucket_mid_ms
from config.settings import load_settings
from processors import kernels as K
from processors.agents import HitProcessor
from sinks.testing.events import crowd, make_hit

T0 = 1_700_000_000.0


def _run(use_numba: bool, values):
    p = HitProcessor(load_settings(processing={"use_numba": use_numba}))
    return [p.process(values[i:i + 700]) for i in range(0, len(values), 700)]


def test_numba_and_numpy_paths_give_identical_deltas():
    tr = crowd(300, T0, seed=3)
    values = [orjson.dumps(h) for h in tr.hits]
    with_numba, without = _run(True, values), _run(False, values)
    for a, b in zip(with_numba, without):
        assert a.delta == b.delta
        assert a.pageviews == b.pageviews and a.sessions == b.sessions


class _NotStartedYet(dict):
    """The sessions table before the Faust app started: touching it then left the app unable to stop."""
    def get(self, *args):
        raise AssertionError("the sessions store was read before the app started")

    __getitem__ = __contains__ = get


def test_a_warmed_up_processor_gives_the_same_output_and_keeps_no_warm_up_visit():
    tr = crowd(60, T0, seed=4)
    values = [orjson.dumps(h) for h in tr.hits]
    cold, warm = HitProcessor(load_settings()), HitProcessor(load_settings(), store=_NotStartedYet())
    warm.warm_up()
    warm.sessions.store = {}  # the app has started
    a, b = cold.process(values), warm.process(values)
    assert b.pageviews == a.pageviews and b.sessions == a.sessions and b.delta == a.delta
    assert warm.end_of_input() == cold.end_of_input()  # no session of the warm-up hit is left open
    assert warm.hits_in == len(values)


def test_counts_match_ground_truth():
    tr = crowd(200, T0, seed=5)
    outs = _run(True, [orjson.dumps(h) for h in tr.hits])
    pv_per_minute: dict[int, int] = {}
    pages: dict[tuple[int, str], int] = {}
    visitors: set = set()
    for o in outs:
        for m, c in o.delta.counters.items():
            pv_per_minute[m] = pv_per_minute.get(m, 0) + c.get("pageviews", 0)
        for (dim, m), members in o.delta.tops.items():
            if dim == "pages":
                for path, n in members.items():
                    pages[(m, path)] = pages.get((m, path), 0) + n
        visitors |= set(o.delta.visitors.get("all", {}))
    assert {m: n for m, n in pv_per_minute.items() if n} == tr.pageviews_per_minute
    assert pages == tr.pages
    assert visitors == set().union(*tr.visitors_by_minute.values())
    assert sum(len(o.pageviews) for o in outs) == len(tr.pageview_ids)
    assert sum(o.delta.events for o in outs) == len(tr.hits)


def test_minute_counters_and_latency_histogram_by_hand():
    hits = [make_hit("a", T0, "v1", latency_ms=10), make_hit("b", T0 + 1, "v2", "/x", status=404, latency_ms=100),
            make_hit("c", T0 + 2, "v1", "/y", status=503, latency_ms=1000),
            make_hit("d", T0 + 70, "v3", "/s.css", content_type="text/css", latency_ms=None),
            make_hit("e", T0 + 71, "v4", status=None)]
    out = HitProcessor(load_settings()).process([orjson.dumps(h) for h in hits])
    m0, m1 = int(T0 // 60), int((T0 + 70) // 60)
    assert out.delta.counters[m0] == {"hits": 3, "pageviews": 1, "sessions": 1, "errors_4xx": 1, "errors_5xx": 1,
                                      "anon_pageviews": 1, "bytes": 3 * 1234}
    assert out.delta.counters[m1]["no_response"] == 1 and out.delta.counters[m1]["static"] == 1
    hist = out.delta.latency[m0]
    assert sum(hist.values()) == 3
    for ms in (10, 100, 1000):  # each latency lands in a bucket whose middle is within 5%
        b = int(K.latency_bucket_np(np.array([ms]))[0])
        assert hist[b] == 1 and math.isclose(bucket_mid_ms(b), ms, rel_tol=0.05)
    assert out.delta.tops[("status", m1)] == {"200": 1, "none": 1}


def test_bad_hits_are_dropped_and_counted_not_fatal():
    p = HitProcessor(load_settings())
    out = p.process([b"{not json", orjson.dumps({"event_id": "x"}), orjson.dumps(make_hit("ok", T0, "v"))])
    assert out.dropped == 2 and len(out.hits) == 1
    assert p.drops == {"not JSON": 1, "missing or bad ts": 1}


@pytest.mark.parametrize("use_numba", [True, False])
def test_kernels_on_empty_codes(use_numba):
    idx = np.array([0, 0, 1], dtype=np.int64)
    counts = K.code_counts(use_numba, idx, 2, np.array([-1, 1, 1], dtype=np.int64), 2)
    assert counts.tolist() == [[0, 1], [0, 1]]
    last = K.last_seen(use_numba, np.array([0, -1, 0], dtype=np.int64), np.array([5.0, 9.0, 7.0]), 1)
    assert last.tolist() == [7.0]


def test_output_records_have_exactly_the_topic_fields():
    from config.events import PAGEVIEW_FIELDS, SESSION_FIELDS

    p = HitProcessor(load_settings())
    out = p.process([orjson.dumps(make_hit("a", T0, "v1", "/product/p9", query="utm_source=x")),
                     orjson.dumps(make_hit("b", T0 + 4000, "v1", "/"))])
    sessions = out.sessions + p.end_of_input()
    py_types = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "null": type(None)}
    for records, fields in ((out.pageviews, PAGEVIEW_FIELDS), (sessions, SESSION_FIELDS)):
        assert records
        for r in records:
            assert list(r) and set(r) == {f.name for f in fields}
            for f in fields:
                types = f.json_type if isinstance(f.json_type, list) else [f.json_type]
                assert isinstance(r[f.name], tuple(py_types[t] for t in types)), (f.name, r[f.name])


_json_values = (st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
                | st.text(max_size=20))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(sorted(make_hit("e", T0, "v"))), _json_values, max_size=8),
                max_size=20))
def test_garbage_hits_are_dropped_never_crash_the_batch(garbage):
    p = HitProcessor(load_settings())
    good = make_hit("ok", T0, "v")
    values = [orjson.dumps({**good, **g}) for g in garbage] + [orjson.dumps(good)]
    out = p.process(values)
    assert out.dropped + len(out.hits) == len(values)
    assert out.hits[-1]["event_id"] == "ok" and out.delta.events == len(out.hits)
