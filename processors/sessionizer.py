"""Visits -> sessions, per visitor, by event time.

A session ends at the earliest of: `session_idle_s` after its last page view,
`session_max_s` after its first, or the UTC midnight after its first (when
`split_at_midnight`). The same rule closes it whether the next page view arrives
late (event-driven) or the once-a-second timer sees the watermark pass the
deadline, so a replay gives the same sessions as live processing.

Time is an event-time watermark advanced by wall clock: max event ts seen + wall
time since it arrived. Replayed old traffic closes sessions by its own clock, live
traffic by the wall clock.

Open sessions live in a MutableMapping visitor_id -> state dict (a Faust Table with
a changelog in the worker, a dict in tests). Changes are kept in a working copy and
written back once per batch (`flush_state`), so one changelog message per touched
visitor per batch, not per page view.
"""
from __future__ import annotations

import hashlib
import heapq
import time
from typing import Any, Callable, MutableMapping

from config.settings import ProcessingSettings

DAY = 86400.0
RECENT_IDS = 32  # event ids remembered per session to ignore redelivered page views after a crash
# A closed session leaves a small marker (its id and recent event ids) for this long in event time,
# so page views redelivered after a crash or rebalance are recognised instead of opening a new session.
FORGET_AFTER_S = 600.0

REASON_IDLE = "idle"
REASON_MAX = "max_length"
REASON_MIDNIGHT = "midnight"
REASON_SHUTDOWN = "shutdown"
REASON_OPEN = "open"  # not closed: an update of a session still going on


def session_id_for(visitor_id: str, first_event_id: str) -> str:
    return hashlib.blake2b(f"{visitor_id}:{first_event_id}".encode(), digest_size=8).hexdigest()


def next_midnight(ts: float) -> float:
    return (ts // DAY + 1) * DAY


def due_at(state: dict, s: ProcessingSettings) -> float:
    """Event time at which the session closes (for a closed marker, when it is forgotten): the earliest of
    idle, max length and midnight. The sessionizer asks at every page view, so no reason is built here."""
    if state.get("closed"):
        return state["forget_at"]
    due = state["end"] + s.session_idle_s
    cap = state["start"] + s.session_max_s
    if cap < due:
        due = cap
    if s.split_at_midnight:
        mid = next_midnight(state["start"])
        if mid < due:
            due = mid
    return due


def deadline(state: dict, s: ProcessingSettings) -> tuple[float, str]:
    """(due_at, the reason): on a tie idle wins over max length, and max length over midnight."""
    due = due_at(state, s)
    if state.get("closed"):
        return due, "forget"
    if due == state["end"] + s.session_idle_s:
        return due, REASON_IDLE
    return due, (REASON_MAX if due == state["start"] + s.session_max_s else REASON_MIDNIGHT)


def open_session(pv: dict, partition: int = 0, prev: dict | None = None) -> dict:
    return {
        "prev": {"session_id": prev["session_id"], "recent": prev["recent"]} if prev else None,
        "p": partition,  # Kafka partition of the visitor's hits: its watermark decides the timer close
        "session_id": session_id_for(pv["visitor_id"], pv["event_id"]),
        "visitor_id": pv["visitor_id"], "member_id": pv.get("member_id", ""),
        "start": pv["ts"], "end": pv["ts"], "pageviews": 1,
        "entry_page": pv["path"], "exit_page": pv["path"],
        "channel": pv.get("channel", ""), "referrer_host": pv.get("referrer_host", ""),
        "utm_source": pv.get("utm_source", ""), "utm_medium": pv.get("utm_medium", ""),
        "utm_campaign": pv.get("utm_campaign", ""),
        "browser": pv.get("browser", ""), "os": pv.get("os", ""), "device": pv.get("device", ""),
        "is_bot": bool(pv.get("is_bot", False)),
        "goals": 1 if pv.get("goal") else 0, "revenue": float(pv.get("goal_value") or 0.0),
        "recent": [pv["event_id"]],
    }


def add_pageview(state: dict, pv: dict, in_place: bool = False) -> dict:
    """The state with the page view added: a copy, or `state` itself when the caller may change it (see
    Sessionizer.on_pageview: copying ~25 fields per page view was a hot spot)."""
    st = state if in_place else {**state, "recent": list(state["recent"])}
    st["pageviews"] += 1
    if pv["ts"] >= st["end"]:
        st["end"] = pv["ts"]
        st["exit_page"] = pv["path"]
    if pv["ts"] < st["start"]:  # out of order: an earlier page view seen later
        st["start"] = pv["ts"]
        st["entry_page"] = pv["path"]
    if pv.get("member_id"):
        st["member_id"] = pv["member_id"]
    if pv.get("goal"):
        st["goals"] += 1
        st["revenue"] += float(pv.get("goal_value") or 0.0)
    recent = st["recent"]
    recent.append(pv["event_id"])
    if len(recent) > RECENT_IDS:
        del recent[:-RECENT_IDS]
    return st


def close_row(state: dict, reason: str) -> dict:
    """The Session record (config/events.py SESSION_FIELDS)."""
    row = state.copy()  # the state's fields in its order, less the sessionizer's own (a copy and four pops in C)
    del row["recent"]
    row.pop("p", None), row.pop("prev", None), row.pop("u", None)
    row["duration"] = round(state["end"] - state["start"], 6)
    row["bounce"] = state["pageviews"] == 1
    row["close_reason"] = reason
    return row


def closed_marker(state: dict, closed_at: float) -> dict:
    return {"closed": True, "session_id": state["session_id"], "recent": state["recent"], "p": state.get("p", 0),
            "end": state["end"], "forget_at": closed_at + FORGET_AFTER_S, "prev": None}


def duplicate_of(state: dict, event_id: str) -> str:
    """Session id an already counted event went to, '' if the event is new."""
    if event_id in state["recent"]:
        return state["session_id"]
    prev = state.get("prev")
    if prev and event_id in prev["recent"]:
        return prev["session_id"]
    return ""


class Watermark:
    """Event time now: max event ts seen + wall time elapsed since that event arrived."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.max_ts: float | None = None
        self._arrived = 0.0

    def observe(self, ts: float) -> None:
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
            self._arrived = self.clock()

    def now(self) -> float | None:
        if self.max_ts is None:
            return None
        return self.max_ts + max(0.0, self.clock() - self._arrived)


_GONE = object()


class Sessionizer:
    """Open sessions by visitor over a MutableMapping store, with a deadline heap for the timer."""

    def __init__(self, settings: ProcessingSettings, store: MutableMapping[str, dict]):
        self.s = settings
        self.store = store
        self._work: dict[str, Any] = {}        # visitor -> state or _GONE, not yet written to store
        self._flushing: dict[str, Any] = {}    # changes being made durable elsewhere, written to store next
        self._encoded: dict[str, Any] | None = None  # their changelog records, when the store encodes them
        # The timer's heap holds one entry per visitor (plus superseded ones, skipped): at _queued[visitor], at
        # most its deadline. A deadline that moves later (every page view moves it) pushes nothing: the entry
        # queues it again when it comes up (expire). A heap push per page view was 0.7-1.0 us of on_pageview's
        # 5-6, and the heap held an entry per page view for session_idle_s (30 min of traffic).
        self._heap: list[tuple[float, str]] = []
        self._deadlines: dict[str, float] = {}  # visitor -> the deadline of its state (due_at)
        self._queued: dict[str, float] = {}     # visitor -> its live heap entry's time, <= its deadline
        self.duplicates = 0
        # Open sessions as they go (close_reason "open"): at the start, when the second page view ends
        # the bounce, on a goal, and at most every session_update_s otherwise; drained by take_updates().
        self.updates: list[dict] = []

    # -- state access ---------------------------------------------------------------------
    def get(self, visitor: str) -> dict | None:
        st = self._work.get(visitor)
        if st is None:
            st = self._flushing.get(visitor)
            if st is None:
                st = self.store.get(visitor)
        return None if st is _GONE else st

    def _put(self, visitor: str, state: dict | None) -> None:
        self._work[visitor] = _GONE if state is None else state
        if state is None:
            self._deadlines.pop(visitor, None)
        else:
            self._schedule(visitor, due_at(state, self.s))

    def _schedule(self, visitor: str, d: float) -> None:
        self._deadlines[visitor] = d
        q = self._queued.get(visitor)
        if q is None or d < q:
            self._queued[visitor] = d
            heapq.heappush(self._heap, (d, visitor))

    def begin_flush(self) -> int:
        """Freeze the changes so far; `commit_flush` writes them once the rows they produced are stored
        (a session closed in history before its state leaves the table: a crash never loses it). A store that
        encodes (the worker's table: encode_many) gets their changelog records now, as the rows being stored
        left them, so page views during the flush may change those states in place; other stores keep the
        objects, which page views then copy."""
        work, self._work = self._work, {}
        if self._flushing:
            self._flushing.update(work)
        else:
            self._flushing = work
        encode = getattr(self.store, "encode_many", None)
        if encode is not None:
            fresh = encode([(v, st) for v, st in work.items() if st is not _GONE])
            if self._encoded is None:
                self._encoded = fresh
            else:  # the last flush failed: its records stand, the states changed since (all in work) are new
                for v, st in work.items():
                    if st is _GONE:
                        self._encoded.pop(v, None)
                self._encoded.update(fresh)
        return len(self._flushing)

    def commit_flush(self) -> int:
        """Write the frozen changes to the store (one changelog message per visitor)."""
        n = len(self._flushing)
        encoded, self._encoded = self._encoded, None
        if encoded is not None:  # the worker's table: the records begin_flush made, in one call
            self.store.set_encoded(encoded, [(v, st) for v, st in self._flushing.items() if st is not _GONE])
        for visitor, st in self._flushing.items():
            if st is _GONE:
                try:
                    del self.store[visitor]
                except KeyError:
                    pass
            elif encoded is None:
                self.store[visitor] = st
        self._flushing = {}
        return n

    def flush_state(self) -> int:
        """Write all changes to the store now (tests, single-threaded use)."""
        self.begin_flush()
        return self.commit_flush()

    def _pending(self) -> dict[str, Any]:
        return {**self._flushing, **self._work} if self._flushing else self._work

    # -- events -------------------------------------------------------------------------------
    def on_pageview(self, pv: dict, closed: list[dict], partition: int = 0) -> tuple[str, bool]:
        """Add a page view; appends sessions it closes to `closed`; returns (its session_id, new session?)."""
        visitor = pv["visitor_id"]
        work = self._work
        st = work.get(visitor)  # self.get(visitor), inline: once per page view
        frozen = False
        if st is None:
            st = self._flushing.get(visitor)
            if st is None:
                st = self.store.get(visitor)
            else:
                frozen = True
        if st is _GONE:
            st = None
        prev = None
        if st is not None:
            dup = duplicate_of(st, pv["event_id"])
            if dup:
                self.duplicates += 1  # redelivered after a crash / rebalance: already counted
                return dup, False
            if st.get("closed"):
                prev, st = st, None
            else:
                due = self._deadlines.get(visitor)  # kept by _put for the state it wrote
                if due is None:  # e.g. restored from the changelog, not indexed yet
                    due = due_at(st, self.s)
                if pv["ts"] >= due:
                    closed.append(close_row(st, deadline(st, self.s)[1]))
                    prev, st = st, None
        started = st is None
        # A state is changed in place, even one a flush in progress holds (in _flushing, between begin_flush and
        # commit_flush) when the store encoded its changelog record at begin_flush (the worker's table): the
        # flush writes that record, as the rows being stored left it. Only for a store that keeps the objects
        # themselves is such a state copied. One from the store is changed in place: its changelog record was
        # encoded when it was written, and from here the table's object runs ahead of its changelog until the
        # next flush writes it (this state is in _work from now on). Whoever reads the table directly reads no
        # field a page view changes (keep_partitions: "p"; recovery replaces the table's objects, and _work,
        # which get() reads first, still holds this one); a closed session's marker and its successor's "prev"
        # share the "recent" list of a state that is never continued. Copying it was 0.8-1.4 us.
        st = open_session(pv, partition, prev) if started else \
            add_pageview(st, pv, in_place=not (frozen and self._encoded is None))
        if started or st["pageviews"] == 2 or pv["ts"] - st.get("u", st["start"]) >= self.s.session_update_s:
            st["u"] = pv["ts"]
            self.updates.append(close_row(st, REASON_OPEN))
        work[visitor] = st  # self._put(visitor, st), inline
        d = self._deadlines[visitor] = due_at(st, self.s)  # self._schedule(visitor, d), inline
        q = self._queued.get(visitor)
        if q is None or d < q:
            self._queued[visitor] = d
            heapq.heappush(self._heap, (d, visitor))
        return st["session_id"], started

    def take_updates(self) -> list[dict]:
        out, self.updates = self.updates, []
        return out

    def on_goal(self, visitor: str, event_id: str, value: float) -> bool:
        """A goal request that is not a page view (e.g. POST) adds to the open session, if any."""
        st = self.get(visitor)
        if st is None or st.get("closed") or duplicate_of(st, event_id):
            return False
        st = dict(st)
        st["goals"] += 1
        st["revenue"] += value
        st["recent"] = (st["recent"] + [event_id])[-RECENT_IDS:]
        self.updates.append(close_row(st, REASON_OPEN))
        self._put(visitor, st)
        return True

    def keep_partitions(self, keep: set[int]) -> int:
        """After a rebalance: forget (locally, no changelog record) the sessions of partitions this worker
        no longer owns. Their new owner restores them from the changelog; a stale copy here would be
        closed by this worker's timer while the new owner continues it (one visit split in two)."""
        def moved(st: Any) -> bool:
            return st is not _GONE and st is not None and st.get("p", 0) not in keep
        gone = [v for v, st in list(self.store.items()) if moved(st)]
        forget = getattr(self.store, "forget", None)
        for v in gone:
            if forget is not None:
                forget(v)
            else:
                self.store.pop(v, None)
        for pending in (self._work, self._flushing):
            for v in [v for v, st in pending.items() if moved(st)]:
                del pending[v]
                gone.append(v)
        for v in gone:
            self._deadlines.pop(v, None)  # its heap entry is skipped as stale
        return len(set(gone))

    # -- time ---------------------------------------------------------------------------------
    def _reindex(self) -> None:
        self._heap.clear()
        self._deadlines.clear()
        self._queued.clear()
        pending = self._pending()
        for visitor, st in list(self.store.items()):
            if st is not None and visitor not in pending:
                self._put_index(visitor, st)
        for visitor, st in pending.items():
            if st is not _GONE:
                self._put_index(visitor, st)

    def _put_index(self, visitor: str, st: dict) -> None:
        self._schedule(visitor, due_at(st, self.s))

    def open_count(self) -> int:
        pending = self._pending()
        return sum(1 for v in pending.values() if v is not _GONE and not v.get("closed")) + \
            sum(1 for k, v in self.store.items() if k not in pending and v is not None and not v.get("closed"))

    def max_end_by_partition(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for st in self.store.values():
            if st:
                p = st.get("p", 0)
                out[p] = max(out.get(p, st["end"]), st["end"])
        return out

    def expire(self, now: float | dict[int, float]) -> list[dict]:
        """Close every session whose deadline is <= event-time now (timer path). `now` is one time,
        or a time per partition: a partition that lags behind keeps its sessions open until its own
        events catch up (its visitors' next page views may still be on the way)."""
        if len(self._deadlines) < len(self.store) - len(self._pending()):  # e.g. restored from a changelog
            self._reindex()
        per_partition = now if isinstance(now, dict) else None
        hi = max(per_partition.values(), default=float("-inf")) if per_partition is not None else now
        closed, later = [], []
        heap, queued, deadlines = self._heap, self._queued, self._deadlines
        while heap and heap[0][0] <= hi:
            d, visitor = heapq.heappop(heap)
            if queued.get(visitor) != d:
                continue  # superseded by an earlier deadline's entry
            due = deadlines.get(visitor)
            if due != d:
                if due is None:  # forgotten
                    del queued[visitor]
                else:  # the session moved on: queued again at its deadline (popped in this loop if due <= hi,
                    queued[visitor] = due  # in the same (time, visitor) order as an entry pushed at every change)
                    heapq.heappush(heap, (due, visitor))
                continue
            del queued[visitor]
            st = self.get(visitor)
            if st is None:
                del deadlines[visitor]
                continue
            if per_partition is not None:
                p_now = per_partition.get(st.get("p", 0))
                if p_now is None or d > p_now:
                    queued[visitor] = d
                    later.append((d, visitor))
                    continue
            if st.get("closed"):
                self._put(visitor, None)  # marker outlived any redelivery: forget the visitor
                continue
            closed.append(close_row(st, deadline(st, self.s)[1]))
            self._put(visitor, closed_marker(st, d))
        for entry in later:
            heapq.heappush(heap, entry)
        return closed

    def close_all(self, reason: str = REASON_SHUTDOWN) -> list[dict]:
        """End of input: close every open session now."""
        visitors = set(self.store.keys()) | set(self._pending().keys())
        closed = []
        for visitor in sorted(visitors):
            st = self.get(visitor)
            if st is not None and not st.get("closed"):
                closed.append(close_row(st, reason))
                self._put(visitor, closed_marker(st, deadline(st, self.s)[0]))
        return closed
