"""Credentials from files (container secrets) reach the servers and never the output; ClickHouse TLS
options in the history URL reach the client."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from config.settings import SettingsError, load_settings
from engine.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr@t/pw-" + uuid.uuid4().hex[:6]


@pytest.fixture
def redis_with_password(tmp_path):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--requirepass", SECRET], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port(port, proc, 10, "redis")
    yield port
    proc.terminate()
    proc.wait(10)


def test_redis_password_from_a_file_logs_in_and_is_never_printed(redis_with_password, tmp_path):
    secret = tmp_path / "redis_password"
    secret.write_text(SECRET + "\n")
    url = f"redis://127.0.0.1:{redis_with_password}/0"
    s = load_settings(redis={"url": url, "password_file": str(secret)})
    assert redis.Redis.from_url(s.redis.url).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url).ping()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")},
           "VISITWIRE_DATA_DIR": str(tmp_path / "data"), "VISITWIRE_REDIS__URL": url,
           "VISITWIRE_REDIS__PASSWORD_FILE": str(secret)}
    ok = subprocess.run([sys.executable, "-m", "engine.cli", "status"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=60)
    redis_line = next(ln for ln in ok.stdout.splitlines() if ln.startswith("redis"))
    assert " ok " in redis_line, ok.stdout
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it")
    bad = subprocess.run([sys.executable, "-m", "engine.cli", "status"], cwd=REPO, capture_output=True, text=True,
                         env={**env, "VISITWIRE_REDIS__PASSWORD_FILE": str(wrong)}, timeout=60)
    assert bad.returncode == 1 and "UNHEALTHY" in next(ln for ln in bad.stdout.splitlines() if ln.startswith("redis"))
    for out in (ok.stdout + ok.stderr, bad.stdout + bad.stderr):
        assert SECRET not in out and "not-it" not in out


def test_a_missing_secret_file_is_named():
    with pytest.raises(SettingsError, match="redis.password_file: cannot read /nonexistent/pw"):
        load_settings(redis={"url": "redis://h:6379/0", "password_file": "/nonexistent/pw"})
    with pytest.raises(SettingsError, match="history.password_file needs a history.url of a server"):
        load_settings(history={"password_file": __file__})


def test_web_token_from_a_file(tmp_path):
    f = tmp_path / "token"
    f.write_text("tok-from-file\n")
    assert load_settings(web={"token_file": str(f), "host": "0.0.0.0"}).web.token == "tok-from-file"


@pytest.mark.integration
def test_clickhouse_tls_options_reach_the_client(clickhouse_server):
    from sinks.base import HistoryError, SinkUnavailable
    from sinks.history import open_history

    url = clickhouse_server.url.rsplit("/", 1)[0] + f"/tls_{uuid.uuid4().hex[:6]}"
    plain = open_history(url)
    try:
        assert plain.query("SELECT 1 AS n")[0]["n"] == 1
    finally:
        plain.close()
    secure = open_history(url + "?secure=true&verify=false")  # the test server speaks plain TCP only
    try:
        with pytest.raises(SinkUnavailable):
            secure.query("SELECT 1 AS n")
    finally:
        secure.close()
    with pytest.raises(HistoryError, match="unknown option 'sslmode'"):
        open_history(url + "?sslmode=require")
