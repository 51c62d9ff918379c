"""`visitwire demo`: the product working on a fresh machine, with no web server of your own.

A local web shop (engine/demo_shop.py) on a free loopback port, a crowd of simulated
visitors (engine/crowd.py) browsing it, live capture on `lo` filtered to the shop's port,
and the whole embedded pipeline (engine/runtime.py) with a generated dashboard token.
Every few seconds the terminal shows live figures read back from Redis.
"""
from __future__ import annotations

import asyncio
import logging
import time

from rich.console import Console
from rich.table import Table

from config.settings import BodyRule, Settings
from engine.api_token import new_token
from engine.crowd import BOTS, Crowd
from engine.demo_shop import DemoShop
from engine.runtime import (RunSummary, RuntimeFailure, exit_code, print_summary, quiet_library_logs, run_loop,
                            run_runtime)
from engine.supervisor import Supervisor

log = logging.getLogger(__name__)

FIGURES_EVERY_S = 5.0
# decoder counters that stand for requests the shop served but capture could not pair into a transaction
DECODER_LOSSES = (("gaps", "sequence gaps (lost segments)"), ("parse_errors", "HTTP parse errors"),
                  ("non_http", "flows not recognised as HTTP"), ("orphan_responses", "responses without their request"),
                  ("dropped_pending", "requests dropped beyond max_pending_requests"),
                  ("dropped_overflow_segments", "segments dropped beyond the flow buffer limit"),
                  ("truncated_frames", "truncated frames"), ("malformed", "malformed frames"),
                  ("internal_errors", "internal errors"))
CAPTURE_READY_TIMEOUT_S = 60.0


def demo_settings(settings: Settings, shop_port: int) -> Settings:
    """The user's settings, pointed at the demo shop: capture lo on the shop's port, a web token."""
    s = settings.model_copy(deep=True)
    s.capture.iface = "lo"
    s.capture.ports = [shop_port]
    s.processing.site_hosts = sorted(set(s.processing.site_hosts) | {"127.0.0.1", "localhost"})
    if not s.capture.request_bodies:  # the shop's cart form names its product in the body too
        s.capture.request_bodies = [BodyRule(path="/cart/add", fields=["product", "qty"])]
    if not s.web.token:
        s.web.token = new_token()
    return s


def figures_table(snap: dict, crowd: Crowd, elapsed_s: float) -> Table:
    series = snap.get("series", {})
    pv = series.get("pageviews", [])
    sessions = series.get("sessions", [])
    t = Table(title=f"live, {elapsed_s:.0f} s in", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("visitors now", f"{snap.get('visitors_now', 0)}  (members {snap.get('members_now', 0)}, "
                              f"anonymous {snap.get('anonymous_now', 0)}, bots {snap.get('bots_now', 0)})")
    t.add_row("page views / min", f"{pv[-1] if pv else 0} this minute, {pv[-2] if len(pv) > 1 else 0} last minute")
    t.add_row("sessions started", f"{sum(sessions)} in the last hour")
    top = snap.get("top", {}).get("current", {}).get("pages", [])[:5]
    t.add_row("top pages", ", ".join(f"{p} ({n})" for p, n in top) or "-")
    t.add_row("crowd", f"{crowd.stats.requests} requests, {crowd.stats.logins} logins, {crowd.stats.orders} orders")
    return t


async def _wait_capture_ready(rt, stop: asyncio.Event) -> bool:
    deadline = time.monotonic() + CAPTURE_READY_TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        if rt.capture is not None and rt.capture.progress.started:
            return True
        await asyncio.sleep(0.1)
    return not stop.is_set()


def _play(shop: DemoShop, seed: int, visitors: int, duration: float, console: Console):
    """The demo's side show: the crowd, live figures, and the stop after `duration` seconds."""
    async def side(rt, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        if not await _wait_capture_ready(rt, stop):
            return
        crowd = Crowd(shop.url, seed=seed, visitors=visitors, round_s=60.0).start()
        console.print(f"[bold]demo shop[/] {shop.url}  [bold]crowd[/] {visitors} visitors (seed {seed})")
        t0 = time.monotonic()
        try:
            while not stop.is_set():
                if duration and time.monotonic() - t0 >= duration:
                    break
                try:
                    await asyncio.wait_for(stop.wait(), FIGURES_EVERY_S)
                except asyncio.TimeoutError:
                    pass
                try:
                    snap = await loop.run_in_executor(None, rt.live_reader.snapshot, 60)
                    console.print(figures_table(snap, crowd, time.monotonic() - t0))
                except Exception as e:  # figures are a nicety; the pipeline keeps going
                    log.warning("live figures unavailable: %s", e)
        finally:
            await loop.run_in_executor(None, crowd.stop)
            await asyncio.sleep(1.0)  # last responses leave the wire before capture stops
            stop.set()
    return side


def capture_account(served: int, before: int, after: int, s: RunSummary) -> list[tuple[str, str]]:
    """The closing table's rows: requests the shop served beside transactions captured, and where any
    difference went (`before` / `after`: served outside the capture window)."""
    captured = s.transactions
    rows = [("requests served by the shop", f"{served:,}"),
            ("transactions captured", f"{captured:,} of {served:,}" + (" (all)" if captured == served else ""))]
    if captured == served:
        return rows
    causes = []
    if before:
        causes.append(f"{before:,} served before capture was live")
    if after:
        causes.append(f"{after:,} served after capture was told to stop")
    if s.source.get("kernel_drops"):
        causes.append(f"{s.source['kernel_drops']:,} packets dropped by the kernel (capture fell behind)")
    causes += [f"{s.decoder[key]:,} {what}" for key, what in DECODER_LOSSES if s.decoder.get(key)]
    what = "not captured" if captured < served else "captured beyond what the shop served"
    rows.append((f"[red]{what}", f"{abs(served - captured):,}: " + ("; ".join(causes) or "no drop was counted")))
    return rows


def run_demo(settings: Settings, duration: float = 0, visitors: int = 60, seed: int = 7,
             truth: str | None = None) -> int:
    console = Console(stderr=True)
    quiet_library_logs(settings)
    if visitors < 1:
        console.print("[red]--visitors must be at least 1")
        return 2
    with DemoShop(truth=truth, bot_agents=BOTS) as shop:
        s = demo_settings(settings, shop.port)
        try:
            with Supervisor(s) as sup:
                s = sup.prepare()
                summary = run_loop(run_runtime(s, sup, pcap=None, console=console, close_sessions=True,
                                                  extra=_play(shop, seed, visitors, duration, console)))
        except RuntimeFailure as e:
            console.print(f"[red]{e}", soft_wrap=True)
            return 2
        served = shop.counters
    requests = sum(n for k, n in served.items() if k.startswith("status_"))
    before, after = shop.served_outside(summary.live_at or float("inf"), summary.stop_at or float("inf"))
    summary.extra_rows += capture_account(requests, before, after, summary)
    summary.extra_rows.append(("orders placed", f"{served['orders']:,}"))
    print_summary(Console(), summary, title="visitwire demo")
    return exit_code(summary)
