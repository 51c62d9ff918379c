"""Every member's figures as columns: numpy arrays in member-id order, the form the whole-population reads
(the Customers list, segment sizes, RFM) score, filter and sort in, instead of one dict per member (at 100k
members the dicts and the per-member Python took 1.3 cpu-s of every list call).

The figures are rfm.member_stats' fields. Unrounded, as the stores sum them (`from_figures`, `merged`);
`finished` rounds them as member_stats always has: counts to int, money with round(x, 2), so a rule's
threshold compares the same numbers either way.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

FIELDS = ("first_seen", "last_seen", "visits", "orders", "revenue", "window_visits", "window_orders",
          "window_revenue")
COUNTS = ("visits", "orders", "window_visits", "window_orders")
MONEY = ("revenue", "window_revenue")


@dataclass(frozen=True, eq=False)
class MemberColumns:
    ids: list[str]  # sorted (Python's str order); a member's index is its place in every column
    first_seen: np.ndarray
    last_seen: np.ndarray
    visits: np.ndarray
    orders: np.ndarray
    revenue: np.ndarray
    window_visits: np.ndarray
    window_orders: np.ndarray
    window_revenue: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_figures(cls, figures: Mapping[str, Mapping[str, float]]) -> "MemberColumns":
        """From member_id -> {field: value} (any order)."""
        ids = sorted(figures)
        return cls(ids, **{k: np.fromiter((figures[m][k] for m in ids), np.float64, len(ids)) for k in FIELDS})

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping], read: Mapping[str, str], value=float) -> "MemberColumns":
        """From rows holding `member_id` and each field under the name `read[field]`, `value` converting one."""
        ids = [r["member_id"] for r in rows]
        order = sorted(range(len(ids)), key=ids.__getitem__)
        return cls([ids[i] for i in order],
                   **{k: np.fromiter((value(rows[i][c]) for i in order), np.float64, len(order))
                      for k, c in read.items()})

    @classmethod
    def from_stats(cls, stats: Iterable[Mapping]) -> "MemberColumns":
        """From finished stats dicts (rfm.member_stats' rows), as given."""
        stats = list(stats)
        cols = {k: np.array([s[k] for s in stats], np.int64 if k in COUNTS else np.float64) for k in FIELDS}
        return cls([s["member_id"] for s in stats], **cols)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {m: i for i, m in enumerate(self.ids)}

    @functools.cached_property
    def lowered(self) -> list[str]:
        """Member ids in lower case (the list's search), once per snapshot."""
        return [m.lower() for m in self.ids]

    @functools.cached_property
    def finished(self) -> "MemberColumns":
        """Counts as int (truncated, as int() does), money rounded per value with Python's round(x, 2) (numpy's
        rounding differs on some halves)."""
        cols = {k: getattr(self, k) for k in FIELDS}
        for k in COUNTS:
            cols[k] = cols[k].astype(np.int64)
        for k in MONEY:
            cols[k] = np.array([round(v, 2) for v in cols[k].tolist()], np.float64)
        return MemberColumns(self.ids, **cols)

    def merged(self, other: "MemberColumns") -> "MemberColumns":
        """Figures over both spans (this one first): first_seen the min, last_seen the max, the rest summed."""
        if not len(other):
            return self
        at = np.array([self.index.get(m, -1) for m in other.ids], np.int64)
        old, new = at >= 0, at < 0
        cols = {k: getattr(self, k).copy() for k in FIELDS}
        pos = at[old]
        for k in FIELDS:
            mine, theirs = cols[k][pos], getattr(other, k)[old]
            cols[k][pos] = (np.minimum(mine, theirs) if k == "first_seen" else
                            np.maximum(mine, theirs) if k == "last_seen" else mine + theirs)
        ids = self.ids
        if new.any():
            ids = ids + [other.ids[i] for i in np.nonzero(new)[0].tolist()]
            order = np.array(sorted(range(len(ids)), key=ids.__getitem__), np.int64)
            ids = [ids[i] for i in order.tolist()]
            cols = {k: np.concatenate([cols[k], getattr(other, k)[new]])[order] for k in FIELDS}
        return MemberColumns(ids, **cols)

    def select(self, members: Iterable[str]) -> "MemberColumns":
        """Only these members (those it holds), in member-id order."""
        at = sorted(i for i in (self.index.get(m) for m in set(members)) if i is not None)
        return MemberColumns([self.ids[i] for i in at], **{k: getattr(self, k)[at] for k in FIELDS})

    def stats_rows(self, at: Sequence[int] | np.ndarray | None = None) -> list[dict]:
        """rfm.member_stats' dicts (Python ints and floats) of the members at these indexes (default all)."""
        at = np.arange(len(self.ids)) if at is None else np.asarray(at, np.int64)
        ids = [self.ids[i] for i in at.tolist()]
        values = [getattr(self, k)[at].tolist() for k in FIELDS]
        return [{"member_id": m, **dict(zip(FIELDS, v))} for m, *v in zip(ids, *values)]
