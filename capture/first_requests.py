"""First requests: a visitor id that only a response's Set-Cookie gave counts once the client sends it back.

A request without a visitor cookie whose response assigns one (a browser's first request, or every request
of a crawler that keeps no cookies) is built with the IP+UA fallback id and held here under the id the cookie
would give. When a later request carries that cookie (a browser's next request, often its first asset), the
held events take the cookie's id and go out just before it, so a browser's first page joins its visitor.
When the cookie has not come back within `capture.transaction_timeout_s` (capture clock), or at the end of
the input, they go out with the fallback id: a cookieless crawler is one visitor per (IP, User-Agent), not
one per request. Nothing is dropped: beyond `max_held` events the oldest go out early with the fallback id.
"""
from __future__ import annotations

from collections import deque

MAX_HELD = 100_000       # held events (one per unanswered Set-Cookie): ~1 KB each, so at most ~100 MB
MAX_RECENT = 200_000     # visitor ids remembered per generation (~20 MB) to see a cookie that came back early


class FirstRequests:
    def __init__(self, timeout_s: float, max_held: int = MAX_HELD, max_recent: int = MAX_RECENT):
        self.timeout_s = timeout_s
        self.max_held = max_held
        self.max_recent = max_recent
        self.assigned: dict[str, bytes] = {}  # event_id -> cookie id, filled by EventBuilder.build, read by route
        self._held: dict[bytes, list[dict]] = {}  # cookie id -> events waiting for it (fallback id in visitor_id)
        self._queue: deque[tuple[float, bytes, dict]] = deque()  # (deadline, cookie id, event), oldest first
        # visitor ids of the events that went out lately (two generations, rotated every timeout_s): a cookie
        # may come back before the event that assigned it is complete (a page still streaming its body)
        self._recent: set[bytes] = set()
        self._older: set[bytes] = set()
        self._rotate_at = 0.0
        self.held_total = 0       # events ever held
        self.joined = 0           # held events that joined their cookie's visitor
        self.fell_back = 0        # held events that went out with the IP+UA id

    @property
    def waiting(self) -> bool:
        return bool(self._held)

    def seen(self, keys: list[bytes], now: float) -> None:
        """Visitor ids of events that go out as they are (no held event waits for them)."""
        self._remember(now)
        self._recent.update(keys)

    def route(self, items: list[tuple], keys: list[bytes], now: float) -> tuple[list[tuple], list[bytes]]:
        """(dict, None) / (None, JSON line) items in order with their visitor ids: the held ones taken out,
        the ones their cookie's return releases put back just before the event that returned it."""
        self._remember(now)
        out, out_keys = [], []
        assigned = self.assigned
        for item, key in zip(items, keys):
            e = item[0]
            if e is not None and assigned:
                cookie = assigned.pop(e["event_id"], None)
                if cookie is not None:
                    if cookie in self._recent or cookie in self._older:
                        e["visitor_id"] = cookie.decode()  # the cookie came back already
                        key = cookie
                    else:
                        self._hold(e, cookie, out, out_keys)
                        continue
            if self._held and key in self._held:
                self._release_to(key, out, out_keys)
            self._recent.add(key)
            out.append(item)
            out_keys.append(key)
        assigned.clear()  # every event of the batch has been through here
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
    def _hold(self, e: dict, cookie: bytes, out: list, out_keys: list) -> None:
        if len(self._queue) >= self.max_held:
            early: list[dict] = []
            self._fall_back(self._queue.popleft(), early)
            for x in early:
                out.append((x, None))
                out_keys.append(x["visitor_id"].encode())
        self._held.setdefault(cookie, []).append(e)
        self._queue.append((e["ts"] + self.timeout_s, cookie, e))
        self.held_total += 1

    def _release_to(self, cookie: bytes, out: list, out_keys: list) -> None:
        vid = cookie.decode()
        for e in self._held.pop(cookie):
            e["visitor_id"] = vid
            out.append((e, None))
            out_keys.append(cookie)
            self.joined += 1
        # their queue entries stay until their deadline and are skipped then (_fall_back)

    def _fall_back(self, entry: tuple[float, bytes, dict], out: list) -> None:
        _, cookie, e = entry
        waiting = self._held.get(cookie)
        for i, x in enumerate(waiting or ()):
            if x is e:
                del waiting[i]
                if not waiting:
                    del self._held[cookie]
                out.append(e)
                self.fell_back += 1
                return
        # not found: released when its cookie came back

    def _remember(self, now: float) -> None:
        if now >= self._rotate_at or len(self._recent) > self.max_recent:
            self._older = self._recent
            self._recent = set()
            self._rotate_at = now + self.timeout_s
