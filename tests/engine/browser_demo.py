"""`visitwire demo` as a user runs it, for the browser tests: start it, wait for its engine.json, stop it
with a user's Ctrl-C (SIGINT) afterwards; the Chromium those tests drive, and what they check on the page."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from engine.services import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The live figures whose text the card cuts off (wider than their box, or past the card's edge): page.evaluate
CLIPPED_KPIS_JS = """() => [...document.querySelectorAll('.kpi .mid, .kpi .big, .kpi .label, .kpi .sub')]
    .filter(e => {
      const card = e.closest('.card').getBoundingClientRect(), r = e.getBoundingClientRect();
      return e.scrollWidth > e.clientWidth + 1 || r.right > card.right + 1 || r.bottom > card.bottom + 1;
    }).map(e => e.id || e.className + ': ' + e.textContent)"""


@contextlib.contextmanager
def running_demo(data_dir: Path, env: dict[str, str], args: list[str]) -> Iterator[dict]:
    """Runs `visitwire demo ARGS --web-port <free>` with VISITWIRE_DATA_DIR=data_dir and `env`; yields its
    engine.json (web_url, token); fails the test when it is not published within 90 s."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see scripts/bootstrap.sh)")
    env = {**os.environ, "VISITWIRE_DATA_DIR": str(data_dir), "VISITWIRE_LOG_LEVEL": "WARNING",
           "VISITWIRE_KAFKA__SESSION_TIMEOUT_S": "6", **env}
    log = open(data_dir / "demo.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "demo", *args, "--web-port", str(free_port())],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state, info = data_dir / "engine.json", None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None and info is None:
        if state.exists():
            try:
                info = json.loads(state.read_text())
            except ValueError:
                pass  # being written
        time.sleep(0.3)
    try:
        if info is None:
            pytest.fail("visitwire demo did not publish engine.json within 90 s:\n"
                        + (data_dir / "demo.log").read_text(errors="replace")[-3000:])
        yield info
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # a user's Ctrl-C: clean shutdown
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
