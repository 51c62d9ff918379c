"""Dropping root after the capture socket is open.

Live capture needs CAP_NET_RAW (and CAP_NET_ADMIN for the ring) only to open its AF_PACKET socket;
the rest (decoding, the Kafka output, the state file, the metrics listener) runs as an ordinary user.
`visitwire capture` (and the capture child of `visitwire run` / `demo`) started as root with
`capture.run_as = "visitwire"` opens the socket, then switches to that user: supplementary groups
dropped, gid then uid set; a root process that sets a non-zero uid loses every capability (no keep-caps),
so nothing can be regained.
"""
from __future__ import annotations

import os
import pwd


class PrivilegeError(Exception):
    """The switch cannot be made; the message says what to fix."""


def target_user(user: str) -> pwd.struct_passwd:
    """The account `capture.run_as` names (a name or a numeric uid); checked before anything starts."""
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise PrivilegeError(f"capture.run_as: no user {user!r} on this system; create it or name another") from None
    if pw.pw_uid == 0:
        raise PrivilegeError("capture.run_as names root; name the unprivileged user to run as")
    return pw


def drop_to(user: str) -> str:
    """Become `user` (a name or a numeric uid) if running as root; returns what was done, "" if nothing."""
    if not user or os.geteuid() != 0:
        return ""
    pw = target_user(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    try:  # proof that root is gone for good
        os.setuid(0)
    except PermissionError:
        return f"running as {pw.pw_name} (uid {pw.pw_uid}) from here on"
    raise PrivilegeError("could still become root after dropping privileges; refusing to go on")
