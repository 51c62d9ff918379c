"""The Site list (/api/stats?by=host) read from each site's figures per day (sinks/reads/host_days.py, migration
0240) equals the raw scan and the truth of the rows written, every column, on embedded chdb and the ClickHouse
18.16 server: over ranges with whole and partial days, for one site, after a replay and a late row into a day
already computed, through the web app, on a data directory written before migration 0240 and then upgraded."""
from __future__ import annotations

import asyncio
import random

import pytest
from aiohttp.test_utils import TestClient, TestServer

import sinks.history_store
from config.settings import load_settings
from engine.web.app import create_web_app
from sinks.migrations import migration_files
from sinks.reads import host_days
from sinks.reads.stats import SITE_DAY_METRICS, compute_stats, parse_stats_request
from sinks.testing import fresh_history
from sinks.testing.events import generate, make_hit

pytestmark = pytest.mark.integration

DAY = 86400
DS = generate(seed=31)
NOW = DS.now + 600  # the day of NOW is today: read raw, the days before it are kept
FIRST = min(p["ts"] for p in DS.pageviews)
ALL = ("pageviews", "visitors", "hits", "errors", "error_rate", "latency_p50")


def _outlet(rows: list[dict], n: int) -> list[dict]:
    """A second site: every n-th row of the shop's, as outlet.example's own events."""
    return [{**r, "host": "outlet.example", "event_id": "o-" + r["event_id"]} for r in rows[::n]]


def _error_hits() -> list[dict]:
    """Requests answered 404 / 500 / not at all, on both sites and one without a Host header, over the weeks."""
    rnd = random.Random(3)
    return [make_hit(f"err{i}", FIRST + rnd.uniform(0, NOW - FIRST), f"ve{i % 7}", "/missing",
                     status=rnd.choice([404, 500, None, 200]), host=rnd.choice(["shop.example", "outlet.example", ""]))
            for i in range(300)]


PAGEVIEWS = DS.pageviews + _outlet(DS.pageviews, 3)
HITS = DS.hits + _outlet(DS.hits, 4) + _error_hits()


def _truth(pageviews, hits, start, end, host=None) -> dict[str, dict]:
    """host -> figures of the rows written, counted here: each event once, bots out of page views and visitors."""
    out: dict[str, dict] = {}
    inside = lambda r: start <= int(r["ts"]) < end and host in (None, r["host"])  # noqa: E731 (DateTime: seconds)
    for p in {p["event_id"]: p for p in pageviews if inside(p) and not p["is_bot"]}.values():
        slot = out.setdefault(p["host"], {"pageviews": 0, "visitors": set(), "hits": 0, "errors": 0})
        slot["pageviews"] += 1
        slot["visitors"].add(p["visitor_id"])
    for h in {h["event_id"]: h for h in hits if inside(h)}.values():
        slot = out.setdefault(h["host"], {"pageviews": 0, "visitors": set(), "hits": 0, "errors": 0})
        slot["hits"] += 1
        slot["errors"] += h["status"] is not None and h["status"] >= 400
    for slot in out.values():
        slot["visitors"] = len(slot["visitors"])
        slot["error_rate"] = round(slot["errors"] / slot["hits"], 4) if slot["hits"] else 0
    return out


def _expected(truth: dict[str, dict], metrics) -> dict[str, dict]:
    """The truth's rows as the API lists them: a site is there when the tables of the asked metrics have its rows."""
    listed = lambda t: any(t["pageviews"] if m in ("pageviews", "visitors") else t["hits"] for m in metrics)  # noqa
    return {k: {m: t[m] for m in metrics if m in t} for k, t in truth.items() if listed(t)}


@pytest.fixture(scope="module")
def store(history_place):
    """The sites' history written twice (at-least-once delivery) before migration 0240 existed, then upgraded."""
    older = [m for m in migration_files() if m[0] < "0240"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sinks.history_store, "migration_files", lambda: older)
        with fresh_history(history_place, "hd") as st:
            for _ in range(2):
                st.write("pageviews", PAGEVIEWS)
                st.write("hits", HITS)
            mp.undo()
            assert st.init_schema()[0] == "0240_host_days"
            yield st


RANGES = {
    "the whole history and past now": (int(FIRST) - DAY - 77, int(NOW) + DAY),
    "mid-day to mid-day": (int(FIRST) // DAY * DAY + 3 * DAY + 1234, int(NOW) - 2 * DAY - 4321),
    "from midnight to midnight": (int(FIRST) // DAY * DAY + 2 * DAY, int(NOW) // DAY * DAY - 3 * DAY),
    "within one day": (int(FIRST) // DAY * DAY + 9 * DAY + 3600, int(FIRST) // DAY * DAY + 9 * DAY + 50000),
    "the Site list's 90 days": (int(NOW) - 90 * DAY, int(NOW) + 1),
}


def _both(store, start, end, metrics, host=None, now=NOW):
    q = {"from": str(start), "to": str(end), "by": "host", "metrics": ",".join(metrics), "limit": "1000"}
    req = parse_stats_request({**q, **({"host": host} if host else {})})
    return compute_stats(store.query, req, days=store, now=now), compute_stats(store.query, req, prefer_rollups=False)


def _by_key(result) -> dict[str, dict]:
    return {r["key"]: {m: v for m, v in r.items() if m != "key"} for r in result["rows"]}


@pytest.mark.parametrize("name", RANGES)
def test_site_figures_equal_the_raw_scan_and_the_truth(store, name):
    start, end = RANGES[name]
    for metrics in (("pageviews",), ALL, ("hits", "error_rate")):
        fast, raw = _both(store, start, end, metrics)
        assert fast == raw, metrics  # every column, the order of the rows too
        want = _expected(_truth(PAGEVIEWS, HITS, start, end), metrics)
        got = {k: {m: v for m, v in r.items() if m in want.get(k, {})} for k, r in _by_key(fast).items()}
        assert got == want, metrics
    assert len(_by_key(fast)) == 3 if name != "within one day" else len(_by_key(fast)) >= 2  # shop, outlet, ''
    for host in ("outlet.example", "nowhere.example"):
        fast, raw = _both(store, start, end, ALL, host=host)
        assert fast == raw and set(_by_key(fast)) <= {host}


def test_whole_days_are_computed_once_then_read(store):
    start, end = RANGES["the whole history and past now"]
    _both(store, start, end, ("pageviews",))
    kept = int(store.query("SELECT count() AS n FROM host_days_done")[0]["n"])
    assert kept >= (NOW - FIRST) // DAY - 1  # every whole day before today
    stamps = host_days.day_stamps(store, int(FIRST // DAY), int(NOW // DAY) - 1)
    assert host_days.refresh(store, lambda a, b: "never run", stamps) == 0


def test_a_replay_and_a_late_row_into_a_kept_day(store):
    """After the days were kept: a replay of a day's rows changes nothing, a late page view of a new site and
    a late error on a day already computed count at once."""
    start, end = RANGES["the whole history and past now"]
    _both(store, start, end, SITE_DAY_METRICS)
    day = int(FIRST // DAY) + 5
    store.write("pageviews", [p for p in PAGEVIEWS if int(p["ts"]) // DAY == day])
    late_pv = {**DS.human_pageviews[0], "event_id": "late-pv", "ts": day * DAY + 100.5, "host": "late.example"}
    late_hit = make_hit("late-hit", day * DAY + 200.25, "v-late", "/gone", status=503, host="outlet.example")
    store.write("pageviews", [late_pv])
    store.write("hits", [late_hit])
    pageviews, hits = PAGEVIEWS + [late_pv], HITS + [late_hit]
    for metrics in (("pageviews",), ALL):
        fast, raw = _both(store, start, end, metrics)
        assert fast == raw
        want = _expected(_truth(pageviews, hits, start, end), metrics)
        assert {k: {m: v for m, v in r.items() if m in want.get(k, {})} for k, r in _by_key(fast).items()} == want
    assert _by_key(fast)["late.example"]["pageviews"] == 1
    before = _truth(PAGEVIEWS, HITS, start, end)["outlet.example"]["errors"]
    assert _by_key(fast)["outlet.example"]["errors"] == before + 1


def test_the_site_list_through_the_web_app(store):
    """GET /api/stats?by=host as the screen asks for it keeps the days through the app's store: a late page view
    of a new site on a kept day is listed, and that day is computed again under its new stamp."""
    start, end = RANGES["the Site list's 90 days"]
    day = int(FIRST // DAY) + 8
    done = lambda: int(store.query(f"SELECT count() AS n FROM host_days_done WHERE day = {day}")[0]["n"])  # noqa
    _both(store, start, end, ("pageviews",))
    kept = done()
    store.write("pageviews", [{**DS.human_pageviews[0], "event_id": "api-pv", "ts": day * DAY + 60.0,
                               "host": "api.example"}])
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(create_web_app(load_settings(), None, store)), loop=loop)
    loop.run_until_complete(client.start_server())
    try:
        async def get():
            resp = await client.get(f"/api/stats?from={start}&to={end}&by=host&metrics=pageviews&limit=100")
            return resp.status, await resp.json()
        status, body = loop.run_until_complete(get())
    finally:
        loop.run_until_complete(client.close())
        loop.close()
    assert status == 200
    _, raw = _both(store, start, end, ("pageviews",))
    assert body["rows"] == raw["rows"] and _by_key(body)["api.example"] == {"pageviews": 1}
    assert done() == kept + 1
