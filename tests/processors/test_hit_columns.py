"""Raw hit JSON straight into columns (processors/hit_columns.py): the same columns as decoding each hit,
for every batch it takes; every batch with a bad hit is left to the hit-by-hit checks."""
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from config.rows import text_columns
from processors.enrich import HIT_COLUMNS, PROCESSED_COLUMNS, column_decoder, columns_of, ts_in_range, validate_hit
from sinks.testing.events import crowd, make_hit

decoder = column_decoder()


def _columns(decoded):
    """Every column of decode()'s answer, read from its JSON text, after checking that decode() gave exactly the
    columns the processors read (PROCESSED_COLUMNS) and the same values as the text."""
    if decoded is None:
        return None
    columns, text = decoded
    assert tuple(columns) == PROCESSED_COLUMNS
    every = dict(zip(HIT_COLUMNS, text_columns(text)))
    assert {name: every[name] for name in PROCESSED_COLUMNS} == columns
    return every


def _decoded_the_slow_way(values):
    """(columns, True) when every value is a good hit, else (None, False)."""
    try:
        hits = [orjson.loads(v) for v in values]
    except orjson.JSONDecodeError:
        return None, False
    if any(validate_hit(h) for h in hits):
        return None, False
    return columns_of(hits), True


def test_a_batch_of_capture_hits_is_taken_whole_and_matches_hit_by_hit_decoding():
    values = [orjson.dumps(h) for h in crowd(300, 1.7e9, seed=3).hits]
    columns = _columns(decoder.decode(values))
    assert columns is not None, "a clean batch must take the columnar path"
    expected, good = _decoded_the_slow_way(values)
    assert good and columns == expected
    assert set(columns) == set(HIT_COLUMNS) and all(len(c) == len(values) for c in columns.values())


def test_spacing_key_order_unknown_keys_escapes_and_unicode_are_decoded_like_orjson():
    hit = make_hit("e1", 1e9, "v1", "/caf\u00e9", ua='Mozilla "quoted" \\ back', extra={"k": [1, {"x": "}"}]})
    hit["unknown"] = {"nested": ["]", "\\\""]}
    reordered = dict(reversed(list(hit.items())))
    values = [orjson.dumps(hit), orjson.dumps(reordered, option=orjson.OPT_INDENT_2),
              b' { "event_id" : "e2" , "ts" : 1000000001 , "visitor_id" : "v\\u00e9" } ']
    columns = _columns(decoder.decode(values))
    assert columns == _decoded_the_slow_way(values)[0]
    assert columns["visitor_id"][2] == "v\u00e9" and columns["path"][2] is None and columns["path"][0] == "/caf\u00e9"


_values = (st.none() | st.booleans() | st.integers(-2**63, 2**70) | st.floats() | st.text(max_size=3)
           | st.just({}) | st.just([]) | st.just({"a": "}"}) | st.sampled_from([1e9, 1e11, 0, "e", ""]))
_HIT_KEYS = sorted(make_hit("e", 1e9, "v"))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(_HIT_KEYS), _values, max_size=2)
                | st.sampled_from([None, "x", 1]), max_size=5),
       st.lists(st.integers(0, 700), max_size=2), st.binary(max_size=3))
@example([{}, {"status": True}], [], b"")      # bool is not a status
@example([{}, {"status": 200.0}], [], b"")     # nor is a float
@example([{}, {"event_id": ""}], [], b"")      # an empty id
@example([{}, {}], [5], b"")                   # a cut hit
@example([{}, {}], [], b" \n")                 # trailing white space: still a good hit
def test_a_batch_is_taken_only_when_every_hit_is_good_and_then_exactly(changes, cuts, junk):
    hits = [{**make_hit(f"e{i}", 1e9 + i, "v"), **c} if isinstance(c, dict) else c for i, c in enumerate(changes)]
    values = []
    for h in hits:
        try:
            values.append(orjson.dumps(h))
        except TypeError:  # e.g. an int too large for JSON
            values.append(b"{}")
    for cut in cuts:  # truncated messages
        if values:
            values[cut % len(values)] = values[cut % len(values)][:cut]
    if values and junk:  # bytes after a hit
        values[-1] += junk
    columns = _columns(decoder.decode(values))
    expected, good = _decoded_the_slow_way(values)
    if columns is not None and ts_in_range(columns["ts"]):
        assert good, values
        assert columns == expected
    else:  # declined: it must have had a reason (a bad hit, or a ts out of range)
        assert not good or not ts_in_range(expected["ts"]), values


def test_a_repeated_or_escaped_key_sends_the_batch_to_the_hit_by_hit_path():
    good = orjson.dumps(make_hit("e1", 1e9, "v1"))
    repeated = b'{"event_id":"a","ts":1e9,"visitor_id":"v","event_id":"b"}'  # orjson keeps the last one
    escaped = b'{"event_id":"a","ts":1e9,"visitor_id":"v","p\\u0061th":"/x"}'  # "path", spelled with an escape
    assert _columns(decoder.decode([good])) is not None
    assert decoder.decode([good, repeated]) is None
    assert decoder.decode([good, escaped]) is None


_TRICKY = st.text(alphabet=st.sampled_from('ab"\\\x01\n/ \u00e9\u20ac\U0001f600'), max_size=40)  # escapes, multi-byte


@settings(max_examples=300, deadline=None)
@given(st.lists(_TRICKY | st.text(max_size=40), min_size=1, max_size=8), st.integers(0, 7))
def test_strings_of_any_length_and_content_at_any_offset_read_back_exactly(texts, pad):
    # quotes, backslashes, control characters (escaped by the encoder) and non-ASCII, wherever they fall
    # relative to the scanner's 8-byte words: the padding shifts every byte of the batch
    hits = [make_hit(f"e{i}", 1e9 + i, "v", "/" + t, ua=t, referrer=t[::-1], query=t) for i, t in enumerate(texts)]
    values = [b" " * pad + orjson.dumps(h) for h in hits]
    assert _columns(decoder.decode(values)) == columns_of(hits)


def test_joined_values_cross_a_pipe_and_read_back_as_the_values_they_were_made_of():
    """How the hits reader process hands a batch over: one bytes object and the offsets where values end."""
    import pickle

    from processors.hit_columns import JoinedValues

    values = [orjson.dumps(h) for h in crowd(40, 1.7e9, seed=4).hits] + [b"", b"not json"]
    joined = pickle.loads(pickle.dumps(JoinedValues.of(values), protocol=pickle.HIGHEST_PROTOCOL))
    assert len(joined) == len(values) and list(joined) == values
    assert [joined[i] for i in range(-len(values), len(values))] == values + values
    assert joined[3:7] == values[3:7]
    with pytest.raises(IndexError):
        joined[len(values)]
    clean = JoinedValues.of(values[:-2])
    assert decoder.transpose(clean) == decoder.transpose(values[:-2]) is not None


def test_a_joined_batch_with_a_hit_out_of_range_is_taken_hit_by_hit_like_a_list():
    from config.settings import load_settings
    from processors.agents import HitProcessor
    from processors.hit_columns import JoinedValues

    hits = crowd(40, 1.7e9, seed=5).hits
    hits[7] = {**hits[7], "ts": 1e12}  # beyond the accepted range: the columnar path declines the batch
    values = [orjson.dumps(h) for h in hits]

    def processed(batch):
        p = HitProcessor(load_settings())
        out = p.process(batch, None, p.decoder.transpose(batch))
        return [h["event_id"] for h in out.hits], out.dropped, [v["event_id"] for v in out.pageviews]

    as_list, joined = processed(values), processed(JoinedValues.of(values))
    assert joined == as_list
    assert joined[1] == 1 and len(joined[0]) == len(hits) - 1


def test_the_history_gets_every_column_of_a_batch_the_worker_decoded_in_part():
    """The worker decodes only the columns it processes; the text it hands to the history holds every column,
    whatever the values (brackets, quotes and the split text's own marker in the columns after the split),
    for a batch and for an empty one."""
    import pickle

    from config.rows import JsonColumns

    hits = [make_hit(f"e{i}", 1e9 + i, f"v{i}", "/p") for i in range(3)]
    hits[0]["uri"] = '/x"]][["y' + ',"000000000000012"]'
    hits[1]["server_ip"], hits[1]["http_version"], hits[2]["no_response"] = "::1", '"]', True
    values = [orjson.dumps(h) for h in hits]
    columns, text = decoder.decode(values)
    assert set(columns) == set(PROCESSED_COLUMNS) and "uri" not in columns
    held = pickle.loads(pickle.dumps(JsonColumns.of_text(HIT_COLUMNS, len(values), [text])))
    assert list(held) == [{name: h.get(name) for name in HIT_COLUMNS} for h in hits]
    empty, empty_text = decoder.decode([], decoder.transpose([]))
    assert all(v == [] for v in empty.values()) and text_columns(empty_text) == [[] for _ in HIT_COLUMNS]



def _near_misses(name):
    """Keys one byte away from a field's name: cut short, one byte longer, one byte changed at either end."""
    return [name[:-1], name + "s", name[:-1] + chr(ord(name[-1]) ^ 1), chr(ord(name[0]) ^ 1) + name[1:]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(_HIT_KEYS), st.integers(0, 3)), max_size=3), min_size=1,
                max_size=6), st.permutations(_HIT_KEYS), st.integers(0, 7), st.booleans())
@example([[("status", 0), ("event_id", 2)]], _HIT_KEYS, 0, False)
@example([[("user_agent", 2)], [("content_type", 3)]], _HIT_KEYS, 3, True)
def test_keys_that_nearly_spell_a_field_are_unknown_keys_where_the_field_was_expected(misses, order, pad, spaced):
    # the scanner first compares a key with the name the previous hit had at its place, a word at a time
    # (names of 1 to 16 bytes, a word's bytes past the name masked): after each plain hit comes one where
    # near misses take some fields' places and the fields come last; a key one byte off is another key
    hits = []
    for i, missed in enumerate(misses):
        hit = make_hit(f"e{i}", 1e9 + i, "v", f"/p{i}", ua=f"ua{i}")
        hits.append([(k, hit[k]) for k in order])
        replaced = dict(missed)
        hits.append([(_near_misses(k)[replaced[k]], "x") if k in replaced else (k, hit[k]) for k in order]
                    + [(k, hit[k]) for k in replaced])
    sep = b" " if spaced else b""
    values = [b" " * pad + b"{" + (b"," + sep).join(orjson.dumps(k) + sep + b":" + orjson.dumps(v) for k, v in items)
              + b"}" for items in hits]
    columns = _columns(decoder.decode(values))
    assert columns is not None and columns == _decoded_the_slow_way(values)[0]
    assert columns["user_agent"] == [f"ua{i // 2}" for i in range(len(hits))]


_NUMBERS = st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0, -0.0, 12345678, 123456789, 1234567.5, 12345678.25, 1e22, 1.5e-7, 1700000000.2475767])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NUMBERS, _NUMBERS), min_size=1, max_size=6), st.integers(0, 7))
@example([(12345678, 12345678.25), (1234567890123456.5, 200)], 0)  # a float where an integer must be, 8 digits in
def test_numbers_of_any_length_at_any_offset_are_read_and_typed_like_orjson(numbers, pad):
    # the scanner reads digits eight at a time: a '.' or an exponent anywhere in a number makes it a float,
    # which an integer field (status) does not accept, whatever its place relative to the scanner's words
    hits = [{**make_hit(f"e{i}", 1e9 + i, "v"), "status": s, "latency_ms": lat} for i, (s, lat) in enumerate(numbers)]
    values = [b" " * pad + orjson.dumps(h) for h in hits]
    columns = _columns(decoder.decode(values))
    expected, good = _decoded_the_slow_way(values)
    assert good == all(isinstance(s, int) for s, _ in numbers)
    if good:
        assert columns == expected
    else:
        assert columns is None
