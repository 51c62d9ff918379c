"""engine.json: how other commands find the running engine.

While `visitwire run` / `demo` runs it writes `{data_dir}/engine.json` =
{"pid", "web_url", "token", "history_url", "started"}; `visitwire query` reads it
to go through the engine (chdb allows one process per data directory). The file
holds the API token, so it is created owner-only (0600) and replaced atomically.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

STATE_FILE_NAME = "engine.json"


def state_path(data_dir: str) -> Path:
    return Path(data_dir) / STATE_FILE_NAME


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def write_state(data_dir: str, *, web_url: str, token: str, history_url: str) -> Path:
    path = state_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": os.getpid(), "web_url": web_url, "token": token,
                   "history_url": history_url, "started": time.time()}, fh)
    os.replace(tmp, path)
    return path


def read_state(data_dir: str) -> dict | None:
    """The running engine's state, or None when there is none (missing, unreadable or stale file)."""
    try:
        state = json.loads(state_path(data_dir).read_text())
    except (FileNotFoundError, ValueError, OSError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int) or not pid_alive(state["pid"]):
        return None
    return state


def remove_state(data_dir: str) -> None:
    """Remove engine.json if this process wrote it (never another engine's file)."""
    path = state_path(data_dir)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (FileNotFoundError, ValueError, OSError):
        pass
