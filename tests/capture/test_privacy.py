"""What never leaves the agent: secrets in parameters, a guessable salt, whole client addresses."""
from __future__ import annotations

import os

import orjson


from pcaps import Conv, req, resp, write  # noqa: E402
from test_odd_http import events_of  # noqa: E402

from capture.decoder import Decoder  # noqa: E402
from capture.install_salt import SALT_FILE  # noqa: E402
from capture.pcapfile import read_pcap_batches  # noqa: E402
from config.settings import Settings  # noqa: E402

SECRET_QUERY = ("access_token=AT1&keyword=shoes&api_key=AK2&apiKey=AK3&X-Amz-Signature=S4&PHPSESSID=P5"
                "&signup=1&author=ann&passenger=2&%74oken=T6&sig=S7&design=red&client_secret=CS8&page=3")
KEPT = "keyword=shoes&signup=1&author=ann&passenger=2&design=red&page=3"


def one(tmp_path, uri: str, headers: dict | None = None, **capture) -> dict:
    c = Conv().handshake()
    c.request(req(uri, headers=headers))
    c.tick(0.001).response(resp(200, b"."))
    events, _ = events_of(tmp_path, c, **capture)
    return events[0]


def test_sensitive_parameter_names_are_matched_by_pattern_in_uri_query_and_referrer(tmp_path):
    e = one(tmp_path, "/search?" + SECRET_QUERY, {"Referer": "https://idp.example/cb?code_verifier=1&id_token=IT9&lang=en#x"})
    assert e["query"] == KEPT and e["uri"] == "/search?" + KEPT
    assert e["referrer"] == "https://idp.example/cb?lang=en#x"
    for secret in ("AT1", "AK2", "AK3", "S4", "P5", "T6", "S7", "CS8", "IT9"):
        assert secret not in str(e)


def test_allowed_and_extra_names_override_the_patterns(tmp_path):
    e = one(tmp_path, "/p?sid=42&api_key=k&promo=SUMMER&x=1", allowed_params=["SID"], sensitive_params=["promo"])
    assert e["query"] == "sid=42&x=1"


def test_each_install_has_its_own_random_salt_kept_0600_and_rotated_when_asked(tmp_path):
    def visitor(data_dir, **capture):
        c = Conv().handshake()
        c.request(req("/", headers={"Cookie": "_vw_id=same-cookie"}))
        c.tick(0.001).response(resp(200, b"."))
        path = write(tmp_path / "v.pcap", c.pkts)
        d = Decoder(Settings(capture=capture), state_dir=str(data_dir))
        events = [e for b in read_pcap_batches(path) for e in d.feed(b)] + d.close()
        return events[0]["visitor_id"], d

    a1, _ = visitor(tmp_path / "a")
    a2, _ = visitor(tmp_path / "a")
    b1, _ = visitor(tmp_path / "b")
    assert a1 == a2 and a1 != b1  # stable within an install, different across installs
    salt_file = tmp_path / "a" / SALT_FILE
    assert os.stat(salt_file).st_mode & 0o777 == 0o600
    assert len(orjson.loads(salt_file.read_bytes())["salt"]) == 64
    fixed, _ = visitor(tmp_path / "c", salt="configured")
    assert fixed == visitor(tmp_path / "d", salt="configured")[0] and not (tmp_path / "c" / SALT_FILE).exists()
    # rotation: a salt older than salt_rotation_days is replaced at start, and by expire() while running
    st = orjson.loads(salt_file.read_bytes())
    salt_file.write_bytes(orjson.dumps({**st, "created": st["created"] - 8 * 86400}))
    rotated, d = visitor(tmp_path / "a", salt_rotation_days=7)
    assert rotated != a1 and visitor(tmp_path / "a", salt_rotation_days=7)[0] == rotated
    st = orjson.loads(salt_file.read_bytes())
    salt_file.write_bytes(orjson.dumps({**st, "created": st["created"] - 8 * 86400}))
    d.salt_made -= 8 * 86400
    old_key = d.builder.identity.key
    d.expire(0.0)
    assert d.builder.identity.key != old_key and d.writer is not None


def test_client_addresses_anonymised_on_request_visitors_still_apart(tmp_path):
    def run(how):
        c = Conv(client=("198.51.100.77", 40000)).handshake()
        c.request(req("/"))
        c.tick(0.001).response(resp(200, b"."))
        c2 = Conv(client=("2001:db8:1:2::99", 40001), server=("2001:db8:ffff::2", 80), v6=True, t=c.t).handshake()
        c2.request(req("/"))
        c2.tick(0.001).response(resp(200, b"."))
        c3 = Conv(client=("198.51.100.78", 40002), t=c2.t).handshake()
        c3.request(req("/"))
        c3.tick(0.001).response(resp(200, b"."))
        c.pkts += c2.pkts + c3.pkts
        events, _ = events_of(tmp_path, c, client_ip_anonymization=how, salt="s")
        return [e["client_ip"] for e in events], [e["visitor_id"] for e in events]

    plain_ips, plain_ids = run("off")
    assert plain_ips == ["198.51.100.77", "2001:db8:1:2::99", "198.51.100.78"]
    ips, ids = run("truncate")
    assert ips == ["198.51.100.0", "2001:db8:1::", "198.51.100.0"] and ids == plain_ids
    ips, ids = run("hash")
    assert len(set(ips)) == 3 and all(len(ip) == 32 and "." not in ip for ip in ips) and ids == plain_ids


def test_an_unwritable_data_dir_costs_a_warning_not_the_capture(tmp_path, caplog):
    ro = tmp_path / "ro"
    ro.write_text("a file where the data directory should be")
    d = Decoder(Settings(), state_dir=str(ro))
    assert d.builder.identity.key and "cannot keep the salt in" in caplog.text
