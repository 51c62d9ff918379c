"""First requests: a visitor id that only a response's Set-Cookie gave counts once the client sends it back.

A request without a visitor cookie whose response assigns one (a browser's first request, or every request
of a crawler that keeps no cookies) is built with the IP+UA fallback id (the numba writer too, which hashes
the cookie's id beside it) and held here under the id the cookie would give. When a later request carries
that cookie (a browser's next request, often its first asset), the held events take the cookie's id and go
out just before it, so a browser's first page joins its visitor. When the cookie has not come back within
`capture.transaction_timeout_s` (capture clock), or at the end of the input, they go out with the fallback
id: a cookieless crawler is one visitor per (IP, User-Agent), not one per request. Nothing is dropped:
beyond `max_held` events the oldest go out early with the fallback id.
"""
from __future__ import annotations

from collections import deque

import orjson

_VISITOR = b'"visitor_id":"'
_TS = len(b'{"event_id":"') + 32 + len(b'","ts":')  # where a written line's ts starts (config/events.py order)

MAX_HELD = 100_000       # held events (one per unanswered Set-Cookie): ~1 KB each, so at most ~100 MB
MAX_RECENT = 200_000     # visitor ids remembered per generation (~20 MB) to see a cookie that came back early


class FirstRequests:
    """Events go through `route` in packet order as items (dict, None) or (None, JSON line) with their visitor
    id and the cookie id a Set-Cookie assigned them (None for all but first requests)."""

    def __init__(self, timeout_s: float, max_held: int = MAX_HELD, max_recent: int = MAX_RECENT):
        self.timeout_s = timeout_s
        self.max_held = max_held
        self.max_recent = max_recent
        self.assigned: dict[str, bytes] = {}  # event_id -> cookie id of the events EventBuilder.build made
        # cookie id -> items waiting for it (by id(), in arrival order; the IP+UA id is their visitor id)
        self._held: dict[bytes, dict[int, tuple]] = {}
        self._queue: deque[tuple[float, bytes, tuple]] = deque()  # (deadline, cookie id, item), oldest first
        # visitor ids of the events that went out lately (two generations, rotated every timeout_s): a cookie
        # may come back before the event that assigned it is complete (a page still streaming its body)
        self._recent: set[bytes] = set()
        self._older: set[bytes] = set()
        self._rotate_at = 0.0
        self.held_total = 0       # events ever held
        self.joined = 0           # held events that joined their cookie's visitor
        self.fell_back = 0        # held events that went out with the IP+UA id

    def passes(self, keys: list[bytes], now: float) -> bool:
        """Whether events with these visitor ids (none of them first requests) go out as they are: True when
        no held event waits for any of them (they are remembered then)."""
        self._remember(now)
        if self._held and not self._held.keys().isdisjoint(keys):
            return False
        self._recent.update(keys)
        return True

    def hold_lines(self, data: bytes, ends: list[int], keys: list[bytes], given: dict[int, bytes], now: float
                   ) -> tuple[bytes, list[bytes]] | None:
        """route() for a batch of JSON lines only (data, line ends, visitor ids) whose lines `given` (index ->
        cookie id) are first requests, in the common case: none of the batch's ids is a cookie a held event
        waits for, and none of the given cookies came back yet. Then the given lines are held and the rest is
        returned as it is, cut around them (no per-event step); else None: take the items one by one."""
        self._remember(now)
        recent, older = self._recent, self._older
        if self._held and not self._held.keys().isdisjoint(keys):
            return None
        cookies = given.values()
        if any(c in recent or c in older for c in cookies) or not set(cookies).isdisjoint(keys):
            return None
        pieces, out_keys = [], []
        prev = 0
        for i in sorted(given):
            start = ends[i - 1] if i else 0
            pieces.append(data[ends[prev - 1] if prev else 0:start])
            out_keys += keys[prev:i]
            self._hold((None, data[start:ends[i]]), given[i], pieces, out_keys)
            prev = i + 1
        pieces.append(data[ends[prev - 1] if prev else 0:])
        out_keys += keys[prev:]
        recent.update(out_keys)
        return b"".join(p if isinstance(p, bytes) else orjson.dumps(p[0]) + b"\n" for p in pieces), out_keys

    def route(self, items: list[tuple], firsts: bool, now: float) -> tuple[list[tuple], list[bytes]]:
        """(dict | None, line | None, visitor id, cookie id | None) items in packet order (`firsts`: whether any
        has a cookie id) -> the (dict | None, line | None) items that go out now and their visitor ids: first
        requests held, and the ones a cookie's return releases put back just before the event that returned it."""
        if not firsts and self.passes([x[2] for x in items], now):
            return [(e, line) for e, line, _, _ in items], [x[2] for x in items]
        self._remember(now)
        out: list[tuple] = []
        out_keys: list[bytes] = []
        held, recent, older = self._held, self._recent, self._older
        for e, line, key, cookie in items:
            if cookie is not None:
                if cookie not in recent and cookie not in older:
                    self._hold((e, line), cookie, out, out_keys)
                    continue
                e, line = _with_visitor((e, line), cookie)  # the cookie came back already
                key = cookie
            if held and key in held:
                self._release_to(key, out, out_keys)
            recent.add(key)
            out.append((e, line))
            out_keys.append(key)
        return out, out_keys

    def expire(self, now: float) -> list[dict]:
        """Held events whose cookie did not come back within timeout_s, with their IP+UA ids, oldest first."""
        out: list[dict] = []
        q = self._queue
        while q and q[0][0] < now:
            self._fall_back(q.popleft(), out)
        return out

    def close(self) -> list[dict]:
        """End of input: every held event with its IP+UA id."""
        out: list[dict] = []
        while self._queue:
            self._fall_back(self._queue.popleft(), out)
        return out

    # -- helpers -----------------------------------------------------------------------
    def _hold(self, item: tuple, cookie: bytes, out: list, out_keys: list) -> None:
        if len(self._queue) >= self.max_held:
            early: list[dict] = []
            self._fall_back(self._queue.popleft(), early)
            for x in early:
                out.append((x, None))
                out_keys.append(x["visitor_id"].encode())
        self._held.setdefault(cookie, {})[id(item)] = item
        e, line = item
        ts = e["ts"] if e is not None else float(line[_TS:line.index(b",", _TS)])  # a line starts with id, ts
        self._queue.append((ts + self.timeout_s, cookie, item))
        self.held_total += 1

    def _release_to(self, cookie: bytes, out: list, out_keys: list) -> None:
        for item in self._held.pop(cookie).values():
            out.append(_with_visitor(item, cookie))
            out_keys.append(cookie)
            self.joined += 1
        # their queue entries stay until their deadline and are skipped then (_fall_back)

    def _fall_back(self, entry: tuple[float, bytes, tuple], out: list) -> None:
        _, cookie, item = entry
        waiting = self._held.get(cookie)
        if waiting is None or waiting.pop(id(item), None) is None:
            return  # released when its cookie came back
        if not waiting:
            del self._held[cookie]
        e, line = item
        out.append(e if e is not None else orjson.loads(line))
        self.fell_back += 1

    def _remember(self, now: float) -> None:
        if now >= self._rotate_at or len(self._recent) > self.max_recent:
            self._older = self._recent
            self._recent = set()
            self._rotate_at = now + self.timeout_s


def _with_visitor(item: tuple, visitor: bytes) -> tuple:
    """The item with this visitor id (a dict's field, or the 32 hex digits in a JSON line)."""
    e, line = item
    if e is not None:
        e["visitor_id"] = visitor.decode()
        return e, None
    p = line.index(_VISITOR) + len(_VISITOR)
    return None, line[:p] + visitor + line[p + 32:]
