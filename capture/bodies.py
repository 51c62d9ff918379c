"""Named fields of small request bodies, opt-in per path (capture.request_bodies).

Bodies are otherwise never read. For a configured (method, path) a Content-Length body of at most
capture.max_body_bytes is kept while it arrives (capture.http.MessageReader.keep) and parsed here once
complete: an application/x-www-form-urlencoded form or a JSON object (top-level fields). Only the named
fields are kept, as text of at most MAX_VALUE characters, and never a field whose name looks like a secret
(capture/sensitive.py: password, token, ...), even when configured; the raw body is dropped at once. A body
that is longer, chunked, cut by a capture gap or unreadable is a counted drop (`bodies_dropped`), said once.
"""
from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl

import numpy as np
import orjson

from capture.jit import kernel
from capture.sensitive import SensitiveNames
from config.events import BODY_FIELD_PREFIX as PREFIX
from config.settings import BodyRule

log = logging.getLogger(__name__)

MAX_VALUE = 256  # characters kept of a field's value


class BodyFields:
    def __init__(self, rules: list[BodyRule], max_bytes: int, sensitive: SensitiveNames):
        self.max_bytes = max_bytes
        self.rules: dict[tuple[bytes, bytes], tuple[str, ...]] = {}
        refused = set()
        for r in rules:
            keep = tuple(f for f in r.fields if not sensitive(f))
            refused.update(set(r.fields) - set(keep))
            if keep:
                self.rules[(r.method.encode(), r.path.encode())] = keep
        # the request line starts a configured request has ("POST /cart/add " or "...?"): packets holding one
        # are found in each batch (the Decoder hands their flows to Python, which reads bodies)
        starts = [m + b" " + p + end for m, p in self.rules for end in (b" ", b"?")]
        self._starts = np.frombuffer(b"".join(starts) or b"\0", np.uint8).copy()
        self._start_off = np.cumsum([0] + [len(x) for x in starts]).astype(np.int64)
        if refused:
            log.warning("capture.request_bodies: %s look like secrets and are never read; remove them from the "
                        "configuration", ", ".join(sorted(refused)))
        self._told = False

    def packets_with_requests(self, buf: np.ndarray, poffs: np.ndarray, plens: np.ndarray) -> np.ndarray:
        """Indexes of the payloads (buf[poffs[k]:poffs[k] + plens[k]]) that hold a configured request line."""
        found = np.zeros(len(poffs), np.uint8)
        _find_starts(buf, poffs.astype(np.int64), plens.astype(np.int64), self._starts, self._start_off, found)
        return np.flatnonzero(found)

    def fields_for(self, method: bytes, uri: bytes) -> tuple[str, ...] | None:
        """The fields to read from this request's body, None when its body is not read."""
        q = uri.find(b"?")
        return self.rules.get((method, uri if q < 0 else uri[:q]))

    def parse(self, body: bytes, content_type: bytes | None, fields: tuple[str, ...]) -> dict[str, str] | None:
        """event.extra entries ("body:<field>" -> value) of the named fields; None when the body cannot be read."""
        ct = (content_type or b"").split(b";", 1)[0].strip().lower()
        is_json = ct == b"application/json" or ct.endswith(b"+json") or (not ct and body.lstrip()[:1] == b"{")
        try:
            if is_json:
                doc = orjson.loads(body)
                if not isinstance(doc, dict):
                    return None
                pairs = [(k, doc[k]) for k in fields if k in doc]
            else:
                wanted = set(fields)
                pairs = [(k, v) for k, v in parse_qsl(body.decode("utf-8", "replace"), max_num_fields=1000)
                         if k in wanted]
        except ValueError:  # orjson.JSONDecodeError, too many form fields
            return None
        out = {}
        for k, v in pairs:
            if PREFIX + k in out:
                continue  # the first of a repeated field
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                continue  # objects, lists, null: not a value to count by
            text = _CONTROL.sub("", str(v))[:MAX_VALUE]
            if text:
                out[PREFIX + k] = text
        return out

    def dropped(self, stats: dict, why: str) -> None:
        stats["bodies_dropped"] += 1
        if not self._told:
            self._told = True
            log.warning("capture.request_bodies: a body was not read (%s); such bodies are counted as "
                        "bodies_dropped and their events carry no body fields", why)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@kernel
def _find_starts(buf, poffs, plens, pats, pat_off, found):
    """found[k] = 1 when payload k holds one of the patterns pats[pat_off[i]:pat_off[i + 1]], or ends with the
    start of one (a request line split across segments): a linear scan on the first byte, ~1 ns a payload
    byte, only when capture.request_bodies is set."""
    for k in range(poffs.shape[0]):
        s = poffs[k]
        e = s + plens[k]
        for i in range(pat_off.shape[0] - 1):
            a = pat_off[i]
            n = pat_off[i + 1] - a
            first = pats[a]
            for p in range(s, e):
                if buf[p] != first:
                    continue
                q = 1
                while q < n and p + q < e and buf[p + q] == pats[a + q]:
                    q += 1
                if q == n or p + q == e:  # whole, or its start ends the payload (the rest in the next segment)
                    found[k] = 1
                    break
            if found[k]:
                break
