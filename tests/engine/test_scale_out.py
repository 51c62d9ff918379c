"""Scale-out on tansu: two capture agents (two web servers behind a balancer: every visit's page views
alternate between them) feed one topic of 6 partitions; two `visitwire worker` processes in one group
split it, while a third worker in a group of its own reads the same topic alone (the single-worker
run). History totals, sessions (one per visit, across agents) and Redis live counters of the pair
equal the single worker's and the ground truth. Then more traffic comes and one of the pair is
killed with SIGKILL mid-stream: the other takes its partitions and history has every hit, page view
and session exactly once.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from engine.proctree import stop
from engine.services import free_port, start_tansu
from pcapgen import generate_pcap

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
START_TS = 1_772_445_600.0  # 2026-03-02 10:00 UTC
PARTITIONS = 6
TOKEN = "scale-out-token"


class Worker:
    def __init__(self, name: str, env: dict, tmp_path: Path):
        self.name, self.port, self.log = name, free_port(), tmp_path / f"{name}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--metrics-port", str(self.port)],
                                     env=env, cwd=REPO, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of this worker's /metrics (0 while it does not answer yet)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError):
            return 0.0
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and s.labels == labels:
                    return s.value
        return 0.0

    def partitions(self) -> list[int] | None:
        """The hits partitions this worker last said it reads."""
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if "reading hits partitions" in ln]
        if not lines:
            return None
        return [int(p) for p in re.findall(r"\d+", lines[-1].split("reading hits partitions", 1)[1])]

    def alive(self) -> None:
        assert self.proc.poll() is None, f"{self.name} exited:\n{self.log.read_text()[-3000:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)


def _wait(cond, timeout: float, what: str, workers: list[Worker]):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        for w in workers:
            w.alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}; logs: {[str(w.log) for w in workers]}"
        time.sleep(0.3)


def _capture(pcaps: list[Path], env: dict, tmp_path: Path) -> None:
    """One agent per pcap, at the same time (each with a data directory of its own: another machine)."""
    procs = [subprocess.Popen([sys.executable, "-m", "engine.cli", "capture", "--pcap", str(p), "--kafka",
                               env["VISITWIRE_KAFKA__BOOTSTRAP"]], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True,
                              env={**env, "VISITWIRE_DATA_DIR": str(tmp_path / f"agent-{p.stem}")})
             for p in pcaps]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]


def _history(url: str) -> dict:
    from sinks.history import open_history

    store = open_history(url)
    try:
        row = store.query("""SELECT
            (SELECT uniqExact(event_id) FROM hits) AS hits,
            (SELECT count() FROM hits FINAL) AS hit_rows,
            (SELECT uniqExact(event_id) FROM pageviews) AS pageviews,
            (SELECT uniqExact(session_id) FROM pageviews WHERE is_bot = 0) AS sessions,
            (SELECT uniqExact(visitor_id) FROM pageviews WHERE is_bot = 0) AS visitors,
            (SELECT count() FROM (SELECT visitor_id FROM pageviews WHERE is_bot = 0 GROUP BY visitor_id
                                  HAVING uniqExact(session_id) > 1)) AS visitors_in_two_sessions,
            (SELECT count() FROM (SELECT event_id FROM pageviews GROUP BY event_id
                                  HAVING uniqExact(session_id) > 1)) AS pageviews_in_two_sessions""")[0]
    except Exception:
        return {}  # schema not there yet
    finally:
        store.close()
    return {k: int(v) for k, v in row.items()}


def _redis_minutes(client: redis.Redis, prefix: str, minutes) -> dict:
    """{minute: (hits, pageviews)} and the sessions started, from the live counters."""
    out, sessions = {}, 0
    for m in minutes:
        h = client.hgetall(f"{prefix}m:{m // 60}")
        out[m] = (int(h.get(b"hits", 0)), int(h.get(b"pageviews", 0)))
        sessions += int(h.get(b"sessions", 0))
    return {"per_minute": out, "sessions": sessions}


def test_two_agents_two_workers_equal_one_worker_and_a_killed_worker_loses_nothing(redis_server, clickhouse_server,
                                                                                   tmp_path):
    # day 1: visits split across two web servers; later: more traffic, during which a worker dies
    a, b = tmp_path / "web1.pcap", tmp_path / "web2.pcap"
    t1 = generate_pcap(str(a), START_TS, visitors=150, seed=31, port=8080, two_session_share=0.0,
                       second_path=str(b))
    c1, c2 = tmp_path / "later1.pcap", tmp_path / "later2.pcap"
    t2 = generate_pcap(str(c1), START_TS + 7200, visitors=700, seed=32, port=8080, two_session_share=0.0,
                       second_path=str(c2))
    base = clickhouse_server.url.rsplit("/", 1)[0]
    run = uuid.uuid4().hex[:8]
    with start_tansu() as broker:
        common = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")}
        common.update({"VISITWIRE_KAFKA__BOOTSTRAP": broker.url, "VISITWIRE_KAFKA__PARTITIONS": str(PARTITIONS),
                       "VISITWIRE_REDIS__URL": redis_server.url, "VISITWIRE_WEB__TOKEN": TOKEN,
                       "VISITWIRE_CAPTURE__PORTS": "[8080]", "VISITWIRE_KAFKA__SESSION_TIMEOUT_S": "6",
                       "VISITWIRE_PROCESSING__BATCH_SIZE": "200", "VISITWIRE_HISTORY__FLUSH_INTERVAL_S": "0.2",
                       "VISITWIRE_LOG_LEVEL": "INFO", "VISITWIRE_DATA_DIR": str(tmp_path / "data"),
                       # agents of one site share the salt (each data directory would make its own)
                       "VISITWIRE_CAPTURE__SALT": "one-site-salt",
                       "PYTHONUNBUFFERED": "1"})
        pair = {**common, "VISITWIRE_KAFKA__APP_ID": f"vw-pair-{run}", "VISITWIRE_REDIS__KEY_PREFIX": f"pair{run}:",
                "VISITWIRE_HISTORY__URL": f"{base}/scale_pair_{run}"}
        alone = {**common, "VISITWIRE_KAFKA__APP_ID": f"vw-alone-{run}",
                 "VISITWIRE_REDIS__KEY_PREFIX": f"alone{run}:", "VISITWIRE_HISTORY__URL": f"{base}/scale_alone_{run}"}
        w1, w2 = Worker("w1", pair, tmp_path), Worker("w2", pair, tmp_path)
        w0 = Worker("w0", alone, tmp_path)
        workers = [w1, w2, w0]
        try:
            _wait(lambda: all(w.partitions() for w in (w1, w2)) and
                  sorted(w1.partitions() + w2.partitions()) == list(range(PARTITIONS)),
                  120, "the pair to split the partitions", workers)
            _wait(lambda: w0.partitions() == list(range(PARTITIONS)), 60, "the single worker's partitions", workers)
            assert w1.partitions() and w2.partitions()  # each of the pair has a share

            _capture([a, b], pair, tmp_path)
            for env in (pair, alone):
                _wait(lambda: _history(env["VISITWIRE_HISTORY__URL"]).get("pageviews") == t1.pageviews and
                      _history(env["VISITWIRE_HISTORY__URL"])["hits"] == t1.hits, 120, "day 1 in history", workers)
            _wait(lambda: w1.metric("visitwire_events_total", stage="hits_committed") +
                  w2.metric("visitwire_events_total", stage="hits_committed") == t1.hits, 30, "the pair's commits",
                  workers)
            # each hit was taken by exactly one of the pair, and both did work
            took = [w.metric("visitwire_events_total", stage="hits_in") for w in (w1, w2)]
            assert sum(took) == t1.hits and min(took) > 0, took
            pair_day1, alone_day1 = _history(pair["VISITWIRE_HISTORY__URL"]), _history(alone["VISITWIRE_HISTORY__URL"])
            assert pair_day1 == alone_day1
            assert pair_day1 == {"hits": t1.hits, "hit_rows": t1.hits, "pageviews": t1.pageviews,
                                 "sessions": t1.sessions, "visitors": t1.visitors, "visitors_in_two_sessions": 0,
                                 "pageviews_in_two_sessions": 0}
            client = redis.Redis.from_url(redis_server.url)
            minutes = sorted(t1.hits_per_minute)
            _wait(lambda: _redis_minutes(client, pair["VISITWIRE_REDIS__KEY_PREFIX"], minutes)["sessions"] ==
                  t1.sessions, 30, "the pair's live counters", workers)
            live_pair = _redis_minutes(client, pair["VISITWIRE_REDIS__KEY_PREFIX"], minutes)
            live_alone = _redis_minutes(client, alone["VISITWIRE_REDIS__KEY_PREFIX"], minutes)
            assert live_pair == live_alone
            assert live_pair["per_minute"] == {m: (t1.hits_per_minute[m], t1.pageviews_per_minute.get(m, 0))
                                               for m in minutes}

            # later traffic; w2 is killed while it works through its share
            w2_before = w2.metric("visitwire_events_total", stage="hits_in")
            _capture([c1, c2], pair, tmp_path)
            _wait(lambda: w2.metric("visitwire_events_total", stage="hits_in") > w2_before, 60,
                  "w2 to take later hits", workers)
            os.killpg(w2.proc.pid, signal.SIGKILL)
            w2.proc.wait(10)
            workers.remove(w2)
            total_hits, total_pvs = t1.hits + t2.hits, t1.pageviews + t2.pageviews
            _wait(lambda: w1.partitions() == list(range(PARTITIONS)), 60, "w1 to take w2's partitions", workers)
            for env in (pair, alone):
                _wait(lambda: _history(env["VISITWIRE_HISTORY__URL"]).get("hits") == total_hits and
                      _history(env["VISITWIRE_HISTORY__URL"])["pageviews"] == total_pvs, 120,
                      "later traffic in history",
                      workers)
            time.sleep(1.5)  # a hit written twice would show up now
            pair_all, alone_all = _history(pair["VISITWIRE_HISTORY__URL"]), _history(alone["VISITWIRE_HISTORY__URL"])
        finally:
            for w in workers:
                w.stop()
            if w2.proc.poll() is None:
                os.killpg(w2.proc.pid, signal.SIGKILL)
    expected = {"hits": total_hits, "hit_rows": total_hits, "pageviews": total_pvs,
                "sessions": t1.sessions + t2.sessions, "visitors": t1.visitors + t2.visitors,
                "visitors_in_two_sessions": 0, "pageviews_in_two_sessions": 0}
    assert pair_all == expected
    assert alone_all == expected
