"""Weekly retention cohorts: first-visit week x weeks since, for visitors or members.

A visitor's cohort is the (UTC, Monday-based) week of its first human page view ever;
it is "retained" in week N when it has a page view N weeks after that. Members use the
page views that belong to them (sinks/reads/members.py), so a member's cohort starts with
the visit in which it first logged in, its anonymous start included.
"""
from __future__ import annotations

from datetime import date
from typing import Any

from sinks.reads.common import ALL_TIME, TS, AnalyticsError, History, TimeRange, num, \
    pageviews_source
from sinks.reads.members import member_pageviews

WEEK = f"toMonday(toDateTime(toUInt32({TS}), 'UTC'))"


def _activity(who: str, site: TimeRange) -> tuple[str, dict]:
    """(id, week) of every active week of every visitor or member (of one site when `site.host` is set)."""
    if who == "visitors":
        src = pageviews_source([TS, "visitor_id"], site.sql())
        return f"(SELECT DISTINCT visitor_id AS id, {WEEK} AS week FROM {src})", site.params()
    pvs, params = member_pageviews(site)
    return f"(SELECT DISTINCT a_member AS id, {WEEK.replace(TS, 't')} AS week FROM {pvs})", params


def cohorts(store: History, who: str = "visitors", rng: TimeRange = ALL_TIME,
            max_weeks: int = 12) -> list[dict[str, Any]]:
    """One row per cohort week in the range: size and retained counts / rates for weeks 0..max_weeks."""
    if who not in ("visitors", "members"):
        raise AnalyticsError(f"cohorts are for 'visitors' or 'members', not {who!r}")
    act, params = _activity(who, TimeRange(host=rng.host))  # every week: a cohort is its first week ever
    rows = store.query(
        "SELECT toString(cohort) AS cohort_s, toString(week) AS week_s, uniqExact(id) AS n FROM "
        f"(SELECT id, week, cohort FROM {act} AS w "
        f"ALL INNER JOIN (SELECT id, min(week) AS cohort FROM {act} GROUP BY id) "
        "AS c USING id) GROUP BY cohort_s, week_s ORDER BY cohort_s, week_s", params)
    table: dict[str, dict[int, int]] = {}
    for r in rows:
        c, w = date.fromisoformat(r["cohort_s"]), date.fromisoformat(r["week_s"])
        table.setdefault(r["cohort_s"], {})[(w - c).days // 7] = int(num(r["n"]))
    # Weeks after the latest week with data have not happened yet: None, not 0.
    horizon = max((date.fromisoformat(r["week_s"]) for r in rows), default=None)
    out = []
    for cohort, weeks in sorted(table.items()):
        start = TimeRange.parse(cohort).since
        if (rng.since is not None and start + 7 * 86400 <= rng.since) or (rng.until is not None and start >= rng.until):
            continue
        size = weeks.get(0, 0)
        seen = (horizon - date.fromisoformat(cohort)).days // 7
        retained = [weeks.get(n, 0) if n <= seen else None for n in range(max_weeks + 1)]
        out.append({"cohort": cohort, "size": size, "retained": retained,
                    "rates": [None if n is None else round(n / size, 4) if size else 0.0 for n in retained]})
    return out
