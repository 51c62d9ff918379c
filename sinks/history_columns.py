"""How event rows become history table columns: one column kind per event field of config/events.py,
the converters that check and convert values (a bad row is dropped and counted, never a crash), and the
columnar form an insert takes (`to_columns`)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable, Mapping, Sequence

from config.events import ANNOTATION_FIELDS, HIT_FIELDS, PAGEVIEW_FIELDS, SEGMENT_FIELDS, SESSION_FIELDS, Field
from config.rows import Columns, Row
from sinks.base import HistoryError

log = logging.getLogger(__name__)

# A column kind says how one event field becomes one or more table columns.
STR, INT, FLOAT, BOOL, OPT_INT, OPT_FLOAT, TIME, PAIRS = \
    "str", "int", "float", "bool", "opt_int", "opt_float", "time", "pairs"

TIME_FIELDS = {"ts", "start", "end"}


def _kind(f: Field) -> str:
    if f.name in TIME_FIELDS:
        return TIME
    if f.name == "extra":
        return PAIRS
    t = f.json_type
    nullable = isinstance(t, list) and "null" in t
    base = [x for x in t if x != "null"][0] if isinstance(t, list) else t
    if base == "string":
        return STR
    if base == "integer":
        return OPT_INT if nullable else INT
    if base == "number":
        return OPT_FLOAT if nullable else FLOAT
    if base == "boolean":
        return BOOL
    raise ValueError(f"no column kind for field {f.name} ({t})")


@dataclass(frozen=True)
class Column:
    name: str  # table column
    field: str  # event field it comes from
    kind: str
    max_int: int = (1 << 63) - 1  # integer columns: the largest value the column type holds


# Integer columns narrower than 64 bits (see the DDL); a value beyond is bad input, not a wrap-around.
_UINT_MAX = {"client_port": 65535, "server_port": 65535, "status": 65535, "pageviews": 4294967295,
             "goals": 4294967295, "r": 255, "f": 255, "m": 255}


def _columns(fields: Sequence[Field]) -> tuple[Column, ...]:
    cols: list[Column] = []
    for f in fields:
        k = _kind(f)
        if k == TIME:
            cols += [Column(f.name, f.name, TIME), Column(f.name + "_epoch", f.name, FLOAT)]
        elif k == PAIRS:
            cols += [Column(f.name + "_keys", f.name, "keys"), Column(f.name + "_values", f.name, "values")]
        else:
            cols.append(Column(f.name, f.name, k, _UINT_MAX.get(f.name, (1 << 63) - 1)))
    return tuple(cols)


TABLES: dict[str, tuple[Column, ...]] = {
    "hits": _columns(HIT_FIELDS),
    "pageviews": _columns(PAGEVIEW_FIELDS),
    "sessions": _columns(SESSION_FIELDS),
    "segments": _columns(SEGMENT_FIELDS),
    "annotations": _columns(ANNOTATION_FIELDS),
}
# A row without its id cannot be deduplicated: it is dropped (counted, logged).
ID_FIELD = {"hits": "event_id", "pageviews": "event_id", "sessions": "session_id", "segments": "member_id",
            "annotations": "annotation_id"}


def _conv_str(v: Any) -> str:
    return "" if v is None else str(v)


def _conv_int(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"not a finite number: {v}")
    return max(int(v), 0)  # unsigned columns: negatives are bad input, not worth a crash


def _conv_float(v: Any) -> float:
    if v is None:
        return 0.0
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"not a finite number: {v}")
    return f


def _conv_opt_int(v: Any) -> int | None:
    return None if v is None else _conv_int(v)


def _conv_opt_float(v: Any) -> float | None:
    return None if v is None else _conv_float(v)


def _conv_time(v: Any) -> int:
    f = _conv_float(v)
    if not 0 <= f < 4294967296:
        raise ValueError(f"timestamp out of DateTime range: {v}")
    return int(f)


def _conv_keys(v: Any) -> list[str]:
    return [str(k) for k in (v or {})]


def _conv_values(v: Any) -> list[str]:
    return [_conv_str(x) for x in (v or {}).values()]


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    STR: _conv_str, INT: _conv_int, FLOAT: _conv_float, BOOL: lambda v: 1 if v else 0,
    OPT_INT: _conv_opt_int, OPT_FLOAT: _conv_opt_float, TIME: _conv_time, "keys": _conv_keys, "values": _conv_values,
}


_NONE = type(None)
_NUMBER = {int, float}
_ARRAY_KINDS = ("keys", "values")  # the two array columns of a PAIRS field


def _fast_column(kind: str, vals: list, max_int: int) -> list | None:
    """The converted column when every value already has the expected type, else None (slow path).

    Column at a time with builtins (set/map/sum/min/max run in C): ~10x faster than per-value calls."""
    types = {*map(type, vals)}
    if kind == STR:
        return vals if types <= {str} else None
    if kind == BOOL:
        return list(map(int, vals)) if types <= {bool} else [1 if v else 0 for v in vals]
    if kind in (INT, OPT_INT):
        if not types <= ({int} if kind == INT else {int, _NONE}):
            return None
        present = vals if _NONE not in types else [v for v in vals if v is not None]
        return vals if not present or (min(present) >= 0 and max(present) <= max_int) else None
    if kind in (FLOAT, OPT_FLOAT, TIME):
        if not (types <= _NUMBER or (kind == OPT_FLOAT and types <= _NUMBER | {_NONE})):
            return None
        present = vals if _NONE not in types else [v for v in vals if v is not None]
        # A finite sum means no inf/nan among them (nan and inf propagate through a sum).
        if not math.isfinite(sum(present)):
            return None
        if kind == TIME:
            if present and (min(present) < 0 or max(present) >= 4294967296):
                return None
            return list(map(int, vals))
        return vals
    if kind in _ARRAY_KINDS and types <= {_NONE, dict}:
        none: list = []  # one shared empty array for the rows without extras (most of them); never mutated
        if kind == "keys":
            return [list(v) if v else none for v in vals]
        out = [list(v.values()) if v else none for v in vals]
        return out if all(type(x) is str for lst in out for x in lst) else None
    return None


def _field_values(rows: Sequence[Row], fields: Sequence[str]) -> dict[str, list[Any]]:
    """Each field's values over the rows (None where a row lacks it), transposed in C when every row
    has every field (the usual case)."""
    if len(fields) > 1 and rows:
        try:
            return dict(zip(fields, map(list, zip(*map(itemgetter(*fields), rows)))))
        except KeyError:  # optional fields may be left out of a row
            pass
    return {f: [r.get(f) for r in rows] for f in fields}


def to_columns(table: str, rows: Sequence[Row]) -> tuple[tuple[Column, ...], list[list[Any]], int]:
    """Event dicts -> (columns, one value list per column, rows dropped as bad input).

    A bad row (not a dict, missing id, a value of the wrong type) is dropped and logged, never a
    crash: the rest of the batch is still written. A missing optional field takes its empty value."""
    try:
        cols = TABLES[table]
    except KeyError:
        raise HistoryError(f"unknown history table {table!r}; tables are {', '.join(TABLES)}") from None
    id_field = ID_FIELD[table]
    reasons: dict[int, str] = {}  # row index -> why it is dropped
    fields = tuple(dict.fromkeys(c.field for c in cols))
    if isinstance(rows, Columns):  # already columns: no rows to take apart
        values = {f: rows.column(f) for f in fields}
    else:
        if not all(type(r) is dict for r in rows) and not all(isinstance(r, Mapping) for r in rows):
            reasons.update((i, "not an object") for i, r in enumerate(rows) if not isinstance(r, Mapping))
            rows = [r if isinstance(r, Mapping) else {} for r in rows]
        values = _field_values(rows, fields)
    ids = values[id_field]
    if not all(ids):
        reasons.update((i, f"{id_field} is missing") for i, v in enumerate(ids) if not v and i not in reasons)
    data: list[list[Any]] = []
    for c in cols:
        vals = values[c.field]
        fast = _fast_column(c.kind, vals, c.max_int)
        if fast is None:
            conv, fast = CONVERTERS[c.kind], []
            for i, v in enumerate(vals):
                try:
                    v = conv(v)
                    if type(v) is int and v > c.max_int:
                        raise ValueError(f"{v} is too large (at most {c.max_int})")
                    fast.append(v)
                except (ValueError, TypeError, AttributeError, OverflowError) as e:
                    reasons.setdefault(i, f"{c.field}: {e}")
                    fast.append(None)
        data.append(fast)
    if reasons:
        for i, why in sorted(reasons.items())[:3]:
            log.warning("history: dropped a bad %s row (%s): %.200r", table, why, rows[i])
        if len(reasons) > 3:
            log.warning("history: dropped %d bad %s rows in all", len(reasons), table)
        keep = [i for i in range(len(rows)) if i not in reasons]
        data = [[col[i] for i in keep] for col in data]
    return cols, data, len(reasons)


def without_empty_arrays(cols: Sequence[Column], data: list[list[Any]]) -> tuple[Sequence[Column], list[list[Any]]]:
    """The insert without the array columns that are empty in every row (Hit.extra, unless capture.extra_headers
    or extra_params are set): the store fills in their default, [], itself. clickhouse-driver writes array
    columns with a Python loop per row, a third of the history writer's CPU for arrays that were all empty."""
    keep = [i for i, c in enumerate(cols) if c.kind not in _ARRAY_KINDS or any(data[i])]
    if len(keep) == len(cols):
        return cols, data
    return tuple(cols[i] for i in keep), [data[i] for i in keep]
