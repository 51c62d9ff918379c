"""The key of every visitor / member id hash: random per install, never a known default.

Unless capture.salt is set, the capture keeps a random 32-byte salt in {data_dir}/salt.json
(0600), made on first start, so ids agree across restarts and processes of one install but
cannot be recomputed by anyone who knows the code. With capture.salt_rotation_days, a new
salt replaces it once that old (ids change then: unlinkable across periods, by design).
Several capture agents of one site (one per web server) must share the salt, or one visitor
gets one id per agent: copy the file, or set one capture.salt for all of them.
Without a data directory (a library user, tests), one random salt per process.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import time

log = logging.getLogger(__name__)

SALT_FILE = "salt.json"
_PROCESS_SALT = secrets.token_hex(32)


def _read(path: str) -> dict | None:
    try:
        with open(path, "rb") as fh:
            state = json.loads(fh.read())
        if isinstance(state.get("salt"), str) and len(state["salt"]) >= 32 and \
                isinstance(state.get("created"), (int, float)):
            return state
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as e:
        log.warning("salt file %s unreadable (%s): a new salt is made, visitor ids change", path, e)
    return None


def _write(path: str, state: dict, exclusive: bool) -> bool:
    """Write the salt 0600; exclusive: only if no other process made one first (False then)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    if exclusive:
        try:
            os.link(tmp, path)  # fails when another process won the race: use theirs
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    os.replace(tmp, path)
    return True


def install_salt(data_dir: str | None, rotation_days: float = 0.0, now: float | None = None) -> tuple[str, float]:
    """(salt, when it was made). Makes or rotates the install's salt file as needed."""
    if not data_dir:
        return _PROCESS_SALT, 0.0
    now = time.time() if now is None else now
    path = os.path.join(data_dir, SALT_FILE)
    try:
        return _install(path, data_dir, rotation_days, now)
    except OSError as e:
        log.warning("cannot keep the salt in %s (%s): this run's ids use a one-off salt; set VISITWIRE_DATA_DIR "
                    "to a writable directory or capture.salt", path, e.strerror or e)
        return _PROCESS_SALT, 0.0


def _install(path: str, data_dir: str, rotation_days: float, now: float) -> tuple[str, float]:
    os.makedirs(data_dir, exist_ok=True)
    state = _read(path)
    if state is not None and (not rotation_days or now - state["created"] < rotation_days * 86400):
        return state["salt"], float(state["created"])
    new = {"salt": secrets.token_hex(32), "created": now}
    if state is None:
        if not _write(path, new, exclusive=True):
            state = _read(path)
            if state is not None:
                return state["salt"], float(state["created"])
            _write(path, new, exclusive=False)
        log.info("made a random salt for visitor ids in %s; capture agents of one site must share it (copy the "
                 "file to their data directories, or set one capture.salt for all)", path)
    else:
        _write(path, new, exclusive=False)
        log.warning("salt rotated (capture.salt_rotation_days = %g): visitor and member ids change from now on",
                    rotation_days)
    return new["salt"], now


def rotation_due(created: float, rotation_days: float, now: float | None = None) -> bool:
    return bool(rotation_days) and (time.time() if now is None else now) - created >= rotation_days * 86400
