"""The live screen in a real headless Chromium (Debian's /usr/bin/chromium via Playwright; no
browser download) while `visitwire demo` runs the whole pipeline: the page must update by
itself - visitors-now and the visit log change without a reload - and a screenshot is left
in test-output/<test>/ for a person to look at."""
from __future__ import annotations

import re

import pytest

from browser_demo import CHROMIUM, CHROMIUM_ARGS, running_demo

pytestmark = [pytest.mark.browser, pytest.mark.integration]

DEMO_SECONDS = 75
ALERT_P95_MS = 50


@pytest.fixture
def demo(tmp_path):
    """`visitwire demo` as a user runs it; yields (dashboard URL, token) from its engine.json."""
    # The demo shop's slow pages are far above 50 ms at p95: the alert banner must show.
    env = {"VISITWIRE_HISTORY__URL": f"chdb://{tmp_path}/chdb", "VISITWIRE_WEB__ALERT_P95_MS": str(ALERT_P95_MS)}
    with running_demo(tmp_path, env, ["--duration", str(DEMO_SECONDS), "--visitors", "40"]) as info:
        yield info["web_url"].rstrip("/"), info["token"]


def _number(text: str) -> int | None:
    digits = re.sub(r"[^\d]", "", text or "")
    return int(digits) if digits else None


def test_live_screen_updates_by_itself_during_the_demo(demo, output_dir):
    from playwright.sync_api import sync_playwright

    url, token = demo
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Without the token the screen is refused (a separate page: its console stays apart).
            stranger = browser.new_page()
            assert stranger.goto(url + "/").status == 401
            stranger.close()

            page = browser.new_page(viewport={"width": 1600, "height": 1250})
            console_errors = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))

            page.goto(f"{url}/?token={token}")
            assert "token=" not in page.url  # the cookie carries it from here on
            page.wait_for_function("document.querySelector('#conn').classList.contains('ok')", timeout=30_000)

            # Wait for the crowd to be seen, then for the screen to change on its own.
            page.wait_for_function(
                "parseInt(document.querySelector('[data-testid=visitors-now]').textContent) > 0", timeout=60_000)
            assert page.locator("[data-testid=startup]").is_hidden()  # capture is live: no start-up banner
            first_visitors = _number(page.inner_text("[data-testid=visitors-now]"))
            first_feed = page.inner_text("[data-testid=feed]")
            page.wait_for_function(
                "([v, f]) => parseInt(document.querySelector('[data-testid=visitors-now]').textContent) !== v",
                arg=[first_visitors, first_feed], timeout=45_000)
            page.wait_for_function("f => document.querySelector('[data-testid=feed]').innerText !== f",
                                   arg=first_feed, timeout=30_000)
            page.wait_for_selector("#alert:not([hidden])", timeout=30_000)
            assert f"above {ALERT_P95_MS} ms" in page.inner_text("#alert")
            later_visitors = _number(page.inner_text("[data-testid=visitors-now]"))
            assert later_visitors != first_visitors
            assert page.inner_text("[data-testid=feed]") != first_feed

            # The panels are filled: charts drawn, top pages listed, visit log rows with a page.
            assert page.locator("#live-traffic canvas").count() >= 1
            assert page.locator("#live-tops .top").count() == 8
            assert page.locator("#live-tops .top").first.locator("tr").count() > 1
            assert page.locator("#feed .row").count() > 0
            assert page.locator("#feed .row .p").first.inner_text().startswith("/")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(output_dir / "dashboard.png"), full_page=True)

            # Wall-screen mode: large type, same live data.
            page.click("#wall-toggle")
            assert "wall=1" in page.url
            page.wait_for_timeout(1500)
            big = page.eval_on_selector("[data-testid=visitors-now]", "e => parseFloat(getComputedStyle(e).fontSize)")
            assert big >= 100
            page.screenshot(path=str(output_dir / "dashboard-wall.png"), full_page=True)
            page.click("#wall-toggle")

            # History view: the history store answers for the last hour.
            page.click("#tab-history")
            page.wait_for_function(
                "document.querySelector('#history-totals .mid') && "
                "parseInt(document.querySelector('#history-totals .mid').textContent.replace(/,/g, '')) > 0",
                timeout=30_000)
            assert page.inner_text("#history-status") == ""
            page.wait_for_timeout(800)
            page.screenshot(path=str(output_dir / "dashboard-history.png"), full_page=True)
            assert console_errors == [], console_errors
        finally:
            browser.close()
    assert (output_dir / "dashboard.png").stat().st_size > 20_000
