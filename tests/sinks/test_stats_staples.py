"""Web-analytics staples of /api/stats on both backends: one site of several (host=), entry and exit pages,
search keywords from the referrer, and the site's own pages never listed as referrers."""
from __future__ import annotations

import pytest

from sinks.reads.stats import StatsError, compute_stats, parse_stats_request
from sinks.testing import fresh_history

pytestmark = pytest.mark.integration

BASE = 1767261600  # a minute boundary


def _pv(i, t, visitor, session, path, host="shop.test", ref="", channel="direct", country=""):
    return {"event_id": f"pv{i}", "ts": BASE + t, "visitor_id": visitor, "member_id": "", "session_id": session,
            "host": host, "path": path, "query": "", "method": "GET", "status": 200, "latency_ms": 10.0,
            "referrer": ref, "referrer_host": ref.split("/")[2] if ref else "", "channel": channel,
            "utm_source": "", "utm_medium": "", "utm_campaign": "", "utm_term": "", "utm_content": "",
            "browser": "Chrome", "os": "Linux", "device": "desktop", "is_bot": False, "page_group": "",
            "section": "", "product_id": "", "category": "", "menu": "", "goal": "", "goal_value": 0.0,
            "country": country, "city": "Paris" if country == "FR" else ""}


def _session(sid, visitor, start, end, pvs, entry, exit_):
    return {"session_id": sid, "visitor_id": visitor, "member_id": "", "start": BASE + start, "end": BASE + end,
            "duration": end - start, "pageviews": pvs, "entry_page": entry, "exit_page": exit_,
            "bounce": pvs == 1, "channel": "direct", "referrer_host": "", "utm_source": "", "utm_medium": "",
            "utm_campaign": "", "browser": "Chrome", "os": "Linux", "device": "desktop", "is_bot": False,
            "close_reason": "idle", "goals": 0, "revenue": 0.0}


PVS = [
    _pv(1, 5, "va", "sa", "/", ref="https://www.google.com/search?q=Red+Shoes&hl=en", channel="search", country="DE"),
    _pv(2, 20, "va", "sa", "/product/1", ref="https://shop.test/", channel="internal", country="DE"),
    _pv(3, 40, "va", "sa", "/cart", ref="https://shop.test/product/1", channel="internal", country="DE"),
    _pv(4, 60, "vb", "sb", "/product/2", ref="https://www.bing.com/search?q=red%20shoes", channel="search",
        country="US"),
    _pv(5, 90, "vc", "sc", "/", ref="https://www.google.com/", channel="search"),  # not provided
    _pv(6, 100, "vd", "sd", "/blog", host="blog.test", ref="https://search.yahoo.com/?p=shoe+care", channel="search",
        country="FR"),
    _pv(7, 130, "vd", "sd", "/blog/2", host="blog.test", ref="https://blog.test/blog", channel="internal",
        country="FR"),
]
SESSIONS = [_session("sa", "va", 5, 40, 3, "/", "/cart"), _session("sb", "vb", 60, 60, 1, "/product/2", "/product/2"),
            _session("sc", "vc", 90, 90, 1, "/", "/"), _session("sd", "vd", 100, 130, 2, "/blog", "/blog/2")]


@pytest.fixture(scope="module")
def query(history_place):
    with fresh_history(history_place, "staples") as store:
        for _ in range(2):  # at-least-once delivery: everything twice
            store.write("pageviews", PVS)
            store.write("sessions", SESSIONS)
            store.write("hits", [{**{k: p[k] for k in ("event_id", "ts", "visitor_id", "member_id", "host", "path",
                                                         "query", "method", "status", "latency_ms", "referrer")},
                                  "uri": p["path"], "user_agent": "x", "resp_bytes": 1, "content_type": "text/html",
                                  "client_ip": "10.0.0.1", "client_port": 1, "server_ip": "10.0.0.2",
                                  "server_port": 80, "http_version": "1.1", "no_response": False, "extra": {}}
                                 for p in PVS])
        yield lambda **q: compute_stats(store.query, parse_stats_request(
            {"from": str(BASE), "to": str(BASE + 3600), **q}))


def _rows(result, metric):
    return {r["key"]: r[metric] for r in result["rows"]}


def test_one_site_of_several(query):
    assert _rows(query(by="host", metrics="pageviews,hits"), "pageviews") == {"shop.test": 5, "blog.test": 2}
    shop = query(host="shop.test", metrics="pageviews,visitors,sessions,hits")["totals"]
    assert shop == {"pageviews": 5, "visitors": 3, "sessions": 3, "hits": 5}
    # whole minutes read the rollups: the same figures
    assert query(host="blog.test", metrics="pageviews,visitors,hits")["totals"] == \
        {"pageviews": 2, "visitors": 1, "hits": 2}
    assert _rows(query(host="shop.test", by="page", metrics="pageviews"), "pageviews") == \
        {"/": 2, "/product/1": 1, "/cart": 1, "/product/2": 1}
    with pytest.raises(StatsError, match="not a host name"):
        parse_stats_request({"host": "x' OR 1=1 --"})


def test_entry_and_exit_pages(query):
    assert _rows(query(by="entry", metrics="sessions,bounce_rate"), "sessions") == \
        {"/": 2, "/product/2": 1, "/blog": 1}
    assert _rows(query(by="exit", metrics="sessions"), "sessions") == \
        {"/cart": 1, "/product/2": 1, "/": 1, "/blog/2": 1}
    assert _rows(query(by="entry", host="blog.test", metrics="sessions"), "sessions") == {"/blog": 1}


def test_search_keywords_and_no_own_host_as_referrer(query):
    # "" = not from a search, or a search without words in its referrer (not provided)
    assert _rows(query(by="keyword", metrics="pageviews,visitors"), "visitors") == \
        {"red shoes": 2, "shoe care": 1, "": 3}
    refs = _rows(query(by="referrer", metrics="pageviews"), "pageviews")
    assert "shop.test" not in refs and "blog.test" not in refs and refs["www.google.com"] == 2


def test_country_and_city_of_page_views(query):
    assert _rows(query(by="country", metrics="pageviews,visitors"), "visitors") == {"DE": 1, "US": 1, "FR": 1, "": 1}
    assert _rows(query(by="country", metrics="pageviews"), "pageviews") == {"DE": 3, "US": 1, "FR": 2, "": 1}
    assert _rows(query(by="city", host="blog.test", metrics="pageviews"), "pageviews") == {"Paris": 2}
