"""A deterministic synthetic shop history (page views + sessions) for tests, demos and benchmarks.

Visitors browse categories and products, some add to cart and buy; members log in
part-way through their history (earlier page views are anonymous), some members use
a second device; a few bots crawl products. Rows have exactly the fields of
config/events.py, so they can be written through any HistoryStore.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone

from config.events import PAGEVIEW_FIELD_NAMES, SESSION_FIELD_NAMES

# Monday 2026-09-07 00:00 UTC: cohorts start on week boundaries.
T0 = datetime(2026, 9, 7, tzinfo=timezone.utc).timestamp()
WEEK_S = 7 * 86400
CATEGORIES = ("shoes", "bags", "hats", "coats")


@dataclass
class Dataset:
    pageviews: list[dict] = field(default_factory=list)
    sessions: list[dict] = field(default_factory=list)
    now: float = 0.0
    products: list[str] = field(default_factory=list)
    # (product_a, product_b): only bots ever view them together.
    bot_only_pair: tuple[str, str] = ("", "")


def _hex(*parts) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).hexdigest()


def page_fields(path: str, method: str = "GET") -> dict:
    """What the default processing.url_rules / goals make of a path."""
    parts = path.strip("/").split("/")
    f = {"page_group": "", "section": "", "product_id": "", "category": "", "menu": "", "goal": "", "goal_value": 0.0}
    if path == "/":
        f.update(page_group="home", section="home")
    elif parts[0] == "product":
        f.update(page_group="product", section="shop", product_id=parts[1])
    elif parts[0] == "category":
        f.update(page_group="category", section="shop", category=parts[1], menu="catalog")
    elif path == "/cart/add":
        f.update(section="checkout", goal="add_to_cart")
    elif path == "/cart":
        f.update(page_group="cart", section="checkout")
    elif path == "/checkout":
        f.update(page_group="checkout", section="checkout")
    elif path == "/order/complete":
        f.update(page_group="order_complete", section="checkout", goal="purchase")
    elif path == "/login":
        f.update(page_group="login", section="account", goal="login" if method == "POST" else "")
    return f


def generate(seed: int = 7, visitors: int = 80, members: int = 24, weeks: int = 8, products: int = 24,
             bots: int = 2) -> Dataset:
    rnd = random.Random(seed)
    ds = Dataset(now=T0 + weeks * WEEK_S, products=[f"p{i:02d}" for i in range(products)])
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
            # Products 0 and 1 are bought together often: a clear co-visitation signal.
            p = ds.products[1] if viewed and viewed[-1] == ds.products[0] and rnd.random() < 0.8 else \
                rnd.choice(ds.products[:-2] if rnd.random() < 0.9 else [pa, pb])
            if p in (pa, pb) and ({pa, pb} - {p}) & set(viewed):
                continue
            viewed.append(p)
            paths.append((f"/product/{p}", "GET"))
        if viewed and rnd.random() < 0.5:
            paths += [("/cart/add", "POST"), ("/cart", "GET")]
            if rnd.random() < 0.6:
                paths.append(("/checkout", "GET"))
                if rnd.random() < 0.7:
                    paths.append(("/order/complete", "POST"))
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
        people.append((v, member, ids, n_sessions, first_week, login_at))

    for v, member, ids, n_sessions, first_week, login_at in people:
        device = devices[v % 3]
        starts = sorted(T0 + rnd.uniform(first_week * WEEK_S, weeks * WEEK_S - 3600) for _ in range(n_sessions))
        if v == 0:  # the obvious VIP: visits right up to "now"
            starts[-1] = ds.now - 7200
        for s_idx, start in enumerate(starts):
            vid = ids[1] if len(ids) > 1 and s_idx % 3 == 2 else ids[0]
            logged_in = member and (login_at is not None and (s_idx > login_at or vid != ids[0]))
            paths = session_paths()
            if member and s_idx == login_at and vid == ids[0]:
                paths.insert(1, ("/login", "POST"))
            ch, ref, campaign = channels[rnd.randrange(len(channels))]
            ts = start
            sid = _hex("session", seed, v, s_idx)
            for i, (path, method) in enumerate(paths):
                if i:
                    ts += rnd.randint(5, 120)
                if method == "POST" and path == "/login":
                    logged_in = bool(member)
                f = page_fields(path, method)
                if f["product_id"]:
                    f["category"] = catalog[f["product_id"]]
                if f["goal"] == "purchase":
                    f["goal_value"] = float(rnd.randint(10, 200)) if v != 0 else 500.0
                ds.pageviews.append(_pageview(_hex("pv", seed, v, s_idx, i), ts, vid, member if logged_in else "",
                                              sid, path, method, ch, ref, campaign, device, False, f))
    for b in range(bots):
        vid = _hex("bot", seed, b)
        for s_idx in range(6):
            ts = T0 + rnd.uniform(0, ds.now - T0 - 3600)
            sid = _hex("botsession", seed, b, s_idx)
            for i, path in enumerate(["/", f"/product/{pa}", f"/product/{pb}", f"/product/{ds.products[0]}"]):
                f = page_fields(path)
                if f["product_id"]:
                    f["category"] = catalog[f["product_id"]]
                ds.pageviews.append(_pageview(_hex("botpv", seed, b, s_idx, i), ts + i, vid, "", sid, path, "GET",
                                              "direct", "", "", "bot", True, f))
    ds.sessions = sessions_of(ds.pageviews)
    return ds


def _pageview(event_id, ts, vid, member, sid, path, method, channel, ref, campaign, device, bot, f) -> dict:
    row = {"event_id": event_id, "ts": round(ts, 3), "visitor_id": vid, "member_id": member, "session_id": sid,
           "host": "shop.example", "path": path, "query": "", "method": method, "status": 200, "latency_ms": 12.5,
           "referrer": f"https://{ref}/" if ref else "", "referrer_host": ref, "channel": channel,
           "utm_source": ref.split(".")[0] if campaign else "", "utm_medium": "email" if campaign == "newsletter" else "",
           "utm_campaign": campaign, "utm_term": "", "utm_content": "",
           "browser": "Bot" if bot else "Firefox", "os": "Other" if bot else "Linux", "device": device, "is_bot": bot,
           **f}
    assert tuple(row) == PAGEVIEW_FIELD_NAMES or set(row) == set(PAGEVIEW_FIELD_NAMES)
    return row


def sessions_of(pageviews: list[dict]) -> list[dict]:
    """Session rows (SESSION_FIELDS) as the sessionizer would close them."""
    by: dict[str, list[dict]] = {}
    for pv in pageviews:
        by.setdefault(pv["session_id"], []).append(pv)
    out = []
    for sid, pvs in by.items():
        pvs.sort(key=lambda p: (p["ts"], p["event_id"]))
        first, last = pvs[0], pvs[-1]
        row = {"session_id": sid, "visitor_id": first["visitor_id"],
               "member_id": next((p["member_id"] for p in reversed(pvs) if p["member_id"]), ""),
               "start": first["ts"], "end": last["ts"], "duration": round(last["ts"] - first["ts"], 3),
               "pageviews": len(pvs), "entry_page": first["path"], "exit_page": last["path"], "bounce": len(pvs) == 1,
               "channel": first["channel"], "referrer_host": first["referrer_host"], "utm_source": first["utm_source"],
               "utm_medium": first["utm_medium"], "utm_campaign": first["utm_campaign"], "browser": first["browser"],
               "os": first["os"], "device": first["device"], "is_bot": first["is_bot"], "close_reason": "idle",
               "goals": sum(1 for p in pvs if p["goal"]),
               "revenue": sum(p["goal_value"] for p in pvs if p["goal"] == "purchase")}
        assert set(row) == set(SESSION_FIELD_NAMES)
        out.append(row)
    return out
