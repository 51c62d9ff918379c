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


FILTERS = {"channel": "argMin(channel, {ts})", "device": "any(device)",
           "member": "if(max(member_id != '') = 1, 'member', 'anonymous')"}


def session_filter(rng: TimeRange, filters: Mapping[str, str] | None) -> tuple[str, dict]:
    """WHERE fragment keeping the sessions whose channel (of their first page view), device, or member
    status (a logged-in page view in the session = 'member') equal the filters; '1' without filters."""
    active = {k: v for k, v in (filters or {}).items() if v}
    unknown = set(active) - set(FILTERS)
    if unknown:
        raise AnalyticsError(f"unknown funnel filter(s) {', '.join(sorted(unknown))}; use {', '.join(FILTERS)}")
    if not active:
        return "1", {}
    keys = ", ".join(f"{FILTERS[k].format(ts=TS)} AS f_{k}" for k in active)
    cond = " AND ".join(f"f_{k} = %(f_{k})s" for k in active)
    sql = (f"session_id IN (SELECT session_id FROM (SELECT session_id, {keys} FROM "
           f"(SELECT DISTINCT event_id, session_id, {TS}, channel, device, member_id FROM pageviews "
           f"WHERE ({rng.sql()}) AND NOT is_bot) GROUP BY session_id) WHERE {cond})")
    return sql, {f"f_{k}": str(v) for k, v in active.items()}


def funnel(store: History, name: str, steps: Sequence[str], rng: TimeRange = ALL_TIME,
           cfg: GoalConfig | None = None, filters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Counts per step: sessions reaching it, drop-off from the previous step, rates.

    A session's path is its page views plus its goal requests (e.g. POST /order/complete is
    not a page view but is a funnel step), in time order. `filters` keep some sessions only
    (session_filter: channel, device, member)."""
    if not steps:
        raise AnalyticsError(f"funnel {name!r} has no steps; list URL patterns in analytics.funnels.{name}")
    regexes = [pattern_regex(s) for s in steps]
    step_res = [re.compile(r) for r in regexes]
    any_step = "|".join(f"({r})" for r in regexes)
    src = pageviews_source([TS, "session_id", "path"], f"{rng.sql()} AND match(path, %(any_step)s)")
    goals_sql, params = attributed_goals(cfg or default_config(), rng)
    keep, fparams = session_filter(rng, filters)
    rows = store.query(
        "SELECT session_id, arrayMap(x -> x.3, arraySort(groupArray((t, event_id, path)))) AS paths FROM ("
        f"SELECT session_id, {TS} AS t, event_id, path FROM {src} "
        "UNION ALL "
        f"SELECT g_session AS session_id, t, event_id, path FROM {goals_sql} "
        f"WHERE match(path, %(any_step)s) AND event_id NOT IN (SELECT event_id FROM pageviews WHERE {rng.sql()})"
        f") WHERE {keep} GROUP BY session_id", {**params, **fparams, "any_step": any_step, **rng.params()})
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
    return {"funnel": name, "filters": {k: v for k, v in (filters or {}).items() if v},
            "entered": reached[0], "completed": reached[-1],
            "conversion_rate": round(reached[-1] / reached[0], 4) if reached[0] else 0.0, "steps": out_steps}


def all_funnels(store: History, funnels: Mapping[str, Sequence[str]], rng: TimeRange = ALL_TIME,
                cfg: GoalConfig | None = None) -> list[dict]:
    return [funnel(store, name, steps, rng, cfg) for name, steps in funnels.items()]

