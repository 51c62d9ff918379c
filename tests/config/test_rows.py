import pickle
import tracemalloc

import orjson

from config.rows import EncodedRows


def _page_view(i: int) -> dict:
    return {"event_id": f"e{i}", "visitor_id": f"v{i % 7}", "path": "/product/" + "x" * 400, "ts": 1.5 + i}


def test_encoded_rows_hold_their_json_and_no_more():
    """A worker holds the encoded rows of every batch until its history flush: each text must take about its
    own length (orjson 3.12 on returns each output in a 4 KiB buffer or more: 4 KiB held per page view)."""
    rows = [_page_view(i) for i in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        encoded = EncodedRows.encode(rows)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    text_bytes = sum(map(len, encoded.texts))
    assert encoded.texts == [orjson.dumps(r) for r in rows]
    assert list(encoded) == rows
    assert held < 1.2 * text_bytes + 100 * len(rows), (held, text_bytes)  # bytes objects' headers, the lists
    assert pickle.loads(pickle.dumps(encoded)) == rows


def _hits_text(first: int, n: int) -> tuple[tuple[str, ...], bytes, list[dict]]:
    names = ("event_id", "ts", "path")
    rows = [{"event_id": f"e{i}", "ts": 1.5 + i, "path": f"/p{i % 3}"} for i in range(first, first + n)]
    return names, orjson.dumps([[r[f] for r in rows] for f in names]), rows


def _decoded(columns) -> bool:
    """Whether the Columns object holds decoded columns (reading the slot directly, not decoding it)."""
    from config.rows import Columns

    try:
        Columns.__dict__["columns"].__get__(columns, type(columns))
    except AttributeError:
        return False
    return True


def test_hits_held_as_text_give_the_same_rows_without_decoding_until_read():
    """A worker holds each batch's hits as their JSON text alone until its history flush (JsonColumns.of_text):
    merging the held batches and pickling them for the history writer must not decode them in the worker, and
    a sink that does read them (e.g. in-process) gets every row as it was."""
    from config.rows import Columns, JsonColumns, merge_rows

    names, text_a, rows_a = _hits_text(0, 5)
    _, text_b, rows_b = _hits_text(5, 4)
    a, b = JsonColumns.of_text(names, 5, [text_a]), JsonColumns.of_text(names, 4, [text_b])
    merged = merge_rows([a, b])
    assert type(merged) is JsonColumns and len(merged) == 9 and merged.fields == names
    sent = pickle.dumps(merged)
    assert not any(map(_decoded, (a, b, merged)))  # merged and pickled as text: no column decoded here
    assert list(pickle.loads(sent)) == rows_a + rows_b  # the history writer's side
    assert list(merged) == rows_a + rows_b  # an in-process sink's side: decoded on demand
    assert merged.column("path") == [r["path"] for r in rows_a + rows_b]
    assert list(Columns.concat([a, b])) == rows_a + rows_b
