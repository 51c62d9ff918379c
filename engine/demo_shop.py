"""The demo's local web shop: a small HTTP/1.1 site on loopback whose URL layout matches
the default settings (url_rules, goals, `_vw_id` visitor cookie, `member` cookie,
`X-Order-Amount` header), so the captured traffic lights up every panel.

Routes: / , /category/{c}, /product/{id}, /static/* (css/js/png), GET+POST /login, GET /logout
(clears the member cookie, 303 -> /), POST /cart/add (303 -> /cart), /cart, /checkout,
POST /cart/add?product=ID&qty=1 (the product in the query, as the default add_to_cart rule reads it),
POST /order/complete (200 + X-Order-Amount and X-Order-Items "id:qty:price,..."), /robots.txt, /sitemap.xml;
anything else 404;
product FLAKY_PRODUCT answers 500.

With `truth=` a path, the shop writes its own log of every request as JSON lines (the truth
the CRM figures are checked against, see `TRUTH_FIELDS`).
Category and product pages are deliberately slow by a fixed amount per page so the
latency charts have a spread.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CATEGORIES = ("shoes", "jackets", "bags", "hats", "watches", "sale")
FLAKY_PRODUCT = "13"  # its page fails with 500 (the demo's error rate)


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    category: str
    price: float


def _catalog() -> tuple[Product, ...]:
    products = []
    for i in range(1, 41):
        cat = CATEGORIES[i % len(CATEGORIES)]
        price = round(9.9 + (i * 37 % 190) + 0.95, 2)
        products.append(Product(str(i), f"{cat.rstrip('s').title()} no. {i}", cat, price))
    return tuple(products)


PRODUCTS = _catalog()
PRODUCTS_BY_ID = {p.id: p for p in PRODUCTS}
STATIC_ASSETS = ("/static/app.css", "/static/app.js", "/static/logo.png")

# One JSON object per request, written when the response is sent:
TRUTH_FIELDS = {
    "ts": "epoch seconds when the request arrived",
    "client_ip": "the client's address", "user_agent": "its User-Agent",
    "method": "GET / POST / HEAD", "path": "path without query", "query": "query string as sent",
    "visitor": "the _vw_id cookie the request carried ('' if none)",
    "visitor_set": "the _vw_id value this response assigned ('' if none)",
    "member": "the member logged in at this request: the member cookie it carried, or the one a login sets",
    "status": "HTTP status",
    "cart_add": "product id added to the cart ('' if none)",
    "order": "for a completed order: {'items': [[product_id, qty, unit_price], ...], 'amount': total}, else null",
    "bot": "the User-Agent is one of the shop's known crawlers",
}

_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                     "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def _page_delay_s(path: str) -> float:
    """A fixed per-page server delay (0-250 ms): deterministic, so runs are comparable."""
    h = int.from_bytes(hashlib.blake2b(path.encode(), digest_size=2).digest(), "big")
    if path.startswith("/category/"):
        return 0.05 + (h % 200) / 1000
    if path.startswith("/product/"):
        return (h % 60) / 1000
    return 0.0


def _html(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><title>{title} - Demo Shop</title>"
            f"<link rel=stylesheet href=/static/app.css><script src=/static/app.js></script></head>"
            f"<body><img src=/static/logo.png alt=logo><h1>{title}</h1>{body}</body></html>").encode()


class ShopHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive capable: always send Content-Length
    server_version = "DemoShop/1.0"
    carts: dict[str, list[str]]  # set on the class by DemoShop

    def log_message(self, fmt, *args):  # the demo's terminal shows analytics, not access logs
        pass

    # -- helpers ---------------------------------------------------------------------------
    def _cookies(self) -> dict[str, str]:
        jar = SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except Exception:  # a malformed Cookie header is the client's problem, not a crash
            return {}
        return {k: m.value for k, m in jar.items()}

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 65536)).decode("utf-8", "replace") if length else ""
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None, cookies: list[str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        for c in cookies or []:
            self.send_header("Set-Cookie", c)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- routing -------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self._route("GET", {})

    def do_POST(self):
        self._route("POST", self._form())

    def _route(self, method: str, form: dict[str, str]) -> None:
        arrived = time.time()
        url = urlsplit(self.path)
        path = url.path
        cookies = self._cookies()
        set_cookies = []
        sent_visitor = visitor = cookies.get("_vw_id", "")
        if not visitor:
            visitor = uuid.uuid4().hex
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.counters["new_visitor_cookies"] += 1  # type: ignore[attr-defined]
            set_cookies.append(f"_vw_id={visitor}; Path=/; Max-Age=31536000; SameSite=Lax")
        delay = _page_delay_s(path)
        if delay:
            time.sleep(delay)
        self.fact = {"member": cookies.get("member", ""), "cart_add": "", "order": None}
        status, body, ctype, headers = self._dispatch(method, path, form, visitor, cookies, set_cookies)
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.counters[f"status_{status}"] += 1  # type: ignore[attr-defined]
            self.server.served_at.append(time.monotonic())  # type: ignore[attr-defined]
            if "X-Order-Amount" in headers:
                self.server.counters["orders"] += 1  # type: ignore[attr-defined]
            truth = self.server.truth  # type: ignore[attr-defined]
            if truth is not None:
                ua = self.headers.get("User-Agent", "")
                truth.write(json.dumps({
                    "ts": round(arrived, 6), "client_ip": self.client_address[0], "user_agent": ua,
                    "method": method, "path": path, "query": url.query, "visitor": sent_visitor,
                    "visitor_set": visitor if not sent_visitor else "", **self.fact, "status": status,
                    "bot": ua in self.server.bot_agents}) + "\n")  # type: ignore[attr-defined]
        self._send(status, body, ctype, headers, set_cookies)

    def _dispatch(self, method, path, form, visitor, cookies, set_cookies):
        html = "text/html; charset=utf-8"
        if method == "GET" and path == "/":
            links = "".join(f"<a href=/category/{c}>{c}</a> " for c in CATEGORIES)
            return 200, _html("Welcome", links), html, {}
        if method == "GET" and path.startswith("/category/"):
            cat = path.split("/", 2)[2]
            if cat not in CATEGORIES:
                return 404, _html("Not found", "no such category"), html, {}
            items = "".join(f"<li><a href=/product/{p.id}>{p.name}</a> {p.price}</li>"
                            for p in PRODUCTS if p.category == cat)
            return 200, _html(cat.title(), f"<ul>{items}</ul>"), html, {}
        if method == "GET" and path.startswith("/product/"):
            pid = path.split("/", 2)[2]
            if pid == FLAKY_PRODUCT:
                return 500, _html("Server error", "something broke"), html, {}
            p = PRODUCTS_BY_ID.get(pid)
            if p is None:
                return 404, _html("Not found", "no such product"), html, {}
            form_html = (f"<form method=post action='/cart/add?product={p.id}&amp;qty=1'>"
                         f"<input name=product value={p.id}><button>Add</button></form>")
            return 200, _html(p.name, f"<p>{p.price}</p>{form_html}"), html, {}
        if method == "GET" and path.startswith("/static/"):
            if path.endswith(".css"):
                return 200, b"body{font-family:sans-serif}" * 20, "text/css", {}
            if path.endswith(".js"):
                return 200, b"console.log('shop');" * 40, "application/javascript", {}
            if path.endswith(".png"):
                return 200, _PNG, "image/png", {}
            return 404, b"not found", "text/plain", {}
        if path == "/login":
            if method == "POST" and form.get("user"):
                # The member key travels in the `member` cookie, the login signal the capture hashes.
                set_cookies.append(f"member={form['user']}; Path=/; HttpOnly; SameSite=Lax")
                self.fact["member"] = form["user"]
                return 303, b"", html, {"Location": "/"}
            form = "<form method=post><input name=user><input name=password type=password></form>"
            return 200, _html("Log in", form), html, {}
        if method == "GET" and path == "/logout":
            set_cookies.append("member=; Path=/; Max-Age=0")
            return 303, b"", html, {"Location": "/"}
        if method == "POST" and path == "/cart/add":
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            pid = query.get("product") or form.get("product", "")
            if pid not in PRODUCTS_BY_ID:
                return 400, _html("Bad request", "unknown product"), html, {}
            self.fact["cart_add"] = pid
            with self.server.lock:  # type: ignore[attr-defined]
                self.carts.setdefault(visitor, []).append(pid)
            return 303, b"", html, {"Location": "/cart"}
        if method == "GET" and path in ("/cart", "/checkout"):
            with self.server.lock:  # type: ignore[attr-defined]
                items = list(self.carts.get(visitor, []))
            total = sum(PRODUCTS_BY_ID[i].price for i in items)
            return 200, _html(path[1:].title(), f"<p>{len(items)} item(s), {total:.2f}</p>"), html, {}
        if method == "POST" and path == "/order/complete":
            with self.server.lock:  # type: ignore[attr-defined]
                items = self.carts.pop(visitor, [])
            if not items:
                return 400, _html("Empty cart", "nothing to order"), html, {}
            amount = sum(PRODUCTS_BY_ID[i].price for i in items)
            units = Counter(items)
            self.fact["order"] = {"items": [[i, n, PRODUCTS_BY_ID[i].price] for i, n in sorted(units.items())],
                                  "amount": round(amount, 2)}
            lines = ",".join(f"{i}:{n}:{PRODUCTS_BY_ID[i].price:.2f}" for i, n in sorted(units.items()))
            return 200, _html("Thank you", f"<p>Order total {amount:.2f}</p>"), html, {
                "X-Order-Amount": f"{amount:.2f}", "X-Order-Items": lines}
        if method == "GET" and path == "/robots.txt":
            return 200, b"User-agent: *\nAllow: /\n", "text/plain", {}
        if method == "GET" and path == "/sitemap.xml":
            urls = "".join(f"<url><loc>/product/{p.id}</loc></url>" for p in PRODUCTS)
            return 200, f"<urlset>{urls}</urlset>".encode(), "application/xml", {}
        return 404, _html("Not found", "the page you asked for does not exist"), html, {}


class DemoShop:
    """The shop server on 127.0.0.1:<port> (0 = a free port), served from a background thread."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", truth: str | None = None,
                 bot_agents: tuple[str, ...] = ()):
        handler = type("BoundShopHandler", (ShopHandler,), {"carts": {}})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.httpd.lock = threading.Lock()  # type: ignore[attr-defined]
        self.httpd.counters = Counter()  # type: ignore[attr-defined]  # what the shop served, for checks
        # line-buffered: a reader of the truth log sees every request answered so far
        self.httpd.truth = open(truth, "a", buffering=1) if truth else None  # type: ignore[attr-defined]
        self.httpd.bot_agents = frozenset(bot_agents)  # type: ignore[attr-defined]
        self.httpd.served_at = []  # type: ignore[attr-defined]  # time.monotonic() of each response
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="demo-shop", daemon=True)

    @property
    def counters(self) -> Counter:
        with self.httpd.lock:  # type: ignore[attr-defined]
            return Counter(self.httpd.counters)  # type: ignore[attr-defined]

    def served_outside(self, lo: float, hi: float) -> tuple[int, int]:
        """Responses served before `lo` and after `hi` (time.monotonic()): outside a capture window."""
        with self.httpd.lock:  # type: ignore[attr-defined]
            times = list(self.httpd.served_at)  # type: ignore[attr-defined]
        return sum(t < lo for t in times), sum(t > hi for t in times)

    def start(self) -> "DemoShop":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.httpd.lock:  # type: ignore[attr-defined]
            if self.httpd.truth is not None:  # type: ignore[attr-defined]
                self.httpd.truth.close()  # type: ignore[attr-defined]
                self.httpd.truth = None  # type: ignore[attr-defined]

    def __enter__(self) -> "DemoShop":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
