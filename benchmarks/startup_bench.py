"""Start-up CPU of `visitwire capture` beside the CPU of a full run, and the ratio against tshark, one run.

    .venv/bin/python benchmarks/startup_bench.py [--transactions 150000] [--repeat 5]

Every figure is the CPU (user + sys) of a whole process, from os.wait4, on one pinned core:
- start-up: `visitwire capture --pcap tiny.pcap` (10 transactions, JSON lines to /dev/null), the median
  of --repeat runs, against the target of 0.3 cpu-s; and where it goes, stage by stage, in a process
  that takes the command's own steps (interpreter, CLI, settings, numpy, the kernel build/cache check,
  capture's modules with their kernels, a Decoder, the tiny file), and whether numba was imported;
- full run: the same command on the benchmark pcap (benchmarks/gen_pcap.py), and start-up's share of it;
- tshark: the fields extraction capture_bench.py compares with (peers.tshark_argv), on the same file
  in the same run; the ratio is tshark's CPU over visitwire's, whole process both.
The kernels must be compiled (`visitwire compile`, which set-up runs); a stale cache is reported, not timed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from capture.aot import built_for_another
from gen_pcap import SERVER_PORT, ensure_pcap
from peers import tshark_argv

ROOT = Path(__file__).resolve().parent.parent

VISITWIRE = str(Path(sys.executable).with_name("visitwire"))
TARGET_STARTUP_CPU_S = 0.3
TARGET_TSHARK_RATIO = 20

_STAGES = """
import sys, time
marks = [("interpreter", time.process_time())]
def mark(name):
    marks.append((name, time.process_time()))
import engine.cli
mark("CLI (typer)")
from config.settings import load_settings
s = load_settings(None)
mark("settings (pydantic)")
import numpy
mark("numpy")
from engine.kernel_cache import aot_line, stale
assert stale(("capture",)) is None, "kernel cache is stale: run visitwire compile"
aot_line()
mark("kernel build/cache check")
from engine.capture_cmd import run_capture
mark("capture modules, kernels")
from capture.decoder import Decoder
Decoder(s)
mark("a Decoder")
run_capture(s, pcap=sys.argv[1], iface=None, jsonl=True, kafka=False)
mark("the tiny capture")
prev = 0.0
for name, t in marks:
    print(f"stage\\t{name}\\t{t - prev:.4f}", file=sys.stderr)
    prev = t
print("numba\\t" + ("imported" if "numba" in sys.modules else "not imported"), file=sys.stderr)
"""


def cpu_of(argv: list[str], stdout=subprocess.DEVNULL, env: dict | None = None) -> tuple[float, str]:
    """Run argv to its end; (user + sys CPU seconds of the whole process, its stderr)."""
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {proc.returncode}:\n{err[-2000:]}")
    return usage.ru_utime + usage.ru_stime, err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=150_000, help="size of the full-run benchmark pcap")
    ap.add_argument("--repeat", type=int, default=5, help="start-up runs (median)")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the last one)")
    args = ap.parse_args()

    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # children inherit it: every process measured on the same one core
    # a user's install has its modules' bytecode cached: a PYTHONDONTWRITEBYTECODE shell would time the
    # compile of every module on each start instead (0.1 cpu-s more)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_") and k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run([VISITWIRE, "compile"], capture_output=True, text=True, env=env)
    if "up to date" not in out.stderr:
        print("the kernel cache was stale, compiled it first:\n" + out.stderr, file=sys.stderr)
    aot_ok_reason = built_for_another()  # "" when capture's kernels come from the ahead-of-time build
    aot_ok = not aot_ok_reason
    tiny = str(ensure_pcap(10, seed=1, quiet=True))
    full = str(ensure_pcap(args.transactions, quiet=True))
    capture = [VISITWIRE, "capture", "--ports", str(SERVER_PORT), "--format", "jsonl", "--pcap"]

    cpu_of(capture + [tiny], env=env)  # writes the bytecode caches if missing: not timed
    starts = [cpu_of(capture + [tiny], env=env)[0] for _ in range(args.repeat)]
    start = statistics.median(starts)
    stages = subprocess.run([sys.executable, "-c", _STAGES, tiny], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)
    if stages.returncode != 0:
        raise RuntimeError(stages.stderr[-2000:])
    ours, _ = cpu_of(capture + [full], env=env)
    with open(os.devnull, "wb") as devnull:
        theirs, _ = cpu_of(tshark_argv(full, SERVER_PORT), stdout=devnull)

    size = os.path.getsize(full) / 1e6
    print(f"pinned to CPU {cpu}; CPU seconds (user + sys) of whole processes")
    print(f"start-up: visitwire capture --pcap {Path(tiny).name} (10 transactions): median {start:.3f} cpu-s of "
          f"{args.repeat} ({', '.join(f'{s:.3f}' for s in starts)})")
    numba = next((line.split("\t")[1] for line in stages.stderr.splitlines() if line.startswith("numba\t")), "?")
    print(f"  where it goes (one process taking the same steps; numba {numba}"
          f"{'' if aot_ok else ', the ahead-of-time build not used: ' + aot_ok_reason}):")
    for line in stages.stderr.splitlines():
        if line.startswith("stage\t"):
            _, name, secs = line.split("\t")
            print(f"    {name:<26} {float(secs):.3f}")
    print(f"full run: visitwire capture --pcap {Path(full).name} ({args.transactions:,} transactions, "
          f"{size:.0f} MB): {ours:.2f} cpu-s, of which start-up {start / ours:.0%}")
    print(f"tshark fields extraction, same file: {theirs:.2f} cpu-s -> visitwire is {theirs / ours:.1f}x "
          f"(without start-up {theirs / (ours - start):.1f}x)")
    for label, ok, got in ((f"start-up <= {TARGET_STARTUP_CPU_S} cpu-s", start <= TARGET_STARTUP_CPU_S,
                            f"{start:.3f}"),
                           (f">= {TARGET_TSHARK_RATIO}x tshark end to end", theirs / ours >= TARGET_TSHARK_RATIO,
                            f"{theirs / ours:.1f}x")):
        print(f"  {'PASS' if ok else 'MISS'} {label}: {got}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
