import time

import pytest

from config.rows import Columns, EncodedRows, JsonColumns, merge_rows
from sinks.base import SinkUnavailable
from sinks.testing import ListSink


class FlakySink(ListSink):
    def __init__(self, failures, exc=SinkUnavailable, **kw):
        super().__init__(retry_backoff_s=(), **kw)
        self.failures, self.exc = failures, exc

    def write(self, table, rows):
        if self.failures:
            self.failures -= 1
            raise self.exc("backend away")
        super().write(table, rows)


@pytest.mark.parametrize("exc", [SinkUnavailable, RuntimeError])
def test_failed_flush_keeps_rows_in_order(exc):
    sink = FlakySink(failures=1, exc=exc)
    sink.add("hits", [{"i": 1}, {"i": 2}])
    with pytest.raises(exc):
        sink.flush()
    sink.add("hits", [{"i": 3}])
    assert sink.pending() == 3
    assert sink.flush() == 3
    assert [r["i"] for r in sink.tables["hits"]] == [1, 2, 3]
    assert sink.pending() == 0


def test_large_buffers_are_written_in_bounded_batches():
    sizes = []

    class Recording(ListSink):
        def write(self, table, rows):
            sizes.append(len(rows))
            super().write(table, rows)

    sink = Recording(max_batch_rows=4)
    sink.add("pageviews", [{"i": i} for i in range(10)])
    assert sink.due()
    sink.flush()
    assert sizes == [4, 4, 2]
    assert len(sink.tables["pageviews"]) == 10


def test_rows_added_as_columns_are_written_as_the_same_rows_in_order():
    sizes = []

    class Recording(ListSink):
        def write(self, table, rows):
            sizes.append(len(rows))
            super().write(table, rows)

    sink = Recording(max_batch_rows=4)
    sink.add("hits", Columns({"i": (0, 1, 2), "s": ("a", "b", "c")}, 3))
    sink.add("hits", Columns({"i": [3, 4, 5], "s": ["d", "e", "f"]}, 3))
    sink.add("hits", Columns({"i": [6, 7, 8, 9, 10], "s": list("ghijk")}, 5))
    assert sink.pending() == 11
    sink.flush()
    assert sizes == [3, 3, 4, 1]  # at most max_batch_rows a write, cut between the parts added where it can
    assert sink.tables["hits"] == [{"i": i, "s": s} for i, s in enumerate("abcdefghijk")]


def test_columns_mixed_with_dict_rows_keep_the_order():
    sink = ListSink()
    sink.add("hits", [{"i": 0}])
    sink.add("hits", Columns({"i": [1, 2]}, 2))
    sink.flush()
    assert [r["i"] for r in sink.tables["hits"]] == [0, 1, 2]


def test_json_columns_cross_a_process_boundary_as_their_text_and_arrive_whole():
    import pickle

    first = JsonColumns({"i": [0, 1], "s": ["a", "\u00e9"]}, 2, [b'[[0,1],["a","\\u00e9"]]'])
    second = JsonColumns({"i": [2], "s": ["c"]}, 1, [b'[[2],["c"]]'])
    merged = merge_rows([first, second])
    data = pickle.dumps(merged, protocol=pickle.HIGHEST_PROTOCOL)
    assert b'"a"' in data and b"\\u00e9" in data  # the text went, not an object per value
    arrived = pickle.loads(data)
    assert list(arrived) == list(merged) == [{"i": 0, "s": "a"}, {"i": 1, "s": "\u00e9"}, {"i": 2, "s": "c"}]
    assert list(merge_rows([first, Columns({"i": [3], "s": ["d"]}, 1)]))[-1] == {"i": 3, "s": "d"}


def test_encoded_rows_cross_a_process_boundary_as_their_json():
    import pickle

    import orjson

    rows = [{"event_id": "a", "ts": 1.5}, {"event_id": "b", "ts": 2.5}]
    first, second = EncodedRows(rows[:1], [orjson.dumps(rows[0])]), EncodedRows(rows[1:], [orjson.dumps(rows[1])])
    merged = merge_rows([first, second])
    assert merged == rows and merged.texts == [orjson.dumps(r) for r in rows]
    assert pickle.loads(pickle.dumps(merged, protocol=pickle.HIGHEST_PROTOCOL)) == rows
    assert merge_rows([first, [{"event_id": "c"}]]) == rows[:1] + [{"event_id": "c"}]


def test_a_flush_larger_than_one_write_keeps_each_write_in_its_compact_form():
    """A flush above max_batch_rows is cut between the parts added, not sliced: a slice of encoded rows
    would cross to the ClickHouse writer child as a Python object per value, several times the work."""
    import orjson

    written = []

    class Recording(ListSink):
        def write(self, table, rows):
            written.append((table, type(rows)))
            super().write(table, rows)

    sink = Recording(max_batch_rows=2)
    for i in range(3):
        sink.add("hits", JsonColumns({"i": [i]}, 1, [orjson.dumps([[i]])]))
        row = {"event_id": str(i)}
        sink.add("pageviews", EncodedRows([row], [orjson.dumps(row)]))
    sink.flush()
    assert written == [("hits", JsonColumns)] * 2 + [("pageviews", EncodedRows)] * 2
    assert [r["i"] for r in sink.tables["hits"]] == [0, 1, 2]
    assert [r["event_id"] for r in sink.tables["pageviews"]] == ["0", "1", "2"]


def test_a_trickle_waits_for_more_rows_but_never_past_the_longest_delay():
    """At a low rate a write carries more rows (each write of the history is one insert per table), yet no row
    waits longer than max_flush_delay_s; a buffer that holds the minimum goes at the interval, as before."""
    sink = ListSink(flush_interval_s=0.1, min_batch_rows=100, max_flush_delay_s=0.6)
    assert not sink.flush_due(0, 10.0)
    assert not sink.flush_due(25, 0.1) and not sink.flush_due(99, 0.59)
    assert sink.flush_due(25, 0.6)
    assert sink.flush_due(100, 0.1) and not sink.flush_due(100, 0.05)
    assert sink.flush_due(100_000, 0.0)  # max_batch_rows: at once

    sink.flush()  # the clock of every table starts now
    sink.add("hits", [{"i": i} for i in range(25)])
    time.sleep(0.2)
    assert not sink.due()  # past the interval with 25 of 100 rows: wait
    time.sleep(0.45)
    assert sink.due()      # past the longest delay: write what there is
    sink.add("pageviews", [{"i": i} for i in range(100)])
    sink.flush()
    sink.add("pageviews", [{"i": i} for i in range(100)])
    time.sleep(0.15)
    assert sink.due()      # the minimum is in: at the interval
