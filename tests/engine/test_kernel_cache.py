"""The numba kernel cache: set-up compiles every kernel a run uses; a start says when it must compile."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture.aot import built_for_another
from engine.kernel_cache import MANIFEST, ROOT, stale

sys.path.insert(0, str(ROOT / "tests" / "capture"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gen_pcap import ensure_pcap  # noqa: E402
from pcaps import Conv, req, resp, write  # noqa: E402

VISITWIRE = str(Path(sys.executable).with_name("visitwire"))


@pytest.mark.skipif(bool(built_for_another()), reason=f"capture's ahead-of-time build: {built_for_another()}; "
                    "run visitwire compile (set-up does)")
def test_after_set_up_a_capture_of_pcap_and_pcapng_needs_no_numba(tmp_path):
    # the conftest ran the set-up compile (or found it done): capture's kernels come from the ahead-of-time
    # build, so a start neither compiles a kernel nor even imports numba (half of a short run's CPU)
    assert stale() is None and built_for_another() == ""
    c = Conv().handshake()
    c.request(req("/a"))
    c.tick().response(resp(200, b"x" * 3000), sizes=[1000, 1000])
    c.close()
    pcapng = write(tmp_path / "a.pcapng", c.pkts, fmt="pcapng")
    mixed = str(ensure_pcap(300, seed=5, quiet=True))  # keep-alive, pipelined, split heads, chunked, ...
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")}
    for path, transactions in ((pcapng, 1), (mixed, 300)):
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine.cli", "capture", "--pcap", path,
                            "--format", "jsonl"], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.splitlines()) == transactions
        imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time")}
        assert "capture.fastpath" in imported and "numba" not in imported
        assert "cannot be used" not in r.stderr and "not compiled" not in r.stderr


def test_a_stale_cache_is_said_with_its_cause_and_the_expected_wait(tmp_path, edited_json):
    assert stale(manifest_path=tmp_path / "none.json", aot=False).line().startswith(
        "numba kernels of capture and processors are not compiled for this machine (no kernel cache yet): "
        "compiling them now, about ")

    def edited(m):
        k = next(k for k in m["rooms"]["capture"]["kernels"] if k["source"].endswith("fastpath.py"))
        k["stamp"][0] -= 60  # compiled from the file as it was a minute ago
        m["rooms"]["capture"]["compile_s"] = 71.4
    s = stale(manifest_path=edited_json(MANIFEST, edited), aot=False)
    assert s.rooms == ("capture",)
    assert s.reason == "capture/fastpath.py changed since they were compiled"
    assert round(s.expected_s) == 71  # the compile time measured at set-up on this machine

    def other_cpu(m):
        m["machine"]["cpu"] = "pentium4"
    assert "compiled for CPU pentium4" in stale(("processors",), manifest_path=edited_json(MANIFEST, other_cpu)).reason

    def other_numba(m):
        m["machine"]["numba"] = "0.1.0"
    assert "numba changed from 0.1.0" in stale(manifest_path=edited_json(MANIFEST, other_numba), aot=False).reason


def test_set_up_leaves_every_kernel_of_capture_and_processors_in_the_cache():
    # a kernel the warm-up misses compiles in the middle of a real run (the expiry and the Python path's
    # head scan once did: the first idle flow or odd packet stalled live capture for seconds)
    import importlib
    import pkgutil

    import capture
    import processors
    from engine.kernel_cache import _dispatchers

    for pkg in (capture, processors):
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(m.name)
    missing = [f"{d.py_func.__module__}.{d.py_func.__qualname__}" for room in ("capture", "processors")
               for d in _dispatchers(room)
               if d.targetoptions.get("inline") != "always" and not os.path.exists(d._cache._cache_file._index_path)]
    assert missing == []
