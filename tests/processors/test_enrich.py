"""Enrichment rules: what counts as a page view, where visitors come from, which goals they reach."""
from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from config.settings import ProcessingSettings
from processors.enrich import (
    CHECKED_FIELDS,
    KIND_BOT,
    KIND_ERROR,
    KIND_OTHER,
    KIND_PAGEVIEW,
    KIND_REDIRECT,
    KIND_STATIC,
    Enricher,
    columns_of,
    compile_pattern,
    parse_user_agent,
    referrer_channel,
    utm_fields,
    valid_columns,
    validate_hit,
)
from sinks.testing.events import UAS, make_hit

S = ProcessingSettings(site_hosts=["www.shop.example", "shop.example"])


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    return Enricher(S)


@pytest.mark.parametrize("referrer,host,channel,ref_host", [
    ("", "shop.example", "direct", ""),
    ("https://shop.example/cart", "shop.example", "internal", "shop.example"),
    ("https://www.shop.example/", "shop.example", "internal", "www.shop.example"),  # site_hosts
    ("https://blog.other.example/x", "blog.other.example", "internal", "blog.other.example"),  # same host
    ("https://www.google.co.kr/search?q=shoes", "shop.example", "search", "www.google.co.kr"),
    ("https://duckduckgo.com/", "shop.example", "search", "duckduckgo.com"),
    ("https://m.facebook.com/story", "shop.example", "social", "m.facebook.com"),
    ("https://t.co/abc", "shop.example", "social", "t.co"),
    ("https://at.com/abc", "shop.example", "other", "at.com"),  # 't.co' must not match by substring
    ("https://news.example.org/a", "shop.example", "other", "news.example.org"),
    ("not a url at all", "shop.example", "other", "not a url at all"),
])
def test_referrer_channel(referrer, host, channel, ref_host):
    assert referrer_channel(referrer, host, S) == (channel, ref_host)


def test_utm_fields_read_from_query():
    u = utm_fields("a=1&utm_source=news&utm_medium=email&utm_campaign=spring%20sale&utm_term=x&utm_content=y")
    assert u == {"utm_source": "news", "utm_medium": "email", "utm_campaign": "spring sale",
                 "utm_term": "x", "utm_content": "y"}
    assert utm_fields("q=1")["utm_campaign"] == ""


def test_user_agent_classes():
    assert parse_user_agent(UAS["chrome"]).device == "desktop"
    assert parse_user_agent(UAS["chrome"]).browser == "Chrome"
    iphone = parse_user_agent(UAS["iphone"])
    assert (iphone.device, iphone.os, iphone.is_bot) == ("mobile", "iOS", False)
    assert parse_user_agent(UAS["googlebot"]).is_bot
    assert parse_user_agent("curl/8.4.0").is_bot  # keyword list, not a ua-parser Spider
    assert parse_user_agent("Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 "
                            "(KHTML, like Gecko) Version/16.0 Mobile/15E148 Safari/604.1").device == "tablet"
    assert parse_user_agent("").device == "other"


@pytest.mark.parametrize("hit,kind", [
    (make_hit("e", 1e9, "v", "/product/p1"), KIND_PAGEVIEW),
    (make_hit("e", 1e9, "v", "/"), KIND_PAGEVIEW),
    (make_hit("e", 1e9, "v", "/about", content_type=""), KIND_PAGEVIEW),
    (make_hit("e", 1e9, "v", "/static/app.css", content_type="text/css"), KIND_STATIC),
    (make_hit("e", 1e9, "v", "/logo.PNG", content_type=""), KIND_STATIC),  # by extension
    (make_hit("e", 1e9, "v", "/img/1", content_type="image/webp"), KIND_STATIC),  # by content type
    (make_hit("e", 1e9, "v", "/old", status=301), KIND_REDIRECT),
    (make_hit("e", 1e9, "v", "/missing", status=404), KIND_ERROR),
    (make_hit("e", 1e9, "v", "/boom", status=503), KIND_ERROR),
    (make_hit("e", 1e9, "v", "/slow", status=None), KIND_ERROR),
    (make_hit("e", 1e9, "v", "/", ua=UAS["googlebot"]), KIND_BOT),
    (make_hit("e", 1e9, "v", "/api/cart", content_type="application/xml"), KIND_OTHER),
    (make_hit("e", 1e9, "v", "/login", method="POST"), KIND_OTHER),
])
def test_classification(enricher, hit, kind):
    assert enricher.classify(hit).kind == kind


@pytest.mark.parametrize("query,referrer,channel", [
    ("utm_source=newsletter&utm_medium=email&utm_campaign=spring", "", "email"),  # was "direct"
    ("utm_medium=Newsletter", "https://mail.example.net/inbox", "email"),
    ("utm_source=google&utm_medium=cpc", "https://www.google.com/", "cpc"),  # paid, not organic search
    ("utm_medium=affiliate", "https://blog.example.org/", "affiliate"),
    ("utm_medium=social", "", "social"),
    ("utm_medium=banner", "https://news.example.com/", "display"),
    ("utm_medium=carrier-pigeon", "https://www.google.com/", "search"),  # unknown medium: the referrer says
    ("", "https://www.google.com/", "search"),
    ("", "https://shop.example/cart", "internal"),
])
def test_utm_medium_names_the_channel(enricher, query, referrer, channel):
    hit = make_hit("e1", 1e9, "v", "/category/shoes", query=query, referrer=referrer)
    assert enricher.pageview(hit, enricher.classify(hit), "s1")["channel"] == channel


def test_url_rules_fill_page_fields(enricher):
    hit = make_hit("e1", 1e9, "v", "/product/sku-42", query="utm_campaign=launch",
                   referrer="https://www.bing.com/search?q=sku")
    pv = enricher.pageview(hit, enricher.classify(hit), "s1")
    assert (pv["page_group"], pv["section"], pv["product_id"]) == ("product", "shop", "sku-42")
    assert (pv["channel"], pv["referrer_host"], pv["utm_campaign"]) == ("search", "www.bing.com", "launch")
    assert pv["session_id"] == "s1" and pv["browser"] == "Chrome" and pv["device"] == "desktop"
    cat = enricher.page_meta("/category/shoes/")
    assert (cat["page_group"], cat["category"]) == ("category", "shoes")
    assert enricher.page_meta("/")["page_group"] == "home"
    assert enricher.page_meta("/product/a/b")["page_group"] == ""  # {name} is one segment
    assert compile_pattern("/product/{product_id}").match("/product/x").group("product_id") == "x"


def test_goals_with_values_and_methods(enricher):
    post = make_hit("e", 1e9, "v", "/order/complete", method="POST", status=303,
                    extra={"x-order-amount": "129.90"})
    c = enricher.classify(post)
    assert (c.kind, c.goal, c.goal_value) == (KIND_REDIRECT, "purchase", 129.9)  # a goal, not a page view
    get = make_hit("e", 1e9, "v", "/order/complete")
    assert enricher.classify(get).goal == ""  # purchase rule is POST only
    bad_amount = make_hit("e", 1e9, "v", "/order/complete", method="POST", extra={"x-order-amount": "lots"})
    assert enricher.goal_of(bad_amount) == ("purchase", 0.0)
    failed = make_hit("e", 1e9, "v", "/order/complete", method="POST", status=500)
    assert enricher.goal_of(failed) == ("", 0.0)
    by_param = Enricher(ProcessingSettings(goals=[{"name": "donate", "pattern": "/donate", "value_param": "eur"}]))
    assert by_param.goal_of(make_hit("e", 1e9, "v", "/donate", query="eur=5")) == ("donate", 5.0)
    pv = by_param.pageview(make_hit("e", 1e9, "v", "/donate", query="eur=5"),
                           by_param.classify(make_hit("e", 1e9, "v", "/donate", query="eur=5")))
    assert (pv["goal"], pv["goal_value"]) == ("donate", 5.0)  # a GET goal is a page view carrying its goal
    # the same names find a request body's named fields (capture.request_bodies) when the query lacks them
    body = make_hit("e", 1e9, "v", "/donate", method="POST", extra={"body:eur": "7.5"})
    assert by_param.goal_of(body) == ("donate", 7.5)
    assert enricher.goal_items("add_to_cart", "", {"body:product": "p4", "body:qty": "3"}) == [("p4", 3)]
    assert enricher.goal_items("add_to_cart", "product=p5&qty=2", {"body:product": "p4"}) == [("p5", 2)]


@pytest.mark.parametrize("hit,reason", [
    ([1, 2], "not a JSON object"),
    ({"ts": 1e9, "visitor_id": "v"}, "missing event_id"),
    ({"event_id": "e", "ts": "yesterday", "visitor_id": "v"}, "missing or bad ts"),
    ({"event_id": "e", "ts": 1e9}, "missing visitor_id"),
    ({"event_id": "e", "ts": 1e9, "visitor_id": "v", "status": "200"}, "bad status"),
    ({"event_id": "e", "ts": 1e9, "visitor_id": "v", "resp_bytes": "12"}, "bad resp_bytes"),
    ({"event_id": "e", "ts": 1e9, "visitor_id": "v", "path": ["/"]}, "bad path"),
    ({"event_id": "e", "ts": 1e9, "visitor_id": "v", "extra": "x-order-amount=5"}, "bad extra"),
])
def test_bad_hits_are_named(hit, reason):
    assert validate_hit(hit) == reason
    assert validate_hit(make_hit("e", 1e9, "v")) == ""


_values = (st.none() | st.booleans() | st.integers(-2**63, 2**70) | st.floats() | st.text(max_size=3)
           | st.just({}) | st.just([]) | st.sampled_from([1e9, 1e11, 0, "e"]))
_HIT_KEYS = sorted(make_hit("e", 1e9, "v"))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(_HIT_KEYS), _values, max_size=2)
                | st.sampled_from([None, "x"]), max_size=6))  # changes to good hits, or no dict at all
@example([{}, {"ts": float("nan")}])  # NaN after a good ts: min() and max() miss it
@example([{}, {"ts": float("inf")}])
@example([{}, {"status": True}])  # bool is an int subclass, and not a status
@example([{}, {"resp_bytes": False}])
@example([{}, {"ts": 2 ** 1030}])  # too large for a float
def test_batch_validation_agrees_with_validate_hit(changes):
    hits = [{**make_hit(f"e{i}", 1e9 + i, "v"), **c} if isinstance(c, dict) else c for i, c in enumerate(changes)]
    for drop_key in (None, "status", "resp_bytes"):  # missing fields too
        if drop_key and hits and isinstance(hits[0], dict):
            hits[0].pop(drop_key, None)
        columns = valid_columns(hits)
        all_good = all(validate_hit(h) == "" for h in hits)
        if columns is not None:  # the batch is taken without hit-by-hit checks: it must be good
            assert all_good, hits
            assert {k: list(v) for k, v in columns.items()} == columns_of(hits)
        elif all(isinstance(h, dict) and set(CHECKED_FIELDS) <= set(h) for h in hits):  # only a missing field may
            assert not all_good, hits  # send good hits to the hit-by-hit checks


def test_batch_classification_is_classify_of_each_hit(enricher):
    hits = [make_hit("a", 1e9, "v", "/order/complete", method="POST", extra={"x-order-amount": "5"}),
            make_hit("b", 1e9, "v", "/order/complete"), make_hit("c", 1e9, "v", "/cart/add", method="POST"),
            make_hit("d", 1e9, "v", "/s.css", content_type="text/css"), make_hit("e", 1e9, "v", "/", status=None),
            {**make_hit("f", 1e9, "v"), "path": None, "user_agent": None, "content_type": None}]
    classes = enricher.classify_all(hits, columns_of(hits))
    assert classes == [enricher.classify(h) for h in hits]
    assert [c.goal for c in classes] == ["purchase", "", "add_to_cart", "", "", ""]


def test_product_ids_and_categories_from_query_parameters():
    rules = ProcessingSettings(url_rules=[
        {"pattern": "/goods/view.do?goodsNo={product_id}&cate={category}", "group": "product", "section": "shop"},
        {"pattern": "/goods/view.do?goodsNo={product_id}", "group": "product", "section": "shop"},
        {"pattern": "/goods/list.do?mode=sale", "group": "sale", "category": "sale"},
        {"pattern": "/product/{product_id}", "group": "product"}])
    e = Enricher(rules)

    def page(path, query=""):
        hit = make_hit("e", 1e9, "v", path, query=query)
        return e.pageview(hit, e.classify(hit))

    pv = page("/goods/view.do", "goodsNo=777&cate=shoes&utm_source=x")
    assert (pv["page_group"], pv["product_id"], pv["category"]) == ("product", "777", "shoes")
    assert (page("/goods/view.do", "goodsNo=778")["product_id"], page("/goods/view.do", "goodsNo=778")["category"]) \
        == ("778", "")
    assert page("/goods/view.do")["product_id"] == ""  # no goodsNo: not a product page, never 'view.do'
    assert page("/goods/view.do", "goodsNo=")["page_group"] == ""
    assert page("/goods/list.do", "mode=sale")["category"] == "sale"
    assert page("/goods/list.do", "mode=new")["page_group"] == ""  # a required value must be there
    assert page("/product/p9")["product_id"] == "p9"
    assert page("/goods/view.do", "goodsNo=" + "9" * 200)["product_id"] == ""  # an id, not a text


@pytest.mark.parametrize("pattern", ["/goods/view.do?goodsNo", "/goods/view.do?goodsNo={id", "/a?x=<script>",
                                     "/a?=1"])
def test_bad_query_parts_of_url_rules_are_named(pattern):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="name=\\{capture\\} or name=value"):
        ProcessingSettings(url_rules=[{"pattern": pattern, "group": "g"}])
