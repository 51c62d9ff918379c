"""The screens' API (engine/web/screen_routes.py) served by the real web app over a chdb history holding
the generated shop history: the member list as JSON pages and as CSV, activity pages, all funnels with
filters, and one clear 400 line for each bad parameter."""
from __future__ import annotations

import asyncio
import csv
import io

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.settings import load_settings
from engine.web.app import create_web_app
from sinks.testing import fresh_history
from sinks.testing.events import generate

pytestmark = pytest.mark.integration

DS = generate(seed=5)


@pytest.fixture(scope="module")
def get(tmp_path_factory):
    with fresh_history(str(tmp_path_factory.mktemp("screen-api")), rows=DS) as st:
        yield from _client(st)


def _client(st):
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(create_web_app(load_settings(), None, st)), loop=loop)
    loop.run_until_complete(client.start_server())

    def fetch(path: str, method: str = "GET", **kw):
        async def go():
            resp = await client.request(method, path, **kw)
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, resp.headers, body
        return loop.run_until_complete(go())
    yield fetch
    loop.run_until_complete(client.close())
    loop.close()


def test_member_list_pages_and_csv_export_agree(get):
    status, _, page = get(f"/api/customers?to={DS.now}&limit=5&sort=orders")
    assert status == 200 and len(page["rows"]) == 5 and page["total"] == page["members"] > 5
    assert [r["orders"] for r in page["rows"]] == sorted((r["orders"] for r in page["rows"]), reverse=True)
    status, headers, text = get(f"/api/customers?to={DS.now}&sort=orders&format=csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert 'filename="members.csv"' in headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == page["total"]  # the export has every member, not one page
    assert [r["member_id"] for r in rows[:5]] == [r["member_id"] for r in page["rows"]]
    assert {"r", "f", "m", "orders", "revenue", "last_seen"} <= set(rows[0])
    segment = page["rows"][0]["segment"]
    status, headers, text = get(f"/api/customers?to={DS.now}&segment={segment}&format=csv")
    assert f'members-{segment}.csv' in headers["Content-Disposition"]
    assert {r["segment"] for r in csv.DictReader(io.StringIO(text))} == {segment}


def test_activity_and_all_funnels(get):
    _, _, page = get(f"/api/customers?to={DS.now}&limit=1")
    member = page["rows"][0]["member_id"]
    status, _, act = get(f"/api/profiles/member/{member}/activity")
    assert status == 200 and act["member_id"] == member and act["visits"] and act["pages"]
    assert len(act["orders"]) == page["rows"][0]["orders"]
    status, _, body = get("/api/profiles/member/nobody/activity")
    assert status == 404 and "no page views" in body["error"]
    vid = DS.pageviews[0]["visitor_id"]
    status, _, act = get(f"/api/profiles/visitor/{vid}/activity")
    assert status == 200 and act["visitor_id"] == vid
    status, _, all_ = get("/api/funnels")
    assert status == 200 and [f["funnel"] for f in all_["funnels"]] == ["purchase"]
    status, _, one = get("/api/funnels/purchase")
    assert all_["funnels"][0]["steps"] == one["steps"]
    _, _, mobile = get("/api/funnels?device=mobile")
    _, _, desktop = get("/api/funnels?device=desktop")
    assert 0 < mobile["funnels"][0]["entered"] < one["entered"]
    assert mobile["funnels"][0]["entered"] + desktop["funnels"][0]["entered"] <= one["entered"]


@pytest.mark.parametrize("path, fragment", [
    ("/api/customers?segment=whales", "segment must be one of"),
    ("/api/customers?sort=shoe_size", "sort must be one of"),
    ("/api/customers?order=sideways", "order must be asc or desc"),
    ("/api/customers?format=xml", "format must be json or csv"),
    ("/api/customers?limit=0", "limit must be between"),
    ("/api/funnels?member=robots", "member must be"),
    ("/api/funnels/purchase?member=robots", "member must be"),
])
def test_bad_parameters_are_one_clear_line(get, path, fragment):
    status, _, body = get(path)
    assert status == 400 and fragment in body["error"] and "\n" not in body["error"]


def test_annotations_are_added_listed_and_deleted(get):
    status, _, note = get("/api/annotations", "POST", json={"ts": DS.now - 3600, "text": " newsletter sent "})
    assert status == 201 and note["text"] == "newsletter sent" and note["ts"] == DS.now - 3600
    get("/api/annotations", "POST", json={"ts": DS.now - 60, "text": "price change"})
    status, _, listed = get(f"/api/annotations?from={DS.now - 7200}&to={DS.now}")
    assert [a["text"] for a in listed["annotations"]] == ["newsletter sent", "price change"]
    status, _, only = get(f"/api/annotations?from={DS.now - 600}&to={DS.now}")
    assert [a["text"] for a in only["annotations"]] == ["price change"]
    status, _, _ = get(f"/api/annotations/{note['annotation_id']}", "DELETE")
    assert status == 200
    _, _, after = get("/api/annotations")
    assert [a["text"] for a in after["annotations"]] == ["price change"]
    status, _, body = get(f"/api/annotations/{note['annotation_id']}", "DELETE")
    assert status == 404 and "no annotation" in body["error"]
    for bad, fragment in (({"ts": "yesterday", "text": "x"}, "ts must be"), ({"ts": DS.now, "text": ""}, "text must"),
                          ({"ts": DS.now, "text": "x" * 501}, "at most 500"), ([1, 2], "JSON object")):
        status, _, body = get("/api/annotations", "POST", json=bad)
        assert status == 400 and fragment in body["error"], (bad, body)
    status, _, body = get("/api/annotations", "POST", data=b"not json")
    assert status == 400 and "body must be JSON" in body["error"]
