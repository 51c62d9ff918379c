"""Times given by people (CLI --from/--to, API from=/to=): one parser for every room."""
from __future__ import annotations

from datetime import datetime, timezone


def parse_epoch(text: str) -> float:
    """Epoch seconds or ISO 8601 date / date-time ('Z' or an offset; naive = UTC) -> epoch seconds.

    Raises ValueError; callers turn it into their own message (HTTP 400, CLI exit 2)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()
