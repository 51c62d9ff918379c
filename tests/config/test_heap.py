"""config/heap.py: a worker process reuses the memory of its last batch instead of faulting it in again."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A batch of records encoded with orjson (as the worker encodes page views and sessions) and kept until
# its flush, three times over, in a fresh process: the page faults each batch cost.
_BATCHES = """
import resource, sys, orjson
from config.heap import tune_for_batches
print(tune_for_batches() if sys.argv[1] == "tuned" else None)
rows = [{f"field_{i}": f"{n}-{i}" * 5 for i in range(30)} for n in range(5000)]
for batch in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    texts = list(map(orjson.dumps, rows))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del texts
"""


def _faults_per_batch(mode: str) -> tuple[str, list[int]]:
    out = subprocess.run([sys.executable, "-c", _BATCHES, mode], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    return out[0], [int(n) for n in out[1:]]


def test_a_tuned_process_encodes_its_next_batches_without_page_faults():
    applied, tuned = _faults_per_batch("tuned")
    _, plain = _faults_per_batch("plain")
    assert applied == "True"  # glibc (Debian, the Dockerfile's base): mallopt is there
    # the first batch grows the heap; the next ones reuse it (glibc's defaults trim it after each free and
    # fault it in again: about two faults per record)
    assert max(tuned[1:]) < 50, f"faults per batch of 5000 records: tuned {tuned}, glibc's defaults {plain}"
