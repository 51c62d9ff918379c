"""The Wall layout in Chromium at 1920x1080 and 1366x768 with figures as wide as a big shop's (six-digit
visitors now, five-digit members + anonymous, long sub-lines): no figure is cut off. The demo's figures are
small (tests/engine/test_screens_browser.py checks them live); these are written into the cards."""
from __future__ import annotations

import pytest

from browser_demo import CHROMIUM, CHROMIUM_ARGS, CLIPPED_KPIS_JS
from engine.web.testing import served_app
from sinks.testing import fresh_history

pytestmark = [pytest.mark.browser, pytest.mark.integration]

WIDE = """() => {
  for (const e of document.querySelectorAll('#live .kpi .big')) e.textContent = '123,456';
  for (const e of document.querySelectorAll('#live .kpi .mid')) e.textContent = '81,234 + 19,876';
  for (const e of document.querySelectorAll('#live .kpi .sub'))
    e.textContent = 'previous minute 1,234 · 123,456.78 in 60 min';
}"""


def test_the_wall_cuts_off_no_wide_figure(tmp_path, output_dir):
    from playwright.sync_api import sync_playwright

    with fresh_history(str(tmp_path)) as store, served_app(store) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for width, height in ((1920, 1080), (1366, 768)):
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url + "?wall=1")
            page.wait_for_selector("body.wall [data-testid=visitors-now]")
            page.evaluate(WIDE)
            assert page.evaluate(CLIPPED_KPIS_JS) == [], (width, height)
            page.screenshot(path=str(output_dir / f"wall-wide-{width}x{height}.png"))
            page.close()
        browser.close()
