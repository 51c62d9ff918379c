"""The peer of customers_bench's member profile and activity: those reads as they were before
sinks/reads/one_person.py, one query per figure (profile 5, activity 7 with the products twice), each over
the member's page views or goals again. Kept here only to be timed beside the current reads in the same run;
the subqueries they share (members.member_pageviews, member_goals) are today's. Same answers (checked in the run).
"""
from __future__ import annotations

from sinks.reads.common import PAGEVIEWS_BY_VISITOR, TS, TimeRange, num, pageviews_source
from sinks.reads.customers import _ACTIVITY_COLUMNS, recommend_after
from sinks.reads.members import member_goals, member_pageviews
from sinks.reads.profiles import DAY_S, WEEK_S


def member_profile(store, member_id: str, cfg, rng: TimeRange = TimeRange()) -> dict | None:
    pvs, params = member_pageviews(rng, member=member_id)
    mgoals, gparams = member_goals(cfg, rng, member_id)
    rows = store.query(f"SELECT DISTINCT visitor_id FROM {pvs} WHERE a_member = %(m)s ORDER BY visitor_id",
                       {**params, "m": member_id})
    if not rows:
        return None
    goals_sql = f"(SELECT * FROM {mgoals} WHERE a_member = %(m)s)"
    mine = ("visitor_id IN (SELECT visitor_id FROM member_visitor_ids WHERE member_id = %(m)s) "
            f"AND event_id IN (SELECT event_id FROM {pvs} WHERE a_member = %(m)s)")
    params = {**params, **gparams, "m": member_id, **rng.params()}
    where = f"({mine}) AND {rng.sql()}"
    src = pageviews_source([TS, "session_id"], where, table=PAGEVIEWS_BY_VISITOR)
    r = store.query(
        "SELECT min(s_first) AS first_seen, max(s_last) AS last_seen, count() AS visits, sum(s_pv) AS pageviews, "
        "sum(s_last - s_first) AS total_time FROM ("
        f"SELECT session_id, min({TS}) AS s_first, max({TS}) AS s_last, count() AS s_pv "
        f"FROM {src} GROUP BY session_id)", params)[0]
    g = store.query("SELECT count() AS goals, countIf(goal = %(purchase)s) AS purchases, "
                    f"sumIf(goal_value, goal = %(purchase)s) AS revenue FROM {goals_sql}",
                    {**params, "purchase": cfg.purchase})[0]
    first, last, visits = num(r["first_seen"]), num(r["last_seen"]), int(num(r["visits"]))
    return {"member_id": member_id, "visitor_ids": [x["visitor_id"] for x in rows], "first_seen": first,
            "last_seen": last, "visits": visits, "pageviews": int(num(r["pageviews"])),
            "total_time_s": round(num(r["total_time"]), 3),
            "visits_per_week": round(visits / max(1.0, (last - first) / WEEK_S), 3),
            "recency_days": round(max(0.0, rng.now() - last) / DAY_S, 3), "goals": int(num(g["goals"])),
            "purchases": int(num(g["purchases"])), "revenue": round(num(g["revenue"]), 2),
            "favourite_sections": _top(store, "section", where, params),
            "devices": _top(store, "device", where, params, per="session_id")}


def _top(store, column: str, where: str, params: dict, per: str = "event_id") -> list[dict]:
    src = pageviews_source([column, "session_id"], f"{where} AND {column} != ''", table=PAGEVIEWS_BY_VISITOR)
    rows = store.query(f"SELECT {column} AS value, uniqExact({per}) AS n FROM {src} GROUP BY {column} "
                       "ORDER BY n DESC, value LIMIT 5", params)
    return [{"name": r["value"], "count": int(num(r["n"]))} for r in rows]


def member_activity(store, member_id: str, cfg, min_support: int, rng: TimeRange = TimeRange(),
                    limit: int = 20) -> dict | None:
    pvs, params = member_pageviews(rng, _ACTIVITY_COLUMNS, member=member_id)
    src = f"(SELECT * FROM {pvs} WHERE a_member = %(who)s)"
    goals_sql, gparams = member_goals(cfg, rng, member_id)
    goals = f"(SELECT t, goal, goal_value FROM {goals_sql} WHERE a_member = %(who)s)"
    params = {**params, **gparams, "who": member_id}
    visits = store.query(
        "SELECT session_id, min(t) AS start, max(t) AS end, count() AS pageviews, argMin(path, t) AS entry_page, "
        "argMax(path, t) AS exit_page, any(device) AS device, argMin(channel, t) AS channel "
        f"FROM {src} GROUP BY session_id ORDER BY start DESC, session_id LIMIT {int(limit)}", params)
    if not visits:
        return None

    def top(column: str, n: int | None = limit) -> list[dict]:
        rows = store.query(f"SELECT {column} AS name, count() AS views, max(t) AS last FROM {src} "
                           f"WHERE {column} != '' GROUP BY {column} ORDER BY views DESC, name"
                           + (f" LIMIT {int(n)}" if n else ""), params)
        return [{"name": r["name"], "views": int(num(r["views"])), "last": num(r["last"])} for r in rows]

    keep = max(1000, int(limit) * 5)
    goal_rows = store.query(f"SELECT t, goal, goal_value FROM {goals} ORDER BY t DESC LIMIT {keep} BY goal", params)
    seen = [p["name"] for p in top("product_id", None)]
    return {
        "member_id": member_id,
        "visits": [{"session_id": v["session_id"], "start": num(v["start"]), "end": num(v["end"]),
                    "pageviews": int(num(v["pageviews"])), "entry_page": v["entry_page"], "exit_page": v["exit_page"],
                    "device": v["device"], "channel": v["channel"]} for v in visits],
        "pages": top("path"), "products": top("product_id"), "categories": top("category"), "menus": top("menu"),
        "goals": [{"ts": num(g["t"]), "goal": g["goal"], "value": round(num(g["goal_value"]), 2)}
                  for g in goal_rows[:int(limit) * 5]],
        "orders": [{"ts": num(o["t"]), "value": round(num(o["goal_value"]), 2)}
                   for o in goal_rows if o["goal"] == cfg.purchase][:1000],
        "recommendations": recommend_after(store, seen[:10], seen, min_support),
    }
