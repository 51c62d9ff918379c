"""What the analytics agents (processors/analytics/agents.py) recompute in the worker and write to the history
store: RFM segment changes into `segments` (every member on the timer, a purchase's buyers right after it) and
the co-visitation pair table into `recommendations`. What they score from, and the reads of what they store
(segment sizes, timeline and movement; the refreshed recommendations), are read models in sinks/reads/rfm.py
and sinks/reads/recommendations.py.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Sequence

from sinks.reads import recommendations, rfm
from sinks.reads.common import History, TimeRange, num
from sinks.reads.goal_events import GoalConfig

# what score_members needs of the other members (rescore_members' population)
POPULATION_KEYS = ("member_id", "last_seen", "visits", "revenue")


def segment_changes(scored: Iterable[dict], previous: dict[str, str], now: float) -> list[dict]:
    """Rows (config/events.py SEGMENT_FIELDS) for members whose segment is new or different."""
    return [{"member_id": s["member_id"], "ts": now, "segment": s["segment"],
             "previous_segment": previous.get(s["member_id"], ""), "r": s["r"], "f": s["f"], "m": s["m"]}
            for s in scored if previous.get(s["member_id"]) != s["segment"]]


def recompute_segments(store: History, now: float | None = None, cfg: GoalConfig | None = None,
                       seg: rfm.SegmentConfig | None = None, claim: Callable[[list[dict]], list[dict]] | None = None
                       ) -> tuple[list[dict], list[dict]]:
    """Scores all members, stores the changes in `segments`; returns (scored members, change rows).
    `claim(changes)` keeps the changes this caller is the one to store and announce (several workers)."""
    now = now if now is not None else time.time()
    scored = rfm.compute_rfm(store, now, TimeRange(None, now), cfg, seg)
    return scored, _store_changes(store, segment_changes(scored, rfm.current_segments(store), now), claim)


def rescore_members(store: History, members: Sequence[str], population: Sequence[dict], now: float | None = None,
                    cfg: GoalConfig | None = None, seg: rfm.SegmentConfig | None = None,
                    claim: Callable[[list[dict]], list[dict]] | None = None) -> tuple[list[dict], list[dict]]:
    """recompute_segments for `members` only (the buyers of a purchase): their stats read from their own
    visitor ids, their segment by the rules (which need nothing of other members) and r, f, m as quintiles
    among `population` (the member stats of the last full run) with theirs replaced."""
    now = now if now is not None else time.time()
    seg = seg or rfm.SegmentConfig.from_settings()
    stats = rfm.member_stats(store, TimeRange(None, now), cfg, seg.window_since(now), members)
    mine = {s["member_id"] for s in stats}
    pop = [p for p in population if p["member_id"] not in mine] + stats
    scored = rfm.score_members(stats, now, seg, pop)
    return scored, _store_changes(store, segment_changes(scored, rfm.current_segments(store, members=members), now),
                                  claim)


def _store_changes(store: History, changes: list[dict], claim) -> list[dict]:
    if claim is not None and changes:
        changes = claim(changes)
    if changes:
        try:
            store.write("segments", changes)
        except Exception:
            release = getattr(claim, "release", None)
            if release is not None:
                release(changes)  # not stored: the next run finds and claims them again
            raise
    return changes


def refresh_recommendations(store: History, min_support: int = 3, now: float | None = None) -> int:
    """Recomputes the pair table inside the backend (INSERT ... SELECT, no rows travel) as a new
    generation `computed_at`, then drops older generations; returns the pairs stored."""
    now = float(now if now is not None else time.time())
    params = {"min": int(min_support), "now": now}
    store.query("INSERT INTO recommendations (product_id, recommended_id, support, computed_at) "
                "SELECT product_id, recommended_id, support, %(now)s FROM ("
                + recommendations.pairs_sql() + ")", params)
    # A mutation, rare (once per refresh); a modern server would use a TTL or a partition per generation.
    store.query("ALTER TABLE recommendations DELETE WHERE computed_at < %(now)s", {"now": now})
    rows = store.query("SELECT count() AS n FROM recommendations WHERE computed_at = %(now)s", {"now": now})
    return int(num(rows[0]["n"])) if rows else 0
