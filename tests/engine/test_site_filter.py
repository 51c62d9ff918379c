"""The per-site filter (?host=) of the Customers, Products and Funnels APIs, served by the real web app over a
chdb history: with a second site's traffic added to the store, each view filtered to the first site answers
exactly what it answered when the store held that site alone (retention cohorts too), and the unfiltered view
counts both."""
from __future__ import annotations

import pytest

from sinks.testing import fresh_history
from sinks.testing.events import generate
from test_screen_api import _client

pytestmark = pytest.mark.integration

SHOP, OUTLET = generate(seed=5), generate(seed=11)
ID_FIELDS = ("event_id", "visitor_id", "member_id", "session_id")
VIEWS = {
    "customers": "/api/customers?to={now}&limit=1000&sort=member_id&order=asc",
    "products": "/api/products/sales?to={now}&limit=1000",
    "product usage": "/api/products?to={now}&limit=1000",
    "funnels": "/api/funnels?to={now}",
    "visitor cohorts": "/api/cohorts?to={now}&who=visitors",
    "member cohorts": "/api/cohorts?to={now}&who=members",
}


def _other_site(rows: list[dict]) -> list[dict]:
    """The second site's rows: own host and ids (no visitor, member or event shared with the first site)."""
    return [{**r, "host": "outlet.example", **{k: "o-" + r[k] for k in ID_FIELDS if r.get(k)}} for r in rows]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(fetch, store) over a history holding the first site's traffic."""
    with fresh_history(str(tmp_path_factory.mktemp("site-filter"))) as st:
        for table in ("hits", "pageviews", "sessions"):
            st.write(table, getattr(SHOP, table))
        for fetch in _client(st):
            yield fetch, st


def _views(get, query: str = "") -> dict[str, dict]:
    out = {}
    for name, path in VIEWS.items():
        status, _, body = get(path.format(now=SHOP.now) + query)
        assert status == 200, (name, body)
        out[name] = body
    return out


def test_each_view_filtered_to_one_site_equals_that_site_alone(site):
    get, store = site
    alone = _views(get)
    assert alone["customers"]["total"] > 5 and alone["products"]["rows"] and alone["funnels"]["funnels"][0]["entered"]
    # the same store, now with a second site's visitors, members, orders and funnels beside the first
    for table in ("hits", "pageviews", "sessions"):
        store.write(table, _other_site(getattr(OUTLET, table)))
    assert _views(get, "&host=shop.example") == alone
    assert _views(get, "&host=SHOP.example") == alone  # host names are case-insensitive
    both = _views(get)
    assert both["customers"]["total"] > alone["customers"]["total"]
    assert any(r["member_id"].startswith("o-") for r in both["customers"]["rows"])
    assert both["funnels"]["funnels"][0]["entered"] > alone["funnels"]["funnels"][0]["entered"]
    outlet = _views(get, "&host=outlet.example")
    assert outlet["customers"]["rows"] and all(r["member_id"].startswith("o-") for r in outlet["customers"]["rows"])


def test_a_bad_host_is_one_clear_line(site):
    get, _ = site
    status, _, body = get("/api/customers?host=shop.example%27%20OR%201%3D1")
    assert status == 400 and "is not a host name" in body["error"] and "\n" not in body["error"]


@pytest.mark.browser
def test_the_screen_filters_each_tab_to_the_chosen_site(site, output_dir):
    """Chromium: choosing a site on the Customers tab shows that site's member count; the Products and Funnels
    tabs then show the same site's figures, and the address keeps it (a reload opens the same filter)."""
    from playwright.sync_api import sync_playwright

    from browser_demo import CHROMIUM, CHROMIUM_ARGS
    from engine.web.testing import served_app

    get, store = site
    # the second site (a replay when the test above wrote it: every figure reads through DISTINCT, nothing changes)
    for table in ("hits", "pageviews", "sessions"):
        store.write(table, _other_site(getattr(OUTLET, table)))
    every, outlet = _views(get), _views(get, "&host=outlet.example")
    assert every["customers"]["members"] > outlet["customers"]["members"] > 0
    with served_app(store) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.goto(url + "?view=customers")
        count = page.get_by_test_id("member-count")
        page.wait_for_function("document.querySelector('[data-testid=member-count]').textContent.includes('members')")
        assert f"of {every['customers']['members']:,} members" in count.text_content()
        page.get_by_test_id("customers-host").select_option("outlet.example")
        page.wait_for_function(
            f"document.querySelector('[data-testid=member-count]').textContent.includes("
            f"'of {outlet['customers']['members']:,} members')")
        assert "host=outlet.example" in page.url
        page.screenshot(path=str(output_dir / "customers-outlet.png"))
        page.click("#tab-products")
        # the tab's select gets the site once the site list has loaded (async): wait for it, as after the reload
        page.wait_for_function("document.querySelector('[data-testid=products-host]').value === 'outlet.example'")
        most = max(r["views"] for r in outlet["product usage"]["rows"])
        page.wait_for_selector("[data-testid=product-table] tbody tr")
        first = page.locator("[data-testid=product-table] tbody tr").first.locator("td").nth(0).text_content()
        assert first in {r["product_id"] for r in outlet["product usage"]["rows"] if r["views"] == most}
        page.reload()  # the address keeps the site
        page.wait_for_function("document.querySelector('[data-testid=products-host]').value === 'outlet.example'")
        page.click("#tab-funnels")
        entered = outlet["funnels"]["funnels"][0]["entered"]
        assert entered != every["funnels"]["funnels"][0]["entered"]
        page.wait_for_function(f"document.querySelector('[data-testid=funnel-cards]').textContent.includes("
                               f"'{entered:,} sessions entered')")
        browser.close()
