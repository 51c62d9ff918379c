"""Secrets never reach a log line or a printed URL; listeners beyond loopback need the token."""
from __future__ import annotations

import logging

import pytest

from config.redact import redact_text, redact_url
from config.settings import SettingsError, load_settings


def test_passwords_are_masked_in_urls_and_texts():
    assert redact_url("clickhouse://vw:s3cr3t@ch:9440/visitwire?secure=True") == \
        "clickhouse://vw:***@ch:9440/visitwire?secure=True"
    assert redact_url("rediss://:pw@redis:6380/0") == "rediss://:***@redis:6380/0"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"
    assert redact_url("chdb:///var/lib/visitwire/chdb") == "chdb:///var/lib/visitwire/chdb"
    assert redact_url("clickhouse://ch:9000/db?password=s3cr3t") == "clickhouse://ch:9000/db?password=***"
    text = redact_text("Error 111 connecting to redis://:hunter2@10.0.0.5:6379/0; sasl_password=hunter2 x")
    assert "hunter2" not in text and "10.0.0.5:6379" in text


def test_log_lines_carry_no_url_password(capsys):
    from config.logs import configure_logging

    configure_logging("INFO", "json")
    logging.getLogger("visitwire.test").warning("connecting to %s", "redis://:hunter2@h:6379/0")
    err = capsys.readouterr().err
    assert "hunter2" not in err and '"message": "connecting to redis://:***@h:6379/0"' in err
    configure_logging("WARNING", "text")


def test_metrics_listener_beyond_loopback_needs_the_token():
    with pytest.raises(SettingsError, match="web.token is required when metrics.host"):
        load_settings(metrics={"host": "0.0.0.0", "port": 9187})
    assert load_settings(metrics={"host": "0.0.0.0", "port": 0}).metrics.port == 0  # no listener: no token
    assert load_settings(metrics={"host": "0.0.0.0", "port": 9187}, web={"token": "t"}).metrics.port == 9187


def test_helper_processes_log_in_the_commands_format_and_masked():
    """The hits reader, history writer and capture child inherit the command's format, masking included."""
    import json
    import subprocess
    import sys

    helper = ("import logging; from config.logs import configure_helper_logging; "
              "configure_helper_logging('hits-reader'); "
              "logging.getLogger('x').info('not shown: below the helper floor'); "
              "logging.getLogger('x').warning('connecting to %s', 'redis://:hunter2@h:6379/0')")
    command = ("import subprocess, sys; from config.logs import configure_logging; "
               "configure_logging('INFO', 'json'); "
               f"sys.exit(subprocess.run([sys.executable, '-c', {helper!r}]).returncode)")
    r = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    assert [(x["level"], x["process"], x["message"]) for x in lines] == \
        [("WARNING", "hits-reader", "connecting to redis://:***@h:6379/0")]
