"""Per-batch live aggregation: columns of one batch of hits -> one LiveDelta for Redis.

The batch is collected as flat columns (`BatchColumns.add_hits` per batch, `add_pageview` per
page view; dimension values interned to small integer codes through per-batch dicts), then the kernels in
processors/kernels.py count everything per minute in a few passes over arrays.
`use_numba=False` runs the numpy twins; both give identical deltas.
"""
from __future__ import annotations

from operator import itemgetter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import orjson

from processors import kernels as K
from config.live_layout import LiveDelta

PV_DIMENSIONS = ("pages", "referrers", "channels", "campaigns", "browsers", "os", "devices", "products")
_PV_FIELD = {"pages": "path", "referrers": "referrer_host", "channels": "channel", "campaigns": "utm_campaign",
             "browsers": "browser", "os": "os", "devices": "device", "products": "product_id"}


class _Interner:
    """Distinct values -> small integer codes in order of first appearance."""
    __slots__ = ("codes",)

    def __init__(self):
        self.codes: dict[str, int] = {}

    def code(self, value: str) -> int:
        codes = self.codes
        return codes.setdefault(value, len(codes))  # len() is taken before a new value goes in

    def code_all(self, values: Iterable[str]) -> list[int]:
        codes = self.codes
        values = values if isinstance(values, (list, tuple)) else list(values)
        # C loops over every value; Python touches only the distinct new ones (a batch repeats values a lot)
        fresh = [v for v in dict.fromkeys(values) if v not in codes]
        codes.update(zip(fresh, range(len(codes), len(codes) + len(fresh))))
        return list(map(codes.__getitem__, values))

    @property
    def values(self) -> list[str]:
        return list(self.codes)


class BatchColumns:
    """One batch of hits as columns (appended a batch at a time, converted to arrays once).

    Page-view dimensions are only kept for page views (`pv_row` = their hit rows), status
    codes are their own codes (0..599), and visitors are one interned code per hit."""

    def __init__(self, feed_length: int = 100):
        self.feed_length = feed_length
        self.ts: list[float] = []
        self.kind: list[int] = []
        self.status: list[int] = []
        self.latency: list[float] = []
        self.member: list[bool] = []
        self.nbytes: list[float] = []
        self.visitor: list[int] = []
        self.visitors = _Interner()
        self.session_start_rows: list[int] = []
        self.goal_rows: list[int] = []
        self.goal_values: list[float] = []
        self.goal_facts: list[tuple[str, str, str, str]] = []  # (goal, path, visitor id, member id) per goal row
        self.goal_products: list[tuple[int, str, str, int]] = []  # (row, dimension, product id, units)
        self.pv_row: list[int] = []
        self.pageviews: list[Mapping[str, Any]] = []  # in pv_row order; their dimensions are coded in one go

    def __len__(self) -> int:
        return len(self.ts)

    def add_hits(self, columns: Mapping[str, Sequence[Any]], kinds: Sequence[int]) -> int:
        """Append valid hits, given as columns (processors.enrich.columns_of), and their kind codes
        (processors/kernels.py K_*); returns the row of the first."""
        first = len(self.ts)
        self.ts += columns["ts"]
        self.kind += kinds
        self.status += [0 if s is None else s for s in columns["status"]]
        self.latency += [_NAN if v is None else v for v in columns["latency_ms"]]
        self.member += map(bool, columns["member_id"])
        self.nbytes += [v or 0 for v in columns["resp_bytes"]]
        self.visitor += self.visitors.code_all(columns["visitor_id"])
        return first

    def add_goal(self, row: int, value: float, name: str = "", path: str = "", visitor_id: str = "",
                 member_id: str = "") -> None:
        self.goal_rows.append(row)
        self.goal_values.append(value)
        self.goal_facts.append((name, path, visitor_id, member_id))

    def add_goal_products(self, row: int, dimension: str, items: Sequence[tuple[str, int]]) -> None:
        """Units of each product of a goal request (an order's items, a cart add's product) for `dimension`."""
        self.goal_products.extend((row, dimension, pid, qty) for pid, qty in items)

    def add_pageview(self, row: int, pv: Mapping[str, Any], session_start: bool) -> None:
        """The page view of hit `row` (already added): its dimensions and live-feed entry."""
        if session_start:
            self.session_start_rows.append(row)
        self.pv_row.append(row)
        self.pageviews.append(pv)

    def dimension(self, dim: str) -> tuple[list[str], np.ndarray]:
        """(distinct values, a code per page view: index into them, -1 where empty) of a page-view
        dimension; a column at a time, several times cheaper than coding each page view's fields."""
        interner = _Interner()
        interner.code("")  # code 0: no value, not counted
        if dim == "referrers":  # the site's own pages are no referrer (processing.site_hosts, the request host)
            values = [pv["referrer_host"] if pv["channel"] != "internal" else "" for pv in self.pageviews]
        else:
            values = list(map(itemgetter(_PV_FIELD[dim]), self.pageviews))
        codes = interner.code_all(values)
        return interner.values[1:], np.asarray(codes, dtype=np.int64) - 1

    def feed(self) -> list[bytes]:
        """Live-feed entries (JSON) of the batch's last feed_length page views; only those are kept, so
        only those are encoded."""
        n = self.feed_length
        return [orjson.dumps({
            "ts": pv["ts"], "path": pv["path"], "visitor": pv["visitor_id"][:12], "member": self.member[row],
            "channel": pv["channel"], "referrer_host": pv["referrer_host"], "device": pv["device"],
            "browser": pv["browser"], "session_id": pv["session_id"], "goal": pv["goal"]})
            for pv, row in zip(self.pageviews[-n:], self.pv_row[-n:])]

    def goal_feed(self) -> list[bytes]:
        """Live goal-feed entries (JSON) of the batch's last feed_length goal conversions: a purchase or a
        cart add is often a POST that is no page view, so the page-view feed alone would miss it."""
        n = self.feed_length
        # whole ids (salted hashes): the screen links each line to the visitor's or member's profile
        return [orjson.dumps({"ts": self.ts[row], "goal": name, "value": value, "path": path,
                              "visitor_id": visitor, "member_id": member})
                for row, value, (name, path, visitor, member) in zip(self.goal_rows[-n:], self.goal_values[-n:],
                                                             self.goal_facts[-n:])]


_NAN = float("nan")
STATUS_CODES = 600


def aggregate(cols: BatchColumns, use_numba: bool = True) -> LiveDelta:
    """Count one batch per minute; the same numbers on both paths."""
    d = LiveDelta(events=len(cols))
    n = len(cols)
    if not n:
        return d
    ts = np.asarray(cols.ts, dtype=np.float64)
    d.max_ts = float(ts.max())
    minutes, idx = K.minute_index(ts)
    n_min = len(minutes)
    minute_list = minutes.tolist()
    kind = np.asarray(cols.kind, dtype=np.int64)
    status = np.asarray(cols.status, dtype=np.int64)
    member = np.asarray(cols.member, dtype=np.bool_)
    session_start = np.zeros(n, dtype=np.bool_)
    session_start[cols.session_start_rows] = True
    goal = np.zeros(n, dtype=np.bool_)
    goal[cols.goal_rows] = True
    goal_value = np.zeros(n, dtype=np.float64)
    goal_value[cols.goal_rows] = cols.goal_values
    sums = K.minute_counters(use_numba, idx, n_min, kind, status, status == 0, member, session_start, goal,
                             goal_value, np.asarray(cols.nbytes, dtype=np.float64))
    for i, m in enumerate(minute_list):
        row = sums[i]
        d.counters[m] = {name: (round(float(row[j]), 6) if name == "revenue" else int(row[j]))
                         for j, name in enumerate(K.COUNTER_FIELDS) if row[j]}
    not_bot = kind != K.K_BOT
    hist = K.latency_hist(use_numba, idx, n_min, np.asarray(cols.latency, dtype=np.float64), not_bot)
    for i, m in enumerate(minute_list):
        nz = np.nonzero(hist[i])[0]
        if len(nz):
            d.latency[m] = {int(b): int(hist[i, b]) for b in nz}
    # status codes over all hits ('none' = no response)
    st_counts = K.code_counts(use_numba, idx, n_min, np.minimum(status, STATUS_CODES - 1), STATUS_CODES)
    for i, m in enumerate(minute_list):
        nz = np.nonzero(st_counts[i])[0]
        if len(nz):
            d.tops[("status", m)] = {(str(c) if c else "none"): int(st_counts[i, c]) for c in nz}
    if cols.pv_row:
        pv_idx = idx[np.asarray(cols.pv_row, dtype=np.int64)]
        for dim in PV_DIMENSIONS:
            values, codes = cols.dimension(dim)
            if not values:
                continue
            counts = K.code_counts(use_numba, pv_idx, n_min, codes, len(values))
            for i, m in enumerate(minute_list):
                nz = np.nonzero(counts[i])[0]
                if len(nz):
                    d.tops[(dim, m)] = {values[c]: int(counts[i, c]) for c in nz}
    goal_counts: dict[tuple[str, int], dict[str, int]] = {}
    for row, (name, *_) in zip(cols.goal_rows, cols.goal_facts):
        if name:  # conversions per goal name and minute: orders and cart adds per minute on the screen
            per = goal_counts.setdefault(("goals", minute_list[idx[row]]), {})
            per[name] = per.get(name, 0) + 1
    for row, dim, pid, qty in cols.goal_products:
        per = goal_counts.setdefault((dim, minute_list[idx[row]]), {})
        per[pid] = per.get(pid, 0) + qty
    d.tops.update(goal_counts)
    vvalues = cols.visitors.values
    vcode = np.asarray(cols.visitor, dtype=np.int64)
    for which, mask in (("all", not_bot), ("member", not_bot & member), ("anon", not_bot & ~member),
                        ("bot", ~not_bot)):
        last = K.last_seen(use_numba, np.where(mask, vcode, -1), ts, len(vvalues))
        seen = np.nonzero(last > 0)[0]
        if len(seen):
            d.visitors[which] = {vvalues[c]: float(last[c]) for c in seen.tolist()}
    d.feed = cols.feed()
    d.goal_feed = cols.goal_feed()
    return d


def warm_up(use_numba: bool = True) -> None:
    """Compile (or load from numba's cache) the kernels before the first real batch arrives."""
    cols = BatchColumns()
    hit = {"ts": 60.0, "visitor_id": "v", "member_id": "", "status": 200, "latency_ms": 1.0, "resp_bytes": 1}
    pv = {"path": "/", "referrer_host": "", "channel": "direct", "utm_campaign": "", "browser": "b", "os": "o",
          "device": "desktop", "product_id": "", "ts": 60.0, "visitor_id": "v", "session_id": "s", "goal": ""}
    row = cols.add_hits({name: [value] for name, value in hit.items()}, [K.K_PAGEVIEW])
    cols.add_pageview(row, pv, session_start=True)
    cols.add_goal(row, 1.0, "purchase", "/", "v", "")
    aggregate(cols, use_numba)
