"""The Customers tab and its API on a large shop history: response time of each call the tab makes and the
time until the page shows the member list in Chromium.

    python benchmarks/customers_bench.py [--members 100000] [--pageviews 10000000] [--backend chdb|clickhouse]
                                         [--runs 10] [--browser-runs 3] [--calls customers,segments,sites]
                                         [--before-runs 3] [--keep /tmp/customers-chdb]

The history is made inside the store (INSERT ... SELECT FROM numbers(), no rows travel): page views of
members and anonymous visitors over 90 days (a third of them logged in), one order per 40 page views of
the members, as the worker would have written them. Then the real web app serves it and each call is timed
`--runs` times (p50 / p95 / max); the page's time is from navigation to the filled member table. Targets
(issue 16): API p95 < 1 s, page ready < 2 s. The Site list (the sites of the last 90 days, by=host) is timed
through the app (each site's figures per day, sinks/reads/host_days.py) and, as the peer, `--before-runs` times
as the raw scan it was before (compute_stats with prefer_rollups=False, in this process); the member profile
and activity also in this process, alternated with their peer: the reads as they were, a query a figure
(benchmarks/profile_before.py); and the activity's recommendations for 10 viewed products, one query vs a
query a product.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from config.settings import load_settings
from engine.web.app import create_web_app
from engine.web.testing import served_app
from sinks.history import open_history
from sinks.reads.stats import compute_stats, parse_stats_request

DAY = 86400
END = 1_796_601_600  # 2026-12-07T00:00Z


def fill(store, members: int, pageviews: int) -> None:
    """Page views and orders made by the store itself from numbers(): visitor v<i % 2M>, the even ones
    members (m<i/2 % M>) on a third of their views, one session per visitor and day."""
    visitors = 2 * members
    span = 90 * DAY
    t = f"{END - span} + intDiv(number * {span}, {pageviews})"
    store._execute(
        "INSERT INTO pageviews (event_id, ts, ts_epoch, visitor_id, member_id, session_id, host, path, method, "
        "status, channel, browser, os, device, page_group, product_id) "
        f"SELECT toString(number), toDateTime({t}), toFloat64({t}), concat('v', toString(number % {visitors})), "
        f"if(number % {visitors} % 2 = 0 AND number % 3 = 0, concat('m', toString(intDiv(number % {visitors}, 2))), "
        "''), "
        f"concat('s', toString(number % {visitors}), '-', toString(intDiv({t}, {DAY}))), 'shop.example', "
        "if(number % 4 = 0, concat('/product/', toString(number % 500)), '/'), 'GET', 200, "
        "['direct', 'search', 'social', 'email'][number % 4 + 1], 'Chrome', 'Linux', 'desktop', "
        "if(number % 4 = 0, 'product', 'home'), if(number % 4 = 0, toString(number % 500), '') "
        f"FROM numbers({pageviews})")
    orders = pageviews // 40
    store._execute(
        "INSERT INTO hits (event_id, ts, ts_epoch, method, host, uri, path, status, visitor_id, member_id, "
        "extra_keys, extra_values) "
        f"SELECT concat('o', toString(number)), toDateTime({t}), toFloat64({t}) + 0.5, 'POST', 'shop.example', "
        "'/order/complete', '/order/complete', 200, "
        f"concat('v', toString(number * 2 % {visitors})), concat('m', toString(intDiv(number * 2 % {visitors}, 2))), "
        "['x-order-amount'], [toString(10 + number % 90)] "
        f"FROM numbers({orders})".replace(f"intDiv(number * {span}, {pageviews})",
                                          f"intDiv(number * {span}, {orders})"))


def quantiles(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return f"p50 {statistics.median(xs) * 1000:7.0f} ms  p95 {p95 * 1000:7.0f} ms  max {xs[-1] * 1000:7.0f} ms"


async def time_api(store, runs: int, only: set[str]) -> tuple[dict[str, list[float]], dict[str, float], str]:
    client = TestClient(TestServer(create_web_app(load_settings(), None, store)))
    await client.start_server()
    try:
        t0 = time.perf_counter()
        first = await (await client.get("/api/customers?limit=1")).json()
        print(f"  {'first call (computes every closed day)':40s} {(time.perf_counter() - t0) * 1000:7.0f} ms")
        if "rows" not in first:
            raise SystemExit(f"the first call failed: {first.get('error', first)}")
        member = first["rows"][0]["member_id"]
        sites = site_list_query()
        t0 = time.perf_counter()
        resp = await client.get("/api/stats?" + "&".join(f"{k}={v}" for k, v in sites.items()))
        assert resp.status == 200 and (await resp.json())["rows"], resp.status
        print(f"  {'first Site list (computes every day)':40s} {(time.perf_counter() - t0) * 1000:7.0f} ms")
        calls = {"customers (first page, by revenue)": "/api/customers?limit=200",
                 "customers (vip, by last visit)": "/api/customers?limit=200&segment=vip&sort=last_seen",
                 "customers (search)": f"/api/customers?limit=200&q={member[:4]}",
                 "segments (sizes, timeline, movement)": "/api/segments?limit=1",
                 "member profile": f"/api/profiles/member/{member}",
                 "member activity": f"/api/profiles/member/{member}/activity",
                 "sites (Site list: 90 days by host)": "/api/stats?" + "&".join(f"{k}={v}" for k, v in sites.items())}
        calls = {k: v for k, v in calls.items() if k.split(" (")[0] in only} if only else calls
        times: dict[str, list[float]] = {k: [] for k in calls}
        cpu: dict[str, float] = dict.fromkeys(calls, 0.0)
        for _ in range(runs):
            for name, path in calls.items():
                t0, c0 = time.perf_counter(), time.process_time()
                resp = await client.get(path)
                await resp.read()
                times[name].append(time.perf_counter() - t0)
                cpu[name] += time.process_time() - c0
                assert resp.status == 200, (path, resp.status)
        return times, {k: v / runs for k, v in cpu.items()}, member
    finally:
        await client.close()


def site_list_query() -> dict[str, str]:
    """The Site list's request as the page makes it (engine/static/tables.js loadSites): the last 90 days."""
    to = int(time.time()) + 1
    return {"from": str(to - 90 * DAY), "to": str(to), "by": "host", "metrics": "pageviews", "limit": "100"}


def time_raw_site_list(store, runs: int) -> tuple[list[float], bool]:
    """The Site list as it was before host_days: the raw scan of 90 days of page views (the peer); and whether
    its rows equal the ones read through host_days."""
    times, same = [], True
    for _ in range(runs):
        req = parse_stats_request(site_list_query())
        t0 = time.perf_counter()
        raw = compute_stats(store.query, req, prefer_rollups=False)
        times.append(time.perf_counter() - t0)
        same = same and raw == compute_stats(store.query, req, days=store)
    return times, same


def time_person_reads(store, member: str, runs: int) -> None:
    """The member profile and activity in this process, alternated with the peer: the same reads as they were
    before (benchmarks/profile_before.py: one query per figure), checked to give the same answers."""
    import profile_before as before

    from sinks.reads import customers, profiles
    from sinks.reads.goal_events import GoalConfig

    settings = load_settings()
    cfg, support = GoalConfig.from_settings(settings), settings.analytics.recommendation_min_support
    pairs = {"member profile": (lambda: profiles.member_profile(store, member, cfg=cfg),
                                lambda: before.member_profile(store, member, cfg)),
             "member activity": (lambda: customers.member_activity(store, member, cfg, support),
                                 lambda: before.member_activity(store, member, cfg, support))}
    for name, (now_read, before_read) in pairs.items():
        got: dict[str, list[float]] = {"now": [], "before": []}
        answers = {}
        for _ in range(runs):
            for which, read in (("now", now_read), ("before", before_read)):
                t0 = time.perf_counter()
                answers[which] = read()
                got[which].append(time.perf_counter() - t0)
        same = _comparable(answers["now"]) == _comparable(answers["before"])
        print(f"  {name + ', one query (in process)':40s} {quantiles(got['now'])}")
        print(f"  {name + ', before (query a figure)':40s} {quantiles(got['before'])}  "
              f"same answer: {'yes' if same else 'NO'}")


def time_recommendations(store, runs: int) -> None:
    """The recommendations of a member's activity for a member who viewed 10 products (the bench's members view
    one product each): also_viewed of the 10 in one query, alternated with the peer, a query a product."""
    from sinks.reads import recommendations as recs

    products = [r["product_id"] for r in store.query(
        "SELECT product_id, count() AS n FROM pageviews WHERE product_id != '' GROUP BY product_id "
        "ORDER BY n DESC, product_id LIMIT 10")]
    got: dict[str, list[float]] = {"now": [], "before": []}
    same = True
    for _ in range(runs):
        t0 = time.perf_counter()
        each = recs.also_viewed_each(store, products, 1, 30)
        got["now"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        one_by_one = {p: recs.also_viewed(store, p, 1, 30) for p in products}
        got["before"].append(time.perf_counter() - t0)
        same = same and each == one_by_one
    print(f"  {'recommendations of 10 products, 1 query':40s} {quantiles(got['now'])}")
    print(f"  {'before: a query a product':40s} {quantiles(got['before'])}  same answer: {'yes' if same else 'NO'}")


def _comparable(answer: dict | None) -> dict | None:
    """An answer without its clock-dependent recency, its goals in a fixed order (ties in time come either way)."""
    if answer is None:
        return None
    out = {k: v for k, v in answer.items() if k != "recency_days"}
    if "goals" in out and isinstance(out["goals"], list):
        out["goals"] = sorted(out["goals"], key=lambda g: (-g["ts"], g["goal"], g["value"]))
    return out


def time_page(store, runs: int) -> tuple[list[float], list[float]]:
    """Navigation to ?view=customers until the member table is filled, in Chromium, against a served app; and
    until the page's other calls (segment history, Site list) are answered too. Each run starts once the last
    one's calls are answered: a reload while they still run would queue behind them (chdb runs one at a time)."""
    from playwright.sync_api import sync_playwright

    ready: list[float] = []
    settled: list[float] = []
    with served_app(store) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless=new", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        for _ in range(runs):
            t0 = time.perf_counter()
            page.goto(url + "?view=customers")
            page.wait_for_selector("#member-table tbody tr td a.id-link", timeout=120_000)
            ready.append(time.perf_counter() - t0)
            page.wait_for_function("document.querySelector('#segment-movement tbody, #segment-movement tr') && "
                                   "document.querySelector('select.site-filter').options.length > 1",
                                   timeout=300_000)
            settled.append(time.perf_counter() - t0)
        browser.close()
    return ready, settled


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--pageviews", type=int, default=10_000_000)
    ap.add_argument("--backend", choices=("chdb", "clickhouse"), default="chdb")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--browser-runs", type=int, default=3)
    ap.add_argument("--calls", default="", help="time only these calls, e.g. customers,segments,sites (default: all)")
    ap.add_argument("--before-runs", type=int, default=3, help="runs of the peers (0: none): the Site list's raw "
                    "scan, the member profile and activity as a query a figure (benchmarks/profile_before.py)")
    ap.add_argument("--keep", default="", help="chdb: keep the history in this directory and reuse it when a run "
                                               "with the same sizes filled it (skips the fill and the first read)")
    a = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    tmp = Path(tempfile.mkdtemp(prefix="customers-bench-"))
    server = None
    try:
        if a.backend == "clickhouse":
            from engine.services import start_clickhouse

            server = start_clickhouse(workdir=str(tmp / "ch"))
            url = server.url.rsplit("/", 1)[0] + f"/cb_{uuid.uuid4().hex[:8]}"
        else:
            url = f"chdb://{a.keep}/{a.members}-{a.pageviews}" if a.keep else f"chdb://{tmp}/chdb"
        store = open_history(url)
        store.init_schema()
        t0 = time.perf_counter()
        if not int(store.query("SELECT count() AS n FROM pageviews")[0]["n"]):
            fill(store, a.members, a.pageviews)
        n = store.query("SELECT count() AS n, uniqExact(member_id) AS m FROM pageviews")[0]
        print(f"{a.backend}: {int(n['n']):,} page views, {int(n['m']) - 1:,} members, filled in "
              f"{time.perf_counter() - t0:.1f} s")
        only = set(filter(None, a.calls.split(",")))
        times, cpu, member = asyncio.run(time_api(store, a.runs, only))
        worst = 0.0
        for name, xs in times.items():  # cpu: this process's (server, client and chdb's threads), per call
            print(f"  {name:40s} {quantiles(xs)}  cpu {cpu[name]:6.3f} s")
            worst = max(worst, sorted(xs)[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))])
        print(f"  API p95 target < 1 s: {'met' if worst < 1 else 'NOT met'} (worst p95 {worst:.2f} s)")
        print(f"  load average after the calls: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if a.before_runs and (not only or {"member profile", "member activity"} & only):
            time_person_reads(store, member, a.before_runs)
            time_recommendations(store, max(1, a.before_runs // 3))
        if a.before_runs and (not only or "sites" in only):
            before, same = time_raw_site_list(store, a.before_runs)
            print(f"  {'sites before: raw scan (no host_days)':40s} {quantiles(before)}  "
                  f"same rows as host_days: {'yes' if same else 'NO'}")
        if a.browser_runs:
            page, settled = time_page(store, a.browser_runs)
            print(f"  {'page ready (member list shown)':40s} {quantiles(page)}")
            print(f"  {'page settled (segments, Site list)':40s} {quantiles(settled)}")
            print(f"  page target < 2 s: {'met' if max(page) < 2 else 'NOT met'}")
        store.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
