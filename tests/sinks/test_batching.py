import pytest

from sinks.base import Columns, EncodedRows, JsonColumns, ListSink, SinkUnavailable, merge_rows


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
    assert sink.pending() == 6
    sink.flush()
    assert sizes == [4, 2]
    assert sink.tables["hits"] == [{"i": i, "s": s} for i, s in enumerate("abcdef")]


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
