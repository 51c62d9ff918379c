"""Funnels: ordered steps within a session, with drop-off per step.

A funnel is a list of URL patterns (analytics.funnels, e.g. purchase = product page ->
/cart -> /checkout -> /order/complete). A session reaches step k when its page views,
in time order, contain steps 1..k in that order (other pages may come in between).
Step k's count is the number of human sessions reaching it; drop-off is the loss from
step k-1.

Goal requests that are not page views (POST /order/complete) count as steps too, in the
session they are attributed to (goal_events.py). The backend only returns the matching
paths per session (one regex filter), the step
matching runs here in Python so both backends give identical answers (windowFunnel's
semantics differ between ClickHouse 18.16 and current releases).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from sinks.reads.common import (ALL_TIME, TS, AnalyticsError, History, TimeRange, pageviews_source,
                                         pattern_regex)
from sinks.reads.goal_events import GoalConfig, attributed_goals, default_config


def funnel_steps(funnels: Mapping[str, Sequence[str]], name: str) -> list[str]:
    steps = funnels.get(name)
    if not steps:
        known = ", ".join(sorted(funnels)) or "none configured (analytics.funnels)"
        raise AnalyticsError(f"unknown funnel {name!r}; known funnels: {known}")
    return list(steps)


def level_reached(paths: Sequence[str], step_res: Sequence[re.Pattern]) -> int:
    """How many steps, in order, a session's time-ordered paths complete (greedy subsequence match)."""
    level = 0
    for p in paths:
        if level < len(step_res) and step_res[level].match(p):
            level += 1
    return level


def funnel(store: History, name: str, steps: Sequence[str], rng: TimeRange = ALL_TIME,
           cfg: GoalConfig | None = None) -> dict[str, Any]:
    """Counts per step: sessions reaching it, drop-off from the previous step, rates.

    A session's path is its page views plus its goal requests (e.g. POST /order/complete is
    not a page view but is a funnel step), in time order."""
    if not steps:
        raise AnalyticsError(f"funnel {name!r} has no steps; list URL patterns in analytics.funnels.{name}")
    regexes = [pattern_regex(s) for s in steps]
    step_res = [re.compile(r) for r in regexes]
    any_step = "|".join(f"({r})" for r in regexes)
    src = pageviews_source([TS, "session_id", "path"], f"{rng.sql()} AND match(path, %(any_step)s)")
    goals_sql, params = attributed_goals(cfg or default_config(), rng)
    rows = store.query(
        "SELECT session_id, arrayMap(x -> x.3, arraySort(groupArray((t, event_id, path)))) AS paths FROM ("
        f"SELECT session_id, {TS} AS t, event_id, path FROM {src} "
        "UNION ALL "
        f"SELECT g_session AS session_id, t, event_id, path FROM {goals_sql} "
        f"WHERE match(path, %(any_step)s) AND event_id NOT IN (SELECT event_id FROM pageviews WHERE {rng.sql()})"
        ") GROUP BY session_id", {**params, "any_step": any_step, **rng.params()})
    reached = [0] * len(steps)
    for r in rows:
        for k in range(level_reached(r["paths"], step_res)):
            reached[k] += 1
    out_steps = []
    for k, (pattern, n) in enumerate(zip(steps, reached)):
        prev = reached[k - 1] if k else n
        out_steps.append({
            "step": k + 1, "pattern": pattern, "sessions": n,
            "drop_off": prev - n if k else 0,
            "rate_from_previous": round(n / prev, 4) if prev else 0.0,
            "rate_from_start": round(n / reached[0], 4) if reached[0] else 0.0,
        })
    return {"funnel": name, "entered": reached[0], "completed": reached[-1],
            "conversion_rate": round(reached[-1] / reached[0], 4) if reached[0] else 0.0, "steps": out_steps}


def all_funnels(store: History, funnels: Mapping[str, Sequence[str]], rng: TimeRange = ALL_TIME,
                cfg: GoalConfig | None = None) -> list[dict]:
    return [funnel(store, name, steps, rng, cfg) for name, steps in funnels.items()]

