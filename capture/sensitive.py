"""Which query parameter names carry secrets: matched by pattern, not by a list of exact names.

A name is sensitive when, lower-cased and percent-decoded, it contains one of STEMS
(access_token, client_secret, PHPSESSID, X-Amz-Signature...) or one of its words (split
at non-alphanumerics and camelCase humps) is one of WORDS (api_key, apiKey, sig, sid...).
Words keep ordinary names apart from secrets: "keyword", "monkey", "signup", "design",
"passenger", "author" stay, and so does a bare "code" (promo and country codes; an OAuth code is
one-time; add it to capture.sensitive_params if yours is not). Configured names add to the patterns
(capture.sensitive_params); capture.allowed_params are never removed.
"""
from __future__ import annotations

import re
from urllib.parse import unquote_plus

STEMS = ("token", "secret", "passw", "pwd", "session", "sessid", "credential", "apikey", "signature",
         "authoriz", "bearer", "jwt", "private", "csrf", "xsrf", "verifier")
WORDS = frozenset({"key", "keys", "sig", "sid", "auth", "pass", "otp", "pin", "ssn", "cvv", "cvc", "hmac"})
# what a query must contain (any case) before its names are looked at one by one; '%' because an encoded
# name ("%74oken") only reads as one once decoded
TRIGGERS = tuple(sorted(set(STEMS) | WORDS | {"%"}))

_HUMP = re.compile(r"([a-z0-9])([A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")


class SensitiveNames:
    def __init__(self, extra: list[str], allowed: list[str]):
        self.extra = frozenset(n.lower() for n in extra if n)
        self.allowed = frozenset(n.lower() for n in allowed if n)
        self.triggers = tuple(sorted(set(TRIGGERS) | self.extra))
        self._memo: dict[str, bool] = {}

    def __call__(self, raw_name: str) -> bool:
        hit = self._memo.get(raw_name)
        if hit is None:
            if len(self._memo) >= 50_000:
                self._memo.clear()
            hit = self._memo[raw_name] = self._match(raw_name)
        return hit

    def _match(self, raw_name: str) -> bool:
        name = unquote_plus(raw_name).strip()
        low = name.lower()
        if low in self.allowed:
            return False
        if low in self.extra or any(s in low for s in STEMS):
            return True
        return any(w in WORDS for w in _SPLIT.split(_HUMP.sub(r"\1 \2", name).lower()))

    def scrub(self, query: str) -> str:
        """The query without its sensitive parameters (order and the rest kept as on the wire)."""
        return "&".join(kv for kv in query.split("&") if not self(kv.split("=", 1)[0]))
