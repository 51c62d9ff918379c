"""The site's own visitor cookie, learned from the traffic without configuration.

Eight browsers visit a site whose visitor cookie is `_vid` (not a configured name); two of
them share one address and User-Agent (a NAT). The server also sets a short session cookie
and a long-lived `lang=en` that every client sends back alike: neither is an id.
"""
from __future__ import annotations

import logging
import os

import orjson


from pcaps import T0, Conv, req, resp, write  # noqa: E402

from capture.cookie_learning import STATE_FILE  # noqa: E402
from capture.pcapfile import read_pcap_batches  # noqa: E402
from capture.decoder import Decoder  # noqa: E402
from config.settings import Settings  # noqa: E402

UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"
ROUNDS = 6


def site_pcap(tmp_path) -> str:
    pkts = []
    for c in range(8):
        ip = "10.0.1.1" if c < 2 else f"10.0.1.{c}"  # clients 0 and 1: one NAT address, same browser
        conv = Conv(client=(ip, 41000 + c), t=T0 + c * 0.01).handshake()
        vid = f"vid-{c:03d}-{'x' * 20}"
        for r in range(ROUNDS):
            conv.t = round(T0 + 1 + r * 10 + c * 0.01, 6)
            cookie = {} if r == 0 else {"Cookie": f"lang=en; _vid={vid}; sess=s{r}"}
            conv.request(req(f"/page/{r}", headers={"User-Agent": UA, **cookie}).replace(
                b"User-Agent: test-agent/1.0\r\n", b""))
            sets = {"Set-Cookie": f"sess=s{r + 1}; Path=/"}
            extra = b""
            if r == 0:
                extra = (f"Set-Cookie: _vid={vid}; Max-Age=63072000; Path=/\r\n"
                         "Set-Cookie: lang=en; Expires=Wed, 01 Jan 2031 00:00:00 GMT\r\n").encode()
            page = resp(200, b"page", headers=sets).replace(b"\r\n\r\n", b"\r\n" + extra + b"\r\n", 1)
            conv.tick(0.002).response(page)
        pkts += conv.close().pkts
    pkts.sort(key=lambda p: p[0])
    return write(tmp_path / "site.pcap", pkts)


def decode(path, state_dir, fast=True, **capture):
    d = Decoder(Settings(capture={"salt": "one-install", **capture}), fast_path=fast, state_dir=str(state_dir))
    events = []
    for b in read_pcap_batches(path, batch_size=24):
        events += d.feed(b)
    return events + d.close()


def by_client(events) -> dict[tuple, list[str]]:
    out = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        out.setdefault((e["client_ip"], e["client_port"]), []).append(e["visitor_id"])
    return out


def test_cookie_learned_once_ids_stable_and_kept_across_restarts(tmp_path, caplog):
    path = site_pcap(tmp_path)
    state = tmp_path / "data"
    with caplog.at_level(logging.INFO, logger="capture.decoder"):
        events = decode(path, state)
    learned = [r.getMessage() for r in caplog.records if "visitor cookie learned" in r.getMessage()]
    assert len(learned) == 1 and learned[0].startswith("visitor cookie learned: _vid (")
    assert len(events) == 8 * ROUNDS
    ids = by_client(events)
    nat = [ids.pop(("10.0.1.1", 41000)), ids.pop(("10.0.1.1", 41001))]
    # every other browser keeps one id through the moment of learning, and each has its own
    assert all(len(set(v)) == 1 for v in ids.values())
    assert len({v[0] for v in ids.values()}) == 6
    # the two browsers behind the NAT shared the IP+UA id until then; their cookies tell them apart after
    assert nat[0][0] == nat[1][0] and nat[0][-1] != nat[1][-1]
    assert len(set(nat[0][-2:])) == 1 and len(set(nat[1][-2:])) == 1
    st = orjson.loads((state / STATE_FILE).read_bytes())
    assert st["visitor_cookie"] == "_vid" and os.stat(state / STATE_FILE).st_mode & 0o777 == 0o600
    assert "vid-00" not in (state / STATE_FILE).read_text()  # ids only, never a raw cookie value

    # a restart reads the state: the same ids, from the first request on, with no learning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="capture.decoder"):
        again = decode(path, state)
    assert not [r for r in caplog.records if "visitor cookie learned" in r.getMessage()]
    later = by_client(again)
    for client, v in by_client(events).items():
        if client[0] == "10.0.1.1":  # the NAT pair: told apart from their first request on now
            assert len(set(later[client])) == 1 and later[client][-1] == v[-1]
        else:
            assert later[client] == v
    # and the Python-only path agrees with the fast path
    assert decode(path, tmp_path / "py", fast=False) == events


def test_configured_visitor_cookies_override_learning(tmp_path, caplog):
    path = site_pcap(tmp_path)
    with caplog.at_level(logging.INFO, logger="capture.decoder"):
        events = decode(path, tmp_path / "data", visitor_cookies=["_ga"])
    assert not [r for r in caplog.records if "visitor cookie" in r.getMessage()]
    assert not (tmp_path / "data" / STATE_FILE).exists()
    ids = by_client(events)
    assert ids[("10.0.1.1", 41000)] == ids[("10.0.1.1", 41001)]  # IP+UA ids, as configured


def test_learning_stops_when_the_site_already_uses_a_configured_cookie(monkeypatch, caplog):
    from capture import cookie_learning as cl

    monkeypatch.setattr(cl, "CONFIGURED_SAMPLE", 20)
    d = Decoder(Settings(), state_dir=None)
    lr = d.learner
    for i in range(25):
        lr.observe((f"10.0.0.{i}", b"ua"), b"_vw_id=v%d; theme=dark" % i, None, T0 + i)
    assert lr.pointless() == "the requests carry a configured visitor cookie"
    other = cl.CookieLearner([b"_vw_id"], [])
    for i in range(25):  # cookies, but mostly not a configured one: learning goes on
        other.observe((f"10.0.0.{i}", b"ua"), b"theme=dark" + (b"; _vw_id=x" if i % 4 == 0 else b""), None, T0)
    assert other.pointless() == ""
