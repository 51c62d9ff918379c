"""Synthetic visit events for tests and benchmarks, with their ground truth: the one generator module.

- `make_hit`: one hit row (config/events.py's fields); every generator here builds its hits with it.
- `crowd`: the hits a crowd of visitors sends a shop, in time order, with per-minute truth (processors' input).
- `make_hits` / `make_pageviews` / `make_sessions`: random rows of a small shop over a few minutes (the stores).
- `generate`: a whole shop history (hits, page views, sessions, goals) with its ground truth (the read side).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone

from config.events import HIT_FIELD_NAMES, PAGEVIEW_FIELD_NAMES, SESSION_FIELD_NAMES

# -- one hit, and a crowd's hits ----------------------------------------------------------------------------
UAS = {
    "chrome": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36",
    "iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.0 Mobile/15E148 Safari/604.1",
    "firefox": "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
}


def make_hit(event_id: str, ts: float, visitor: str, path: str = "/", *, method: str = "GET", status: int | None = 200,
             content_type: str = "text/html", ua: str = UAS["chrome"], referrer: str = "", query: str = "",
             host: str = "shop.example", member: str = "", latency_ms: float | None = 12.5,
             extra: dict | None = None, **fields) -> dict:
    """One hit: a browser's request to the shop and its response (none when status is None). `fields` set the
    others (addresses, response size, a uri other than path + query)."""
    row = {
        "event_id": event_id, "ts": ts, "client_ip": "10.0.0.1", "client_port": 40000, "server_ip": "10.0.0.2",
        "server_port": 80, "method": method, "host": host, "uri": path + ("?" + query if query else ""),
        "path": path, "query": query, "referrer": referrer, "user_agent": ua, "status": status,
        "resp_bytes": 1234, "content_type": content_type if status is not None else "",
        "latency_ms": latency_ms if status is not None else None, "visitor_id": visitor, "member_id": member,
        "http_version": "1.1", "no_response": status is None, "extra": extra or {},
    }
    row.update(fields)
    return row


@dataclass
class Traffic:
    hits: list[dict] = field(default_factory=list)
    pageviews_per_minute: dict[int, int] = field(default_factory=dict)  # epoch minute -> page views
    pages: dict[tuple[int, str], int] = field(default_factory=dict)     # (minute, path) -> page views
    visitors_by_minute: dict[int, set] = field(default_factory=dict)   # non-bot visitors
    pageview_ids: set = field(default_factory=set)
    sessions: int = 0


def eid(*parts) -> str:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).hexdigest()


def crowd(n_visitors: int, start: float, *, seed: int = 1, pages_per_visit: int = 4, gap_s: float = 7.0,
          visits: int = 1, visit_gap_s: float = 4000.0) -> Traffic:
    """Visitors browsing a shop: page views (each with a css + a js asset), some bots, 404s, redirects.
    Each visitor makes `visits` visits separated by `visit_gap_s` (> idle timeout -> new session)."""
    rng = random.Random(seed)
    t = Traffic()
    paths = ["/", "/category/shoes", "/product/p1", "/product/p2", "/cart", "/checkout"]
    for v in range(n_visitors):
        visitor = f"v{v:05d}"
        bot = v % 10 == 9
        ua = UAS["googlebot"] if bot else rng.choice([UAS["chrome"], UAS["iphone"], UAS["firefox"]])
        member = f"m{v}" if v % 3 == 0 else ""
        for visit in range(visits):
            ts = start + rng.uniform(0, 30) + visit * visit_gap_s
            if not bot:
                t.sessions += 1
            for i in range(pages_per_visit):
                path = rng.choice(paths)
                h = make_hit(eid(visitor, visit, i), ts, visitor, path, ua=ua, member=member,
                             referrer="https://www.google.com/search?q=x" if i == 0 else "http://shop.example/",
                             latency_ms=rng.uniform(1, 200))
                t.hits.append(h)
                if not bot:
                    m = int(ts // 60)
                    t.pageviews_per_minute[m] = t.pageviews_per_minute.get(m, 0) + 1
                    t.pages[(m, path)] = t.pages.get((m, path), 0) + 1
                    t.pageview_ids.add(h["event_id"])
                for asset, ct in (("/static/app.css", "text/css"), ("/static/app.js", "application/javascript")):
                    t.hits.append(make_hit(eid(visitor, visit, i, asset), ts + 0.05, visitor, asset, ua=ua,
                                           content_type=ct, member=member))
                if not bot:
                    t.visitors_by_minute.setdefault(int(ts // 60), set()).add(visitor)
                ts += gap_s * rng.uniform(0.5, 1.5)
            t.hits.append(make_hit(eid(visitor, visit, "404"), ts, visitor, "/missing", status=404, ua=ua,
                                   member=member))
            if not bot:
                t.visitors_by_minute.setdefault(int(ts // 60), set()).add(visitor)
    t.hits.sort(key=lambda h: h["ts"])  # as a capture agent publishes them: in time order
    return t


# -- random rows of a small shop over a few minutes (the history tests) -------------------------------------
ROWS_T0 = 1_763_892_000  # 2025-11-23 10:00:00 UTC, a whole minute
PATHS = ["/", "/product/1", "/product/2", "/cart", "/checkout"]
HOSTS = ["shop.example", "blog.example"]


def make_hits(n: int, seed: int = 1, minutes: int = 5, prefix: str = "h") -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        status = rnd.choice([200, 200, 200, 200, 304, 404, 500, None])
        ts = ROWS_T0 + rnd.uniform(0, 60 * minutes)
        client_ip, client_port = f"10.0.{rnd.randint(0, 3)}.{rnd.randint(1, 254)}", rnd.randint(1024, 65535)
        method, host, path, resp_bytes = rnd.choice(["GET", "GET", "POST"]), rnd.choice(HOSTS), rnd.choice(PATHS), \
            rnd.randint(0, 50_000)
        latency = None if status is None else round(rnd.lognormvariate(3, 1), 3)
        visitor, member = f"v{rnd.randint(0, 40)}", rnd.choice(["", "", "m1", "m2"])
        out.append(make_hit(f"{prefix}{seed}-{i:06d}", ts, visitor, path, method=method, status=status,
                            ua="Mozilla/5.0", query="a=1", host=host, member=member, latency_ms=latency,
                            extra={"x-order-amount": str(rnd.randint(1, 99))}, client_ip=client_ip,
                            client_port=client_port, server_ip="10.1.0.1", resp_bytes=resp_bytes, uri="/x?a=1"))
    return out


def make_pageviews(n: int, seed: int = 2, minutes: int = 5) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        path = rnd.choice(PATHS)
        out.append({
            "event_id": f"p{seed}-{i:06d}", "ts": ROWS_T0 + rnd.uniform(0, 60 * minutes),
            "visitor_id": f"v{rnd.randint(0, 30)}",
            "member_id": "", "session_id": f"s{rnd.randint(0, 20)}", "host": rnd.choice(HOSTS), "path": path,
            "query": "", "method": "GET", "status": 200, "latency_ms": 12.5, "referrer": "", "referrer_host": "",
            "channel": rnd.choice(["direct", "search", "social"]), "utm_source": "", "utm_medium": "",
            "utm_campaign": "",
            "utm_term": "", "utm_content": "", "browser": rnd.choice(["Chrome", "Firefox"]), "os": "Linux",
            "device": "desktop", "is_bot": rnd.random() < 0.1, "page_group": "product" if "product" in path else "",
            "section": "", "product_id": path.rsplit("/", 1)[-1] if "product" in path else "", "category": "",
            "menu": "", "goal": "", "goal_value": 0.0, "country": rnd.choice(["US", "DE", ""]), "city": "",
        })
    return out


def make_sessions(n: int, seed: int = 3) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        start = ROWS_T0 + rnd.uniform(0, 300)
        pv = rnd.randint(1, 6)
        dur = 0.0 if pv == 1 else rnd.uniform(5, 600)
        out.append({
            "session_id": f"s{seed}-{i:05d}", "visitor_id": f"v{i % 17}", "member_id": "", "start": start,
            "end": start + dur, "duration": dur, "pageviews": pv, "entry_page": "/", "exit_page": "/cart",
            "bounce": pv == 1, "channel": "direct", "referrer_host": "", "utm_source": "", "utm_medium": "",
            "utm_campaign": "", "browser": "Chrome", "os": "Linux", "device": "desktop", "is_bot": False,
            "close_reason": "idle", "goals": rnd.randint(0, 1), "revenue": round(rnd.uniform(0, 100), 2),
        })
    return out


# -- a shop history with its ground truth (the read side) ------------------------------------------------------
# The shop: a deterministic synthetic history (hits, page views, sessions) for tests, demos and benchmarks.
#
# Visitors browse categories and products, some add to cart and buy; members log in
# part-way through their history (earlier visits are anonymous, and so are their orders;
# the pages before the login in the visit of the login are the member's), some members
# use a second device; a few bots crawl products. As in the real pipeline (processors/enrich.py),
# every request is a hit, GET pages are also page views, and goal requests (POST /cart/add,
# POST /login, POST /order/complete with its amount in the captured x-order-amount header)
# are hits only; session rows count the goals and revenue of their visit. Rows have exactly
# the fields of config/events.py, so they can be written through any HistoryStore.
# Monday 2026-09-07 00:00 UTC: cohorts start on week boundaries.
SHOP_T0 = datetime(2026, 9, 7, tzinfo=timezone.utc).timestamp()
WEEK_S = 7 * 86400
CATEGORIES = ("shoes", "bags", "hats", "coats")
# The default processing.goals: (method, path) -> goal name.
GOALS = {("POST", "/cart/add"): "add_to_cart", ("POST", "/order/complete"): "purchase", ("POST", "/login"): "login"}


@dataclass
class Dataset:
    hits: list[dict] = field(default_factory=list)
    pageviews: list[dict] = field(default_factory=list)
    sessions: list[dict] = field(default_factory=list)
    # Goal requests with the session they belong to: {"event_id", "visitor_id", "session_id", "ts", "path",
    # "goal", "goal_value", "is_bot"} (ground truth for tests).
    goals: list[dict] = field(default_factory=list)
    now: float = 0.0
    products: list[str] = field(default_factory=list)
    # (product_a, product_b): only bots ever view them together.
    bot_only_pair: tuple[str, str] = ("", "")

    @property
    def human_pageviews(self) -> list[dict]:
        return [p for p in self.pageviews if not p["is_bot"]]

    @property
    def human_goals(self) -> list[dict]:
        """Goal requests of humans (hits only), with their true session."""
        return [g for g in self.goals if not g["is_bot"]]

    def write_to(self, store) -> None:
        """Its hits, page views and sessions into a history store (again: at-least-once delivery)."""
        store.write("hits", self.hits)
        store.write("pageviews", self.pageviews)
        store.write("sessions", self.sessions)

    def owners(self) -> dict[str, str]:
        """event_id -> member of every human page view and goal request, by the identity rule written out apart
        from the SQL (sinks/reads/members.py): the member the request carried; else the first member of its
        visit when the request came before that member's first page view; else nobody."""
        human, goals = self.human_pageviews, self.human_goals
        carried = {h["event_id"]: h["member_id"] for h in self.hits}
        first = {}
        for sid, pvs in visits(human).items():
            logged = [p for p in pvs if p["member_id"]]
            if logged:
                first[sid] = (logged[0]["member_id"], logged[0]["ts"])
        out = {}
        for e in human + goals:
            m = carried[e["event_id"]]
            if not m and e["session_id"] in first and e["ts"] < first[e["session_id"]][1]:
                m = first[e["session_id"]][0]
            out[e["event_id"]] = m
        return out


def visits(events: list[dict]) -> dict[str, list[dict]]:
    """Events by session id, each visit in time order (ties by event id)."""
    by: dict[str, list[dict]] = {}
    for e in events:
        by.setdefault(e["session_id"], []).append(e)
    for lst in by.values():
        lst.sort(key=lambda e: (e["ts"], e["event_id"]))
    return by


def _hex(*parts) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).hexdigest()


def page_fields(path: str) -> dict:
    """What the default processing.url_rules make of a GET page path."""
    parts = path.strip("/").split("/")
    f = {"page_group": "", "section": "", "product_id": "", "category": "", "menu": "", "goal": "", "goal_value": 0.0}
    if path == "/":
        f.update(page_group="home", section="home")
    elif parts[0] == "product":
        f.update(page_group="product", section="shop", product_id=parts[1])
    elif parts[0] == "category":
        f.update(page_group="category", section="shop", category=parts[1], menu="catalog")
    elif path == "/cart":
        f.update(page_group="cart", section="checkout")
    elif path == "/checkout":
        f.update(page_group="checkout", section="checkout")
    elif path == "/login":
        f.update(page_group="login", section="account")
    return f


def generate(seed: int = 7, visitors: int = 80, members: int = 24, weeks: int = 8, products: int = 24,
             bots: int = 2) -> Dataset:
    rnd = random.Random(seed)
    ds = Dataset(now=SHOP_T0 + weeks * WEEK_S, products=[f"p{i:02d}" for i in range(products)])
    catalog = {p: CATEGORIES[i % len(CATEGORIES)] for i, p in enumerate(ds.products)}
    # Humans never view the last two products in one session; bots always do.
    pa, pb = ds.products[-2], ds.products[-1]
    ds.bot_only_pair = (pa, pb)
    devices = ("desktop", "mobile", "tablet")
    channels = (("direct", "", ""), ("search", "www.google.com", ""), ("social", "facebook.com", "spring"),
                ("other", "news.example", "newsletter"))

    def session_paths() -> list[tuple[str, str]]:
        paths: list[tuple[str, str]] = [(rnd.choice(["/", "/", f"/category/{rnd.choice(CATEGORIES)}"]), "GET")]
        viewed: list[str] = []
        for _ in range(rnd.randint(0, 5)):
            # Products 0 and 1 are viewed together often: a clear co-visitation signal.
            p = ds.products[1] if viewed and viewed[-1] == ds.products[0] and rnd.random() < 0.8 else \
                rnd.choice(ds.products[:-2] if rnd.random() < 0.9 else [pa, pb])
            if p in (pa, pb) and ({pa, pb} - {p}) & set(viewed):
                continue
            viewed.append(p)
            paths.append((f"/product/{p}", "GET"))
        if viewed and rnd.random() < 0.5:
            # the cart add names its product in the query (or, for odd visitors, in its form body); the order
            # lists its items (the last two distinct products viewed) in the captured x-order-items header
            cart = list(dict.fromkeys(reversed(viewed)))[:2]
            paths += [(f"/cart/add?product={viewed[-1]}&qty=1", "POST"), ("/cart", "GET")]
            if rnd.random() < 0.6:
                paths.append(("/checkout", "GET"))
                if rnd.random() < 0.7:
                    paths.append(("/order/complete", "POST", cart))
        return paths

    people = []
    for v in range(visitors):
        member = f"m{v:03d}" if v < members else ""
        ids = [_hex("visitor", seed, v)]
        if member and v % 4 == 0:
            ids.append(_hex("visitor2", seed, v))  # a second device, logged in from its first visit
        n_sessions = 1 + int(rnd.paretovariate(1.5)) if v != 0 else 12
        first_week = rnd.randrange(weeks)
        login_at = rnd.randrange(n_sessions) if member else None
        if v == 0:
            login_at = 0  # the VIP logs in on its first visit: its orders are its own from the start
        people.append((v, member, ids, n_sessions, first_week, login_at))

    for v, member, ids, n_sessions, first_week, login_at in people:
        device = devices[v % 3]
        starts = sorted(SHOP_T0 + rnd.uniform(first_week * WEEK_S, weeks * WEEK_S - 3600) for _ in range(n_sessions))
        if v == 0:  # the obvious VIP: visits right up to "now"
            starts[-1] = ds.now - 7200
        for i in range(1, len(starts)):  # visits of one visitor are hours apart: separate sessions
            starts[i] = max(starts[i], starts[i - 1] + 7200)
        for s_idx, start in enumerate(starts):
            vid = ids[1] if len(ids) > 1 and s_idx % 3 == 2 else ids[0]
            logged_in = bool(member) and login_at is not None and (s_idx > login_at or vid != ids[0])
            paths = session_paths()
            if member and s_idx == login_at and vid == ids[0]:
                paths.insert(1, ("/login", "POST"))
            ch, ref, campaign = channels[rnd.randrange(len(channels))]
            ts = start
            sid = _hex("session", seed, v, s_idx)
            for i, (uri, method, *cart) in enumerate(paths):
                if i:
                    ts += rnd.randint(5, 120)
                eid = _hex("req", seed, v, s_idx, i)
                path, _, query = uri.partition("?")
                goal = GOALS.get((method, path), "")
                value = (float(rnd.randint(10, 200)) if v != 0 else 500.0) if goal == "purchase" else 0.0
                extra = {"x-order-amount": f"{value:.2f}", "x-order-items": order_items(cart[0], value)} \
                    if goal == "purchase" else {}
                if goal == "add_to_cart" and v % 2:
                    # this visitor's shop posts the cart add as a form: capture.request_bodies' named fields
                    extra = {f"body:{k}": x for k, x in (kv.split("=") for kv in query.split("&"))}
                    query = ""
                if goal == "login":
                    logged_in = True  # the login response sets the member cookie: capture reads it there
                mid = member if logged_in else ""
                ds.hits.append(shop_hit(eid, ts, vid, mid, path, method, ref, device, False, extra, query))
                if goal:
                    ds.goals.append({"event_id": eid, "visitor_id": vid, "session_id": sid, "ts": round(ts, 3),
                                     "path": path, "goal": goal, "goal_value": value, "is_bot": False})
                else:
                    f = page_fields(path)
                    if f["product_id"]:
                        f["category"] = catalog[f["product_id"]]
                    ds.pageviews.append(_pageview(eid, ts, vid, mid, sid, path, ch, ref, campaign, device, False, f))
    for b in range(bots):
        vid = _hex("bot", seed, b)
        for s_idx in range(6):
            ts = SHOP_T0 + rnd.uniform(0, ds.now - SHOP_T0 - 3600)
            sid = _hex("botsession", seed, b, s_idx)
            for i, path in enumerate(["/", f"/product/{pa}", f"/product/{pb}", f"/product/{ds.products[0]}"]):
                f = page_fields(path)
                if f["product_id"]:
                    f["category"] = catalog[f["product_id"]]
                eid = _hex("botreq", seed, b, s_idx, i)
                ds.hits.append(shop_hit(eid, ts + i, vid, "", path, "GET", "", "bot", True, {}))
                ds.pageviews.append(_pageview(eid, ts + i, vid, "", sid, path, "direct", "", "", "bot", True, f))
            # a bot that "buys": its goal has no human session and stays out of session metrics
            eid = _hex("botbuy", seed, b, s_idx)
            ds.hits.append(shop_hit(eid, ts + 5, vid, "", "/order/complete", "POST", "", "bot", True,
                                {"x-order-amount": "999.00"}))
            ds.goals.append({"event_id": eid, "visitor_id": vid, "session_id": sid, "ts": round(ts + 5, 3),
                             "path": "/order/complete", "goal": "purchase", "goal_value": 999.0, "is_bot": True})
    ds.sessions = sessions_of(ds.pageviews, ds.goals)
    return ds


_UA = {"bot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
       "desktop": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
       "mobile": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile "
                 "Safari/537.36",
       "tablet": "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 "
                 "Mobile/15E148 Safari/604.1"}


def order_items(products: list[str], amount: float) -> str:
    """The x-order-items header of an order of one of each product, adding up to `amount`."""
    prices = [round(amount / len(products), 2)] * len(products)
    prices[-1] = round(amount - sum(prices[:-1]), 2)
    return ",".join(f"{p}:1:{price:.2f}" for p, price in zip(products, prices))


def shop_hit(event_id, ts, vid, member, path, method, ref, device, bot, extra, query="") -> dict:
    row = make_hit(event_id, round(ts, 3), vid, path, method=method, status=303 if method == "POST" else 200,
                   content_type="" if method == "POST" else "text/html", ua=_UA[device],
                   referrer=f"https://{ref}/" if ref else "", query=query, member=member, extra=extra,
                   client_ip="192.0.2.10", client_port=50000, server_ip="192.0.2.1",
                   resp_bytes=0 if method == "POST" else 5120)
    assert set(row) == set(HIT_FIELD_NAMES)
    return row


def _pageview(event_id, ts, vid, member, sid, path, channel, ref, campaign, device, bot, f) -> dict:
    row = {"event_id": event_id, "ts": round(ts, 3), "visitor_id": vid, "member_id": member, "session_id": sid,
           "host": "shop.example", "path": path, "query": "", "method": "GET", "status": 200, "latency_ms": 12.5,
           "referrer": f"https://{ref}/" if ref else "", "referrer_host": ref, "channel": channel,
           "utm_source": ref.split(".")[0] if campaign else "",
           "utm_medium": "email" if campaign == "newsletter" else "",
           "utm_campaign": campaign, "utm_term": "", "utm_content": "",
           "browser": "Googlebot" if bot else "Firefox", "os": "Other" if bot else "Linux", "device": device,
           "is_bot": bot, "country": "", "city": "", **f}
    assert set(row) == set(PAGEVIEW_FIELD_NAMES)
    return row


def sessions_of(pageviews: list[dict], goals: list[dict] = ()) -> list[dict]:
    """Session rows (SESSION_FIELDS) as the sessionizer would close them, goals counted in."""
    by: dict[str, list[dict]] = {}
    for pv in pageviews:
        by.setdefault(pv["session_id"], []).append(pv)
    goals_by: dict[str, list[dict]] = {}
    for g in goals:
        goals_by.setdefault(g["session_id"], []).append(g)
    out = []
    for sid, pvs in by.items():
        pvs.sort(key=lambda p: (p["ts"], p["event_id"]))
        first, last = pvs[0], pvs[-1]
        gs = goals_by.get(sid, [])
        row = {"session_id": sid, "visitor_id": first["visitor_id"],
               "member_id": next((p["member_id"] for p in reversed(pvs) if p["member_id"]), ""),
               "start": first["ts"], "end": last["ts"], "duration": round(last["ts"] - first["ts"], 3),
               "pageviews": len(pvs), "entry_page": first["path"], "exit_page": last["path"], "bounce": len(pvs) == 1,
               "channel": first["channel"], "referrer_host": first["referrer_host"], "utm_source": first["utm_source"],
               "utm_medium": first["utm_medium"], "utm_campaign": first["utm_campaign"], "browser": first["browser"],
               "os": first["os"], "device": first["device"], "is_bot": first["is_bot"], "close_reason": "idle",
               "goals": len(gs), "revenue": sum(g["goal_value"] for g in gs if g["goal"] == "purchase")}
        assert set(row) == set(SESSION_FIELD_NAMES)
        out.append(row)
    return out
