"""Batches of rows as they travel from the processors to the sinks: plain dict rows, `Columns`
(field -> values, as the processors already hold them), and the two forms that carry their JSON
text (`JsonColumns`, `EncodedRows`) so that handing them to another process pickles a few bytes
objects instead of a Python object per value. The contract between processors/ (who build them)
and sinks/ (who buffer and write them), kept here so neither room reaches into the other."""
from __future__ import annotations

from itertools import chain
from typing import Any, Iterable, Iterator, Mapping, Sequence

Row = Mapping[str, Any]


class Columns(Sequence):
    """Rows kept as columns (field -> values, all of one length), as the processors already have them:
    a columnar store inserts them without turning every row into a dict and back. Reads as a
    sequence of dict rows where a caller wants rows."""

    __slots__ = ("_n", "columns")

    def __init__(self, columns: Mapping[str, Sequence[Any]], n: int):
        self.columns = dict(columns)
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return Columns({f: v[i] for f, v in self.columns.items()}, len(range(*i.indices(self._n))))
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return {f: v[i] for f, v in self.columns.items()}

    def __iter__(self) -> Iterator[dict]:
        names = list(self.columns)
        return (dict(zip(names, values)) for values in zip(*self.columns.values()))

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names, in order (for JsonColumns without decoding its text)."""
        return tuple(self.columns)

    def column(self, field: str) -> list:
        """The field's values (None for every row when the field is absent)."""
        values = self.columns.get(field)
        return [None] * self._n if values is None else values if type(values) is list else list(values)

    @staticmethod
    def concat(parts: Sequence[Columns]) -> Columns:
        """One Columns of parts with the same fields, in order (a JsonColumns when every part is one)."""
        if all(type(p) is JsonColumns for p in parts):
            return JsonColumns.joined(parts)
        names = list(parts[0].columns)
        return Columns({f: list(chain.from_iterable(p.columns[f] for p in parts)) for f in names},
                       sum(len(p) for p in parts))


class JsonColumns(Columns):
    """Columns that keep the JSON text they were decoded from: `texts`, each a JSON array of columns
    `[[field 0 of each row], [field 1 ...], ...]` in the order of `columns`, for consecutive rows.

    Pickled, they travel as that text (a few bytes objects) instead of a Python object per value, and
    the receiving process decodes it again: for the ClickHouse writer child, that moves most of the
    cost of handing over a batch out of the worker's process. `of_text` keeps the text alone: its columns
    are decoded again only if this process reads them."""

    __slots__ = ("texts", "_parts", "_names")

    def __init__(self, columns: Mapping[str, Sequence[Any]], n: int, texts: list[bytes]):
        super().__init__(columns, n)
        self.texts = texts
        self._parts: list[JsonColumns] | None = None
        self._names: tuple[str, ...] = tuple(self.columns)

    @classmethod
    def of_text(cls, names: Sequence[str], n: int, texts: list[bytes]) -> JsonColumns:
        """Rows held as their text only. The worker holds a batch's hits until the history flush, and each
        held batch's decoded columns (22 x 5,000 Python objects) made the next batches' objects land on fresh
        memory: decoding a batch cost the event loop 1.5-1.9 us per hit instead of 0.9 (benchmarks/
        pipeline_bench.py --sample): the processors drop their columns when the batch is done instead."""
        out = cls.__new__(cls)
        out._n, out.texts, out._parts, out._names = n, texts, None, tuple(names)
        return out

    @classmethod
    def joined(cls, parts: Sequence[JsonColumns]) -> JsonColumns:
        """The parts as one, whose columns are merged only if this process reads them: a flush to the
        ClickHouse writer child sends the texts alone, and merging every column for nothing cost the worker
        0.15 us per hit (22 columns of 100k hits in benchmarks/pipeline_bench's backlog)."""
        out = cls.__new__(cls)
        out._n, out.texts, out._parts = sum(len(p) for p in parts), [t for p in parts for t in p.texts], list(parts)
        out._names = parts[0]._names
        return out

    @property
    def fields(self) -> tuple[str, ...]:
        return self._names

    def __getattr__(self, name: str) -> Any:  # only for what is not set: the columns of joined parts or of text
        if name != "columns":
            raise AttributeError(name)
        if self._parts is not None:
            parts, self._parts = self._parts, None
            self.columns = {f: list(chain.from_iterable(p.columns[f] for p in parts)) for f in self._names}
        else:
            self.columns = _columns_from_json(self._names, self.texts, self._n).columns
        return self.columns

    def __reduce__(self) -> tuple:
        return _columns_from_json, (self._names, self.texts, self._n)


# A transposed batch's text may come in two JSON documents back to back, so that the worker decodes only the
# columns it processes: `[[col 0], ... [col k-1]][[col k], ... [col n-1],"<length of the first, 15 digits>"]`
# (processors/hit_columns.py ColumnDecoder(head=k)). A plain one is `[[col 0], ...]` and so ends in "]]".
SPLIT_MARK = b',"%015d"]'
_SPLIT_MARK_LEN = len(SPLIT_MARK % 0)


def head_length(text: bytes) -> int | None:
    """The length of the first document of a split text; None for a plain one."""
    if text[-2:] != b'"]':
        return None
    return int(text[-_SPLIT_MARK_LEN + 2:-2])


def head_columns(text: bytes) -> list:
    """The columns of the first document (all of them for a plain text)."""
    import orjson

    head = head_length(text)
    return orjson.loads(text if head is None else memoryview(text)[:head])


def text_columns(text: bytes) -> list:
    """Every column of a plain or split text."""
    import orjson

    head = head_length(text)
    if head is None:
        return orjson.loads(text)
    view = memoryview(text)
    return orjson.loads(view[:head]) + orjson.loads(view[head:])[:-1]


def _columns_from_json(names: Sequence[str], texts: Sequence[bytes], n: int) -> Columns:
    parts = [text_columns(text) for text in texts]
    return Columns({f: list(chain.from_iterable(p[i] for p in parts)) for i, f in enumerate(names)}, n)


class EncodedRows(list):
    """Dict rows together with each row's JSON (`texts`, e.g. as already encoded for a Kafka topic).
    Pickled, they travel as that JSON, and the receiving process decodes it into dict rows again."""

    __slots__ = ("texts",)

    def __init__(self, rows: Iterable[Row], texts: list[bytes]):
        super().__init__(rows)
        self.texts = texts

    @classmethod
    def encode(cls, rows: list[Row]) -> EncodedRows:
        """The rows with their JSON, each text in a bytes object of its own size. orjson (3.12 on) returns its
        output in the buffer it wrote into, at least 4 KiB and never shrunk: a 620-byte page view held 4 KiB
        until the history flush, 5.6 of the 7.5 KiB a worker held per event of a backlog (tracemalloc; each
        page a first-touch fault). Copying out (a two-part join) costs 0.2 us a row (dumps itself 1.2)."""
        import orjson

        dumps, join = orjson.dumps, b"".join
        return cls(rows, [join((dumps(r), b"")) for r in rows])

    def __reduce__(self) -> tuple:
        return _rows_from_json, (self.texts,)


def _rows_from_json(texts: Sequence[bytes]) -> list[dict]:
    import orjson

    return list(map(orjson.loads, texts))


def merge_rows(parts: Sequence[Sequence[Row]]) -> Sequence[Row]:
    """The rows of several added parts as one sequence: columns stay columns when every part has the same fields,
    encoded rows stay encoded rows."""
    if parts and all(isinstance(p, Columns) for p in parts) and \
            all(p.fields == parts[0].fields for p in parts):
        return Columns.concat(parts)
    if parts and all(type(p) is EncodedRows for p in parts):
        return EncodedRows(chain.from_iterable(parts), [t for p in parts for t in p.texts])
    return list(chain.from_iterable(parts))
