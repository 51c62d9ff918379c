"""Goal conversions as events, read from the `hits` table with the configured goal rules.

A goal request is often not a page view (POST /cart/add, POST /order/complete), so it is
only in `hits`; the goal rules (processing.goals: pattern, method, statuses, value from a
query parameter or a captured header) are applied here in SQL exactly as
processors/enrich.py applies them, so any site's rules work without code changes.

A goal is attributed to the visitor's human session that was open at the time: the
latest session started at or before the goal, if its last page view is at most
processing.session_idle_s before the goal. Goals of bots, and of visitors without page views before
them, have no session and are left out of session metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from config.events import BODY_FIELD_PREFIX
from sinks.reads.common import HITS_BY_VISITOR, PAGEVIEWS_BY_VISITOR, TS, TimeRange, pattern_regex


@dataclass(frozen=True)
class GoalConfig:
    rules: Sequence[Any] = field(default_factory=tuple)  # config.settings.GoalRule
    purchase: str = "purchase"  # its value is revenue
    cart: str = "add_to_cart"
    idle_s: float = 1800.0
    split_at_midnight: bool = True  # processing.split_at_midnight: no visit spans two UTC days

    @classmethod
    def from_settings(cls, settings: Any = None) -> "GoalConfig":
        if settings is None:  # the defaults, without reading any config file or environment
            from config.settings import AnalyticsSettings, ProcessingSettings

            p, a = ProcessingSettings(), AnalyticsSettings()
        else:
            p, a = settings.processing, settings.analytics
        return cls(tuple(p.goals), a.purchase_goal, a.cart_goal, p.session_idle_s, p.split_at_midnight)


DEFAULT = None  # lazily GoalConfig.from_settings()


def default_config() -> GoalConfig:
    global DEFAULT
    if DEFAULT is None:
        DEFAULT = GoalConfig.from_settings()
    return DEFAULT


def _param(name: str) -> str:
    """SQL of the request parameter named by param %(name)s: from the query, else from the request body's named
    fields (extra "body:<name>", capture.request_bodies), as processors/enrich.request_param reads it."""
    q = f"extractURLParameter(concat('?', query), %({name})s)"
    return f"if({q} != '', {q}, extra_values[indexOf(extra_keys, concat('{BODY_FIELD_PREFIX}', %({name})s))])"


def _rule_sql(cfg: GoalConfig) -> tuple[str, str, dict]:
    """(goal name expression, goal value expression, params) over a hits row."""
    names, values, params = [], [], {}
    for i, g in enumerate(cfg.rules):
        if not g.status:
            continue  # no accepted status: never matches (as in enrich)
        p = f"goal{i}_"
        params.update({p + "re": pattern_regex(g.pattern), p + "method": g.method, p + "status": list(g.status),
                       p + "name": g.name, p + "param": g.value_param, p + "header": g.value_header})
        cond = (f"match(path, %({p}re)s) AND (%({p}method)s = '' OR method = %({p}method)s) "
                f"AND has(%({p}status)s, toUInt32(ifNull(status, 0)))")
        raw = (f"if(%({p}param)s != '' AND {_param(p + 'param')} != '', {_param(p + 'param')}, "
               f"if(%({p}header)s != '', extra_values[indexOf(extra_keys, %({p}header)s)], ''))")
        names += [cond, f"%({p}name)s"]
        values += [cond, f"toFloat64OrZero({raw})"]
    if not names:
        return "''", "0.0", {}
    return f"multiIf({', '.join(names)}, '')", f"multiIf({', '.join(values)}, 0.0)", params


def _items_sql(cfg: GoalConfig) -> tuple[str, dict]:
    """(expression, params): a goal request's items as "id:qty:unit_price,..." (see GoalRule.items_*), one
    "id:qty:" item for a rule naming a product parameter, '' for the others."""
    parts, params = [], {}
    for i, g in enumerate(cfg.rules):
        p = f"items{i}_"
        params.update({p + "re": pattern_regex(g.pattern), p + "method": g.method})
        cond = f"match(path, %({p}re)s) AND (%({p}method)s = '' OR method = %({p}method)s)"
        if g.items_param or g.items_header:
            params.update({p + "param": g.items_param, p + "header": g.items_header})
            expr = (f"if(%({p}param)s != '' AND {_param(p + 'param')} != '', {_param(p + 'param')}, "
                    f"if(%({p}header)s != '', extra_values[indexOf(extra_keys, %({p}header)s)], ''))")
        elif g.product_param:
            params.update({p + "product": g.product_param, p + "qty": g.qty_param or "-"})
            expr = (f"if({_param(p + 'product')} = '', '', "
                    f"concat({_param(p + 'product')}, ':', {_param(p + 'qty')}, ':'))")
        else:
            continue
        parts += [cond, expr]
    return (f"multiIf({', '.join(parts)}, '')" if parts else "''"), params


def goal_items(cfg: GoalConfig, rng: TimeRange, goal: str) -> tuple[str, dict]:
    """Subquery (event_id, visitor_id, member_id, t, product_id, qty, price): one row per item of each
    request of goal `goal` (an order's lines, a cart add's product); at most 100 items a request and
    ids of at most 128 characters are read, quantities beyond 10,000 count as 1 (bounded input)."""
    name, _, params = _rule_sql(cfg)
    items, iparams = _items_sql(cfg)
    sql = ("(SELECT event_id, visitor_id, member_id, t, f[1] AS product_id, "
           "if(length(f) >= 2 AND toUInt32OrZero(f[2]) BETWEEN 1 AND 10000, toUInt32OrZero(f[2]), 1) AS qty, "
           "if(length(f) >= 3, toFloat64OrZero(f[3]), 0.0) AS price FROM ("
           "SELECT event_id, visitor_id, member_id, t, splitByChar(':', item) AS f FROM ("
           f"SELECT DISTINCT event_id, visitor_id, member_id, {TS} AS t, {name} AS goal, {items} AS raw FROM hits "
           f"WHERE ({rng.sql()})) ARRAY JOIN arraySlice(splitByChar(',', raw), 1, 100) AS item "
           "WHERE goal = %(items_goal)s AND item != '') WHERE f[1] != '' AND length(f[1]) <= 128)")
    return sql, {**params, **iparams, **rng.params(), "items_goal": goal}


def goal_hits(cfg: GoalConfig, rng: TimeRange, where: str = "1", by_visitor: bool = False) -> tuple[str, dict]:
    """Subquery (event_id, visitor_id, member_id, t, path, goal, goal_value): one row per goal request
    (by_visitor: read from the copy sorted by visitor id, for a `where` on some visitor ids)."""
    name, value, params = _rule_sql(cfg)
    table = HITS_BY_VISITOR if by_visitor else "hits"
    # (goal != '' in the same SELECT, by its alias: each level of subquery costs ClickHouse 18.16 analysis time)
    sql = (f"(SELECT DISTINCT event_id, visitor_id, member_id, {TS} AS t, path, {name} AS goal, "
           f"{value} AS goal_value FROM {table} WHERE ({rng.sql()}) AND ({where}) AND goal != '')")
    return sql, {**params, **rng.params()}


def attributed_goals(cfg: GoalConfig, rng: TimeRange, visitors: str | None = None) -> tuple[str, dict]:
    """goal_hits plus g_session: the human session each goal belongs to (goals without one are left out).

    Linear per visitor, no goals x sessions join (a cookieless visitor id shared by many people
    can have thousands of both): the visitor's session starts and goals are merged in time
    order, a running count of starts gives each goal the ordinal of the latest session started
    at or before it, and an equi-join on (visitor_id, ordinal) fetches that session, kept when
    the goal is at most session_idle_s after its last page view.

    `visitors`: a condition on visitor_id (e.g. `visitor_id IN (...)`) keeping only some visitors' goals, read
    from the copies sorted by visitor id. Their sessions are then read by it too, not by the visitor ids of
    the goals: the same goals find the same sessions, and ClickHouse 18.16 takes 0.09 s for that nested IN
    instead of 0.015 s (one member at 10M page views)."""
    by_visitor = visitors is not None
    hits_sql, params = goal_hits(cfg, rng, visitors if by_visitor else "1", by_visitor)
    with_goals = visitors if by_visitor else f"visitor_id IN (SELECT visitor_id FROM {hits_sql})"
    # Sessions that may hold a goal of the range can start before it (at most a day: session_max_s).
    window = TimeRange(rng.since - 86400 if rng.since is not None else None, rng.until)
    wsql = window.sql().replace("%(since)s", "%(w_since)s").replace("%(since_s)s", "%(w_since_s)s")
    # (min and max need no DISTINCT: a row read twice changes neither)
    sessions = (
        f"(SELECT visitor_id, session_id, min({TS}) AS w_start, max({TS}) AS w_end FROM "
        f"{PAGEVIEWS_BY_VISITOR if by_visitor else 'pageviews'} "
        f"WHERE ({wsql}) AND NOT is_bot AND {with_goals} "
        "GROUP BY visitor_id, session_id)")
    # (t, kind 0 = session start / 1 = goal, w_end, id, path, goal, value), sorted per visitor.
    merged = (
        f"SELECT visitor_id, w_start AS t, 0 AS k, w_end, session_id AS id, '' AS path, '' AS goal, "
        f"0.0 AS goal_value FROM {sessions} "
        f"UNION ALL SELECT visitor_id, t, 1 AS k, 0.0 AS w_end, event_id AS id, path, goal, goal_value "
        f"FROM {hits_sql}")
    goals_numbered = (
        "(SELECT visitor_id, e.1 AS t, e.4 AS event_id, e.5 AS path, e.6 AS goal, e.7 AS goal_value, "
        "toUInt64(n) AS ordinal FROM ("
        "SELECT visitor_id, arraySort(groupArray((t, k, w_end, id, path, goal, goal_value))) AS seq, "
        "arrayCumSum(arrayMap(x -> toUInt32(x.2 = 0), seq)) AS starts "
        f"FROM ({merged}) GROUP BY visitor_id) ARRAY JOIN seq AS e, starts AS n "
        "WHERE e.2 = 1 AND n > 0)")
    numbered_sessions = (
        "(SELECT visitor_id, x.3 AS g_session, x.2 AS g_end, toUInt64(n) AS ordinal FROM ("
        f"SELECT visitor_id, arraySort(groupArray((w_start, w_end, session_id))) AS ss FROM {sessions} "
        "GROUP BY visitor_id) ARRAY JOIN ss AS x, arrayEnumerate(ss) AS n)")
    sql = (f"(SELECT event_id, visitor_id, t, path, goal, goal_value, g_session FROM {goals_numbered} AS g "
           f"ALL INNER JOIN {numbered_sessions} AS s USING (visitor_id, ordinal) "
           "WHERE t <= g_end + %(idle_s)s)")
    params = {**params, "idle_s": float(cfg.idle_s)}
    if window.since is not None:
        params["w_since"], params["w_since_s"] = window.params()["since"], window.params()["since_s"]
    return sql, params
