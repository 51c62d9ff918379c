"""`visitwire capture --iface` and the capture child of `visitwire run --iface` started as root with
capture.run_as: capture opens its socket, then runs as that user with no capability left, and still captures
every request. Needs root; skipped otherwise."""
from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from engine.proctree import descendants
from test_run_pcap import _env, live_run, sigterm_run, summary_rows

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root / CAP_NET_RAW")
REPO = Path(__file__).resolve().parents[2]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b"<html>ok</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].split()[0]
    return ""


def test_live_capture_drops_to_the_configured_user_and_keeps_capturing(tmp_path):
    nobody = pwd.getpwnam("nobody")
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, nobody.pw_uid, nobody.pw_gid)  # the state file is written as that user
    tmp_path.chmod(0o755)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")},
           "VISITWIRE_DATA_DIR": str(data), "VISITWIRE_CAPTURE__RUN_AS": "nobody", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "capture", "--iface", "lo", "--ports", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _status_field(proc.pid, "Uid") != str(nobody.pw_uid):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "capture did not switch to nobody"
            time.sleep(0.2)
        assert _status_field(proc.pid, "CapEff") == "0000000000000000"
        assert _status_field(proc.pid, "CapPrm") == "0000000000000000"
        time.sleep(1.0)  # the capture loop is running once the drop is done and the kernels loaded
        for i in range(5):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/page/{i}", timeout=5).read()
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        server.shutdown()
    events = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    assert sorted(e["path"] for e in events) == [f"/page/{i}" for i in range(5)], err.decode()[-3000:]
    assert "running as nobody" in err.decode()
    assert "Traceback" not in err.decode()


def test_an_unknown_user_is_one_line(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")},
           "VISITWIRE_DATA_DIR": str(tmp_path), "VISITWIRE_CAPTURE__RUN_AS": "no-such-user-vw"}
    r = subprocess.run([sys.executable, "-m", "engine.cli", "capture", "--iface", "lo", "--ports", "9"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 2
    assert "capture.run_as: no user 'no-such-user-vw'" in r.stderr and "Traceback" not in r.stderr


def _capture_child(run_pid: int) -> int | None:
    """The pid of the run's capture child (a multiprocessing spawn), once it is there."""
    for pid in descendants(run_pid):
        try:
            if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    return None


def test_the_capture_child_of_visitwire_run_drops_to_the_configured_user(broker, redis_server, tmp_path):
    from engine.crowd import Crowd
    from engine.demo_shop import DemoShop

    nobody = pwd.getpwnam("nobody")
    history_url = f"chdb://{tmp_path / 'chdb'}"
    servers, as_nobody = ("--kafka", broker.url, "--redis", redis_server.url), {"VISITWIRE_CAPTURE__RUN_AS": "nobody"}
    with DemoShop() as shop, live_run(tmp_path, shop.port, history_url, *servers, env_extra=as_nobody) as run:
        proc, _, err = run
        child = _capture_child(proc.pid)
        assert child is not None
        deadline = time.monotonic() + 30
        while _status_field(child, "Uid") != str(nobody.pw_uid):  # set right after the socket opened
            assert time.monotonic() < deadline, "the capture child did not switch to nobody"
            time.sleep(0.2)
        assert _status_field(child, "Uid").split() == [str(nobody.pw_uid)]
        assert _status_field(child, "CapEff") == _status_field(child, "CapPrm") == "0000000000000000"
        assert _status_field(proc.pid, "Uid") == "0"  # the engine itself (chdb, web) is not the child
        crowd = Crowd(shop.url, seed=9, visitors=6, round_s=2, repeat=False, think_scale=0.02).start()
        assert crowd.wait(120)
        served = sum(n for k, n in shop.counters.items() if k.startswith("status_"))
        out = sigterm_run(proc)
    log = err.read_text(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    assert "running as nobody" in log and "Traceback" not in log
    assert summary_rows(out)["hits"] == f"{served:,}", out  # dropping root lost no request
    assert served > 20


def test_run_with_an_unknown_user_says_so_before_any_server_starts(tmp_path):
    env = {**_env(tmp_path), "VISITWIRE_CAPTURE__RUN_AS": "no-such-user-vw"}
    r = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--iface", "lo", "--ports", "9"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 2, r.stderr
    assert "capture.run_as: no user 'no-such-user-vw'" in r.stderr and "Traceback" not in r.stderr
    assert "tansu" not in r.stderr and "redis" not in r.stderr  # nothing was started
