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


def test_environment_sections_keys_and_lists(monkeypatch):
    # a section given whole as JSON, a key inside it on top, any case, lists as JSON; CLI values win over both
    monkeypatch.setenv("VISITWIRE_CAPTURE", '{"ports": [81], "iface": "eth1", "salt": "from-env"}')
    monkeypatch.setenv("visitwire_capture__iface", "eth9")
    monkeypatch.setenv("VISITWIRE_CAPTURE__VISITOR_COOKIES", '["sid"]')
    s = load_settings(capture={"ports": [82]})
    assert (s.capture.iface, s.capture.ports, s.capture.salt, s.capture.visitor_cookies) == \
        ("eth9", [82], "from-env", ["sid"])
    monkeypatch.setenv("VISITWIRE_CAPTURE__PORTZ", "1")
    with pytest.raises(SettingsError, match="capture.portz: unknown key"):
        load_settings()


def test_a_list_not_written_as_json_says_how(monkeypatch):
    monkeypatch.setenv("VISITWIRE_CAPTURE__PORTS", "80,8080")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "VISITWIRE_CAPTURE__PORTS" in str(e.value) and "'[80, 8080]'" in str(e.value)


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


@pytest.mark.parametrize("overrides, named, fix", [
    ({"processing": {"url_rulez": []}}, "processing.url_rulez: unknown key", "url_rules"),
    ({"processing": {"url_rules": [{"pattern": "/p/{id}", "group": "p", "grup": "x"}]}},
     "processing.url_rules.0.grup: unknown key", "group"),
    ({"capture": {"salt": "s", "portz": [80]}}, "capture.portz: unknown key", "ports"),
    ({"analytics": {"purchase_goal": "buy"}}, "analytics.purchase_goal: 'buy' names no goal", "name = 'buy'"),
    ({"analytics": {"cart_goal": "basket"}}, "analytics.cart_goal: 'basket' names no goal", "add_to_cart"),
    ({"processing": {"goals": [{"name": "purchase", "pattern": "/buy", "method": "FETCH"},
                               {"name": "add_to_cart", "pattern": "/cart/add"}]}},
     "processing.goals.0.method: method 'FETCH'", "GET, HEAD, POST"),
    ({"processing": {"goals": [{"name": "purchase", "pattern": "/goods/order.do?step=done"},
                               {"name": "add_to_cart", "pattern": "/cart/add"}]}},
     "processing.goals.0.pattern: pattern '/goods/order.do?step=done' has '?'", "matches the path only"),
    ({"processing": {"url_rules": [{"pattern": "product/{id}", "group": "p"}]}},
     "processing.url_rules.0.pattern", "must start with '/'"),
    ({"analytics": {"funnels": {"buy": ["/product/{id", "/cart"]}}}, "analytics.funnels: funnel 'buy'", "{name}"),
    ({"analytics": {"funnels": {"buy": []}}}, "analytics.funnels: funnel 'buy' has no steps", "list URL patterns"),
])
def test_each_config_mistake_is_named_with_its_fix(overrides, named, fix):
    with pytest.raises(SettingsError) as e:
        load_settings(**overrides)
    assert named in str(e.value) and fix in str(e.value)


def test_goal_methods_are_checked_not_guessed():
    s = load_settings(processing={"goals": [{"name": "purchase", "pattern": "/order/complete", "method": "post"},
                                            {"name": "add_to_cart", "pattern": "/cart/add"}]})
    assert [g.method for g in s.processing.goals] == ["POST", ""]


@pytest.mark.parametrize("setup, expected", [
    (lambda tmp, env: env.update(VISITWIRE_CONFIG=str(tmp)), "is a directory"),
    (lambda tmp, env: env.update(VISITWIRE_PROCESSING="{not json"), "VISITWIRE_PROCESSING"),
    (lambda tmp, env: [(tmp / "c.toml").write_text("[processing]\nurl_rulez = []\n"),
                       env.update(VISITWIRE_CONFIG=str(tmp / "c.toml"))], "processing.url_rulez: unknown key"),
])
def test_cli_config_errors_are_one_clear_message(tmp_path, setup, expected):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("VISITWIRE_")}
    env["VISITWIRE_HISTORY__URL"] = f"chdb://{tmp_path}/chdb"  # should the check miss, no default store is touched
    setup(tmp_path, env)
    r = subprocess.run([sys.executable, "-m", "engine.cli", "db", "init"], capture_output=True, text=True,
                       cwd=ROOT, env=env)
    assert r.returncode == 2
    assert expected in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 4
