"""Notes on the timeline ("newsletter sent", "price change"): shown on the screen's charts so a jump in
the figures has its reason beside it. One history table, `annotations`: each change is a new version of
a note (a deletion too, with deleted set), so reads take the latest version per id."""
from __future__ import annotations

import time
import uuid
from typing import Any

from sinks.reads.common import ALL_TIME, AnalyticsError, History, TimeRange, num

MAX_TEXT = 500


def annotations(store: History, rng: TimeRange = ALL_TIME) -> list[dict[str, Any]]:
    """The notes about moments in the range, oldest first."""
    rows = store.query(
        "SELECT annotation_id, argMax(ts_epoch, updated) AS t, argMax(text, updated) AS note, "
        "argMax(deleted, updated) AS gone FROM annotations GROUP BY annotation_id", {})
    out = [{"annotation_id": r["annotation_id"], "ts": num(r["t"]), "text": r["note"]}
           for r in rows if not int(num(r["gone"]))]
    out = [a for a in out if (rng.since is None or a["ts"] >= rng.since) and (rng.until is None or a["ts"] < rng.until)]
    return sorted(out, key=lambda a: (a["ts"], a["annotation_id"]))


def add_annotation(store: History, ts: Any, text: Any) -> dict[str, Any]:
    """Store a note about moment `ts` (epoch seconds); AnalyticsError says what is wrong with the input."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 < ts < 1e11:
        raise AnalyticsError("ts must be the moment in epoch seconds, e.g. 1796630400")
    if not isinstance(text, str) or not text.strip():
        raise AnalyticsError("text must be the note, e.g. \"newsletter sent\"")
    if len(text) > MAX_TEXT:
        raise AnalyticsError(f"text is {len(text)} characters; at most {MAX_TEXT}")
    row = {"annotation_id": uuid.uuid4().hex, "ts": float(ts), "text": text.strip(), "deleted": False,
           "updated": time.time()}
    store.write("annotations", [row])
    return {k: row[k] for k in ("annotation_id", "ts", "text")}


def delete_annotation(store: History, annotation_id: str) -> bool:
    """False when there is no such note (or it is already deleted)."""
    found = [a for a in annotations(store) if a["annotation_id"] == annotation_id]
    if not found:
        return False
    store.write("annotations", [{**found[0], "deleted": True, "updated": time.time()}])
    return True
