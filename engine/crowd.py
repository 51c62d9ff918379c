"""Simulated visitors for the demo: a deterministic visit plan and real HTTP clients that play it.

`plan_crowd(seed, visitors, ...)` decides everything up front (who is a member or a bot,
browser, referrer / UTM entry, the order of pages and products, think times), so the
same seed always gives the same plan. `Crowd(base_url, plan)` plays it against the demo
shop with one thread per visitor, each with its own cookie jar (the shop's `_vw_id`
cookie and, after POST /login, `member=<key>`); bots keep no cookies. A jar outlives its
round: the next round's visitor of that index (another member key) uses the same device,
still logged in as the previous one unless that one logged out (GET /logout).
"""
from __future__ import annotations

import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.cookiejar import CookieJar

from engine.demo_shop import CATEGORIES, FLAKY_PRODUCT, PRODUCTS, STATIC_ASSETS

log = logging.getLogger(__name__)

# Real User-Agent strings: (device class, UA, weight).
BROWSERS: tuple[tuple[str, str, int], ...] = (
    ("desktop", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/124.0.0.0 Safari/537.36", 30),
    ("desktop", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                "Version/17.4 Safari/605.1.15", 10),
    ("desktop", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", 8),
    ("desktop", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/123.0.0.0 Safari/537.36 Edg/123.0.2420.81", 5),
    ("mobile", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Version/17.4 Mobile/15E148 Safari/604.1", 22),
    ("mobile", "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/124.0.6367.82 Mobile Safari/537.36", 18),
    ("tablet", "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Version/17.4 Mobile/15E148 Safari/604.1", 7),
)
BOTS: tuple[str, ...] = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
)
# Entry sources: (name, weight). UTM links carry their own campaign parameters.
SOURCES: tuple[tuple[str, int], ...] = (("direct", 30), ("google", 30), ("facebook", 20), ("newsletter", 20))
CAMPAIGNS = ("spring_sale", "new_arrivals", "weekend_deal")


@dataclass(frozen=True)
class Step:
    method: str          # GET / POST
    path: str            # path with query string
    think_s: float       # pause before this request (reading time)
    form: tuple[tuple[str, str], ...] = ()
    referrer: str = ""   # external Referer for an entry page; internal steps use the previous page
    assets: bool = False  # an HTML page whose css/js/png the browser fetches too


@dataclass(frozen=True)
class Visit:
    start_s: float       # offset from the crowd's start
    source: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class VisitorPlan:
    index: int
    user_agent: str
    device: str          # desktop | mobile | tablet | bot
    member_key: str      # "" for anonymous visitors
    visits: tuple[Visit, ...]

    @property
    def is_bot(self) -> bool:
        return self.device == "bot"


def _entry(rng: random.Random, source: str) -> tuple[str, str]:
    """(landing path, external referrer) for an entry source."""
    cat = rng.choice(CATEGORIES)
    prod = rng.choice(PRODUCTS).id
    if source == "google":
        q = urllib.parse.quote_plus(f"{cat} online shop")
        return rng.choice([f"/category/{cat}", f"/product/{prod}"]), f"https://www.google.com/search?q={q}"
    if source == "facebook":
        camp = rng.choice(CAMPAIGNS)
        return (f"/product/{prod}?utm_source=facebook&utm_medium=social&utm_campaign={camp}",
                "https://www.facebook.com/")
    if source == "newsletter":
        camp = rng.choice(CAMPAIGNS)
        return f"/category/{cat}?utm_source=newsletter&utm_medium=email&utm_campaign={camp}", ""
    return "/", ""


def _think(rng: random.Random, scale: float) -> float:
    return round(rng.uniform(0.3, 2.5) * scale, 3)


def _human_visit(rng: random.Random, start_s: float, member_key: str, logged_in: bool,
                 scale: float) -> tuple[Visit, bool]:
    source = rng.choices([s for s, _ in SOURCES], [w for _, w in SOURCES])[0]
    landing, ext_ref = _entry(rng, source)
    steps = [Step("GET", landing, 0.0, referrer=ext_ref, assets=True)]
    viewed: list[str] = [p.split("/")[2].split("?")[0] for p in [landing] if p.startswith("/product/")]
    for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < 0.35:
            steps.append(Step("GET", f"/category/{rng.choice(CATEGORIES)}", _think(rng, scale), assets=True))
        elif r < 0.9:
            pid = rng.choice(PRODUCTS).id
            viewed.append(pid)
            steps.append(Step("GET", f"/product/{pid}", _think(rng, scale), assets=True))
        elif r < 0.95:
            steps.append(Step("GET", f"/product/{FLAKY_PRODUCT}", _think(rng, scale)))  # 500
        else:
            steps.append(Step("GET", rng.choice(["/old-offers", "/category/toys", "/product/999"]),
                              _think(rng, scale)))  # 404
    if member_key and not logged_in and rng.random() < 0.7:
        steps.append(Step("GET", "/login", _think(rng, scale), assets=True))
        steps.append(Step("POST", "/login", _think(rng, scale),
                          form=(("user", member_key), ("password", "demo-password"))))
        logged_in = True
    buy_p = 0.45 if member_key else 0.2
    viewed = [v for v in viewed if v != FLAKY_PRODUCT]
    if viewed and rng.random() < buy_p + 0.2:
        for pid in rng.sample(viewed, k=min(len(viewed), rng.randint(1, 2))):
            # 303 -> /cart; every other one names its product only in the form body (capture.request_bodies)
            url = "/cart/add" if len(steps) % 2 else f"/cart/add?product={pid}&qty=1"
            steps.append(Step("POST", url, _think(rng, scale), form=(("product", pid), ("qty", "1"))))
        if rng.random() < buy_p / (buy_p + 0.2):  # the rest abandon their cart
            steps.append(Step("GET", "/checkout", _think(rng, scale), assets=True))
            steps.append(Step("POST", "/order/complete", _think(rng, scale)))
    if logged_in and rng.random() < 0.25:  # a shared device: the next one to use it starts anonymous
        steps.append(Step("GET", "/logout", _think(rng, scale)))
        logged_in = False
    return Visit(round(start_s, 3), source, tuple(steps)), logged_in


def _bot_visit(rng: random.Random, start_s: float, scale: float) -> Visit:
    steps = [Step("GET", "/robots.txt", 0.0), Step("GET", "/sitemap.xml", 0.2 * scale)]
    for p in rng.sample(PRODUCTS, k=rng.randint(3, 8)):
        steps.append(Step("GET", f"/product/{p.id}", round(rng.uniform(0.1, 0.5) * scale, 3)))
    return Visit(round(start_s, 3), "bot", tuple(steps))


def plan_crowd(seed: int, visitors: int, duration_s: float = 60.0, bot_share: float = 0.05,
               member_share: float = 0.3, think_scale: float = 1.0) -> list[VisitorPlan]:
    """The crowd's whole plan for one round of `duration_s` seconds; same arguments -> same plan."""
    if visitors < 1:
        raise ValueError("the crowd needs at least 1 visitor")
    rng = random.Random(seed)
    plans = []
    n_bots = max(1, round(visitors * bot_share)) if visitors >= 5 else 0
    horizon = max(duration_s, 1.0)
    for i in range(visitors):
        is_bot = i >= visitors - n_bots
        if is_bot:
            ua, device, member = rng.choice(BOTS), "bot", ""
        else:
            device, ua, _ = rng.choices(BROWSERS, [w for *_, w in BROWSERS])[0]
            member = f"m{seed}-{i:04d}" if rng.random() < member_share else ""
        visits = []
        t = rng.uniform(0, horizon * 0.4)
        logged_in = False
        for _ in range(1 if is_bot else rng.choices([1, 2, 3], [60, 30, 10])[0]):
            if t >= horizon:
                break
            if is_bot:
                visit = _bot_visit(rng, t, think_scale)
            else:
                visit, logged_in = _human_visit(rng, t, member, logged_in, think_scale)
            visits.append(visit)
            t += sum(s.think_s for s in visit.steps) + rng.uniform(0.2, 0.6) * horizon
        plans.append(VisitorPlan(i, ua, device, member, tuple(visits)))
    return plans


@dataclass
class CrowdStats:
    requests: int = 0
    failures: int = 0   # connection errors (shop down), not HTTP error statuses
    visits: int = 0
    logins: int = 0
    orders: int = 0
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, status: int | None) -> None:
        with self.lock:
            self.requests += 1
            if status is None:
                self.failures += 1
            else:
                self.statuses[status] += 1


class Crowd:
    """Plays a crowd plan against `base_url` in background threads (one per visitor)."""

    def __init__(self, base_url: str, seed: int, visitors: int, round_s: float = 60.0,
                 repeat: bool = True, think_scale: float = 1.0, timeout_s: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.seed, self.visitors, self.round_s = seed, visitors, round_s
        self.repeat, self.think_scale, self.timeout_s = repeat, think_scale, timeout_s
        self.stats = CrowdStats()
        self._stop = threading.Event()
        self._jars = [CookieJar() for _ in range(visitors)]
        self._threads: list[threading.Thread] = []

    def plan(self, round_no: int) -> list[VisitorPlan]:
        return plan_crowd(self.seed + round_no, self.visitors, self.round_s, think_scale=self.think_scale)

    def start(self) -> "Crowd":
        t = threading.Thread(target=self._rounds, name="crowd", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a non-repeating crowd has played its plan; True when done."""
        if self._threads:
            self._threads[0].join(timeout)
            return not self._threads[0].is_alive()
        return True

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def _rounds(self) -> None:
        round_no = 0
        while not self._stop.is_set():
            plan = self.plan(round_no)
            t0 = time.monotonic()
            threads = [threading.Thread(target=self._play_visitor, args=(vp, t0), daemon=True,
                                        name=f"visitor-{vp.index}") for vp in plan]
            for t in threads:
                t.start()
            self._threads.extend(threads)
            for t in threads:
                t.join()
            self._threads = self._threads[:1]  # the round thread itself
            round_no += 1
            if not self.repeat:
                return
            # Next round starts when this round's time is up (visitors come back with their cookies).
            self._stop.wait(max(0.0, self.round_s - (time.monotonic() - t0)))

    def _opener(self, vp: VisitorPlan) -> urllib.request.OpenerDirector:
        handlers: list = [] if vp.is_bot else [urllib.request.HTTPCookieProcessor(self._jars[vp.index])]
        return urllib.request.build_opener(*handlers)

    def _play_visitor(self, vp: VisitorPlan, t0: float) -> None:
        opener = self._opener(vp)
        for visit in vp.visits:
            if self._stop.wait(max(0.0, t0 + visit.start_s - time.monotonic())):
                return
            with self.stats.lock:
                self.stats.visits += 1
            prev_url = ""
            for step in visit.steps:
                if self._stop.wait(step.think_s):
                    return
                url = self.base_url + step.path
                referrer = step.referrer or prev_url
                status = self._request(opener, vp, step, url, referrer)
                if step.assets and status == 200:
                    for asset in STATIC_ASSETS:
                        self._request(opener, vp, Step("GET", asset, 0.0), self.base_url + asset, url)
                if step.path == "/login" and step.method == "POST" and status == 200:
                    with self.stats.lock:
                        self.stats.logins += 1
                if step.path == "/order/complete" and status == 200:
                    with self.stats.lock:
                        self.stats.orders += 1
                if step.method == "GET":
                    prev_url = url

    def _request(self, opener, vp: VisitorPlan, step: Step, url: str, referrer: str) -> int | None:
        data = urllib.parse.urlencode(step.form).encode() if step.method == "POST" else None
        req = urllib.request.Request(url, data=data, method=step.method)
        req.add_header("User-Agent", vp.user_agent)
        req.add_header("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        if referrer:
            req.add_header("Referer", referrer)
        try:
            with opener.open(req, timeout=self.timeout_s) as resp:
                resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:  # 404 / 500: an answer, part of the show
            e.read()
            status = e.code
        except (urllib.error.URLError, OSError) as e:
            log.debug("visitor %d: %s %s failed: %s", vp.index, step.method, url, e)
            status = None
        self.stats.count(status)
        return status
