"""Faust agents of the analytics room, registered on the processors' app.

The worker imports this module (listed in processors/app.py EXTRA_AGENT_MODULES /
VisitwireApp.extra_agent_modules) and calls `register(vw, settings)`:
- `analytics-live-profiles` consumes visitwire.pageviews and keeps the live visitor
  profiles and member links in Redis (processors/analytics/live.py);
- every analytics.rfm_interval_s (leader only; the first time analytics.first_run_after_s
  after start) it re-scores members (RFM), stores segment changes in the history `segments`
  table and announces each on visitwire.segments; and right after the worker stored a batch
  with a member's purchase (VisitwireApp.purchase_listeners) it re-scores those buyers alone, so
  their change is out in seconds; a change is claimed in Redis before it is stored and announced
  (processors/analytics/claims.py), so two workers never announce the same change twice;
- on the same schedule with analytics.recommendation_refresh_s it recomputes the
  co-visitation table `recommendations` in the history store.
Blocking Redis / history calls run in the default executor; the loop keeps consuming.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import redis

from config.stats import SECOND_BOUNDS, Tally
from sinks.reads import rfm
from sinks.reads.goal_events import GoalConfig
from processors.analytics import recompute
from processors.analytics.claims import SegmentClaims
from processors.analytics.live import LiveProfiles

log = logging.getLogger(__name__)


class AnalyticsAgents:
    def __init__(self, vw: Any, settings: Any, history: Any = None, redis_url: str | None = None):
        self.vw = vw
        self.settings = settings
        self._history = history  # None: open settings.history.url for each scheduled run
        url = redis_url if redis_url is not None else settings.redis.url
        self.live = LiveProfiles.from_settings(url, settings) if url else None
        self.claims = SegmentClaims.from_url(url, settings.redis.key_prefix) if url else None
        self.pageviews_seen = 0
        self.bad_records = 0
        self.redis_errors = 0
        self.segment_changes = 0
        self.rfm_runs = 0
        self.rescore_seconds = Tally(SECOND_BOUNDS)  # RFM re-score durations (engine/metrics.py)
        self.recommendation_pairs = 0
        self.purchase_rescores = 0
        self.buyers_rescored = 0
        self._rescore: asyncio.Task | None = None  # the re-score a purchase started
        self._buyers: set[str] = set()  # members whose purchases are stored and not re-scored yet
        # member stats of the last full run: the population the buyers' r, f, m quintiles are taken among
        self._population: list[dict] | None = None

    # -- live profiles ----------------------------------------------------------------------------
    def decode(self, values: list) -> list[dict]:
        out = []
        for v in values:
            try:
                rec = orjson.loads(v) if isinstance(v, (bytes, str)) else v
            except orjson.JSONDecodeError:
                rec = None
            if isinstance(rec, dict) and isinstance(rec.get("visitor_id"), str) and rec["visitor_id"] \
                    and isinstance(rec.get("ts"), (int, float)) and not isinstance(rec.get("ts"), bool) \
                    and isinstance(rec.get("session_id", ""), str) and isinstance(rec.get("member_id", ""), str):
                out.append(rec)
            else:
                self.bad_records += 1
                if self.bad_records & (self.bad_records - 1) == 0:  # 1, 2, 4, 8 ...: logged, not flooded
                    log.warning("analytics: dropped %d malformed page view record(s) so far", self.bad_records)
        return out

    def apply_live(self, values: list) -> int:
        pvs = self.decode(values)
        self.pageviews_seen += len(pvs)
        if self.live is None or not pvs:
            return 0
        try:
            return self.live.apply(pvs)
        except (ValueError, TypeError) as e:  # a record of an unexpected shape: drop the batch, keep consuming
            self.bad_records += len(pvs)
            log.warning("analytics: dropped a batch of %d page view(s) the live profiles cannot use: %s", len(pvs), e)
            return 0
        except redis.RedisError as e:
            self.redis_errors += 1
            if self.redis_errors & (self.redis_errors - 1) == 0:
                log.warning("analytics: live profiles not updated (%s; %d batch(es) so far); check redis.url",
                            e, self.redis_errors)
            return 0

    # -- scheduled jobs ---------------------------------------------------------------------------
    def _with_history(self, fn):
        if self._history is not None:
            return fn(self._history)
        from sinks.history import open_history

        store = open_history(self.settings.history.url)  # chdb: shares the engine's session
        try:
            return fn(store)
        finally:
            store.close()

    def recompute_segments(self, now: float | None = None) -> list[dict]:
        """Every member (the scheduled run)."""
        t0 = time.perf_counter()
        scored, changes = self._with_history(
            lambda s: recompute.recompute_segments(s, now if now is not None else time.time(),
                                                   GoalConfig.from_settings(self.settings),
                                                   rfm.SegmentConfig.from_settings(self.settings), self.claims))
        self._population = [{k: m[k] for k in recompute.POPULATION_KEYS} for m in scored]
        self.rfm_runs += 1
        self.rescore_seconds.observe(time.perf_counter() - t0)
        self.segment_changes += len(changes)
        return changes

    def rescore_buyers(self, buyers: set[str], now: float | None = None) -> list[dict]:
        """Only these members (a purchase's); every member when no full run gave the population yet."""
        if self._population is None:
            return self.recompute_segments(now)
        t0 = time.perf_counter()
        _, changes = self._with_history(
            lambda s: recompute.rescore_members(s, sorted(buyers), self._population,
                                                now if now is not None else time.time(),
                                                GoalConfig.from_settings(self.settings),
                                                rfm.SegmentConfig.from_settings(self.settings), self.claims))
        self.buyers_rescored += len(buyers)
        self.rescore_seconds.observe(time.perf_counter() - t0)
        self.segment_changes += len(changes)
        return changes

    def refresh_recommendations(self, now: float | None = None) -> int:
        n = self._with_history(lambda s: recompute.refresh_recommendations(
            s, self.settings.analytics.recommendation_min_support, now))
        self.recommendation_pairs = n
        return n

    def on_purchases(self, purchases: list[tuple[str, float]]) -> None:
        """Purchases (member_id, ts) are in the history store (the worker calls this after its flush): re-score
        their buyers now, so a buyer's segment change is on visitwire.segments within seconds, not at the next
        scheduled run. One re-score at a time; buyers whose purchases are stored meanwhile get one more run
        right after it."""
        self._buyers.update(m for m, _ in purchases if m)
        if not self._buyers or (self._rescore is not None and not self._rescore.done()):
            return
        self._rescore = asyncio.ensure_future(self._rescore_now())

    async def _rescore_now(self) -> None:
        loop = asyncio.get_running_loop()
        while self._buyers:
            buyers, self._buyers = self._buyers, set()
            try:
                changes = await loop.run_in_executor(None, self.rescore_buyers, buyers)
                await self.announce(changes)
                self.purchase_rescores += 1
            except Exception as e:  # the store away: the scheduled run catches up
                log.warning("analytics: re-score after a purchase failed (%s); the scheduled run will catch up", e)

    async def announce(self, changes: list[dict]) -> None:
        for c in changes:
            await self.vw.segments_topic.send(key=c["member_id"].encode(), value=orjson.dumps(c))

    # -- wiring -----------------------------------------------------------------------------------
    def install(self) -> None:
        app, a = self.vw.app, self.settings.analytics
        self.vw.purchase_listeners.append(self.on_purchases)

        @app.agent(self.vw.pageviews_topic, name="analytics-live-profiles")
        async def live_profiles(stream):
            loop = asyncio.get_running_loop()
            async for batch in stream.take(1000, within=0.5):
                await loop.run_in_executor(None, self.apply_live, batch)

        async def rfm_job():
            try:
                changes = await asyncio.get_running_loop().run_in_executor(None, self.recompute_segments)
            except Exception as e:  # the store away or a query failing must not stop the worker
                log.warning("analytics: RFM recompute failed (%s); retrying in %.0f s", e, a.rfm_interval_s)
                return
            await self.announce(changes)
            if changes:
                log.info("analytics: %d member(s) changed segment", len(changes))

        async def recommendations_job():
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.refresh_recommendations)
            except Exception as e:
                log.warning("analytics: recommendation refresh failed (%s); retrying in %.0f s",
                            e, a.recommendation_refresh_s)

        self._schedule("analytics-rfm", a.rfm_interval_s, rfm_job)
        self._schedule("analytics-recommendations", a.recommendation_refresh_s, recommendations_job)

    def _schedule(self, name: str, every_s: float, job) -> None:
        """Run `job` on the group leader first_run_after_s after start, then every `every_s` (a Faust
        timer would first wait a whole interval: an hour by default)."""
        app, first_s = self.vw.app, self.settings.analytics.first_run_after_s

        async def scheduled():
            await asyncio.sleep(first_s)
            while True:
                if app.is_leader():
                    await job()
                await asyncio.sleep(every_s)
        scheduled.__name__ = scheduled.__qualname__ = name.replace("-", "_")
        app.task(scheduled)


def register(vw: Any, settings: Any, history: Any = None, redis_url: str | None = None) -> AnalyticsAgents:
    """The hook the worker calls; returns the agents object (figures, and for tests)."""
    agents = AnalyticsAgents(vw, settings, history, redis_url)
    agents.install()
    return agents
