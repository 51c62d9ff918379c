"""Every tab of the screen in a real headless Chromium while `visitwire demo --truth` runs the whole
pipeline: the figures shown equal what the API answered, the API's orders, revenue and product views
equal the demo shop's own log, the wall layout cuts no figure off, and the basics of accessibility
hold (labelled controls, keyboard use, contrast). Screenshots at 1920x1080 and 1366x768 are left in
test-output/<test>/."""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from browser_demo import CHROMIUM, CHROMIUM_ARGS, CLIPPED_KPIS_JS, running_demo

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SIZES = {"1920x1080": (1920, 1080), "1366x768": (1366, 768)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`visitwire demo --truth` for the whole module: (URL, token, truth log path)."""
    tmp = tmp_path_factory.mktemp("screens-demo")
    truth = tmp / "truth.jsonl"
    env = {"VISITWIRE_ANALYTICS__FIRST_RUN_AFTER_S": "5", "VISITWIRE_ANALYTICS__RFM_INTERVAL_S": "20"}
    with running_demo(tmp, env, ["--duration", "400", "--visitors", "40", "--truth", str(truth)]) as info:
        yield info["web_url"].rstrip("/"), info["token"], truth


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _page(browser, demo, size="1920x1080"):
    url, token, _ = demo
    w, h = SIZES[size]
    page = browser.new_page(viewport={"width": w, "height": h})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/?token={token}")
    page.wait_for_function("document.querySelector('#conn').classList.contains('ok')", timeout=30_000)
    return page, errors


def _num(text: str) -> float:
    return float(re.sub(r"[^\d.]", "", text) or "nan")


def _api(page, path: str):
    return page.evaluate("p => fetch(p).then(r => r.json())", path)


def _truth(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_live_orders_revenue_and_members_add_up(browser, demo, output_dir):
    page, errors = _page(browser, demo)
    # the crowd buys: wait until the screen shows orders in the window
    page.wait_for_function("parseInt(document.querySelector('#conversion-sub').textContent) > 0", timeout=90_000)
    shown = page.evaluate("""() => ({
        members: document.querySelector('[data-testid=members-now]').textContent,
        anon: document.querySelector('[data-testid=anon-now]').textContent,
        visitors: document.querySelector('[data-testid=visitors-now]').textContent,
        sum: document.querySelector('[data-testid=members-sum]').textContent,
        conversion: document.querySelector('[data-testid=conversion]').textContent,
        conversionSub: document.querySelector('#conversion-sub').textContent,
        ordersHour: document.querySelector('[data-testid=orders-hour]').textContent})""")
    # one snapshot rendered: members + anonymous = visitors, conversion = orders / sessions started
    assert _num(shown["members"]) + _num(shown["anon"]) == _num(shown["visitors"]) == _num(shown["sum"])
    orders, sessions = (int(x.replace(",", "")) for x in re.findall(r"[\d,]+", shown["conversionSub"])[:2])
    assert _num(shown["conversion"]) == pytest.approx(100 * orders / sessions, abs=0.11)
    assert f"{orders:,} in 60 min" in shown["ordersHour"]
    assert page.locator("#goal-feed .row").count() > 0
    assert page.locator("#goal-feed .row .g", has_text="purchase").count() > 0
    assert page.locator("#live-products tr").count() > 1

    # the API's complete minutes against the shop's log: orders and revenue per minute
    # the crowd buys in bursts: on a loaded machine the first complete minute with orders came 160 s in
    deadline, checked = time.monotonic() + 240, 0
    while not checked and time.monotonic() < deadline:
        page.wait_for_timeout(3000)
        live, truth = _api(page, "/api/live"), _truth(demo[2])
        checked = _orders_match_the_truth(live, truth)
    assert checked >= 1, ("no complete minute with orders to compare", live["now"], live["series"]["minutes"][-4:],
                          live["series"]["orders"][-4:], [r["ts"] for r in truth if r["order"]][-10:])
    page.screenshot(path=str(output_dir / "live-1920x1080.png"), full_page=True)
    assert errors == [], errors
    page.close()


def _orders_match_the_truth(live: dict, truth: list[dict]) -> int:
    """Asserts each complete minute's orders and revenue equal the shop's; returns how many minutes had orders."""
    bought = [r for r in truth if r["order"] and not r["bot"]]
    se, checked = live["series"], 0
    for m, n_orders, rev in zip(se["minutes"], se["orders"], se["revenue"]):
        if m + 60 > live["now"] - 3:
            continue  # still filling up (or just closed: the last batch may be on its way)
        if any(abs(r["ts"] - m) < 0.25 or abs(r["ts"] - m - 60) < 0.25 for r in bought):
            continue  # an order at the minute's edge: the shop's clock (handler) and the wire's (first packet) differ
        want = [r for r in bought if m <= r["ts"] < m + 60]
        assert n_orders == len(want), (m, n_orders, len(want))
        assert rev == pytest.approx(sum(r["order"]["amount"] for r in want), abs=0.01)
        checked += bool(want)
    return checked


def test_wall_layout_cuts_no_figure_off(browser, demo, output_dir):
    url, token, _ = demo
    for size in SIZES:
        page, errors = _page(browser, demo, size)
        page.goto(f"{url}/?wall=1")
        page.wait_for_function("parseInt(document.querySelector('[data-testid=visitors-now]').textContent) > 0",
                               timeout=60_000)
        page.wait_for_timeout(1000)
        clipped = page.evaluate(CLIPPED_KPIS_JS)
        assert clipped == [], (size, clipped)
        page.screenshot(path=str(output_dir / f"wall-{size}.png"))
        assert errors == [], errors
        page.close()


def test_customers_tab_shows_the_api_and_opens_a_profile(browser, demo, output_dir):
    page, errors = _page(browser, demo, "1366x768")
    page.wait_for_function("parseInt(document.querySelector('#conversion-sub').textContent) > 0", timeout=90_000)
    # A member in the history's last 5 minutes: the first order can come before the crowd's first login has
    # reached the history (run alone, this test clicked at the first order and the list was rightly empty).
    # Likewise a segment movement stored by the worker's re-scoring, which the tab shows once it opens.
    deadline = time.monotonic() + 90
    while _api(page, "/api/customers?active_within_s=300&limit=1")["total"] == 0 or \
            not _api(page, "/api/segments").get("movement"):
        assert time.monotonic() < deadline, "no member in the last 5 minutes or no segment movement after 90 s"
        time.sleep(1)
    # the live "members now" opens the members seen in the window
    with page.expect_response(lambda r: "/api/customers" in r.url and "active_within_s=300" in r.url) as resp:
        page.click("[data-testid=members-link]")
    active = resp.value.json()
    page.wait_for_function("document.querySelector('#member-list-title').textContent.includes('last 5 min')")
    assert 0 < active["total"] <= active["members"]
    with page.expect_response(lambda r: "/api/customers" in r.url) as resp:
        page.click("#tab-live")
        page.click("#tab-customers")
    listed = resp.value.json()
    page.wait_for_selector("#member-table tbody tr td a.id-link")
    assert listed["total"] > 0 and "view=customers" in page.url
    rows = page.locator("#member-table tbody tr")
    assert rows.count() == len(listed["rows"])
    for i, want in enumerate(listed["rows"][:5]):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert want["member_id"].startswith(cells[0]) and cells[1] == want["segment"]
        assert _num(cells[6]) == want["orders"] and _num(cells[7]) == pytest.approx(want["revenue"])
    cards = {c.get_attribute("data-segment"): _num(c.locator(".mid").inner_text())
             for c in page.locator("#segment-cards button.seg").all()}
    assert cards == {k: v for k, v in listed["sizes"].items()}
    # the segment history was stored by the worker: the movement table lists it
    page.wait_for_function("document.querySelectorAll('#segment-movement tbody tr td.num').length > 0",
                           timeout=60_000)

    # a segment card filters the list; the CSV export has the same members
    segment = max((k for k, v in listed["sizes"].items() if v), key=lambda k: listed["sizes"][k])
    with page.expect_response(lambda r: "segment=" + segment in r.url) as resp:
        page.click(f"#segment-cards button[data-segment={segment}]")
    only = resp.value.json()
    page.wait_for_function("s => document.querySelector('#member-list-title').textContent.includes(s)",
                           arg=segment.replace("_", " "))
    assert set(page.locator("#member-table tbody tr td:nth-child(2)").all_inner_texts()) == {segment}
    csv_text = page.evaluate("h => fetch(h).then(r => r.text())", page.get_attribute("#member-csv", "href"))
    assert len(csv_text.strip().splitlines()) - 1 == only["total"]

    # search, then the member's profile page: its figures are the profile API's
    member = only["rows"][0]["member_id"]
    page.fill("#member-search", member[:8])
    page.wait_for_function("n => document.querySelectorAll('#member-table tbody tr').length === n", arg=1)
    page.screenshot(path=str(output_dir / "customers-1366x768.png"), full_page=True)
    page.click("#member-table tbody tr td a.id-link")
    page.wait_for_selector("[data-testid=profile-orders]")
    assert member in page.inner_text("[data-testid=profile-title]") and f"member={member}" in page.url
    prof = _api(page, f"/api/profiles/member/{member}")
    assert _num(page.inner_text("[data-testid=profile-orders]")) == prof["purchases"]
    assert _num(page.inner_text("[data-testid=profile-revenue]")) == pytest.approx(prof["revenue"])
    assert _num(page.inner_text("[data-testid=profile-visits]")) == prof["visits"]
    page.screenshot(path=str(output_dir / "profile-1366x768.png"), full_page=True)
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.screenshot(path=str(output_dir / "profile-1920x1080.png"), full_page=True)
    assert errors == [], errors
    page.close()


def test_products_and_funnels_tabs_show_the_api(browser, demo, output_dir):
    page, errors = _page(browser, demo)
    with page.expect_response(lambda r: "/api/products/sales" in r.url) as resp:
        page.click("#tab-products")
    sold = {r["product_id"]: r for r in resp.value.json()["rows"]}
    page.wait_for_selector("#product-table tbody tr.pick")
    rows = page.locator("#product-table tbody tr")
    assert rows.count() >= len(sold) > 0
    for i in range(min(5, rows.count())):
        cells = rows.nth(i).locator("td").all_inner_texts()
        want = sold.get(cells[0], {})
        assert [_num(c) for c in cells[4:8]] == [want.get(k, 0) for k in ("carts", "orders", "units", "revenue")]
    # views, units and revenue per product against the shop's log, up to a moment no view or order is near
    truth = _truth(demo[2])
    viewed = [r for r in truth if r["path"].startswith("/product/") and r["method"] == "GET"
              and r["status"] == 200 and not r["bot"]]
    orders = [r for r in truth if r["order"] and not r["bot"]]
    times = sorted(r["ts"] for r in viewed + orders)
    width, cut = max((b - a, (a + b) / 2) for a, b in zip(times, times[1:]) if b < time.time() - 10)
    assert width > 0.05
    got = {r["product_id"]: r["views"] for r in _api(page, f"/api/products?to={cut}&limit=1000")["rows"]}
    assert got == dict(Counter(r["path"].split("/")[2] for r in viewed if r["ts"] < cut))
    units, revenue = Counter(), Counter()
    for r in orders:
        for pid, qty, price in r["order"]["items"] if r["ts"] < cut else ():
            units[pid] += qty
            revenue[pid] += qty * price
    got = _api(page, f"/api/products/sales?to={cut}&limit=1000")["rows"]
    assert {r["product_id"]: r["units"] for r in got if r["units"]} == dict(units) and units
    assert {r["product_id"]: round(r["revenue"], 2) for r in got if r["units"]} == \
        {k: round(v, 2) for k, v in revenue.items()}
    page.click("#product-table tbody tr.pick >> nth=0")
    page.wait_for_selector("#product-together table")
    assert page.locator("#product-together table").count() == 2  # viewed together, bought together
    page.screenshot(path=str(output_dir / "products-1920x1080.png"), full_page=True)

    with page.expect_response(lambda r: "/api/funnels" in r.url) as resp:
        page.click("#tab-funnels")
    funnel = resp.value.json()["funnels"][0]
    page.wait_for_selector("#funnel-cards .step")
    shown = [_num(t) for t in page.locator("#funnel-cards .step .sessions").all_inner_texts()]
    assert shown == [s["sessions"] for s in funnel["steps"]] and shown[0] > 0
    with page.expect_response(lambda r: "device=mobile" in r.url) as resp:
        page.select_option("#funnel-device", "mobile")
    mobile = resp.value.json()["funnels"][0]
    page.wait_for_function("n => document.querySelector('#funnel-cards .step .sessions').textContent == n",
                           arg=f"{mobile['steps'][0]['sessions']:,}")
    assert mobile["steps"][0]["sessions"] < funnel["steps"][0]["sessions"]
    page.wait_for_selector("#cohort-table td")
    cohorts = _api(page, "/api/cohorts?who=visitors&weeks=12")["cohorts"]
    assert page.locator("#cohort-table tr").count() == len(cohorts[-12:]) + 1
    for size in SIZES:
        page.set_viewport_size(dict(zip(("width", "height"), SIZES[size])))
        page.screenshot(path=str(output_dir / f"funnels-{size}.png"), full_page=True)
    assert errors == [], errors
    page.close()


def test_accessibility_basics(browser, demo):
    page, errors = _page(browser, demo, "1366x768")
    for view in ("live", "customers", "products", "funnels"):
        if view != "live":
            page.click(f"#tab-{view}")
            page.wait_for_timeout(500)
        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
              'main:not([hidden]) select, main:not([hidden]) input')]
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id)""")
        assert unlabelled == [], (view, unlabelled)
    # keyboard: Tab reaches the tabs, Enter opens one, and the focus is drawn
    page.click("#tab-live")
    page.keyboard.press("Tab")
    for _ in range(12):
        if page.evaluate("document.activeElement.id") == "tab-products":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "tab-products"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    page.wait_for_selector("#products:not([hidden])")
    # contrast (WCAG AA, 4.5:1) of the text styles the screens use, on their backgrounds
    ratios = page.evaluate("""() => {
        const lum = (c) => { const [r, g, b] = c.match(/\\d+/g).slice(0, 3).map(v => { v = v / 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const bg = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor;
            if (c && !c.endsWith(', 0)') && c !== 'transparent') return c; } return 'rgb(14, 17, 22)'; };
        const out = {};
        for (const sel of ['.muted', '.kpi .label', 'table.grid th button.sort', '.tab', 'label', 'a']) {
          const e = document.querySelector(sel); if (!e) continue;
          const a = lum(getComputedStyle(e).color), b = lum(bg(e));
          out[sel] = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        }
        return out; }""")
    assert ratios and all(r >= 4.5 for r in ratios.values()), ratios
    assert errors == [], errors
    page.close()


def test_history_notes_site_filter_and_new_breakdowns(browser, demo, output_dir):
    page, errors = _page(browser, demo)
    page.click("#tab-history")
    page.wait_for_function("document.querySelectorAll('#history-host option').length > 1", timeout=30_000)
    host = page.locator("#history-host option").nth(1).get_attribute("value")
    with page.expect_response(lambda r: "/api/stats" in r.url and "host=" in r.url and "by=" not in r.url
                              and "interval=" not in r.url) as resp:
        page.select_option("#history-host", host)
    totals = resp.value.json()["totals"]
    page.wait_for_function("n => document.querySelector('#history-totals .mid').textContent === n",
                           arg=f"{totals['pageviews']:,}")
    titles = page.locator("#history-tops .top h2").all_inner_texts()
    assert {"Entry pages", "Exit pages", "Search keywords", "Countries"} <= set(titles)
    # a note on the timeline: added with the form, listed, drawn, stored
    page.fill("#note-text", "newsletter sent")
    page.click("#note-form button[type=submit]")
    page.wait_for_selector("#note-list li")
    assert "newsletter sent" in page.inner_text("#note-list")
    assert [a["text"] for a in _api(page, "/api/annotations")["annotations"]] == ["newsletter sent"]
    for size in SIZES:
        page.set_viewport_size(dict(zip(("width", "height"), SIZES[size])))
        page.screenshot(path=str(output_dir / f"history-{size}.png"), full_page=True)
    page.click("#note-list li button")
    page.wait_for_function("document.querySelectorAll('#note-list li').length === 0")
    assert _api(page, "/api/annotations")["annotations"] == []
    assert errors == [], errors
    page.close()
