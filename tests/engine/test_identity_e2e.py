"""Identity over time, end to end: a pcap of a device shared by two members in turn goes through
`visitwire run --pcap` (capture, tansu, worker, redis-server, ClickHouse 18.16), and each member's
orders, revenue, visits and page views read back are exactly their own."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from capture.identity import Identity
from capture.install_salt import install_salt
from config.settings import CaptureSettings
from engine.services import free_port
from pcapgen import generate_shared_device_pcap
from sinks.history import open_history
from sinks.reads import profiles, rfm
from sinks.reads.common import TimeRange
from sinks.reads.stats import compute_stats, parse_stats_request

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START_TS = 1_772_445_600.0  # 2026-03-02 10:00 UTC: the visits stay clear of midnight


def test_shared_device_credits_each_member_with_exactly_its_own_orders(tmp_path, broker, redis_server,
                                                                        clickhouse_server):
    truth = generate_shared_device_pcap(str(tmp_path / "shared.pcap"), START_TS)
    url = clickhouse_server.url.rsplit("/", 1)[0] + f"/ident_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")}
    env.update({"VISITWIRE_DATA_DIR": str(tmp_path / "data"),
                "VISITWIRE_REDIS__KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}:",
                "VISITWIRE_KAFKA__APP_ID": f"vw-id-{uuid.uuid4().hex[:8]}", "VISITWIRE_KAFKA__SESSION_TIMEOUT_S": "6",
                "VISITWIRE_WEB__PORT": str(free_port()), "VISITWIRE_CAPTURE__PORTS": "[8080]"})
    r = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--pcap", str(tmp_path / "shared.pcap"),
                        "--kafka", broker.url, "--redis", redis_server.url, "--clickhouse", url],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    salt, _ = install_salt(str(tmp_path / "data"))  # the install's own salt, which the run made
    idn = Identity(CaptureSettings(salt=salt))
    ids = {idn.member_id(name.encode()): name for name in truth["members"]}
    store = open_history(url)
    try:
        rng = TimeRange(None, truth["end_ts"] + 60)
        stats = {ids[m["member_id"]]: m for m in rfm.member_stats(store, rng)}
        assert set(stats) == set(truth["members"])
        for name, want in truth["members"].items():
            got = stats[name]
            assert (got["orders"], got["revenue"], got["visits"]) == \
                (want["orders"], want["revenue"], want["visits"]), name
            prof = profiles.member_profile(store, idn.member_id(name.encode()), rng)
            assert (prof["pageviews"], prof["purchases"], prof["revenue"]) == \
                (want["pageviews"], want["orders"], want["revenue"]), name
        assert sum(m["revenue"] for m in stats.values()) <= truth["revenue"]
        # members + anonymous = visitors: the shared device is one member visitor, not one of each
        req = parse_stats_request({"from": str(int(START_TS)), "to": str(int(truth["end_ts"]) + 60),
                                   "metrics": "visitors", "by": "member"})
        rows = {row["key"]: row["visitors"] for row in compute_stats(store.query, req)["rows"]}
        assert rows == {"member": truth["member_visitors"], "anonymous": truth["visitors"] - truth["member_visitors"]}
    finally:
        store.close()
