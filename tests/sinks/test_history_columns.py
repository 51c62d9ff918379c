"""Event rows -> insert columns (sinks.history_columns.to_columns) agree with converting value by value."""
from __future__ import annotations

import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sinks.history_columns import CONVERTERS, ID_FIELD, TABLES, to_columns, without_empty_arrays
from sinks.testing.events import make_hits, make_pageviews

_values = (st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats() | st.text(max_size=3)
           | st.just({}) | st.just({"k": "v"}) | st.just({"k": 1}) | st.just([]))


def _by_value(table: str, rows: list) -> tuple[list[tuple], int]:
    """The reference: each row converted value by value; a row any value of which fails is dropped."""
    kept, dropped = [], 0
    for r in rows:
        try:
            if not isinstance(r, dict) or not r.get(ID_FIELD[table]):
                raise ValueError("no id")
            row = []
            for c in TABLES[table]:
                v = CONVERTERS[c.kind](r.get(c.field))
                if type(v) is int and v > c.max_int:
                    raise ValueError("too large")
                row.append(v)
            kept.append(tuple(row))
        except (ValueError, TypeError, AttributeError, OverflowError):
            dropped += 1
    return kept, dropped


def _same(a: object, b: object) -> bool:
    if {type(a), type(b)} <= {int, float}:  # an int left as is in a Float64 column: the driver packs it alike
        return float(a) == float(b) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(table=st.sampled_from(["hits", "pageviews"]),
       changes=st.lists(st.dictionaries(st.sampled_from(sorted(make_hits(1)[0]) + ["session_id", "is_bot"]),
                                        _values | st.just("<missing>"), max_size=2)
                        | st.sampled_from([None, "x"]), max_size=6))
@example(table="hits", changes=[{}, {"ts": float("nan")}])
@example(table="hits", changes=[{}, {"status": None}, {"status": 2**40}])
@example(table="hits", changes=[{}, {"client_port": True}, {"extra": None}])
@example(table="pageviews", changes=[{"latency_ms": "<missing>"}, {"is_bot": None}])
def test_columns_equal_value_by_value_conversion(table, changes):
    base = make_hits(len(changes)) if table == "hits" else make_pageviews(len(changes))
    rows = []
    for r, c in zip(base, changes):
        if not isinstance(c, dict):
            rows.append(c)
            continue
        r = {**r, **c}
        rows.append({k: v for k, v in r.items() if v != "<missing>"})
    cols, data, dropped = to_columns(table, rows)
    expected, expected_dropped = _by_value(table, rows)
    assert dropped == expected_dropped
    got = list(zip(*data)) if data and data[0] else []
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert all(_same(x, y) for x, y in zip(g, e)), (g, e)


def test_an_insert_leaves_out_array_columns_only_when_every_row_has_them_empty():
    hits = make_hits(4)
    plain = [dict(h, extra={}) for h in hits[:3]] + [dict(hits[3], extra=None)]
    names = [c.name for c in without_empty_arrays(*to_columns("hits", plain)[:2])[0]]
    assert "extra_keys" not in names and "extra_values" not in names
    assert names == [c.name for c in TABLES["hits"] if c.kind not in ("keys", "values")]
    cols, data = without_empty_arrays(*to_columns("hits", plain[:3] + [hits[3]])[:2])  # one row with extras
    assert [c.name for c in cols] == [c.name for c in TABLES["hits"]]
    assert dict(zip(data[[c.name for c in cols].index("extra_keys")][3],
                    data[[c.name for c in cols].index("extra_values")][3])) == hits[3]["extra"]
