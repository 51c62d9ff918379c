"""Learn the site's visitor cookie from the traffic, so ids need no configuration.

A visitor cookie is one the server sets for a long time (Max-Age / Expires at least
MIN_LIFETIME_S ahead) and that clients send back unchanged: per client (address +
User-Agent) one value, and a different value per client. `CookieLearner` watches
Set-Cookie and Cookie headers until one name shows that on MIN_CLIENTS clients, then
adopts it (configured names are never candidates: they already give cookie ids).

Ids stay stable across the moment of learning: until then every request had the
IP+UA id; for a client seen with exactly one value of the learned cookie, the id of
that value maps to the IP+UA id it already had (`aliases`, kept in the state file
with the name, so a restart agrees). Clients sharing address and User-Agent (NAT)
had one IP+UA id; from the moment of learning their cookies tell them apart.

Memory is bounded: at most MAX_CLIENTS clients and MAX_NAMES names are followed.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)

MIN_LIFETIME_S = 30 * 86400  # session and short-lived cookies (carts, CSRF, A/B flags) are not visitor ids
MIN_CLIENTS = 5              # clients that sent one value back at least twice before a name is adopted
STABLE_SHARE = 0.8           # of the clients that sent the name twice or more, the share with one value (NATs)
DISTINCT_SHARE = 0.9         # distinct values among those clients: a shared value ("lang=en") is no id
# learning stops (it costs a few microseconds a request on the fast path) when nearly all requests with
# cookies (CONFIGURED_SHARE of the first CONFIGURED_SAMPLE) carry a configured visitor cookie already,
# or after GIVE_UP_AFTER requests without finding one
CONFIGURED_SAMPLE = 1000
CONFIGURED_SHARE = 0.9
GIVE_UP_AFTER = 100_000
MAX_CLIENTS = 20_000
MAX_NAMES = 64
MAX_ALIASES = 50_000
STATE_FILE = "capture-state.json"

_PAIR = re.compile(rb"(?:^|;)[ \t]*([^=;, \t]+)[ \t]*=[ \t]*\"?([^;\"]*)")
_MAX_AGE = re.compile(rb";[ \t]*max-age[ \t]*=[ \t]*(-?[0-9]{1,12})", re.IGNORECASE)
_EXPIRES = re.compile(rb";[ \t]*expires[ \t]*=[ \t]*([^;]{1,64})", re.IGNORECASE)


def set_cookie_lifetime(value: bytes, now: float) -> float:
    """Seconds a Set-Cookie keeps its cookie (Max-Age wins over Expires; 0 = session cookie or a deletion)."""
    m = _MAX_AGE.search(value)
    if m:
        return max(0.0, float(m.group(1)))
    m = _EXPIRES.search(value)
    if m:
        try:
            return max(0.0, parsedate_to_datetime(m.group(1).decode("latin-1").strip()).timestamp() - now)
        except (TypeError, ValueError, OverflowError, IndexError):
            return 0.0
    return 0.0


class _Name:
    __slots__ = ("long_sets", "clients", "repeat", "changed", "next_check")

    def __init__(self):
        self.long_sets = 0
        self.clients: dict[tuple, list] = {}  # client -> [first value, requests with it, requests with another]
        self.repeat = 0      # clients that sent the name twice or more
        self.changed = 0     # clients that sent two different values
        self.next_check = MIN_CLIENTS  # the distinct-value count runs when `repeat` reaches this


class CookieLearner:
    """Watches cookies until one name behaves like a visitor id; then `learned` holds it."""

    def __init__(self, configured: list[bytes], never: list[bytes]):
        self.configured = frozenset(configured)
        self.configured_seen = 0  # requests that carried a configured visitor cookie
        self.with_cookie = 0      # requests that carried any cookie
        self.skip = self.configured | frozenset(n for n in never if n)
        self.names: dict[bytes, _Name] = {}
        self.assigned: dict[tuple, dict[bytes, bytes]] = {}  # client -> name -> value the server gave it
        self.learned: bytes | None = None
        self.evidence = ""
        self.observed = 0

    def observe(self, client: tuple, cookie: bytes | None, set_cookies: list[bytes] | None, ts: float) -> None:
        """One request (its Cookie header) and its response's Set-Cookie headers, from client (ip, ua)."""
        self.observed += 1
        if set_cookies:
            for sc in set_cookies:
                m = _PAIR.match(sc)
                if not m or m.group(1) in self.skip or not m.group(2):
                    continue
                name = m.group(1)
                n = self._name(name)
                if n is None or set_cookie_lifetime(sc, ts) < MIN_LIFETIME_S:
                    continue
                n.long_sets += 1
                given = self.assigned.get(client)
                if given is None:
                    if len(self.assigned) >= MAX_CLIENTS:
                        continue
                    given = self.assigned[client] = {}
                given.setdefault(name, m.group(2).strip())
        if cookie:
            self.with_cookie += 1
            seen = set()
            pairs = _PAIR.findall(cookie)
            if any(name in self.configured for name, _ in pairs):
                self.configured_seen += 1
            for name, value in pairs:
                if name in seen or name in self.skip or not value:
                    continue
                seen.add(name)
                n = self.names.get(name)
                if n is None or not n.long_sets:
                    continue  # only names the server was seen setting for long
                value = value.strip()
                c = n.clients.get(client)
                if c is None:
                    if len(n.clients) < MAX_CLIENTS:
                        n.clients[client] = [value, 1, 0]
                    continue
                if c[0] == value:
                    c[1] += 1
                else:
                    c[2] += 1
                    if c[2] == 1:
                        n.changed += 1
                if c[1] + c[2] == 2:
                    n.repeat += 1
                    if n.repeat >= n.next_check and self._adoptable(name, n):
                        self.learned = name
                        return

    def pointless(self) -> str:
        """Why learning should stop now ('' = go on)."""
        if self.with_cookie >= CONFIGURED_SAMPLE and self.configured_seen >= CONFIGURED_SHARE * self.with_cookie:
            return "the requests carry a configured visitor cookie"
        if self.observed >= GIVE_UP_AFTER:
            return (f"no visitor cookie found in {self.observed:,} requests; ids stay IP+UA unless "
                    "capture.visitor_cookies names one")
        return ""

    def _name(self, name: bytes) -> _Name | None:
        n = self.names.get(name)
        if n is None and len(self.names) < MAX_NAMES:
            n = self.names[name] = _Name()
        return n

    def _adoptable(self, name: bytes, n: _Name) -> bool:
        stable = n.repeat - n.changed
        if stable < MIN_CLIENTS or stable < STABLE_SHARE * n.repeat:
            return False
        n.next_check = n.repeat * 2  # the count below walks every client: at most log2(clients) times
        values = {c[0] for c in n.clients.values() if c[1] >= 2 and not c[2]}
        if len(values) < DISTINCT_SHARE * stable:
            return False
        days = MIN_LIFETIME_S // 86400
        self.evidence = (f"set by the server for {days}+ days {n.long_sets} times, sent back unchanged by "
                         f"{stable} of {n.repeat} returning clients")
        return True

    def aliases(self, cookie_id, anon_id) -> dict[str, str]:
        """cookie id -> the IP+UA id its client already had, for clients seen with exactly one value."""
        name = self.learned
        values: dict[tuple, set] = {}
        n = self.names.get(name)
        if n is not None:
            for client, c in n.clients.items():
                values.setdefault(client, set()).add(c[0])
                if c[2]:
                    values[client].add(b"")  # changed value: more than one
        for client, given in self.assigned.items():
            v = given.get(name)
            if v:
                values.setdefault(client, set()).add(v)
        out = {}
        for client, vs in values.items():
            if len(vs) == 1 and len(out) < MAX_ALIASES:
                out[cookie_id(next(iter(vs)))] = anon_id(client)
        return out


def load_state(data_dir: str | None) -> dict:
    if not data_dir:
        return {}
    try:
        with open(os.path.join(data_dir, STATE_FILE), "rb") as fh:
            state = json.loads(fh.read())
        return state if isinstance(state, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("capture state %s unreadable (%s): learning the visitor cookie again",
                    os.path.join(data_dir, STATE_FILE), e)
        return {}


def save_state(data_dir: str | None, state: dict) -> None:
    """Write the state file (0600, replaced atomically); a failure is logged, capture goes on."""
    if not data_dir:
        return
    path = os.path.join(data_dir, STATE_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(data_dir, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({**state, "saved": time.time()}, fh)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("capture state not saved to %s: %s (the learned visitor cookie is learned again next start)",
                    path, e)
