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

from capture.sensitive import SensitiveNames
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
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in cfg.trusted_proxies]
        # forwarded-for headers are only read when some proxy is trusted
        self.client_ip_headers = tuple(h.encode("latin-1") for h in cfg.client_ip_headers) if self.trusted else ()
        self._trusted_memo: dict[str, bool] = {}
        names = sorted({c for c in self.visitor_cookies + [self.member_cookie] if c}, key=len, reverse=True)
        # one pass over the Cookie header finds every cookie we care about
        alternatives = b"|".join(re.escape(n) for n in names)
        self._cookie_rx = re.compile(rb"(?:^|;)[ \t]*(" + alternatives + rb")=[ \t]*\"?([^;\"]*)")
        extra = [p.lower() for p in cfg.sensitive_params if p]
        if self.member_param:
            extra.append(self.member_param)  # the raw member key must not travel in the query either
        self.sensitive = SensitiveNames(extra, cfg.allowed_params)
        # substrings (any case) a query must hold before its names are matched one by one (the numba writer
        # hands such queries to Python)
        self.scrub_words = frozenset(self.sensitive.triggers)
        self._scrub_rx = re.compile("|".join(re.escape(p) for p in sorted(self.scrub_words)), re.IGNORECASE)
        # for an ASCII query and ASCII names, lower() + `in` finds exactly what the IGNORECASE regex finds (faster)
        self._scrub_ascii = tuple(sorted(self.scrub_words)) if all(p.isascii() for p in self.scrub_words) else None

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

    def is_trusted(self, ip: str) -> bool:
        t = self._trusted_memo.get(ip)
        if t is None:
            if len(self._trusted_memo) >= 100_000:
                self._trusted_memo.clear()
            try:
                a = ipaddress.ip_address(ip)
                t = any(a in n for n in self.trusted)
            except ValueError:
                t = False
            self._trusted_memo[ip] = t
        return t

    def client_ip(self, headers: dict[bytes, bytes], packet_ip: str) -> str:
        """The client behind trusted proxies: walking the first configured forwarded-for header from the right
        (each proxy appends the address it saw), the first address that is not a trusted proxy. Addresses to
        its left are what the client wrote and prove nothing; a request not from a trusted proxy keeps its
        packet address, whatever headers it carries. An unreadable hop stops the walk at the last trusted one."""
        if not self.client_ip_headers or not self.is_trusted(packet_ip):
            return packet_ip
        for name in self.client_ip_headers:
            v = headers.get(name)
            if v:
                hops = _forwarded_for(v) if name == b"forwarded" else v.split(b",")
                break
        else:
            return packet_ip
        ip = packet_ip
        for hop in reversed(hops):
            a = _address(hop)
            if a is None:
                return ip
            ip = a
            if not self.is_trusted(a):
                return a
        return ip  # every hop a trusted proxy: the left-most one

    def scrub_query(self, query: str) -> str:
        if not query:
            return query
        if self._scrub_ascii is not None and query.isascii():
            low = query.lower()
            if not any(p in low for p in self._scrub_ascii):
                return query
        elif not self._scrub_rx.search(query):
            return query
        return self.sensitive.scrub(query)


_FOR = re.compile(rb"(?:^|;)[ \t]*for[ \t]*=[ \t]*(\"[^\"]*\"|[^;,]*)", re.IGNORECASE)


def _forwarded_for(value: bytes) -> list[bytes]:
    """The for= address of each element of an RFC 7239 Forwarded header, left to right."""
    out = []
    for element in value.split(b","):
        m = _FOR.search(element)
        out.append(m.group(1).strip(b'" \t') if m else b"")
    return out


def _address(hop: bytes) -> str | None:
    """An address as forwarded headers write it (v4, v4:port, v6, [v6]:port) in canonical text; else None
    ("unknown", obfuscated "_names", garbage)."""
    text = hop.strip().decode("latin-1")
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _set_cookie_value(set_cookies: list[bytes], name: bytes) -> bytes | None:
    """The value a response's Set-Cookie headers give cookie `name` (not a deletion), else None."""
    prefix = name + b"="
    for sc in set_cookies:
        if sc.startswith(prefix):
            v = sc[len(prefix):].split(b";", 1)[0].strip().strip(b'"')
            if v and v != b"deleted":
                return v
    return None
