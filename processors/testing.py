"""Known hits for the processor tests and the pipeline benchmark, with their ground truth."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

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
             extra: dict | None = None) -> dict:
    return {
        "event_id": event_id, "ts": ts, "client_ip": "10.0.0.1", "client_port": 40000, "server_ip": "10.0.0.2",
        "server_port": 80, "method": method, "host": host, "uri": path + ("?" + query if query else ""),
        "path": path, "query": query, "referrer": referrer, "user_agent": ua, "status": status,
        "resp_bytes": 1234, "content_type": content_type if status is not None else "",
        "latency_ms": latency_ms if status is not None else None, "visitor_id": visitor, "member_id": member,
        "http_version": "1.1", "no_response": status is None, "extra": extra or {},
    }


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
