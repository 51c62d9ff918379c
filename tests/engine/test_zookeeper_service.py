"""start_zookeeper: serving when it returns, stopped by SIGTERM (not the SIGKILL fallback), and gone with the
process that started it even when that one is killed with SIGKILL."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.services import start_zookeeper

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _srvr(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"srvr")
        return b"".join(iter(lambda: s.recv(4096), b""))


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_it_serves_and_stops_cleanly():
    zk = start_zookeeper()
    workdir = zk.workdir
    assert _srvr(zk.port).startswith(b"Zookeeper version: 3.")
    zk.stop()
    assert zk.proc.returncode == 128 + signal.SIGTERM or zk.proc.returncode == -signal.SIGTERM, zk.proc.returncode
    assert not os.path.exists(workdir)  # a dir it made itself goes with it
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", zk.port), timeout=1).close()


def test_it_dies_with_the_process_that_started_it():
    code = ("import sys; from engine.services import start_zookeeper; zk = start_zookeeper(); "
            "print(zk.proc.pid, flush=True); sys.stdin.read()")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    child = 0
    try:
        child = int(parent.stdout.readline())
        parent.kill()  # SIGKILL: no clean-up runs in it
        parent.wait(5)
        assert _gone(child, 10), f"zookeeper (pid {child}) outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child and not _gone(child, 0.1):
            os.killpg(child, signal.SIGKILL)  # it leads its own process group (start_new_session)
