"""Query parameters: `%(name)s` placeholders filled in as SQL literals, the same on both history backends
(numbers as numbers, strings quoted and escaped; nothing else accepted)."""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from sinks.base import HistoryError

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def sql_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise HistoryError(f"query parameter must be a finite number, got {v}")
        return repr(v)
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(sql_literal(x) for x in v) + "]"
    raise HistoryError(f"query parameter of type {type(v).__name__} is not supported (use str, int, float, list)")


def bind(sql: str, params: Mapping[str, Any] | None) -> str:
    """Fill `%(name)s` placeholders with SQL literals (the same on both backends)."""
    if not params:
        return sql

    def sub(m: re.Match) -> str:
        try:
            return sql_literal(params[m.group(1)])
        except KeyError:
            raise HistoryError(f"query parameter %({m.group(1)})s has no value") from None
    return _PLACEHOLDER.sub(sub, sql)
