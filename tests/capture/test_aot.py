"""capture's kernels built ahead of time: used only when current, said when not, and only for the types built."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture.aot import META, built_for_another
from engine.kernel_cache import aot_line

ROOT = Path(__file__).resolve().parents[2]
# set-up (scripts/test) builds it; after an edit under capture/ only `visitwire compile` does (minutes)
pytestmark = pytest.mark.skipif(bool(built_for_another()), reason=f"capture's ahead-of-time build: "
                                f"{built_for_another()}; run visitwire compile")


def test_a_build_that_does_not_match_says_why(tmp_path, edited_json):
    assert built_for_another() == ""
    assert built_for_another(tmp_path / "none.json") == "not built yet"

    def edited(m):
        m["sources"]["fastpath.py"] = "0" * 16  # built from the file as it was before an edit
    assert built_for_another(edited_json(META, edited)) == "capture/fastpath.py changed since they were built"

    def new_file(m):
        del m["sources"]["http.py"]
    assert built_for_another(edited_json(META, new_file)) == "capture/http.py changed since they were built"

    def other_cpu(m):
        m["machine"].update(cpu="Pentium 4", cpu_flags="f" * 16)
    assert built_for_another(edited_json(META, other_cpu)).startswith("built for CPU Pentium 4, this one is ")

    def other_numpy(m):
        m["machine"]["numpy"] = "1.0.0"
    assert built_for_another(edited_json(META, other_numpy)).startswith("numpy changed from 1.0.0 to ")
    assert aot_line() is None  # current: nothing to say


def test_a_stale_build_is_said_in_one_line_and_numba_stands_in(tmp_path):
    # a capture/ source edited after set-up: the start says so once and captures from numba's cache
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")}
    code = ("import capture.aot as a, json, pathlib, sys; p = pathlib.Path(sys.argv[1]); "
            "m = json.loads(a.META.read_text()); m['sources']['decoder.py'] = '0' * 16; p.write_text(json.dumps(m)); "
            "a.META = p; from engine.cli import main; sys.argv = ['visitwire'] + sys.argv[2:]; main()")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gen_pcap import ensure_pcap

    sample = ensure_pcap(10, seed=1, quiet=True)
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "meta.json"), "capture", "--pcap", str(sample),
                        "--format", "jsonl"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "ahead-of-time" in line]
    assert len(said) == 1, r.stderr
    assert said[0].startswith("capture's ahead-of-time kernels cannot be used (capture/decoder.py changed since "
                              "they were built): loading numba's instead") and "`visitwire compile` builds" in said[0]
    assert len(r.stdout.splitlines()) == 10  # the 10 transactions, captured all the same


_TYPES = """
import struct, sys
import numpy as np
from capture import jit, pcapfile

raw = bytes(range(40))
assert isinstance(pcapfile._u32, jit.Kernel)
built = pcapfile._u32(np.frombuffer(raw, np.uint8), 4, True)  # the types set-up built: no numba
print("built", built, "numba" in sys.modules)
# every other byte: a strided view the build's code would misread as contiguous; numba reads it right
strided = pcapfile._u32(np.frombuffer(raw, np.uint8)[::2], 2, True)
print("strided", strided, struct.unpack(">I", raw[4:12:2])[0], "numba" in sys.modules)
"""


def test_arguments_the_build_lacks_go_to_numba_with_the_right_result():
    r = subprocess.run([sys.executable, "-c", _TYPES], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert lines["built"] == f"{int.from_bytes(bytes(range(4, 8)), 'big')} False"
    got, want, numba = lines["strided"].split()
    assert got == want and numba == "True"
    assert "called with argument types the ahead-of-time build lacks" in r.stderr
