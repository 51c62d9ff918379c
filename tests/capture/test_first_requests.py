"""First requests and crawlers (capture.first_requests): a visitor id that a response's Set-Cookie gives counts
only once the client sends that cookie back; until then, and for a client that never does, IP+UA applies.

The traffic is a shop's (scapy-built pcap): it sets `_vw_id` on every response to a request without one.
Two crawlers at one address with two User-Agents never keep it; two browsers keep it from their first page
on; a third browser leaves after its first page.
"""
from __future__ import annotations


import pytest


from pcaps import T0, Conv, req, resp, write  # noqa: E402

from capture.pcapfile import read_pcap_batches  # noqa: E402
from capture.decoder import Decoder  # noqa: E402
from config.settings import Settings  # noqa: E402

BOT_AGENTS = ("Googlebot/2.1 (+http://www.google.com/bot.html)", "bingbot/2.0")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0"


def get(path: str, ua: str, cookie: str | None = None) -> bytes:
    extra = {"Cookie": cookie} if cookie else {}
    return req(path, headers=extra).replace(b"User-Agent: test-agent/1.0", f"User-Agent: {ua}".encode())


def shop_pcap(tmp_path, browsers=3, bot_requests=6, gap_s=1.0) -> str:
    pkts = []
    given = 0

    def answer(conv: Conv, cookie: str | None) -> None:
        nonlocal given
        headers = {}
        if cookie is None:
            given += 1
            headers["Set-Cookie"] = f"_vw_id=given-{given:04d}; Path=/; Max-Age=31536000"
        conv.tick(0.002).response(resp(200, b"<html>page</html>", headers=headers))

    for b, ua in enumerate(BOT_AGENTS):  # crawlers: no cookie jar, a new connection per request
        for r in range(bot_requests):
            conv = Conv(client=("10.0.9.9", 42000 + b * 100 + r), t=T0 + b * 0.3 + r * gap_s).handshake()
            conv.request(get(f"/product/{r}", ua))
            answer(conv, None)
            pkts += conv.close().pkts
    for c in range(browsers):
        conv = Conv(client=(f"10.0.2.{c + 1}", 43000 + c), t=T0 + 0.1 + c * 0.05).handshake()
        conv.request(get("/", BROWSER))
        answer(conv, None)
        if c < 2:  # the third browser leaves after its first page
            cookie = f"_vw_id=given-{given:04d}"
            for path in ("/static/site.css", "/category/shoes", "/product/3"):
                conv.t = round(conv.t + 0.5, 6)
                conv.request(get(path, BROWSER, cookie))
                answer(conv, cookie)
        pkts += conv.close().pkts
    pkts.sort(key=lambda p: p[0])
    return write(tmp_path / "shop.pcap", pkts)


def decode(path: str, fast: bool, lines: bool = False, batch_size: int = 16, timeout_s: float = 30.0) -> list[dict]:
    d = Decoder(Settings(capture={"salt": "s", "transaction_timeout_s": timeout_s}), fast_path=fast)
    events = []
    for b in read_pcap_batches(path, batch_size=batch_size):
        events += d.feed_lines(b).dicts() if lines else d.feed(b)
        events += d.expire(float(b.ts[-1]))
    return events + d.close()


def visitors(events: list[dict]) -> dict[str, set[str]]:
    by_agent: dict[str, set[str]] = {}
    for e in events:
        by_agent.setdefault(e["client_ip"] + " " + e["user_agent"], set()).add(e["visitor_id"])
    return by_agent


@pytest.mark.parametrize("fast,lines", [(True, True), (True, False), (False, False)])
def test_a_crawler_without_cookies_is_one_visitor_per_address_and_agent(tmp_path, fast, lines):
    events = decode(shop_pcap(tmp_path), fast, lines)
    assert len(events) == 2 * 6 + 3 + 2 * 3  # nothing held back or lost
    ids = visitors(events)
    bots = [ids[f"10.0.9.9 {ua}"] for ua in BOT_AGENTS]
    assert [len(b) for b in bots] == [1, 1]  # 6 requests, 6 cookies given, never sent back: one visitor each
    assert bots[0] != bots[1]


@pytest.mark.parametrize("fast,lines", [(True, True), (False, False)])
def test_a_browsers_first_page_joins_the_visitor_its_cookie_names(tmp_path, fast, lines):
    events = decode(shop_pcap(tmp_path), fast, lines)
    for c in range(2):
        mine = sorted((e for e in events if e["client_ip"] == f"10.0.2.{c + 1}"), key=lambda e: e["ts"])
        assert [e["path"] for e in mine] == ["/", "/static/site.css", "/category/shoes", "/product/3"]
        assert len({e["visitor_id"] for e in mine}) == 1  # the first page is not a visitor of its own
    # the one that left after its first page never sent the cookie back: its IP+UA id
    alone = [e for e in events if e["client_ip"] == "10.0.2.3"]
    assert len(alone) == 1
    assert len({e["visitor_id"] for e in events if not e["user_agent"].startswith(("Google", "bing"))}) == 3


def test_held_first_requests_go_out_after_the_timeout_not_at_the_end(tmp_path):
    # crawler requests 1 s apart, a 2 s timeout: each is out within ~3 s of capture time, long before the end
    path = shop_pcap(tmp_path, browsers=0, bot_requests=12)
    d = Decoder(Settings(capture={"salt": "s", "transaction_timeout_s": 2.0}), fast_path=True)
    late = []
    for b in read_pcap_batches(path, batch_size=4):
        now = float(b.ts[-1])
        for e in d.feed(b) + d.expire(now):
            late.append(now - e["ts"])
    assert late and max(late) < 4.0
    assert len(late) + len(d.close()) == 2 * 12


@pytest.mark.parametrize("fast", [True, False])
def test_a_cookie_back_before_its_page_is_complete_still_joins(tmp_path, fast):
    # the page streams its body; the browser already fetches an asset with the cookie on a second connection
    page = Conv(client=("10.0.4.1", 45000), t=T0).handshake()
    asset = Conv(client=("10.0.4.1", 45001), t=T0 + 0.01).handshake()
    page.request(get("/", BROWSER))
    head = resp(200, b"x" * 4000, headers={"Set-Cookie": "_vw_id=given-early; Path=/; Max-Age=31536000"})
    page.tick(0.01).response(head[:len(head) - 3000])
    asset.t = page.t + 0.01
    asset.request(get("/static/site.css", BROWSER, "_vw_id=given-early"))
    asset.tick(0.002).response(resp(200, b"body{}", ctype="text/css"))
    page.t = asset.t + 0.5
    page.response(head[len(head) - 3000:])
    pkts = sorted(page.close().pkts + asset.close().pkts, key=lambda p: p[0])
    events = decode(write(tmp_path / "early.pcap", pkts), fast, lines=fast, batch_size=4)
    assert [e["path"] for e in events] == ["/static/site.css", "/"]
    assert len({e["visitor_id"] for e in events}) == 1
