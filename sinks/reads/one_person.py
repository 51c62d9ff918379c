"""One member's or one visitor's page views and goals, read in one query and folded here.

A profile or an activity reads the same page views several ways (visits, pages, products, sections, devices,
visitor ids) and the goals. Each of those was its own query, and each evaluated the member's page views again
(the identity join over its visitor ids): 5 queries for a profile, 7 for an activity. On the ClickHouse 18.16
server at load 4-6 that made p95 1.8 s and 1.7 s (benchmarks/customers_bench.py). Here the page views are read
once: each row is ARRAY JOINed to one (kind, name) per figure and grouped, and the goals come in the same query
(UNION ALL). The answer has a row per session and per distinct value, not one per page view.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from sinks.reads.common import History, num

SESSION = "session_id"
GOAL = "goal"  # kind of the goal rows


@dataclass
class Person:
    """What one query gave: sessions (session_id -> row), the values of each kind (kind -> rows), goal rows."""
    sessions: dict[str, dict] = field(default_factory=dict)
    values: dict[str, list[dict]] = field(default_factory=dict)
    goals: list[dict] = field(default_factory=list)

    def top(self, kind: str, limit: int | None, by: str = "n") -> list[dict]:
        """The values of `kind` by count `by` (n: page views, sessions), then name; the first `limit`."""
        rows = sorted(self.values.get(kind, ()), key=lambda r: (-r[by], r["name"]))
        return rows if limit is None else rows[:limit]

    def names(self, kind: str) -> list[str]:
        return sorted(r["name"] for r in self.values.get(kind, ()))

    def span(self) -> tuple[float, float, int, float]:
        """(first seen, last seen, page views, total time = sum of the session spans)."""
        s = self.sessions.values()
        return (min(r["t_min"] for r in s), max(r["t_max"] for r in s), sum(r["n"] for r in s),
                math.fsum(r["t_max"] - r["t_min"] for r in s))


def read(store: History, pageviews: str, kinds: Sequence[str], goals: str, params: dict,
         visit_columns: bool = False) -> Person:
    """`pageviews`: a subquery of distinct page views (event_id, session_id, t and the `kinds` columns, plus
    path, device, channel with `visit_columns`); `goals`: the branch of goal rows, goal_totals() or
    latest_goals(). Kinds other than sessions and visitor ids leave out empty values (as each figure's own
    query did). The UNION ALL is the whole query, no subquery around it: on ClickHouse 18.16 each level of
    subquery here costs 60-150 ms of analysis, with nothing read."""
    pairs = ", ".join(f"('{k}', {k})" for k in (SESSION, *kinds))
    # (aliases are global in ClickHouse's SQL: none may be a column's name, or it would replace it)
    visit = ("argMin(path, t) AS entry_page, argMax(path, t) AS exit_page, any(device) AS visit_device, "
             "argMin(channel, t) AS visit_channel" if visit_columns else
             "'' AS entry_page, '' AS exit_page, '' AS visit_device, '' AS visit_channel")
    sql = (f"SELECT k.1 AS kind, k.2 AS name, count() AS n, uniqExact(session_id) AS sessions, min(t) AS t_min, "
           f"max(t) AS t_max, {visit}, 0.0 AS value FROM {pageviews} ARRAY JOIN [{pairs}] AS k "
           f"WHERE k.2 != '' OR k.1 IN ('{SESSION}', 'visitor_id') GROUP BY kind, name "
           f"UNION ALL {goals}")
    out = Person()
    for r in store.query(sql, params):
        row = {"name": r["name"], "n": int(num(r["n"])), "sessions": int(num(r["sessions"])),
               "t_min": num(r["t_min"]), "t_max": num(r["t_max"]), "value": num(r["value"])}
        if r["kind"] == GOAL:
            out.goals.append(row)
        elif r["kind"] == SESSION:
            out.sessions[r["name"]] = {**row, "entry_page": r["entry_page"], "exit_page": r["exit_page"],
                                       "device": r["visit_device"], "channel": r["visit_channel"]}
        else:
            out.values.setdefault(r["kind"], []).append(row)
    return out


def goal_totals(goals: str) -> str:
    """Goal rows of a profile: per goal, its count and the sum of its values (`goals`: t, goal, goal_value)."""
    return (f"SELECT '{GOAL}' AS kind, goal AS name, count() AS n, toUInt64(0) AS sessions, min(t) AS t_min, "
            "max(t) AS t_max, '' AS entry_page, '' AS exit_page, '' AS visit_device, '' AS visit_channel, "
            f"sum(goal_value) AS value FROM {goals} GROUP BY goal")


def latest_goals(goals: str, keep: int) -> str:
    """Goal rows of an activity: the newest `keep` requests of each goal, one row each."""
    return (f"SELECT '{GOAL}' AS kind, goal AS name, toUInt64(1) AS n, toUInt64(0) AS sessions, t AS t_min, "
            "t AS t_max, '' AS entry_page, '' AS exit_page, '' AS visit_device, '' AS visit_channel, "
            f"goal_value AS value FROM {goals} ORDER BY t DESC LIMIT {int(keep)} BY goal")
