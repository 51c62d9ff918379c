"""Redis live state: per-minute counters, top lists, latency histograms, visitors now, feed.

Writers hand over one `LiveDelta` per batch, already aggregated (one HINCRBY per
counter per minute, one ZINCRBY per member per minute), written in one pipelined
round trip. Every key has a TTL (`LIVE_TTL_S`). The key layout is documented in the
README section "Redis live state"; `LiveStateReader.snapshot()` is what the
dashboard and GET /api/live show.

Counters are best effort (a batch redelivered after a crash is counted twice);
exact numbers live in the history store.
"""
from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from config.settings import Settings
from config.live_layout import COUNTER_FIELDS, LAT_BUCKETS, LiveDelta, quantiles_from_hist
from config.stats import ROW_BOUNDS, SECOND_BOUNDS, LastError, Tally

LIVE_TTL_S = 2 * 3600          # per-minute keys, feed and meta
TOP_DIMENSIONS = ("pages", "referrers", "channels", "campaigns", "status", "browsers", "os", "devices", "products",
                  "cart_products", "order_products")  # the last two: units carted / ordered
VISITOR_SETS = ("all", "member", "anon", "bot")
FLOAT_FIELDS = ("revenue",)


class LiveKeys:
    def __init__(self, prefix: str = "vw:"):
        self.p = prefix

    def minute(self, m: int) -> str:
        return f"{self.p}m:{m}"

    def latency(self, m: int) -> str:
        return f"{self.p}lat:{m}"

    def top(self, dim: str, m: int) -> str:
        return f"{self.p}top:{dim}:{m}"

    def visitors(self, which: str) -> str:
        return f"{self.p}visitors:{which}"

    @property
    def feed(self) -> str:
        return f"{self.p}feed"

    @property
    def goal_feed(self) -> str:
        return f"{self.p}goalfeed"

    @property
    def meta(self) -> str:
        return f"{self.p}meta"

    @property
    def updates(self) -> str:
        return f"{self.p}updates"


# A batch's visitors (thousands) go to a visitors-now set in one argument, as a JSON object visitor -> last
# ts: redis-py encodes every argument of a ZADD in Python (two per visitor), and that was most of a
# worker's Redis cost. The script keeps each visitor's latest ts (ZADD GT), drops visitors older than
# the window (ARGV[2]) and sets the TTL (ARGV[3]).
VISITORS_NOW_LUA = """
local seen = cjson.decode(ARGV[1])
local args, n = {}, 0
for member, ts in pairs(seen) do
  args[n + 1] = ts
  args[n + 2] = member
  n = n + 2
  if n >= 1000 then
    redis.call('ZADD', KEYS[1], 'GT', unpack(args, 1, n))
    n = 0
  end
end
if n > 0 then redis.call('ZADD', KEYS[1], 'GT', unpack(args, 1, n)) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 0
"""


class RedisLiveSink:
    """Applies LiveDeltas to Redis in one pipeline per batch (sync client, hiredis parser)."""

    def __init__(self, redis_url: str, settings: Settings, ttl_s: int = LIVE_TTL_S):
        self.client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        self.keys = LiveKeys(settings.redis.key_prefix)
        self.window_s = settings.processing.visitors_now_window_s
        self.feed_length = settings.processing.feed_length
        self.ttl_s = ttl_s
        self.batches = 0
        self.commands = 0
        self.batch_events = Tally(ROW_BOUNDS)  # hits per pipeline, and its round trip (engine/metrics.py)
        self.write_seconds = Tally(SECOND_BOUNDS)
        self.last_error = LastError()
        self._visitors_now = self.client.register_script(VISITORS_NOW_LUA)

    def apply(self, d: LiveDelta) -> int:
        """Write one delta; returns the number of commands sent. Raises redis.RedisError when away."""
        t0 = time.perf_counter()
        try:
            n = self._apply(d)
        except Exception as e:
            self.last_error.record(e)
            raise
        self.write_seconds.observe(time.perf_counter() - t0)
        self.batch_events.observe(d.events)
        return n

    def _apply(self, d: LiveDelta) -> int:
        k, ttl = self.keys, self.ttl_s
        pipe = self.client.pipeline(transaction=False)
        n = 0
        touched: set[int] = set()
        for m, fields in d.counters.items():
            key = k.minute(m)
            for name, v in fields.items():
                if not v:
                    continue
                if name in FLOAT_FIELDS:
                    pipe.hincrbyfloat(key, name, float(v))
                else:
                    pipe.hincrby(key, name, int(v))
                n += 1
            pipe.expire(key, ttl)
            touched.add(m)
        for m, hist in d.latency.items():
            key = k.latency(m)
            for b, c in hist.items():
                pipe.hincrby(key, str(b), int(c))
            pipe.expire(key, ttl)
            n += len(hist) + 1
        for (dim, m), members in d.tops.items():
            key = k.top(dim, m)
            for member, c in members.items():
                pipe.zincrby(key, c, member)
            pipe.expire(key, ttl)
            n += len(members) + 1
            touched.add(m)
        for which, last_seen in d.visitors.items():
            if last_seen:
                # each visitor's latest ts; visitors older than the window are forgotten (kept one extra
                # minute for readers running late)
                self._visitors_now(keys=[k.visitors(which)], client=pipe,
                                   args=[orjson.dumps(last_seen), repr(d.max_ts - self.window_s - 60), ttl])
                n += 1
        if d.feed:
            pipe.lpush(k.feed, *d.feed[-self.feed_length:])
            pipe.ltrim(k.feed, 0, self.feed_length - 1)
            pipe.expire(k.feed, ttl)
            n += 3
        if d.goal_feed:
            pipe.lpush(k.goal_feed, *d.goal_feed[-self.feed_length:])
            pipe.ltrim(k.goal_feed, 0, self.feed_length - 1)
            pipe.expire(k.goal_feed, ttl)
            n += 3
        if d.events:
            # max ts only grows: a Lua-free max via HSET of a float is racy across workers, fine for a clock hint
            pipe.hset(k.meta, mapping={"last_event_ts": repr(d.max_ts), "last_write": repr(time.time())})
            pipe.hincrby(k.meta, "events", d.events)
            pipe.expire(k.meta, ttl)
            n += 3
        for m in sorted(touched):
            pipe.publish(k.updates, orjson.dumps({"minute": m * 60}))
            n += 1
        pipe.execute()
        self.batches += 1
        self.commands += n
        return n

    def close(self) -> None:
        self.client.close()


def _json_entries(raws: list[bytes]) -> list[dict]:
    out = []
    for raw in raws:
        try:
            out.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return out


class LiveStateReader:
    """Reads the live state for the dashboard and GET /api/live.

    `snapshot(minutes=60)` returns::

        {
          "now": 1732350000.0,                # event-time now (last event ts + wall time since written)
          "minute": 1732349940,               # start of the current minute, epoch seconds
          "visitors_now": 42,                 # distinct non-bot visitors seen in the last visitors_now_window_s
          "members_now": 10, "anonymous_now": 32, "bots_now": 3,
          "window_s": 300,
          "series": {                         # oldest first, one entry per minute, `minutes` long
            "minutes": [epoch_s, ...],
            "pageviews": [...], "hits": [...], "sessions": [...],       # sessions = sessions started
            "errors_4xx": [...], "errors_5xx": [...], "error_rate": [...],  # error_rate = (4xx+5xx)/hits
            "p50_ms": [...], "p95_ms": [...], "p99_ms": [...],       # null when no latency that minute
            "bot_hits": [...], "member_pageviews": [...], "anon_pageviews": [...],
            "goals": [...], "revenue": [...], "static": [...], "redirects": [...], "no_response": [...],
            "bytes": [...]
          },
          "goals_by_name": {"purchase": [...], "add_to_cart": [...]},   # conversions per goal, minutes as series
          "totals": {"pageviews": n, "hits": n, ...},               # sums of the series
          "top": {"current": {"pages": [["/", 12], ...], "referrers": [...], "channels": [...],
                               "campaigns": [...], "status": [["200", 50], ...], "browsers": [...],
                               "os": [...], "devices": [...], "products": [...]},
                  "previous": {...same for the previous minute...}},
          "feed": [{"ts":..., "path":..., "visitor":..., "member": bool, "channel":..., "referrer_host":...,
                    "device":..., "browser":..., "session_id":..., "goal":...}, ...],  # newest first
          "goal_feed": [{"ts":..., "goal": "purchase", "value": 42.0, "path":..., "visitor_id":...,
                         "member_id":...}, ...]                   # goal conversions, newest first
        }
    """

    def __init__(self, redis_url: str, settings: Settings, top_n: int = 10):
        self.client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.keys = LiveKeys(settings.redis.key_prefix)
        self.window_s = settings.processing.visitors_now_window_s
        self.top_n = top_n

    def now(self) -> float:
        meta = self.client.hgetall(self.keys.meta)
        wall = time.time()
        try:
            last_ts = float(meta[b"last_event_ts"])
            last_write = float(meta[b"last_write"])
        except (KeyError, ValueError):
            return wall
        return last_ts + max(0.0, wall - last_write)

    def snapshot(self, minutes: int = 60, now: float | None = None) -> dict[str, Any]:
        k = self.keys
        now = self.now() if now is None else now
        cur = int(now // 60)
        mins = list(range(cur - minutes + 1, cur + 1))
        pipe = self.client.pipeline(transaction=False)
        for m in mins:
            pipe.hgetall(k.minute(m))
        for m in mins:
            pipe.hgetall(k.latency(m))
        for which in VISITOR_SETS:
            pipe.zcount(k.visitors(which), now - self.window_s, "+inf")
        for m in (cur, cur - 1):
            for dim in TOP_DIMENSIONS:
                pipe.zrevrange(k.top(dim, m), 0, self.top_n - 1, withscores=True)
        pipe.lrange(k.feed, 0, -1)
        for m in mins:
            pipe.zrange(k.top("goals", m), 0, -1, withscores=True)
        pipe.lrange(k.goal_feed, 0, -1)
        res = pipe.execute()
        counters, lats = res[:minutes], res[minutes:2 * minutes]
        pos = 2 * minutes
        uv = dict(zip(VISITOR_SETS, res[pos:pos + 4]))
        pos += 4
        series: dict[str, list] = {"minutes": [m * 60 for m in mins]}
        for name in COUNTER_FIELDS:
            conv = float if name in FLOAT_FIELDS else int
            series[name] = [conv(float(c.get(name.encode(), 0))) for c in counters]
        series["error_rate"] = [round((a + b) / h, 4) if h else 0.0
                                for a, b, h in zip(series["errors_4xx"], series["errors_5xx"], series["hits"])]
        p50, p95, p99 = [], [], []
        for h in lats:
            q = quantiles_from_hist({int(b): int(c) for b, c in h.items() if int(b) < LAT_BUCKETS}, (0.5, 0.95, 0.99))
            p50.append(q[0]), p95.append(q[1]), p99.append(q[2])
        series.update(p50_ms=p50, p95_ms=p95, p99_ms=p99)
        top: dict[str, dict[str, list]] = {}
        for label in ("current", "previous"):
            top[label] = {}
            for dim in TOP_DIMENSIONS:
                top[label][dim] = [[m.decode(errors="replace"), int(s)] for m, s in res[pos]]
                pos += 1
        feed = _json_entries(res[pos])
        pos += 1
        by_goal: dict[str, list[int]] = {}
        for i, members in enumerate(res[pos:pos + minutes]):
            for name, c in members:
                by_goal.setdefault(name.decode(errors="replace"), [0] * minutes)[i] = int(c)
        goal_feed = _json_entries(res[pos + minutes])
        return {
            "now": now, "minute": cur * 60, "window_s": self.window_s,
            # a visitor who logged in within the window is a member, whatever it did before: anonymous is
            # the rest, so members + anonymous = visitors (the :anon set also holds members' earlier hits)
            "visitors_now": uv["all"], "members_now": uv["member"], "anonymous_now": max(0, uv["all"] - uv["member"]),
            "bots_now": uv["bot"],
            "series": series,
            "totals": {name: sum(series[name]) for name in COUNTER_FIELDS},
            "top": top, "feed": feed, "goals_by_name": by_goal, "goal_feed": goal_feed,
        }

    def close(self) -> None:
        self.client.close()
