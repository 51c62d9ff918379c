"""Named fields of small request bodies, opt-in per path (capture.request_bodies, capture/bodies.py).

A shop's cart adds arrive as form bodies and as JSON bodies (scapy-built pcap); a login form carries a
password in its body; one cart add is larger than capture.max_body_bytes and one is chunked. Only the named
fields reach the events; the password never appears anywhere in the output; the oversize and chunked ones
are counted drops, not crashes, and their events are still reported.
"""
from __future__ import annotations


import orjson
import pytest


from pcaps import T0, Conv, req, resp, write  # noqa: E402

from capture.decoder import Decoder  # noqa: E402
from capture.pcapfile import read_pcap_batches  # noqa: E402
from config.settings import Settings  # noqa: E402

SECRET = "hunter2-very-secret"
RULES = [{"path": "/cart/add", "fields": ["product_id", "qty", "password"]},
         {"path": "/api/cart", "fields": ["product_id", "qty"]}]


def post(path: str, body: bytes, ctype: str, split: bool = False) -> tuple[bytes, list[int] | None]:
    data = req(path, method="POST", headers={"Content-Type": ctype}, body=body)
    return data, ([len(data) - len(body) // 2] if split else None)


def shop_pcap(tmp_path) -> str:
    form = "application/x-www-form-urlencoded"
    requests = [
        post("/cart/add", b"product_id=p-17&qty=2&note=gift", form),
        post("/cart/add", b"qty=1&product_id=p-3&password=" + SECRET.encode(), form, split=True),
        post("/api/cart", orjson.dumps({"product_id": "p-9", "qty": 3, "card": "4111111111111111"}),
             "application/json"),
        post("/api/cart", orjson.dumps({"product_id": "p-big", "pad": "x" * 5000}), "application/json"),
        post("/login", b"user=ann&password=" + SECRET.encode(), form),  # no rule: never read
        post("/cart/add", b"{not json", "application/json"),
    ]
    chunked = (b"POST /cart/add HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
               b"d\r\nproduct_id=p5\r\n0\r\n\r\n")
    # the request line itself split across two segments
    split_line = req("/cart/add", method="POST", headers={"Content-Type": form}, body=b"product_id=p-8&qty=4")
    requests.append((split_line, [7]))
    pkts = []
    for c, (data, sizes) in enumerate(requests + [(chunked, None)]):
        conv = Conv(client=(f"10.0.3.{c + 1}", 44000 + c), t=T0 + c).handshake()
        conv.request(data, sizes=sizes)
        conv.tick(0.002).response(resp(303, b"", headers={"Location": "/cart"}))
        pkts += conv.close().pkts
    pkts.sort(key=lambda p: p[0])
    return write(tmp_path / "bodies.pcap", pkts)


def run(path: str, fast: bool, **capture) -> tuple[bytes, Decoder]:
    d = Decoder(Settings(capture={"salt": "s", "request_bodies": RULES, **capture}), fast_path=fast)
    out = b""
    for b in read_pcap_batches(path, batch_size=8):
        out += d.feed_lines(b).data
    for e in d.close():
        out += orjson.dumps(e) + b"\n"
    return out, d


@pytest.mark.parametrize("fast", [True, False])
def test_cart_items_from_form_and_json_bodies_and_nothing_else(tmp_path, fast):
    out, d = run(shop_pcap(tmp_path), fast)
    events = {e["client_ip"]: e for e in map(orjson.loads, out.splitlines())}
    assert len(events) == 8  # every request is reported, read or not
    body = {ip: {k: v for k, v in e["extra"].items() if k.startswith("body:")} for ip, e in events.items()}
    assert body["10.0.3.1"] == {"body:product_id": "p-17", "body:qty": "2"}  # `note` was not named
    assert body["10.0.3.2"] == {"body:product_id": "p-3", "body:qty": "1"}  # body in two segments
    assert body["10.0.3.3"] == {"body:product_id": "p-9", "body:qty": "3"}  # JSON; `card` not named
    assert body["10.0.3.4"] == {}  # 5 KB: beyond max_body_bytes
    assert body["10.0.3.5"] == {}  # /login has no rule
    assert body["10.0.3.6"] == {}  # not JSON
    assert body["10.0.3.7"] == {"body:product_id": "p-8", "body:qty": "4"}  # "POST /c" | "art/add ..."
    assert body["10.0.3.8"] == {}  # chunked
    # oversize, chunked and unreadable: counted drops
    assert d.stats["bodies_dropped"] == 3
    # a password named by mistake in the rule, and any body without a rule, never leave the agent
    assert SECRET.encode() not in out and b"4111111111111111" not in out and b"gift" not in out


def test_bodies_are_not_read_without_a_rule(tmp_path):
    path = shop_pcap(tmp_path)
    d = Decoder(Settings(capture={"salt": "s"}), fast_path=True)
    out = b"".join(d.feed_lines(b).data for b in read_pcap_batches(path, batch_size=8))
    out += b"".join(orjson.dumps(e) for e in d.close())
    assert b"body:" not in out and b"p-17" not in out and d.stats["bodies_dropped"] == 0


def test_a_larger_bound_reads_the_larger_body(tmp_path):
    out, d = run(shop_pcap(tmp_path), True, max_body_bytes=8192)
    events = {e["client_ip"]: e for e in map(orjson.loads, out.splitlines())}
    assert events["10.0.3.4"]["extra"]["body:product_id"] == "p-big"
    assert d.stats["bodies_dropped"] == 2
