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
