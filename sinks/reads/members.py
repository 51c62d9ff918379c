"""Who a request belongs to: the member logged in on that visitor id at that moment.

Identity over time, one rule for every member figure (profiles, RFM, cohorts, orders, revenue):
- a request whose member_id is set (the member cookie it carried, or the one its login
  response set) belongs to that member;
- an anonymous request belongs to the first member who logs in later in the same visit
  (session), so the pages viewed before logging in join that member: the visit's anonymous
  requests *before its first member request*. Anonymous requests after a member request of
  the visit (after a logout, before another member's login) stay anonymous: a device shared
  by two members never credits one with the other's pages or orders;
- everything else is anonymous. A visitor id is never linked to a member as a whole, so
  earlier visits on a shared device stay with whoever made them.
Each request belongs to at most one member, so the sum of any member figure over members is
at most its total. Bots are left out.
"""
from __future__ import annotations

from sinks.reads.common import HITS_BY_VISITOR, PAGEVIEWS_BY_VISITOR, TS, TimeRange
from sinks.reads.goal_events import GoalConfig, attributed_goals, goal_hits

# A visit lasts at most a day (processing.session_max_s and the split at midnight): the first login of
# a visit that has a page view in the range is within a day of it.
VISIT_SPAN_S = 86400.0


def _widened(rng: TimeRange) -> tuple[str, dict]:
    """WHERE fragment (params l_*) of the range widened by a visit's span on both sides (every site)."""
    wide = TimeRange(rng.since - VISIT_SPAN_S if rng.since is not None else None,
                     rng.until + VISIT_SPAN_S if rng.until is not None else None)
    sql = wide.sql()
    for name in wide.params():
        sql = sql.replace(f"%({name})s", f"%(l_{name})s")
    return sql, {f"l_{k}": v for k, v in wide.params().items()}


# Only the visitor ids a member was seen on can hold its requests (a request it did not carry joins it
# through a visit in which it logged in): reading some members, only those ids are read, from the copies
# sorted by visitor id (migration 0230; at 10M page views 0.1 s instead of a scan of every row per query).
# (member_id IN a set, not has(): ClickHouse 18.16 skips by the sort key for the one, reads all 100k rows for the other)
_SOME_MEMBERS = (" AND visitor_id IN (SELECT visitor_id FROM member_visitor_ids "
                 "WHERE member_id IN (SELECT arrayJoin(CAST(%(only_members)s AS Array(String)))))")

Members = str | tuple[str, ...] | list[str] | None  # one member, some members, or None: all


def _only(member: Members) -> list[str] | None:
    return None if member is None else [member] if isinstance(member, str) else sorted(member)


def visit_logins(rng: TimeRange, member: Members = None) -> tuple[str, dict]:
    """Subquery (session_id, s_member, s_member_ts): each visit's first member and when it first appeared
    (only the visits on the visitor ids of `member`, one or several, when given)."""
    where, params = _widened(rng)
    only = _only(member)
    if only is not None:
        where, params = where + _SOME_MEMBERS, {**params, "only_members": only}
    table = "pageviews" if only is None else PAGEVIEWS_BY_VISITOR
    return ("(SELECT session_id, argMin(member_id, t) AS s_member, min(t) AS s_member_ts FROM "
            f"(SELECT DISTINCT event_id, session_id, member_id, {TS} AS t FROM {table} "
            f"WHERE member_id != '' AND NOT is_bot AND ({where})) GROUP BY session_id)"), params


def member_pageviews(rng: TimeRange, columns: tuple[str, ...] = (), member: Members = None) -> tuple[str, dict]:
    """Subquery of the human page views in the range that belong to a member:
    (event_id, a_member, visitor_id, session_id, t, *columns); with `member` (one or several), those of
    these members only, read from their visitor ids alone (same rows, a small part of the scan)."""
    extra = [c for c in columns if c not in ("event_id", "visitor_id", "session_id", "member_id")]
    cols = ", ".join(["event_id", "visitor_id", "session_id", "member_id", f"{TS} AS t", *extra])
    logins, params = visit_logins(rng, member)
    picked = ", ".join(["event_id", "visitor_id", "session_id", "t", *extra])
    one = _SOME_MEMBERS if member is not None else ""
    table = "pageviews" if member is None else PAGEVIEWS_BY_VISITOR
    sql = (f"(SELECT {picked}, a_member FROM (SELECT {picked}, "
           "if(member_id != '', member_id, if(t < s_member_ts, s_member, '')) AS a_member FROM "
           f"(SELECT DISTINCT {cols} FROM {table} WHERE ({rng.sql()}) AND NOT is_bot{one}) AS p "
           f"ALL LEFT JOIN {logins} AS l USING session_id) WHERE a_member != ''"
           + (" AND has(%(only_members)s, a_member))" if member is not None else ")"))
    return sql, {**params, **rng.params()}


def member_goals(cfg: GoalConfig, rng: TimeRange, member: Members = None) -> tuple[str, dict]:
    """Subquery of the goal requests in the range that belong to a member:
    (event_id, a_member, visitor_id, t, goal, goal_value); with `member` (one or several), theirs only.

    A goal request carrying a member is that member's; an anonymous one joins the first member of
    its visit (goal_events.attributed_goals) when it came before that member's first request."""
    only = _only(member)
    # some members: only their own goal requests and the anonymous ones on the visitor ids they were seen on,
    # read from the copies sorted by visitor id
    one = "" if only is None else _SOME_MEMBERS
    carried, params = goal_hits(cfg, rng, "member_id != ''" if only is None
                                else "member_id != '' AND has(%(only_members)s, member_id)" + one,
                                by_visitor=only is not None)
    anon, aparams = attributed_goals(cfg, rng, None if only is None else one[len(" AND "):])
    logins, lparams = visit_logins(rng, member)  # the anonymous goals join only these members' visits
    # an event id is on one visitor id: the carried requests of the same visitor ids are all there is to skip
    hits = "hits" if only is None else HITS_BY_VISITOR
    sql = (f"(SELECT event_id, member_id AS a_member, visitor_id, t, goal, goal_value FROM {carried} "
           "UNION ALL "
           "SELECT event_id, s_member AS a_member, visitor_id, t, goal, goal_value FROM "
           f"(SELECT event_id, visitor_id, t, goal, goal_value, g_session AS session_id FROM {anon} "
           f"WHERE event_id NOT IN (SELECT event_id FROM {hits} WHERE member_id != '' AND ({rng.sql()}){one})) AS g "
           f"ALL INNER JOIN {logins} AS l USING session_id WHERE t < s_member_ts"
           # some members: each branch keeps theirs (no query around the union: each level of subquery costs
           # ClickHouse 18.16 60-150 ms of analysis here, with nothing read)
           + (" AND has(%(only_members)s, s_member))" if only is not None else ")"))
    if only is not None:
        return sql, {**params, **aparams, **lparams, "only_members": only}
    return sql, {**params, **aparams, **lparams}


def member_visitors_sql(rng: TimeRange) -> tuple[str, dict]:
    """Subquery (visitor_id) of the human visitor ids logged in as some member during the range: the
    'members' of a members / anonymous split (every other visitor id of the range is anonymous)."""
    return (f"(SELECT DISTINCT visitor_id FROM pageviews WHERE member_id != '' AND NOT is_bot AND ({rng.sql()}))",
            rng.params())
