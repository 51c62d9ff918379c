"""Deterministic visit events for the history tests (a small shop over a few minutes)."""
from __future__ import annotations

import random

T0 = 1_763_892_000  # 2025-11-23 10:00:00 UTC, a whole minute
PATHS = ["/", "/product/1", "/product/2", "/cart", "/checkout"]
HOSTS = ["shop.example", "blog.example"]


def make_hits(n: int, seed: int = 1, minutes: int = 5, prefix: str = "h") -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        status = rnd.choice([200, 200, 200, 200, 304, 404, 500, None])
        out.append({
            "event_id": f"{prefix}{seed}-{i:06d}", "ts": T0 + rnd.uniform(0, 60 * minutes),
            "client_ip": f"10.0.{rnd.randint(0, 3)}.{rnd.randint(1, 254)}", "client_port": rnd.randint(1024, 65535),
            "server_ip": "10.1.0.1", "server_port": 80, "method": rnd.choice(["GET", "GET", "POST"]),
            "host": rnd.choice(HOSTS), "uri": "/x?a=1", "path": rnd.choice(PATHS), "query": "a=1", "referrer": "",
            "user_agent": "Mozilla/5.0", "status": status, "resp_bytes": rnd.randint(0, 50_000),
            "content_type": "text/html", "latency_ms": None if status is None else round(rnd.lognormvariate(3, 1), 3),
            "visitor_id": f"v{rnd.randint(0, 40)}", "member_id": rnd.choice(["", "", "m1", "m2"]),
            "http_version": "1.1", "no_response": status is None, "extra": {"x-order-amount": str(rnd.randint(1, 99))},
        })
    return out


def make_pageviews(n: int, seed: int = 2, minutes: int = 5) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        path = rnd.choice(PATHS)
        out.append({
            "event_id": f"p{seed}-{i:06d}", "ts": T0 + rnd.uniform(0, 60 * minutes),
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
        start = T0 + rnd.uniform(0, 300)
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
