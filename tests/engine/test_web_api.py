"""The JSON API against real backends: a chdb history store in a temp dir (fed through
HistoryStore.write, every batch written twice like an at-least-once redelivery) and a real
redis-server fed through the processors' live-state writer. Expected figures are computed
in Python from the same known rows, never typed in."""
from __future__ import annotations

import asyncio
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.settings import Settings
from engine.web import create_web_app

pytestmark = pytest.mark.integration

BASE = 1767261600  # 2026-01-01T10:00:00Z, a minute boundary
ISO_BASE = "2026-01-01T10:00:00Z"
HOST = "shop.test"


# -- known data ----------------------------------------------------------------------------------
def _pageview(i, t, visitor, session, path, *, member="", ref="", channel="direct", device="desktop",
              browser="Chrome", os_="Linux", campaign="", bot=False, latency=20.0):
    return {
        "event_id": f"pv{i:04d}", "ts": BASE + t, "visitor_id": visitor, "member_id": member,
        "session_id": session, "host": HOST, "path": path, "query": "", "method": "GET", "status": 200,
        "latency_ms": latency, "referrer": f"https://{ref}/" if ref else "", "referrer_host": ref,
        "channel": channel, "utm_source": "", "utm_medium": "", "utm_campaign": campaign, "utm_term": "",
        "utm_content": "", "browser": browser, "os": os_, "device": device, "is_bot": bot, "page_group": "",
        "section": "", "product_id": "", "category": "", "menu": "", "goal": "", "goal_value": 0.0,
    }


def _hit(event_id, t, visitor, path, status, latency, member=""):
    return {
        "event_id": event_id, "ts": BASE + t, "client_ip": "10.0.0.1", "client_port": 40000,
        "server_ip": "10.0.0.2", "server_port": 80, "method": "GET", "host": HOST, "uri": path, "path": path,
        "query": "", "referrer": "", "user_agent": "test", "status": status, "resp_bytes": 100,
        "content_type": "text/html", "latency_ms": latency, "visitor_id": visitor, "member_id": member,
        "http_version": "1.1", "no_response": status is None, "extra": {},
    }


def _session(sid, visitor, start, end, pvs, entry, *, member="", channel="direct", ref="", device="desktop",
             browser="Chrome", os_="Linux", campaign="", bot=False):
    return {
        "session_id": sid, "visitor_id": visitor, "member_id": member, "start": BASE + start, "end": BASE + end,
        "duration": float(end - start), "pageviews": pvs, "entry_page": entry, "exit_page": entry,
        "bounce": pvs == 1, "channel": channel, "referrer_host": ref, "utm_source": "", "utm_medium": "",
        "utm_campaign": campaign, "browser": browser, "os": os_, "device": device, "is_bot": bot,
        "close_reason": "idle", "goals": 0, "revenue": 0.0,
    }


def known_data():
    pvs = [
        _pageview(1, 5, "va", "sa", "/", ref="www.google.com", channel="search", campaign="spring"),
        _pageview(2, 30, "va", "sa", "/product/1", ref=HOST, channel="internal", latency=40.0),  # the site itself
        _pageview(3, 70, "va", "sa", "/cart", channel="internal", latency=60.0),
        _pageview(4, 65, "vb", "sb", "/", member="m1", device="mobile", browser="Safari", os_="iOS",
                  ref="facebook.com", channel="social", latency=80.0),
        _pageview(5, 130, "vc", "sc", "/product/2", device="tablet", browser="Firefox", os_="Android",
                  latency=900.0),
        _pageview(6, 190, "vb", "sb", "/product/1", member="m1", device="mobile", browser="Safari", os_="iOS",
                  channel="internal", latency=120.0),
        _pageview(7, 200, "bot1", "sx", "/", device="bot", browser="Googlebot", os_="Other", bot=True),
        _pageview(8, 7300, "va", "sa2", "/", latency=30.0),  # two hours later: outside the first hour
    ]
    hits = [_hit(p["event_id"], p["ts"] - BASE, p["visitor_id"], p["path"], 200, p["latency_ms"], p["member_id"])
            for p in pvs]
    hits += [
        _hit("h-css", 6, "va", "/app.css", 200, 2.0),
        _hit("h-404", 75, "va", "/missing", 404, 5.0),
        _hit("h-500", 135, "vc", "/checkout", 500, 1500.0),
        _hit("h-none", 140, "vc", "/slow", None, None),
        _hit("h-vb-anon", 66, "vb", "/login-form", 200, 3.0),  # vb without its member cookie: still one member visitor
    ]
    sessions = [
        _session("sa", "va", 5, 70, 3, "/", channel="search", ref="www.google.com", campaign="spring"),
        _session("sb", "vb", 65, 190, 2, "/", member="m1", channel="social", ref="facebook.com", device="mobile",
                 browser="Safari", os_="iOS"),
        _session("sc", "vc", 130, 130, 1, "/product/2", device="tablet", browser="Firefox", os_="Android"),
        _session("sx", "bot1", 200, 200, 1, "/", device="bot", browser="Googlebot", os_="Other", bot=True),
    ]
    # An earlier version of session sb (closed at shutdown, later continued): the latest `end` must win.
    stale_sb = _session("sb", "vb", 65, 100, 1, "/", member="m1", channel="social", ref="facebook.com",
                        device="mobile", browser="Safari", os_="iOS")
    return pvs, hits, sessions, stale_sb


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def history(history_place):
    """The same known rows in embedded chdb and in a real ClickHouse 18.16: the SQL must be portable."""
    from sinks.testing import fresh_history

    with fresh_history(history_place, "web") as store:
        pvs, hits, sessions, stale_sb = known_data()
        store.write("sessions", [stale_sb])
        for _ in range(2):  # at-least-once: every batch arrives twice
            store.write("pageviews", pvs)
            store.write("hits", hits)
            store.write("sessions", sessions)
        yield store


def make_settings(**web) -> Settings:
    return Settings(web=web) if web else Settings()


async def _client(settings, live=None, history=None) -> TestClient:
    client = TestClient(TestServer(create_web_app(settings, live, history)))
    await client.start_server()
    return client


def run(coro):
    return asyncio.run(coro)


async def _get(settings, path, live=None, history=None, **kw):
    client = await _client(settings, live, history)
    try:
        resp = await client.get(path, **kw)
        body = await resp.json(content_type=None)
        return resp.status, body
    finally:
        await client.close()


def first_hour(**params) -> str:
    q = {"from": ISO_BASE, "to": str(BASE + 3600), **params}
    return "/api/stats?" + "&".join(f"{k}={v}" for k, v in q.items())


# -- /api/stats ----------------------------------------------------------------------------------
def test_stats_totals_count_each_event_once_and_leave_bots_out(history):
    pvs, hits, sessions, _ = known_data()
    in_hour = lambda t: BASE <= t < BASE + 3600  # noqa: E731
    human_pvs = [p for p in pvs if in_hour(p["ts"]) and not p["is_bot"]]
    human_sessions = [s for s in sessions if in_hour(s["start"]) and not s["is_bot"]]
    hour_hits = [h for h in hits if in_hour(h["ts"])]
    status, body = run(_get(make_settings(), first_hour(
        metrics="pageviews,visitors,sessions,hits,bounce_rate,avg_duration,errors,error_rate"), history=history))
    assert status == 200, body
    errors = sum(1 for h in hour_hits if h["status"] is not None and h["status"] >= 400)
    assert body["totals"] == {
        "pageviews": len(human_pvs),
        "visitors": len({p["visitor_id"] for p in human_pvs}),
        "sessions": len(human_sessions),
        "hits": len(hour_hits),
        "bounce_rate": round(sum(s["bounce"] for s in human_sessions) / len(human_sessions), 4),
        "avg_duration": round(statistics.mean(s["duration"] for s in human_sessions), 1),
        "errors": errors,
        "error_rate": round(errors / len(hour_hits), 4),
    }


def test_stats_per_minute_series_fills_empty_minutes(history):
    pvs, _, _, _ = known_data()
    status, body = run(_get(make_settings(), first_hour(metrics="pageviews,visitors", interval="minute",
                                                        to=str(BASE + 600)), history=history))
    assert status == 200, body
    per_minute = Counter((p["ts"] - BASE) // 60 for p in pvs if not p["is_bot"] and p["ts"] < BASE + 600)
    visitors = defaultdict(set)
    for p in pvs:
        if not p["is_bot"] and p["ts"] < BASE + 600:
            visitors[(p["ts"] - BASE) // 60].add(p["visitor_id"])
    assert [row["t"] for row in body["series"]] == [BASE + 60 * m for m in range(10)]
    assert [row["pageviews"] for row in body["series"]] == [per_minute.get(m, 0) for m in range(10)]
    assert [row["visitors"] for row in body["series"]] == [len(visitors.get(m, ())) for m in range(10)]


def test_stats_latency_quantiles_per_hour(history):
    _, hits, _, _ = known_data()
    status, body = run(_get(make_settings(), first_hour(metrics="latency_p50,hits", interval="hour",
                                                        to=str(BASE + 3 * 3600)), history=history))
    assert status == 200, body
    series = body["series"]
    assert [r["hits"] for r in series] == [sum(1 for h in hits if (h["ts"] - BASE) // 3600 == k) for k in range(3)]
    first = sorted(h["latency_ms"] for h in hits if h["ts"] < BASE + 3600 and h["latency_ms"] is not None)
    assert series[0]["latency_p50"] == first[len(first) // 2]  # quantileExact picks the element at n*q
    assert series[1]["latency_p50"] is None  # an hour without traffic has no latency, not 0 ms


@pytest.mark.parametrize("offset", [0, 6, 61])
def test_stats_exact_for_whole_minute_and_partial_minute_ranges(history, offset):
    """Whole minutes are answered from the rollups, other ranges from the raw tables: same figures."""
    pvs, hits, _, _ = known_data()
    start, end = BASE + offset, BASE + 3600 + offset
    status, body = run(_get(make_settings(), f"/api/stats?from={start}&to={end}&metrics=pageviews,visitors,hits,errors",
                            history=history))
    assert status == 200, body
    human = [p for p in pvs if start <= p["ts"] < end and not p["is_bot"]]
    window = [h for h in hits if start <= h["ts"] < end]
    assert body["totals"] == {"pageviews": len(human), "visitors": len({p["visitor_id"] for p in human}),
                              "hits": len(window),
                              "errors": sum(1 for h in window if h["status"] is not None and h["status"] >= 400)}


@pytest.mark.parametrize("by,field", [("page", "path"), ("referrer", "referrer_host"), ("channel", "channel"),
                                      ("device", "device"), ("browser", "browser"), ("os", "os"),
                                      ("campaign", "utm_campaign")])
def test_stats_breakdown_by_dimension(history, by, field):
    pvs, _, _, _ = known_data()
    status, body = run(_get(make_settings(), first_hour(metrics="pageviews,visitors", by=by), history=history))
    assert status == 200, body
    human = [p for p in pvs if p["ts"] < BASE + 3600 and not p["is_bot"]]
    def key(p):  # the site's own pages are no referrer
        return "" if by == "referrer" and p["channel"] == "internal" else p[field]
    counts = Counter(key(p) for p in human)
    assert by != "referrer" or HOST in {p[field] for p in human}
    visitors = defaultdict(set)
    for p in human:
        visitors[key(p)].add(p["visitor_id"])
    expected = sorted(({"key": k, "pageviews": n, "visitors": len(visitors[k])} for k, n in counts.items()),
                      key=lambda r: (-r["pageviews"], r["key"]))
    assert body["by"] == by and body["rows"] == expected[:10]


def test_stats_breakdown_by_status_and_member(history):
    _, hits, _, _ = known_data()
    hour = [h for h in hits if h["ts"] < BASE + 3600]
    status, body = run(_get(make_settings(), first_hour(metrics="hits", by="status"), history=history))
    assert status == 200, body
    assert {r["key"]: r["hits"] for r in body["rows"]} == dict(Counter(str(h["status"] or 0) for h in hour))
    status, body = run(_get(make_settings(), first_hour(metrics="hits,pageviews,visitors", by="member"),
                            history=history))
    # a visitor logged in during the range is a member, with all its hits: members + anonymous = visitors
    members = {h["visitor_id"] for h in hour if h["member_id"]}
    assert {r["key"]: r["hits"] for r in body["rows"]} == dict(
        Counter("member" if h["visitor_id"] in members else "anonymous" for h in hour))
    assert {r["key"]: r["visitors"] for r in body["rows"]} == {"member": 1, "anonymous": 2}


def test_sessions_use_the_latest_version(history):
    _, _, sessions, _ = known_data()
    status, body = run(_get(make_settings(), first_hour(metrics="sessions,avg_duration", by="channel"),
                            history=history))
    assert status == 200, body
    social = next(r for r in body["rows"] if r["key"] == "social")
    sb = next(s for s in sessions if s["session_id"] == "sb")
    assert social == {"key": "social", "sessions": 1, "avg_duration": sb["duration"]}


@pytest.mark.parametrize("query,fragment", [
    ("by=country&metrics=sessions", "cannot be broken down by country"),
    ("metrics=pageviews,nope", "unknown metric"),
    ("by=planet", "unknown by"),
    ("interval=week", "unknown interval"),
    ("from=yesterday", "is not a time"),
    (f"from={BASE + 10}&to={BASE}", "'to' must be after 'from'"),
    ("interval=minute&by=page", "not both"),
    ("metrics=avg_duration&by=status", "cannot be broken down by status"),
    ("limit=0", "limit"),
    ("color=red", "unknown parameter"),
    (f"from=0&to={BASE}&interval=minute", "range too long"),
])
def test_stats_bad_parameters_answer_400_with_a_reason(history, query, fragment):
    status, body = run(_get(make_settings(), f"/api/stats?{query}", history=history))
    assert status == 400
    assert fragment in body["error"]


# -- /api/visitors/{id} --------------------------------------------------------------------------
def test_visitor_profile(history):
    pvs, hits, _, _ = known_data()
    status, body = run(_get(make_settings(), "/api/visitors/vb", history=history))
    assert status == 200, body
    mine = sorted((p for p in pvs if p["visitor_id"] == "vb"), key=lambda p: p["ts"])
    assert body["member_id"] == "m1"
    assert body["pageviews"] == len(mine)
    assert body["hits"] == sum(1 for h in hits if h["visitor_id"] == "vb")
    assert body["visits"] == len({p["session_id"] for p in mine})
    assert body["first_seen"] == mine[0]["ts"] and body["last_seen"] == mine[-1]["ts"]
    assert [p["path"] for p in body["last_pages"]] == [p["path"] for p in reversed(mine)]


def test_unknown_visitor_is_404_and_a_malformed_id_400(history):
    status, body = run(_get(make_settings(), "/api/visitors/nobody", history=history))
    assert status == 404 and "nobody" in body["error"]
    status, body = run(_get(make_settings(), "/api/visitors/x'%20OR%201=1", history=history))
    assert status == 400 and "visitor_id" in body["error"]


# -- POST /api/query -----------------------------------------------------------------------------
async def _post(settings, path, history, **kw):
    client = await _client(settings, None, history)
    try:
        resp = await client.post(path, **kw)
        return resp.status, await resp.json(content_type=None)
    finally:
        await client.close()


def test_query_runs_read_only_sql(history):
    pvs, _, _, _ = known_data()
    status, body = run(_post(make_settings(), "/api/query", history,
                             json={"sql": "SELECT uniqExact(event_id) AS n FROM pageviews"}))
    assert status == 200, body
    assert body == {"rows": [{"n": len(pvs)}]}


@pytest.mark.parametrize("payload,fragment", [
    ({"sql": "DROP TABLE pageviews"}, "only SELECT"),
    ({"sql": "INSERT INTO pageviews SELECT * FROM pageviews"}, "only SELECT"),
    ({"sql": "SELECT 1; DROP TABLE hits"}, "one statement"),
    ({"sql": "SELECT * FROM file('/etc/passwd')"}, "not allowed"),
    ({"sql": "SELECT nonsense_column FROM pageviews"}, "query failed"),
    ({"sql": ""}, "non-empty"),
    ({"query": "SELECT 1"}, "non-empty"),
])
def test_query_refuses_writes_and_reports_bad_sql_as_400(history, payload, fragment):
    status, body = run(_post(make_settings(), "/api/query", history, json=payload))
    assert status == 400, body
    assert fragment in body["error"]
    # and the data is still there
    status, body = run(_post(make_settings(), "/api/query", history,
                             json={"sql": "SELECT count() > 0 AS ok FROM pageviews"}))
    assert body["rows"][0]["ok"] in (1, True)


SECRET_MARKER = "visitwire-secret-marker-7c1e"

# Ways around a read-only check, each of which must get 400 (the {secret} file holds SECRET_MARKER).
BYPASS_ATTEMPTS = [
    "SELECT * FROM `file`('{secret}', 'LineAsString')",
    'SELECT * FROM "file"(\'{secret}\', \'LineAsString\')',
    "SELECT * FROM FiLe('{secret}', 'LineAsString')",
    "SELECT * FROM /* x */ file /* y */ ('{secret}', 'LineAsString')",
    "SELECT * FROM file\n('{secret}', 'LineAsString')",
    "SELECT file('{secret}')",
    "SELECT * FROM hits WHERE visitor_id IN (SELECT * FROM `file`('{secret}', 'LineAsString'))",
    "SELECT (SELECT any(line) FROM (SELECT * FROM `url`('http://127.0.0.1:9/', 'LineAsString')))",
    "WITH t AS (SELECT * FROM file('{secret}', 'LineAsString')) SELECT * FROM t",
    "SELECT * FROM hits UNION ALL SELECT * FROM file('{secret}', 'LineAsString')",
    "SELECT 'a\\'', file('{secret}') -- '",
    "SELECT /* /* */ 1 */ file('{secret}')",
    "SELECT $$x$$, file('{secret}')",
    "SELECT \uff46ile('{secret}')",
    "SELECT\u00a0file('{secret}')",
    "SELECT * FROM system.settings",
    "SELECT * FROM system.tables",
    "SELECT * FROM INFORMATION_SCHEMA.TABLES",
    "SELECT * FROM default.nope",
    "SELECT getSetting('readonly')",
    "SELECT sleepEachRow(1) FROM hits",
    "SELECT * FROM hits SETTINGS readonly = 0",
    "SELECT * FROM (SELECT * FROM hits SETTINGS max_execution_time = 0)",
    "SELECT * FROM hits FORMAT TabSeparated",
    "SELECT * FROM hits INTO OUTFILE '/tmp/visitwire-out'",
    "SELECT 1; SELECT * FROM file('{secret}')",
    "SELECT 1;\nDROP TABLE hits",
    "SET readonly = 0",
    "SHOW TABLES",
    "DESCRIBE TABLE hits",
    "EXPLAIN SELECT 1",
    "CREATE TABLE x (a UInt8) ENGINE = Memory",
    "ALTER TABLE hits DELETE WHERE 1",
    "OPTIMIZE TABLE hits FINAL",
    "INSERT INTO FUNCTION file('/tmp/visitwire-out', 'CSV') SELECT 1",
    "SELECT * FROM executable('cat {secret}', 'LineAsString', 'x String')",
    "SELECT joinGet('hits', 'path', 'x')",
    "SELECT dictGetString('d', 'a', toUInt64(1))",
]


def _bypass_attempts(secret: str) -> list[str]:
    return [sql.replace("{secret}", secret) for sql in BYPASS_ATTEMPTS]


def _table_function_attempts(history) -> list[str]:
    """Every table function the store's ClickHouse version has, called plainly, quoted and in a subquery."""
    names = [r["name"] for r in history.query("SELECT name FROM system.table_functions")]
    assert len(names) > 5  # file, url, remote, numbers, ... are there in every version
    out = []
    for name in names:
        out += [f"SELECT * FROM {name}('x')", f"SELECT * FROM `{name}`('x', 'CSV', 'a String')",
                f"SELECT count() FROM hits WHERE path IN (SELECT * FROM {name.upper()}('x'))"]
    return out


async def _post_all(history, sqls):
    client = await _client(make_settings(), None, history)
    try:
        out = []
        for sql in sqls:
            resp = await client.post("/api/query", json={"sql": sql})
            out.append((sql, resp.status, await resp.text()))
        return out
    finally:
        await client.close()


def test_query_bypass_corpus_gets_400_and_never_reads_a_file(history, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_MARKER + "\n")
    results = run(_post_all(history, _bypass_attempts(str(secret)) + _table_function_attempts(history)))
    let_through = [(sql, status) for sql, status, _ in results if status != 400]
    assert not let_through, let_through
    assert not [sql for sql, _, text in results if SECRET_MARKER in text]
    assert not Path("/tmp/visitwire-out").exists()
    # the store is still whole and writable after all of it
    status, body = run(_post(make_settings(), "/api/query", history, json={"sql": "SELECT count() AS n FROM hits"}))
    assert status == 200 and body["rows"][0]["n"] > 0


def test_query_runs_the_sql_an_analyst_writes(history):
    pvs, _, _, _ = known_data()
    sql = ("SELECT p.visitor_id AS v, uniqExactIf(p.event_id, p.path LIKE '/product/%') AS products, "
           "any(f.first) AS first, "
           "uniqExact(p.session_id) AS sessions, toStartOfHour(toDateTime(min(p.ts))) AS hour "
           "FROM pageviews AS p INNER JOIN (SELECT visitor_id, min(ts) AS first FROM pageviews GROUP BY visitor_id) "
           "AS f ON p.visitor_id = f.visitor_id "
           "WHERE p.visitor_id IN (SELECT visitor_id FROM sessions) "
           "GROUP BY v ORDER BY v -- the visitors\n")
    status, body = run(_post(make_settings(), "/api/query", history, json={"sql": sql}))
    assert status == 200, body
    by_visitor = defaultdict(list)
    for p in pvs:
        by_visitor[p["visitor_id"]].append(p)
    assert [r["v"] for r in body["rows"]] == sorted(by_visitor)
    for row in body["rows"]:
        mine = by_visitor[row["v"]]
        assert row["products"] == sum(p["path"].startswith("/product/") for p in mine)
        assert row["sessions"] == len({p["session_id"] for p in mine})


def test_query_limits_apply_and_cannot_be_lifted(history):
    settings = make_settings(query_max_rows=3)
    status, body = run(_post(settings, "/api/query", history, json={"sql": "SELECT event_id FROM hits"}))
    assert status == 400 and "query failed" in body["error"], body
    status, body = run(_post(settings, "/api/query", history,
                             json={"sql": "SELECT event_id FROM hits LIMIT 3"}))
    assert status == 200 and len(body["rows"]) == 3
    status, body = run(_post(settings, "/api/query", history,
                             json={"sql": "SELECT event_id FROM hits SETTINGS max_result_rows = 0"}))
    assert status == 400 and "SETTINGS" in body["error"]


def test_query_answer_over_its_size_limit_is_refused_not_built(history):
    # 40 rows of a 1 MB string: 40 MB of answer (the engine would hold ~7 times that while encoding it);
    # a constant, which the server's own max_result_bytes does not count
    mb = "arrayStringConcat(arrayMap(x -> 'aaaaaaaaaa', range(100000)))"
    sql = f"SELECT {mb} AS x FROM (SELECT arrayJoin(range(40)) AS i)"
    settings = make_settings(query_max_result_mb=8)
    status, body = run(_post(settings, "/api/query", history, json={"sql": sql}))
    # refused by the store (chdb: a constant passes the server's count) or by the server (ClickHouse 18.16)
    assert status == 400 and re.search("web.query_max_result_mb|Limit for result exceeded", body["error"]), \
        str(body)[:300]
    status, body = run(_post(settings, "/api/query", history, json={"sql": sql.replace("range(40)", "range(4)")}))
    assert status == 200 and len(body["rows"]) == 4 and len(body["rows"][0]["x"]) == 1_000_000, str(body)[:300]


def test_query_body_over_the_limit_is_413(history):
    sql = "SELECT 1 AS x" + " " * (5 << 20)
    status, body = run(_post(make_settings(), "/api/query", history, json={"sql": sql}))
    assert status == 413 and "too large" in body["error"]


def test_query_body_that_is_not_json_is_400(history):
    status, body = run(_post(make_settings(), "/api/query", history, data=b"SELECT 1",
                             headers={"Content-Type": "application/json"}))
    assert status == 400 and "JSON" in body["error"]


# -- access control ------------------------------------------------------------------------------
TOKEN = "s3cret-token-for-tests"


async def _auth_session(history):
    client = await _client(make_settings(token=TOKEN), None, history)
    out = {}
    try:
        for name, kw in {"none": {}, "wrong": {"headers": {"Authorization": "Bearer nope"}},
                         "right": {"headers": {"Authorization": f"Bearer {TOKEN}"}}}.items():
            for path in ("/api/stats?metrics=hits", "/api/openapi.json", "/"):
                resp = await client.get(path, allow_redirects=False, **kw)
                out[(name, path)] = (resp.status, resp.content_type)
        resp = await client.get("/static/app.js")
        out["static"] = resp.status
        # The page with ?token= sets a cookie and redirects to the address without the token ...
        resp = await client.get(f"/?wall=1&token={TOKEN}", allow_redirects=False)
        out["page_with_token"] = (resp.status, resp.headers.get("Location"))
        # ... after which the same browser (cookie jar) reaches the API without a header.
        resp = await client.get("/api/stats?metrics=hits")
        out["after_cookie"] = resp.status
        # A page of another site the browser counts as the same (another port of the host, a sibling
        # subdomain) posting a form with the cookie: no CORS preflight for text/plain, so only Origin tells
        note = '{"ts": 1764000000, "text": "cross-site"}'
        for name, headers in {"other_port": {"Origin": "http://127.0.0.1:1"},
                              "sibling": {"Origin": "http://shop.example.com", "Sec-Fetch-Site": "same-site"},
                              "null": {"Origin": "null"},
                              "own_page": {"Origin": f"http://{client.host}:{client.port}",
                                           "Sec-Fetch-Site": "same-origin"}}.items():
            resp = await client.post("/api/annotations", data=note, headers={"Content-Type": "text/plain", **headers})
            out[f"note_{name}"] = resp.status
            resp = await client.post("/api/query", data='{"sql": "SELECT 1 AS x"}',
                                     headers={"Content-Type": "text/plain", **headers})
            out[f"query_{name}"] = resp.status
    finally:
        await client.close()
    client = await _client(make_settings(token=TOKEN), None, history)  # a fresh one: no cookie
    try:
        resp = await client.post(f"/api/query?token={TOKEN}", json={"sql": "SELECT 1 AS x"})
        out["post_with_query_token"] = resp.status
        resp = await client.post("/api/query", json={"sql": "SELECT 1 AS x"},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
        out["post_with_header"] = resp.status
    finally:
        await client.close()
    return out


def test_token_guards_screen_and_api(history):
    out = run(_auth_session(history))
    for path in ("/api/stats?metrics=hits", "/api/openapi.json", "/"):
        assert out[("none", path)] == (401, "application/json"), path
        assert out[("wrong", path)] == (401, "application/json"), path
        assert out[("right", path)][0] == 200, path
    assert out["static"] == 200  # no data in the static files
    assert out["page_with_token"] == (302, "/?wall=1")
    assert out["after_cookie"] == 200
    for name in ("other_port", "sibling", "null"):  # with the cookie, but not from the screen's page
        assert out[f"note_{name}"] == out[f"query_{name}"] == 403, name
    assert out["note_own_page"] == 201 and out["query_own_page"] == 200
    # A POST takes the token from the header only: never from the URL, which proxies log.
    assert out["post_with_query_token"] == 401
    assert out["post_with_header"] == 200


def test_without_token_everything_is_open_on_loopback(history):
    status, _ = run(_get(make_settings(), "/api/stats?metrics=hits", history=history))
    assert status == 200


# -- OpenAPI -------------------------------------------------------------------------------------
def test_openapi_document_is_valid_and_lists_every_route(history):
    from openapi_spec_validator import validate

    async def fetch():
        app = create_web_app(make_settings(), None, history)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            resp = await client.get("/api/openapi.json")
            doc = await resp.json()
        finally:
            await client.close()
        routes = set()
        for route in app.router.routes():
            info = route.resource.get_info()
            path = info.get("formatter") or info.get("path")
            if path and "directory" not in info and route.method not in ("HEAD", "*"):
                routes.add((path, route.method.lower()))
        return doc, routes

    doc, routes = run(fetch())
    validate(doc)
    listed = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routes <= listed, routes - listed
    assert {"/api/live", "/api/live/stream", "/api/stats", "/api/visitors/{visitor_id}", "/api/query"} <= set(
        doc["paths"])


def test_unknown_api_path_is_json_404(history):
    status, body = run(_get(make_settings(), "/api/nothing-here", history=history))
    assert status == 404 and "openapi" in body["error"]


def test_store_missing_answers_503_with_what_to_do():
    status, body = run(_get(make_settings(), "/api/stats"))
    assert status == 503 and "history" in body["error"]


def test_static_dashboard_files_are_served():
    async def fetch():
        client = await _client(make_settings())
        try:
            out = {}
            for path in ("/", "/static/app.js", "/static/app.css", "/static/vendor/uplot/uPlot.iife.min.js"):
                resp = await client.get(path)
                out[path] = (resp.status, len(await resp.read()))
            return out
        finally:
            await client.close()

    out = run(fetch())
    assert all(status == 200 and size > 100 for status, size in out.values()), out
    assert Path("engine/static/vendor/uplot/LICENSE").exists()


# -- /api/live and the SSE stream ------------------------------------------------------------------
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
LIVE_PREV = BASE + 86400  # a minute boundary; the "previous minute" of the live data
LIVE_CUR = LIVE_PREV + 60  # the "current minute": its last event at :05 leaves the test 55 s of slack


def _live_hit(i, t, visitor, path, *, status=200, ct="text/html", ua=CHROME, member="", latency=20.0):
    h = _hit(f"live{i:03d}", t - BASE, visitor, path, status, latency, member)
    h.update(content_type=ct, user_agent=ua, referrer="")
    return h


def live_hits():
    return [
        _live_hit(1, LIVE_PREV + 10, "va", "/"),
        _live_hit(2, LIVE_PREV + 20, "vb", "/product/1", member="m1", latency=40.0),
        _live_hit(3, LIVE_PREV + 21, "va", "/app.css", ct="text/css", latency=2.0),
        _live_hit(4, LIVE_CUR + 1, "vc", "/", latency=20.0),
        _live_hit(5, LIVE_CUR + 2, "va", "/product/1", latency=30.0),
        _live_hit(6, LIVE_CUR + 3, "vd", "/missing", status=404, latency=1500.0),
        _live_hit(7, LIVE_CUR + 5, "crawler", "/", ua=GOOGLEBOT),
    ]


def is_page(h):  # what the processors count as a page view for these simple hits
    return h["status"] == 200 and h["content_type"] == "text/html" and h["user_agent"] != GOOGLEBOT


def live_settings(prefix, **web):
    return Settings(redis={"key_prefix": prefix}, web=web) if web else Settings(redis={"key_prefix": prefix})


def feed_live(redis_url, settings, hits):
    """Through the processors' own path: HitProcessor (enrich, sessionize, aggregate) -> RedisLiveSink."""
    from processors.agents import HitProcessor
    from sinks.redis_live import RedisLiveSink

    out = HitProcessor(settings).process(hits)
    sink = RedisLiveSink(redis_url, settings)
    try:
        sink.apply(out.delta)
    finally:
        sink.close()


@pytest.fixture
def live(redis_server, request):
    from sinks.redis_live import LiveStateReader

    prefix = f"vwtest-web-{request.node.name[:40]}:"
    settings = live_settings(prefix)
    feed_live(redis_server.url, settings, live_hits())
    reader = LiveStateReader(redis_server.url, settings)
    yield reader, prefix
    reader.close()


def test_live_snapshot_numbers(live):
    reader, prefix = live
    hits = live_hits()
    status, body = run(_get(live_settings(prefix), "/api/live?minutes=10", live=reader))
    assert status == 200, body
    cur = [h for h in hits if h["ts"] >= LIVE_CUR]
    prev = [h for h in hits if h["ts"] < LIVE_CUR]
    humans = [h for h in hits if h["user_agent"] != GOOGLEBOT]
    assert body["minute"] == LIVE_CUR
    from openapi_schema_validator import OAS30Validator

    from engine.web.openapi import COMPONENTS
    OAS30Validator(COMPONENTS["schemas"]["LiveSnapshot"]).validate(body)  # the document describes what we send
    assert body["visitors_now"] == len({h["visitor_id"] for h in humans})
    assert body["members_now"] == len({h["visitor_id"] for h in humans if h["member_id"]})
    assert body["anonymous_now"] == len({h["visitor_id"] for h in humans if not h["member_id"]})
    assert body["bots_now"] == len({h["visitor_id"] for h in hits if h["user_agent"] == GOOGLEBOT})
    series = body["series"]
    assert len(series["minutes"]) == 10 and series["minutes"][-1] == LIVE_CUR
    assert series["pageviews"][-2:] == [sum(map(is_page, prev)), sum(map(is_page, cur))]
    assert series["hits"][-2:] == [len(prev), len(cur)]
    assert series["errors_4xx"][-1] == sum(1 for h in cur if 400 <= h["status"] < 500)
    pages_now = {p: n for p, n in body["top"]["current"]["pages"]}
    assert pages_now == dict(Counter(h["path"] for h in cur if is_page(h)))
    assert {p: n for p, n in body["top"]["previous"]["pages"]} == dict(Counter(h["path"] for h in prev if is_page(h)))
    assert [f["path"] for f in body["feed"]] == [h["path"] for h in sorted(filter(is_page, hits),
                                                                            key=lambda h: -h["ts"])]


def test_live_alerts_follow_the_configured_thresholds(live):
    reader, prefix = live
    cur = [h for h in live_hits() if h["ts"] >= LIVE_CUR]
    errors = sum(1 for h in cur if h["status"] >= 400)
    status, body = run(_get(live_settings(prefix), "/api/live", live=reader))
    assert body["thresholds"] == {"error_rate": 0.05, "p95_ms": 1000.0}
    kinds = {a["kind"]: a for a in body["alerts"]}
    assert set(kinds) == {"error_rate", "latency_p95"}  # 1 error in 4 hits; one 1.5 s response
    assert kinds["error_rate"]["value"] == round(errors / len(cur), 4)
    assert kinds["latency_p95"]["value"] == body["series"]["p95_ms"][-1] > 1000
    status, body = run(_get(live_settings(prefix, alert_error_rate=0.5, alert_p95_ms=5000), "/api/live",
                            live=reader))
    assert body["alerts"] == []


def test_live_bad_minutes_is_400(live):
    reader, prefix = live
    status, body = run(_get(live_settings(prefix), "/api/live?minutes=abc", live=reader))
    assert status == 400 and "minutes" in body["error"]


async def _read_events(resp, count, timeout):
    """Parse `count` SSE snapshot events (or fewer when the time runs out)."""
    import orjson

    events, event, loop = [], None, asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(events) < count:
        line = await asyncio.wait_for(resp.content.readline(), max(0.01, deadline - loop.time()))
        line = line.decode().rstrip("\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == "snapshot":
            events.append((loop.time(), orjson.loads(line[5:])))
    return events


def test_stream_pushes_every_second_and_on_new_data(live, redis_server):
    reader, prefix = live
    settings = live_settings(prefix)

    async def scenario():
        client = await _client(settings, reader)
        try:
            resp = await client.get("/api/live/stream")
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            quiet = await _read_events(resp, 3, timeout=6)  # nothing written: the 1 s tick still pushes
            before = quiet[-1][1]["visitors_now"]
            # A new visitor arrives (in the current minute); the next pushes must show them.
            new = _live_hit(99, LIVE_CUR + 4, "ve", "/category/shoes", latency=25.0)
            await asyncio.get_running_loop().run_in_executor(None, feed_live, redis_server.url, settings, [new])
            wrote = asyncio.get_running_loop().time()
            # The first event may be one computed before the write; the new visitor must follow within 5 s.
            after = []
            while not after or after[-1][1]["visitors_now"] == before:
                after += await _read_events(resp, 1, timeout=max(0.1, wrote + 5 - asyncio.get_running_loop().time()))
            return quiet, before, after, wrote
        finally:
            await client.close()

    quiet, before, after, wrote = run(scenario())
    assert len(quiet) == 3 and quiet[-1][0] - quiet[0][0] < 3.5
    assert after[-1][1]["visitors_now"] == before + 1
    assert after[-1][1]["feed"][0]["path"] == "/category/shoes"
    assert after[-1][0] - wrote < 5


def test_stream_requires_the_token(live):
    reader, prefix = live
    status, body = run(_get(live_settings(prefix, token=TOKEN), "/api/live/stream", live=reader))
    assert status == 401 and "token" in body["error"]

    async def with_query_token():
        client = await _client(live_settings(prefix, token=TOKEN), reader)
        try:
            resp = await client.get(f"/api/live/stream?token={TOKEN}")
            return resp.status, await _read_events(resp, 1, timeout=5)
        finally:
            await client.close()

    status, events = run(with_query_token())
    assert status == 200 and events[0][1]["visitors_now"] >= 1


def test_live_state_away_is_503_with_what_to_do():
    from engine.services import free_port
    from sinks.redis_live import LiveStateReader

    reader = LiveStateReader(f"redis://127.0.0.1:{free_port()}/0", make_settings())  # nobody listens there
    status, body = run(_get(make_settings(), "/api/live", live=reader))
    assert status == 503 and "Redis" in body["error"] and "retry" in body["error"]


def test_health_and_the_live_snapshot_say_the_engine_compiles_until_capture_is_live(live):
    from types import SimpleNamespace

    from engine.kernel_cache import Staleness
    from engine.runtime import EmbeddedRuntime
    from engine.web.openapi import COMPONENTS, PATHS
    from openapi_schema_validator import OAS30Validator

    reader, prefix = live
    settings = live_settings(prefix)
    rt = EmbeddedRuntime(settings, None, compiling=Staleness(("capture",), "no kernel cache yet", 81.6))

    async def go():
        client = TestClient(TestServer(create_web_app(settings, reader, None, startup=rt.startup_status)))
        await client.start_server()
        try:
            health = await (await client.get("/api/health")).json()
            snap = await (await client.get("/api/live?minutes=5")).json()
            rt.capture = SimpleNamespace(progress=SimpleNamespace(started=True))  # the capture child is live
            later = await (await client.get("/api/health")).json()
            return health, snap, later
        finally:
            await client.close()
    health, snap, later = run(go())
    assert health["startup"]["state"] == "compiling" and health["startup"]["rooms"] == ["capture"]
    assert health["startup"]["reason"] == "no kernel cache yet" and health["startup"]["expected_s"] == 82
    assert 0 <= health["startup"]["elapsed_s"] < 60
    OAS30Validator(PATHS["/api/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
                   ).validate(health)
    assert snap["startup"] == {**health["startup"], "elapsed_s": snap["startup"]["elapsed_s"]}  # the screen's banner
    OAS30Validator(COMPONENTS["schemas"]["LiveSnapshot"]).validate(snap)
    assert later["startup"] == {"state": "running"}
