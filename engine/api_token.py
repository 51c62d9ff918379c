"""Every engine's API has a token: the configured web.token, else one generated per data directory.

A plain `visitwire run` on loopback used to serve /api/query with no token at all, so any local
user or process could read the history. Now the first start writes a random token to
{data_dir}/api_token (owner-only, 0600) and later starts reuse it, so a bookmarked dashboard URL
and scripts keep working across restarts; `visitwire query` finds it through engine.json.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE_NAME = "api_token"


class TokenFileError(Exception):
    """The token file cannot be read or written; the message says what to fix."""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_path(data_dir: str) -> Path:
    return Path(data_dir) / TOKEN_FILE_NAME


def engine_token(configured: str, data_dir: str) -> str:
    """`configured` when set, else the data directory's own token (created 0600 on first use)."""
    if configured:
        return configured
    path = token_path(data_dir)
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    except OSError as e:
        raise TokenFileError(f"cannot read the API token file {path} ({e.strerror}): fix its permissions, "
                             "or set web.token / VISITWIRE_WEB__TOKEN") from None
    if existing:
        return existing
    token = new_token()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
    except FileExistsError:  # another engine on this data dir wrote it first: use theirs
        return path.read_text().strip()
    except OSError as e:
        raise TokenFileError(f"cannot write the API token file {path} ({e.strerror}): make the data directory "
                             "writable, or set web.token / VISITWIRE_WEB__TOKEN") from None
    return token
