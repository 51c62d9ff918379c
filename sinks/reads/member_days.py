"""Each member's figures per closed UTC day, kept in `member_days` (migration 0220), so that scoring every member
(the Customers list, RFM) reads a small table plus today's page views instead of the whole history.

A day's figures come from the same rule as the slow path (sinks/reads/members.py) over that day: first and
last request, visits that started on the day (`visits`) and visits started the day before that went on
into it (`carried`; a visit lasts at most a day), purchases and revenue. Over a range of whole days, first /
last are the min / max and visits the started ones plus those carried into its first day, exactly the
slow path's count of distinct visits; the window (from a UTC midnight) likewise.

Each computed day is stamped with what it came from: the rows inserted into pageviews of the day before,
the day and (when visits may span midnight, processing.split_at_midnight off) the day after, into hits of
the day (counted per day by materialized views), and the goal rules. An insert into one of those days
moves the stamp, and the day is computed again at the next read. The unfinished last day is read from the
raw tables each time, with the same SQL.
"""
from __future__ import annotations

import hashlib
import threading

from sinks.reads import day_tables
from sinks.reads.common import History, TimeRange, num
from sinks.reads.day_tables import day_counts
from sinks.reads.goal_events import GoalConfig
from sinks.reads.member_columns import MemberColumns
from sinks.reads.members import member_goals, member_pageviews
from sinks.sql_bind import bind

DAY_S = 86400
FIELDS = ("first_seen", "last_seen", "visits", "carried", "orders", "revenue")
TYPES = dict(zip(FIELDS, ("Float64", "Float64", "UInt64", "UInt64", "UInt64", "Float64")))  # in member_days
_READ = {"first_seen": "f_first", "last_seen": "f_last", "visits": "f_visits", "orders": "f_orders",
         "revenue": "f_revenue", "window_visits": "w_visits", "window_orders": "w_orders",
         "window_revenue": "w_revenue"}
_last_closed: tuple = (None, {})  # (key, figures) of the last closed-days read: one store's, bounded by its members
_closed_lock = threading.Lock()  # one read of the closed days at a time; the others take its answer


def _day(column: str) -> str:
    return f"toUInt32(intDiv(toUInt32({column}), {DAY_S}))"


def kept(store: History) -> bool:
    """Whether this reader may keep member_days: a store it writes (not the engine's read-only query API)."""
    return callable(getattr(store, "write", None))


def day_figures_sql(cfg: GoalConfig, first_day: int, last_day: int, until: float | None = None) -> tuple[str, dict]:
    """SELECT (day, member_id, first_seen, last_seen, visits, carried, orders, revenue) for the days
    first_day..last_day, from the raw tables (requests before `until` only)."""
    end = float((last_day + 1) * DAY_S) if until is None else min(float(until), (last_day + 1) * DAY_S)
    # the day before too: a visit carried into first_day started then
    pvs, params = member_pageviews(TimeRange(float((first_day - 1) * DAY_S), end))
    goals, gparams = member_goals(cfg, TimeRange(float(first_day * DAY_S), end))
    visit_days = (  # one row per member, visit and day, `started` on the visit's first day
        "SELECT member_id, x.1 AS day, x.2 AS first_seen, x.3 AS last_seen, x.1 = start_day AS started FROM ("
        "SELECT member_id, session_id, groupArray((day, d_first, d_last)) AS xs, "
        "arrayReduce('min', arrayMap(x -> x.1, xs)) AS start_day FROM ("
        f"SELECT a_member AS member_id, session_id, {_day('t')} AS day, min(t) AS d_first, max(t) AS d_last "
        f"FROM {pvs} GROUP BY member_id, session_id, day) GROUP BY member_id, session_id) ARRAY JOIN xs AS x")
    sql = (
        "SELECT day, member_id, min(first_seen) AS first_seen, max(last_seen) AS last_seen, sum(visits) AS visits, "
        "sum(carried) AS carried, sum(orders) AS orders, sum(revenue) AS revenue FROM ("
        "SELECT day, member_id, min(first_seen) AS first_seen, max(last_seen) AS last_seen, "
        "toUInt64(countIf(started)) AS visits, toUInt64(countIf(NOT started)) AS carried, toUInt64(0) AS orders, "
        f"toFloat64(0) AS revenue FROM ({visit_days}) WHERE day >= %(first_day)s GROUP BY day, member_id "
        f"UNION ALL SELECT {_day('t')} AS day, a_member AS member_id, min(t) AS first_seen, max(t) AS last_seen, "
        "toUInt64(0) AS visits, toUInt64(0) AS carried, toUInt64(countIf(goal = %(purchase)s)) AS orders, "
        f"toFloat64(sumIf(goal_value, goal = %(purchase)s)) AS revenue FROM {goals} GROUP BY day, member_id) "
        "GROUP BY day, member_id")
    return sql, {**params, **gparams, "purchase": cfg.purchase, "first_day": first_day}


def day_stamps(store: History, cfg: GoalConfig, before_day: int,
               counts: dict[tuple[str, int], int] | None = None) -> dict[int, str]:
    """day -> stamp of every day before `before_day` that holds page views or hits (`counts`: day_counts')."""
    counts = day_counts(store, before_day) if counts is None else counts
    rules = hashlib.sha1(repr((cfg.rules, cfg.purchase, cfg.idle_s)).encode()).hexdigest()[:12]
    days = {d for _, d in counts if d < before_day}
    after = (lambda d: "") if cfg.split_at_midnight else (lambda d: f".{counts.get(('pageviews', d + 1), 0)}")
    return {d: f"{counts.get(('pageviews', d - 1), 0)}.{counts.get(('pageviews', d), 0)}{after(d)}."
               f"{counts.get(('hits', d), 0)}.{rules}" for d in days}


def refresh(store: History, cfg: GoalConfig, stamps: dict[int, str]) -> int:
    """Computes the days whose stamp has no complete figures yet (sinks/reads/day_tables.py); returns how many."""
    return day_tables.refresh(store, "member_days", "member_id", FIELDS, stamps,
                              lambda first, last: day_figures_sql(cfg, first, last))


def member_figures(store: History, cfg: GoalConfig, first_day: int, until: float,
                   window_day: int) -> MemberColumns:
    """Every member's unrounded figures (rfm.member_stats' fields) over [first_day, until): the closed days from
    member_days (stale ones computed first), the unfinished last day from the raw tables; window_* from
    `window_day` (>= first_day). With no row yet today, the very snapshot of the closed days is returned (the
    same object while no insert moves a stamp, so its scores can be kept with it)."""
    today, window_day = int(until // DAY_S), max(window_day, first_day)
    counts = day_counts(store, today)
    stamps = {d: s for d, s in day_stamps(store, cfg, today, counts).items() if d >= first_day}
    closed = _closed_figures(store, cfg, stamps, first_day, window_day) if stamps else MemberColumns.from_figures({})
    if until <= today * DAY_S or not (counts.get(("pageviews", today)) or counts.get(("hits", today))):
        return closed  # nothing of today yet: a member's day figures come from its page views and hits of the day
    sql, params = day_figures_sql(cfg, today, today, until)  # the unfinished day, as the closed ones but read now
    now: dict[str, dict[str, float]] = {}
    for r in store.query(sql, params):
        carried = num(r["carried"]) if today in (first_day, window_day) else 0.0
        now[r["member_id"]] = {
            "first_seen": num(r["first_seen"]), "last_seen": num(r["last_seen"]),
            "visits": num(r["visits"]) + (carried if today == first_day else 0.0),
            "orders": num(r["orders"]), "revenue": num(r["revenue"]),
            "window_visits": num(r["visits"]) + (carried if today == window_day else 0.0),
            "window_orders": num(r["orders"]), "window_revenue": num(r["revenue"])}
    return closed.merged(MemberColumns.from_figures(now))


def _closed_figures(store: History, cfg: GoalConfig, stamps: dict[int, str], first_day: int,
                    window_day: int) -> MemberColumns:
    """Every member's figures over the stamped days, refreshing stale ones first. The last answer is kept in
    memory under its stamps: it holds until an insert moves one (10k members: 0.2 s of a request's 0.5 cpu-s),
    and requests arriving together (the Customers tab's list and segments) wait for one read."""
    global _last_closed
    days = sorted(stamps)
    key = (getattr(store, "url", id(store)), tuple(days), tuple(stamps[d] for d in days), first_day, window_day)
    with _closed_lock:
        if _last_closed[0] == key:  # read from those very stamps' complete rows
            return _last_closed[1]
        rows, complete = day_tables.current_rows(store, "member_days", "member_id", TYPES, stamps,
                                                 lambda first, last: day_figures_sql(cfg, first, last))
        out = MemberColumns.from_rows(store.query(bind(  # bound before the rows go in (as in host_days)
            "SELECT member_id, min(first_seen) AS f_first, max(last_seen) AS f_last, "
            "sum(visits) + sumIf(carried, day = %(first)s) AS f_visits, sum(orders) AS f_orders, "
            "sum(revenue) AS f_revenue, sumIf(visits, day >= %(w)s) + sumIf(carried, day = %(w)s) AS w_visits, "
            "sumIf(orders, day >= %(w)s) AS w_orders, sumIf(revenue, day >= %(w)s) AS w_revenue FROM "
            "(ROWS) GROUP BY member_id", {"w": window_day, "first": first_day}).replace("(ROWS)", f"({rows})", 1)),
            _READ, num)
        if complete:  # days read from the raw rows (this server behind) may change under the same stamps
            _last_closed = (key, out)
        return out
