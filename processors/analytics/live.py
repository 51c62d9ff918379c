"""Live visitor profiles in Redis, for recent visitors (the full history is in the history store).

Keys (prefix = redis.key_prefix + "an:"), each with TTL analytics.profile_ttl_s:
  an:p:{visitor_id}            hash: first_seen, last_seen, pageviews, visits, total_time_s,
                                     member_id, last_session, last_event
                               (goals and revenue: most goal requests are not page views, so
                               they are in the history profile only)
  an:p:{visitor_id}:sections   zset: section -> page views
  an:p:{visitor_id}:devices    zset: device -> visits
  an:m:{member_id}             set of visitor ids linked to the member (the login signal:
                               a page view whose member_id is set)
  an:recent                    zset: visitor_id -> last_seen; the oldest beyond
                               analytics.max_live_profiles are evicted with their keys.

Page views of one visitor arrive in order on one partition (the topic is keyed by visitor_id),
so a page view not newer than the profile's last one is a redelivery and is skipped.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Iterable

import redis

log = logging.getLogger(__name__)

DAY_S = 86400.0
WEEK_S = 7 * DAY_S


class LiveProfiles:
    def __init__(self, client: redis.Redis, key_prefix: str = "vw:", ttl_s: int = 7 * 86400,
                 max_profiles: int = 100_000):
        self.r = client
        self.p = f"{key_prefix}an:"
        self.ttl_s = int(ttl_s)
        self.max_profiles = int(max_profiles)
        self.skipped = 0
        self.evicted = 0

    @classmethod
    def from_settings(cls, redis_url: str, settings: Any) -> "LiveProfiles":
        a = settings.analytics
        client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, settings.redis.key_prefix, a.profile_ttl_s, a.max_live_profiles)

    def profile_key(self, visitor_id: str) -> str:
        return f"{self.p}p:{visitor_id}"

    def member_key(self, member_id: str) -> str:
        return f"{self.p}m:{member_id}"

    @property
    def recent_key(self) -> str:
        return f"{self.p}recent"

    # -- writing --------------------------------------------------------------------------------
    def apply(self, pageviews: Iterable[dict]) -> int:
        """Fold a batch of page views (bots left out) into the profiles; returns page views applied."""
        by_visitor: dict[str, list[dict]] = defaultdict(list)
        for pv in pageviews:
            if pv.get("is_bot") or not pv.get("visitor_id"):
                continue
            by_visitor[pv["visitor_id"]].append(pv)
        if not by_visitor:
            return 0
        visitors = list(by_visitor)
        pipe = self.r.pipeline(transaction=False)
        for v in visitors:
            pipe.hmget(self.profile_key(v), "last_seen", "last_session", "last_event")
        states = pipe.execute()
        pipe = self.r.pipeline(transaction=False)
        applied = 0
        for v, (last_seen, last_session, last_event) in zip(visitors, states):
            last_ts = float(last_seen) if last_seen is not None else None
            session = last_session.decode() if last_session else ""
            event = last_event.decode() if last_event else ""
            key = self.profile_key(v)
            inc: dict[str, float] = defaultdict(float)
            sections: dict[str, int] = defaultdict(int)
            devices: dict[str, int] = defaultdict(int)
            member = ""
            first = None
            for pv in sorted(by_visitor[v], key=lambda p: (float(p.get("ts") or 0), p.get("event_id", ""))):
                ts = float(pv.get("ts") or 0)
                if last_ts is not None and (ts < last_ts or (ts == last_ts and pv.get("event_id") == event)):
                    self.skipped += 1  # redelivered / late: already counted
                    continue
                first = ts if first is None else first
                sid = pv.get("session_id", "")
                if sid != session:
                    inc["visits"] += 1
                    devices[pv.get("device") or "other"] += 1
                elif last_ts is not None:
                    inc["total_time_s"] += ts - last_ts
                inc["pageviews"] += 1
                if pv.get("section"):
                    sections[pv["section"]] += 1
                if pv.get("member_id"):
                    member = pv["member_id"]
                last_ts, session, event = ts, sid, pv.get("event_id", "")
                applied += 1
            if first is None:
                continue
            pipe.hsetnx(key, "first_seen", first)
            pipe.hset(key, mapping={"last_seen": last_ts, "last_session": session, "last_event": event})
            for name, n in inc.items():
                pipe.hincrbyfloat(key, name, n)
            if member:
                pipe.hset(key, "member_id", member)
                pipe.sadd(self.member_key(member), v)
                pipe.expire(self.member_key(member), self.ttl_s)
            for name, n in sections.items():
                pipe.zincrby(key + ":sections", n, name)
            for name, n in devices.items():
                pipe.zincrby(key + ":devices", n, name)
            for k in (key, key + ":sections", key + ":devices"):
                pipe.expire(k, self.ttl_s)
            pipe.zadd(self.recent_key, {v: last_ts})
        pipe.expire(self.recent_key, self.ttl_s)
        pipe.execute()
        self._evict()
        return applied

    def _evict(self) -> None:
        """Keep at most max_profiles: drop the least recently seen visitors and their keys."""
        excess = self.r.zcard(self.recent_key) - self.max_profiles
        if excess <= 0:
            return
        oldest = [v.decode() for v, _ in self.r.zpopmin(self.recent_key, excess)]
        pipe = self.r.pipeline(transaction=False)
        for v in oldest:
            k = self.profile_key(v)
            pipe.delete(k, k + ":sections", k + ":devices")
        pipe.execute()
        self.evicted += len(oldest)

    # -- reading --------------------------------------------------------------------------------
    def visitor(self, visitor_id: str, now: float) -> dict[str, Any] | None:
        key = self.profile_key(visitor_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(key)
        pipe.zrevrange(key + ":sections", 0, 4, withscores=True)
        pipe.zrevrange(key + ":devices", 0, 4, withscores=True)
        h, sections, devices = pipe.execute()
        if not h:
            return None
        h = {k.decode(): v.decode() for k, v in h.items()}
        first, last, visits = float(h["first_seen"]), float(h["last_seen"]), int(float(h.get("visits", 0)))
        return {
            "visitor_id": visitor_id, "member_id": h.get("member_id", ""), "first_seen": first, "last_seen": last,
            "visits": visits, "pageviews": int(float(h.get("pageviews", 0))),
            "total_time_s": round(float(h.get("total_time_s", 0)), 3),
            "visits_per_week": round(visits / max(1.0, (last - first) / WEEK_S), 3),
            "recency_days": round(max(0.0, now - last) / DAY_S, 3),
            "favourite_sections": [{"name": n.decode(), "count": int(c)} for n, c in sections],
            "devices": [{"name": n.decode(), "count": int(c)} for n, c in devices],
        }

    def member_visitors(self, member_id: str) -> list[str]:
        return sorted(v.decode() for v in self.r.smembers(self.member_key(member_id)))

    def recent_visitors(self, limit: int = 20) -> list[str]:
        return [v.decode() for v in self.r.zrevrange(self.recent_key, 0, limit - 1)]
