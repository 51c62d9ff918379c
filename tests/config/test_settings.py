import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from config.events import TOPIC_FIELDS, json_schema
from config.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_env_overrides_file(tmp_path, monkeypatch):
    cfg = tmp_path / "vw.toml"
    cfg.write_text('[capture]\nports = [8000]\nsalt = "from-file"\n[web]\nport = 9001\n')
    monkeypatch.setenv("VISITWIRE_WEB__PORT", "9002")
    s = load_settings(str(cfg))
    assert s.capture.ports == [8000]
    assert s.capture.salt == "from-file"
    assert s.web.port == 9002
    monkeypatch.delenv("VISITWIRE_CONFIG")


def test_bad_values_name_the_key():
    with pytest.raises(SettingsError) as e:
        load_settings(capture={"ports": [70000]})
    assert "capture.ports" in str(e.value)
    with pytest.raises(SettingsError) as e:
        load_settings(history={"url": "mysql://x"})
    assert "history.url" in str(e.value) and "chdb://" in str(e.value)


def test_token_required_beyond_loopback():
    with pytest.raises(SettingsError, match="web.token"):
        load_settings(web={"host": "0.0.0.0"})
    assert load_settings(web={"host": "0.0.0.0", "token": "t"}).web.token == "t"


def test_missing_config_file_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(SettingsError, match="not found"):
        load_settings(str(tmp_path / "nope.toml"))
    monkeypatch.delenv("VISITWIRE_CONFIG")


def test_cli_reports_bad_config_without_traceback(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[capture]\nports = ['x']\n")
    r = subprocess.run([sys.executable, "-m", "engine.cli", "--config", str(cfg), "db", "init"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert "capture.ports" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("topic", sorted(TOPIC_FIELDS))
def test_committed_json_schemas_match_event_types(topic):
    committed = orjson.loads((ROOT / "config" / "schema" / f"{topic}.json").read_bytes())
    assert committed == json_schema(topic)
