"""Alert rules on the live figures (web.alert_rules) and the webhook that hears of every alert (web.alert_webhook).

A rule compares one live figure with its limit: visitors_now / members_now / bots_now as they are,
per-minute figures (pageviews, sessions, orders, carts, revenue) over the last complete minute,
error_rate / p95_ms over the minute the banner judges, conversion_rate over the snapshot's hour. Crossed
rules join the snapshot's `alerts` (the screen's banner). The notifier reads the snapshot every
web.alert_check_s and POSTs {"state": "firing" | "resolved", ...the alert} to the webhook when an alert
starts and when it ends; a webhook that fails is said in one log line and tried again at the next change.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import aiohttp

from engine.web.live_stream import cancel_and_wait

log = logging.getLogger(__name__)
PER_MINUTE = ("pageviews", "sessions", "orders", "carts", "revenue")


def figure(snapshot: dict, metric: str) -> float | None:
    """The live value a rule compares, None when the snapshot has none yet."""
    series = snapshot.get("series") or {}
    if metric in PER_MINUTE:
        values = series.get(metric) or []
        return values[-2] if len(values) >= 2 else None  # the last complete minute
    if metric in ("error_rate", "p95_ms"):
        hits, values = series.get("hits") or [], series.get(metric) or []
        back = 1 if hits and hits[-1] else 2
        return values[-back] if len(values) >= back else None
    if metric == "conversion_rate":
        return (snapshot.get("commerce") or {}).get("conversion_rate")
    return snapshot.get(metric)


def rule_alerts(snapshot: dict, rules) -> list[dict[str, Any]]:
    out = []
    for r in rules:
        value = figure(snapshot, r.metric)
        if value is None:
            continue
        if r.above is not None and value > r.above:
            limit, word = r.above, "above"
        elif r.below is not None and value < r.below:
            limit, word = r.below, "below"
        else:
            continue
        out.append({"kind": "rule", "name": r.name, "metric": r.metric, "value": value, "limit": limit,
                    "message": f"{r.name}: {r.metric} {value:g} is {word} {limit:g}"})
    return out


def alert_key(alert: dict) -> str:
    return f"rule:{alert['name']}" if alert.get("kind") == "rule" else alert["kind"]


class AlertNotifier:
    """Tells the webhook when an alert starts and ends; `payload` returns the snapshot with its alerts."""

    def __init__(self, payload: Callable[[], Awaitable[dict]], url: str, every_s: float):
        self.payload, self.url, self.every_s = payload, url, every_s
        self.firing: dict[str, dict] = {}
        self.sent = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    await self.check(http)
                except Exception as e:  # live state away, a bug: keep watching
                    log.warning("alert check failed: %s", e)
                await asyncio.sleep(self.every_s)

    async def check(self, http: aiohttp.ClientSession) -> None:
        snapshot = await self.payload()
        now = {alert_key(a): a for a in snapshot.get("alerts") or []}
        changes = [("firing", a) for k, a in now.items() if k not in self.firing]
        changes += [("resolved", a) for k, a in self.firing.items() if k not in now]
        self.firing = now
        for state, alert in changes:
            body = {"state": state, "at": time.time(), **alert}
            try:
                async with http.post(self.url, json=body) as resp:
                    if resp.status >= 300:
                        log.warning("alert webhook %s answered %d for %s", self.url, resp.status, alert["message"])
                    else:
                        self.sent += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                log.warning("alert webhook %s unreachable (%s): %s", self.url, type(e).__name__, alert["message"])
