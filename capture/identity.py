"""Who is visiting, without letting secrets leave the agent.

Visitor and member keys are hashed with a keyed blake2b (the salt is the key), so
the same visitor gets the same id across runs with one salt but the raw cookie /
member value never appears in an event. Sensitive query parameters are removed
from the query string; Authorization headers and bodies are never read at all.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from urllib.parse import unquote_plus

from config.settings import CaptureSettings


def _key(salt: str) -> bytes:
    raw = salt.encode("utf-8")
    return raw if len(raw) <= 64 else hashlib.blake2b(raw).digest()  # blake2b keys are at most 64 bytes


class Identity:
    """Hashing and scrubbing rules taken from settings.capture."""

    def __init__(self, cfg: CaptureSettings):
        self._key = _key(cfg.salt)
        self.visitor_cookies = [c.encode("latin-1") for c in cfg.visitor_cookies]
        self.member_cookie = cfg.member_cookie.encode("latin-1") if cfg.member_cookie else b""
        self.member_param = cfg.member_param.lower()
        self.member_header = cfg.member_header.lower().encode("latin-1") if cfg.member_header else b""
        self.client_ip_header = cfg.client_ip_header.lower().encode("latin-1") if cfg.client_ip_header else b""
        names = sorted({c for c in self.visitor_cookies + [self.member_cookie] if c}, key=len, reverse=True)
        # one pass over the Cookie header finds every cookie we care about
        self._cookie_rx = re.compile(rb"(?:^|;)[ \t]*(" + b"|".join(re.escape(n) for n in names) + rb")=[ \t]*\"?([^;\"]*)")
        scrub = {p.lower() for p in cfg.sensitive_params if p}
        if self.member_param:
            scrub.add(self.member_param)  # the raw member key must not travel in the query either
        self._scrub = scrub
        self.scrub_words = frozenset(scrub)  # query parameter names removed from queries and referrers
        self._scrub_rx = re.compile("|".join(re.escape(p) for p in sorted(scrub)), re.IGNORECASE) if scrub else None
        # for an ASCII query and ASCII names, lower() + `in` finds exactly what the IGNORECASE regex finds (faster)
        self._scrub_ascii = tuple(sorted(scrub)) if all(p.isascii() for p in scrub) else None

    @property
    def key(self) -> bytes:
        return self._key

    def hash(self, value: bytes | str, domain: bytes) -> str:
        if isinstance(value, str):
            value = value.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(domain + value, key=self._key, digest_size=16).hexdigest()

    def cookies(self, header: bytes | None) -> dict[bytes, bytes]:
        if not header:
            return {}
        found: dict[bytes, bytes] = {}
        for name, value in self._cookie_rx.findall(header):
            if value and name not in found:
                found[name] = value.strip()
        return found

    def assigned_visitor_cookie(self, set_cookies: list[bytes]) -> bytes | None:
        """The visitor cookie a response assigns (a first visit has none yet): its value, else None."""
        for name in self.visitor_cookies:
            v = _set_cookie_value(set_cookies, name)
            if v:
                return v
        return None

    def member_key(self, cookies: dict[bytes, bytes], query: str, headers: dict[bytes, bytes],
                   set_cookies: list[bytes] | None) -> bytes | str | None:
        """Raw member key (never emitted; hash it): a login Set-Cookie wins over what the request carried."""
        if set_cookies and self.member_cookie:
            v = _set_cookie_value(set_cookies, self.member_cookie)
            if v:
                return v
        v = cookies.get(self.member_cookie) if self.member_cookie else None
        if v:
            return v
        if self.member_param and query:
            for part in query.split("&"):
                name, _, value = part.partition("=")
                if value and unquote_plus(name).lower() == self.member_param:
                    return unquote_plus(value)
        if self.member_header:
            v = headers.get(self.member_header)
            if v:
                return v
        return None

    def member_id(self, key) -> str:
        return self.hash(key, b"m:") if key else ""

    def client_ip(self, headers: dict[bytes, bytes], packet_ip: str) -> str:
        """The first address of the trusted forwarded-for header, else the packet's source."""
        if not self.client_ip_header:
            return packet_ip
        v = headers.get(self.client_ip_header)
        if not v:
            return packet_ip
        first = v.split(b",", 1)[0].strip().decode("latin-1")
        if first.startswith("["):  # [v6]:port
            first = first[1:].split("]", 1)[0]
        elif first.count(":") == 1:  # v4:port
            first = first.split(":", 1)[0]
        try:
            return str(ipaddress.ip_address(first))
        except ValueError:
            return packet_ip

    def scrub_query(self, query: str) -> str:
        if not query or self._scrub_rx is None:
            return query
        if self._scrub_ascii is not None and query.isascii():
            low = query.lower()
            if not any(p in low for p in self._scrub_ascii):
                return query
        elif not self._scrub_rx.search(query):
            return query
        keep = [kv for kv in query.split("&") if unquote_plus(kv.split("=", 1)[0]).strip().lower() not in self._scrub]
        return "&".join(keep)


def _set_cookie_value(set_cookies: list[bytes], name: bytes) -> bytes | None:
    """The value a response's Set-Cookie headers give cookie `name` (not a deletion), else None."""
    prefix = name + b"="
    for sc in set_cookies:
        if sc.startswith(prefix):
            v = sc[len(prefix):].split(b";", 1)[0].strip().strip(b'"')
            if v and v != b"deleted":
                return v
    return None
