"""Fault injection on `visitwire run` as a user runs it: a server that dies, a broker that loses its data,
a disk that fills. Each run either ends with every accepted hit in the history, or stops within seconds
and says exactly how many were lost (hits published = hits written + hits reported lost), non-zero."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from engine.services import start_tansu
from test_run_pcap import REPO, _children, _env, _query, live_run, sigterm_run, summary_rows

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")]


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _wait_for(what, check, seconds: float, err: Path) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} within {seconds:.0f} s; log tail:\n" + \
            err.read_text(errors="replace")[-3000:]
        time.sleep(0.2)


def _history_hits(env: dict, url: str) -> int:
    return int(_query(env, url, "SELECT uniqExact(event_id) AS n FROM hits")[0]["n"])


def _ends_with_exact_loss(proc, err: Path, env: dict, history_url: str, seconds: float) -> tuple[dict, str]:
    """The run stops by itself, non-zero, and its summary accounts for every published hit: written to the
    history (exactly what the history holds) or reported lost."""
    out, _ = proc.communicate(timeout=seconds)
    log = err.read_text(errors="replace")
    assert proc.returncode not in (0, None), log[-3000:]
    assert "Traceback" not in log
    summary = summary_rows(out)
    published, written = _number(summary["hits"]), _number(summary["written to history"])
    lost = _number(summary.get("lost (not written)", "0"))  # 0 when the worker had read and written everything
    assert published == written + lost, out
    assert _history_hits(env, history_url) == written
    return summary, log


def test_embedded_redis_killed_is_started_again_and_the_run_says_so(tmp_path):
    from engine.crowd import Crowd
    from engine.demo_shop import DemoShop

    history_url = f"chdb://{tmp_path / 'chdb'}"
    with DemoShop() as shop, live_run(tmp_path, shop.port, history_url) as (proc, env, err):
        redis_pid = next(p for p, name in _children(proc.pid).items() if name.startswith("redis"))
        os.kill(redis_pid, signal.SIGKILL)
        _wait_for("the restart is said", lambda: "started again" in err.read_text(errors="replace"), 15, err)
        crowd = Crowd(shop.url, seed=6, visitors=8, round_s=3, repeat=False, think_scale=0.02).start()
        assert crowd.wait(120)
        served = sum(n for k, n in shop.counters.items() if k.startswith("status_"))
        state = orjson.loads((tmp_path / "data" / "engine.json").read_bytes())
        req = urllib.request.Request(state["web_url"] + "/api/live",
                                     headers={"Authorization": f"Bearer {state['token']}"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # live state answers again
            assert resp.status == 200
        out = sigterm_run(proc)
    log = err.read_text(errors="replace")
    assert proc.returncode == 1, log[-3000:]
    assert "redis-server exited with code" in log and "Live counters before the restart are lost" in log
    summary = summary_rows(out)
    assert summary["hits"] == summary["written to history"] == f"{served:,}", out
    assert _history_hits(env, history_url) == served > 20


@contextmanager
def _run_under_traffic(tmp_path: Path, history_url: str, seed: int, *extra: str, env_extra: dict | None = None):
    """A live run of the demo shop with a crowd that keeps coming, past its first 100 requests;
    yields (proc, env, err) and stops the crowd and the run however the test ends."""
    from engine.crowd import Crowd
    from engine.demo_shop import DemoShop

    with DemoShop() as shop, live_run(tmp_path, shop.port, history_url, *extra, env_extra=env_extra) as run:
        proc, env, err = run
        crowd = Crowd(shop.url, seed=seed, visitors=8, round_s=2, repeat=True, think_scale=0.02).start()
        try:
            _wait_for("traffic", lambda: shop.counters.get("status_200", 0) > 100, 60, err)
            time.sleep(2)
            yield proc, env, err
        finally:
            crowd.stop()


def test_embedded_broker_dying_stops_the_run_with_the_exact_loss(tmp_path):
    history_url = f"chdb://{tmp_path / 'chdb'}"
    # a long flush interval: hits read but not yet written when the broker dies
    with _run_under_traffic(tmp_path, history_url, 7, env_extra={"VISITWIRE_HISTORY__FLUSH_INTERVAL_S": "30"}) \
            as (proc, env, err):
        tansu_pid = next(p for p, name in _children(proc.pid).items() if name.startswith("tansu"))
        os.kill(tansu_pid, signal.SIGKILL)
        t0 = time.monotonic()
        _, log = _ends_with_exact_loss(proc, err, env, history_url, 120)
        assert time.monotonic() - t0 < 60  # fast, not a 5-minute drain
    assert "embedded Kafka broker (tansu) exited" in log and "cannot be recovered" in log
    # the Kafka clients' retries (710 lines before) are one line, then counted
    assert len(log.splitlines()) < 40, log[-3000:]
    assert re.search(r"Kafka clients reported [\d,]+ errors in this run; [\d,]+ of them were counted", log)


def test_external_broker_restarted_empty_stops_the_run_with_the_exact_loss(tmp_path, redis_server):
    broker = start_tansu()
    history_url = f"chdb://{tmp_path / 'chdb'}"
    try:
        with _run_under_traffic(tmp_path, history_url, 8, "--kafka", broker.url, "--redis", redis_server.url,
                                env_extra={"VISITWIRE_HISTORY__FLUSH_INTERVAL_S": "30"}) as (proc, env, err):
            port = broker.port
            broker.kill()
            broker = start_tansu(port=port)  # the same address, memory storage: every topic gone
            t0 = time.monotonic()
            _, log = _ends_with_exact_loss(proc, err, env, history_url, 120)
            assert time.monotonic() - t0 < 60
        assert re.search(r"went back from \d+ to \d+|is gone from the broker", log), log[-3000:]
        assert len(log.splitlines()) < 40, log[-3000:]
    finally:
        broker.stop()


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)])


def test_a_disk_filling_up_stops_writes_with_offsets_uncommitted_and_says_how_many(tmp_path, small_disk):
    history_url = f"chdb://{small_disk / 'chdb'}"
    with _run_under_traffic(tmp_path, history_url, 9, env_extra={"VISITWIRE_HISTORY__MIN_FREE_MB": "64"}) \
            as (proc, env, err):
        free = os.statvfs(small_disk)
        filler = (free.f_bavail * free.f_frsize) - (32 << 20)  # another program fills the disk
        with open(small_disk / "filler", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, filler)
        _, log = _ends_with_exact_loss(proc, err, env, history_url, 120)
    assert "disk full:" in log and "history.min_free_mb" in log and "uncommitted" in log


def test_too_little_disk_at_start_is_one_clear_line(tmp_path):
    env = _env(tmp_path, VISITWIRE_HISTORY__MIN_FREE_MB=str(1 << 40))
    res = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--iface", "lo", "--ports", "1",
                          "--clickhouse", f"chdb://{tmp_path / 'chdb'}"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "disk full:" in res.stderr and "history.min_free_mb" in res.stderr
    assert "Traceback" not in res.stderr
