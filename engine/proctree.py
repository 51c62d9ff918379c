"""The processes below a process, read from /proc (Linux): what a run started and still has running.

Used by the soak benchmark (RSS per process) and by the tests that check a killed run leaves nothing behind,
and by the tests that stop the runs and workers they started (`stop`).
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def descendants(pid: int) -> dict[int, str]:
    """{pid: command name} of every running (not zombie) process below `pid`."""
    tree: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if state != "Z":
            tree.setdefault(int(ppid), []).append(int(entry))
            names[int(entry)] = name
    out, todo = {}, list(tree.get(pid, []))
    while todo:
        p = todo.pop()
        out[p] = names[p]
        todo += tree.get(p, [])
    return out


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM, and SIGKILL to its whole process group (started with start_new_session) if it has not exited
    within `timeout` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
