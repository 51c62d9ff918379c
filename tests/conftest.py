"""Shared fixtures: real servers started on free loopback ports, once per test session."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.services import start_clickhouse, start_redis, start_tansu
from sinks.testing import fresh_history

OUTPUT_DIR = Path(__file__).resolve().parent.parent / "test-output"


@pytest.fixture(scope="session")
def tansu():
    svc = start_tansu()
    yield svc
    svc.stop()


@pytest.fixture
def broker():
    """A broker of this test's own: topic names are fixed, so a shared one would mix in other tests' hits."""
    svc = start_tansu()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def redis_server():
    svc = start_redis()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def clickhouse_server():
    svc = start_clickhouse()
    yield svc
    svc.stop()


@pytest.fixture(scope="module", params=["chdb", "clickhouse"])
def history_place(request, tmp_path_factory) -> str:
    """Where a module's history stores go (sinks.testing.fresh_history), once per backend: a new directory for
    chdb, or the session's ClickHouse server."""
    if request.param == "chdb":
        return str(tmp_path_factory.mktemp("chdb"))
    return request.getfixturevalue("clickhouse_server").url


@pytest.fixture
def chdb_history(tmp_path):
    """A migrated, empty chdb history store of this test's own (sinks.testing.fresh_history), closed after it."""
    with fresh_history(str(tmp_path)) as store:
        yield store


@pytest.fixture
def clickhouse_history(clickhouse_server):
    """A migrated, empty history store of this test's own on the session's ClickHouse server (a new database)."""
    with fresh_history(clickhouse_server.url, "vw") as store:
        yield store


@pytest.fixture
def output_dir(request) -> Path:
    """Where a test leaves files for a person to look at (screenshots, reports)."""
    d = OUTPUT_DIR / request.node.name
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def edited_json(tmp_path):
    """edited_json(source, change): a copy of the JSON file `source` in tmp_path with `change(doc)` applied, e.g.
    a build or cache record as if made from other sources, another CPU or another library version."""
    def copy(source: Path, change) -> Path:
        doc = json.loads(source.read_text())
        change(doc)
        path = tmp_path / source.name
        path.write_text(json.dumps(doc))
        return path
    return copy


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch):
    # Tests never pick up a developer's VISITWIRE_* environment by accident.
    for k in list(os.environ):
        if k.startswith("VISITWIRE_"):
            monkeypatch.delenv(k)


@pytest.fixture(scope="session", autouse=True)
def _kernels_compiled():
    """scripts/test compiles every numba kernel at set-up (`visitwire compile`); a pytest run without it
    does the same here once, so tests that start `visitwire` as a subprocess never wait for a compile.
    capture's ahead-of-time build is set-up's alone (minutes): after an edit under capture/ numba's cache
    stands in, as it does for a user, and the tests that need the build say to run `visitwire compile`."""
    from engine.kernel_cache import compile_all, stale

    if stale(aot=False) is not None:
        compile_all(say=lambda text: None)
