"""Access control for the screen and the API: one shared token (settings.web.token).

When a token is configured every request except the static files (no data in
them) must carry it, as `Authorization: Bearer <token>`, or - for the page and
the Server-Sent-Events stream, which a browser opens without custom headers -
as `?token=<token>` once, after which a cookie carries it. A `?token=` is taken on GET
only: a POST (/api/query) must send the header, so the token never sits in a URL that proxies
log beside a request body. Every engine has a token (engine/api_token.py).

The cookie is SameSite=Strict, but "site" is the registrable domain: a page on another port of the same
host (the demo shop, any local dev server) or on a sibling subdomain is same-site, and its browser sends
the cookie with a form's text/plain POST (no CORS preflight), which wrote notes and ran queries. So a POST
or DELETE that the cookie authenticates must come from the screen's own origin (Origin / Sec-Fetch-Site).
"""
from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from aiohttp import web

COOKIE_NAME = "vw_token"
PUBLIC_PREFIXES = ("/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CROSS_SITE = ("cross-site request refused: a POST or DELETE that the screen's cookie authenticates must come "
               "from the screen's own page; other clients send 'Authorization: Bearer <token>'")
_UNAUTHORIZED = ("missing or wrong token: send 'Authorization: Bearer <token>' "
                 "or open the dashboard once with ?token=<token> (see web.token / VISITWIRE_WEB__TOKEN)")


def _same(given: str, expected: str) -> bool:
    # Constant-time comparison: no timing hints about the token.
    return hmac.compare_digest(given.encode(), expected.encode())


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _from_own_origin(request: web.Request) -> bool:
    """The browser says the request comes from a page of this server. Browsers send Origin with every POST
    and DELETE (a no-referrer page sends "null"); a client that sends none is not a browser page."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def unauthorized() -> web.Response:
    return web.json_response({"error": _UNAUTHORIZED}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="visitwire"'})


def token_middleware(token: str):
    """aiohttp middleware enforcing `token`; a no-op when the token is empty."""

    @web.middleware
    async def check_token(request: web.Request, handler):
        if not token or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        if _same(_bearer(request), token):
            return await handler(request)
        if _same(request.cookies.get(COOKIE_NAME, ""), token):
            if request.method not in SAFE_METHODS and not _from_own_origin(request):
                return web.json_response({"error": _CROSS_SITE}, status=403)
            return await handler(request)
        from_query = request.query.get("token", "") if request.method in ("GET", "HEAD") else ""
        if not from_query or not _same(from_query, token):
            return unauthorized()
        if request.method == "GET" and not request.path.startswith("/api/"):
            # The page: set the cookie and drop the token from the address bar / history.
            clean = request.rel_url.without_query_params("token")
            response = web.HTTPFound(str(clean))
            _set_cookie(response, token, request)
            raise response
        response = await handler(request)
        if isinstance(response, web.StreamResponse) and not response.prepared:
            _set_cookie(response, token, request)
        return response

    return check_token


def _set_cookie(response: web.StreamResponse, token: str, request: web.Request) -> None:
    response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="Strict", path="/",
                        secure=request.secure)
