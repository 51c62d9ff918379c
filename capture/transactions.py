"""Pair requests with responses on one connection and build Hit events.

A `Connection` owns the two MessageReaders of a TCP connection. Requests queue up
in order (pipelining); each final response takes the oldest one. The event is
emitted when the response body is complete (so resp_bytes is known), when the
request times out, or when the connection ends without an answer.
"""
from __future__ import annotations

import ipaddress
import logging
from hashlib import blake2b
from collections import deque

from capture.bodies import BodyFields
from capture.http import BODY, DEAD, RESYNC, HeadParser, MessageReader, RequestHead, ResponseHead
from capture.identity import Identity
from config.settings import CaptureSettings

log = logging.getLogger(__name__)

# header names whose values are credentials
NEVER_COPIED = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def _text(b: bytes | None) -> str:
    if not b:
        return ""
    try:
        return b.decode("ascii")
    except UnicodeDecodeError:
        return b.decode("utf-8", "replace")


class _Memo(dict):
    """A bounded memo: traffic repeats URIs, hosts, agents and cookies, so most lookups hit."""

    def __init__(self, fn, limit: int = 50_000):
        super().__init__()
        self.fn = fn
        self.limit = limit

    def __missing__(self, key):
        if len(self) >= self.limit:
            self.clear()
        v = self[key] = self.fn(key)
        return v


class EventBuilder:
    """Turns (request, response) into a Hit dict whose keys are exactly config.events.HIT_FIELD_NAMES."""

    def __init__(self, cfg: CaptureSettings):
        self.identity = idn = Identity(cfg)
        # credentials never travel, even when configured by mistake
        self.extra = [(h.lower(), h.lower().encode("latin-1")) for h in cfg.extra_headers
                      if h.lower() not in NEVER_COPIED]
        dropped = sorted({h.lower() for h in cfg.extra_headers} & NEVER_COPIED)
        if dropped:
            log.warning("capture.extra_headers: %s carry credentials and are never copied into events; "
                        "remove them from the configuration", ", ".join(dropped))
        self._uri = _Memo(self._split_uri)
        self._host = _Memo(_host)
        self._text = _Memo(_text)
        self._cookies = _Memo(idn.cookies)
        self._visitor = _Memo(lambda v: idn.hash(v, b"v:"))
        self._anon = _Memo(lambda k: idn.hash(k[0].encode("latin-1") + b"\x00" + k[1], b"a:"))
        self._member = _Memo(idn.member_id)
        self._referrer = _Memo(self._scrub_url)
        self._ctype = _Memo(lambda ct: _text(ct.split(b";", 1)[0].strip().lower()))
        self._visitor_cookies = tuple(idn.visitor_cookies)
        self._client_ip_headers = idn.client_ip_headers
        self._member_param = idn.member_param
        self._member_header = idn.member_header
        self._member_cookie = idn.member_cookie
        self._shown_ip = _Memo(lambda ip: anonymize_ip(ip, cfg.client_ip_anonymization, idn)) \
            if cfg.client_ip_anonymization != "off" else None
        self.learner = None  # capture.cookie_learning.CookieLearner while the visitor cookie is being learned
        # the named fields of configured paths' request bodies (None: no body is read)
        self.bodies = BodyFields(cfg.request_bodies, cfg.max_body_bytes, idn.sensitive) \
            if cfg.request_bodies else None
        self.aliases: dict[str, str] = {}  # cookie id -> the IP+UA id its client had before it was learned
        # event_id -> the id a response's Set-Cookie assigned (capture.first_requests.FirstRequests.assigned);
        # None: such a request keeps its IP+UA id
        self.assigned: dict[str, bytes] | None = None

    @property
    def anonymizes_ip(self) -> bool:
        return self._shown_ip is not None

    def request_headers(self) -> list[str]:
        i = self.identity
        names = [n for n, _ in self.extra]
        for b in (i.member_header, *i.client_ip_headers):
            if b:
                names.append(b.decode("latin-1"))
        if self.bodies is not None:
            names.append("content-type")  # form or JSON
        return names

    def response_headers(self) -> list[str]:
        return [n for n, _ in self.extra]

    def _split_uri(self, raw: bytes) -> tuple[str, str, str]:
        uri = _text(raw)
        path, _, query = uri.partition("?")
        if path[:1] != "/" and "://" in path:  # absolute-form (proxy requests)
            rest = path.split("://", 1)[1]
            slash = rest.find("/")
            path = rest[slash:] if slash >= 0 else "/"
        if query:
            clean = self.identity.scrub_query(query.split("#", 1)[0])
            if clean != query:  # the uri must not carry what the query lost (passwords, tokens)
                uri = uri.split("?", 1)[0] + ("?" + clean if clean else "")
            query = clean
        return uri, path, query

    def _scrub_url(self, raw: bytes) -> str:
        # a Referer can carry the previous page's password/token parameters
        url = _text(raw)
        base, q, query = url.partition("?")
        if not q:
            return url
        query, hsh, frag = query.partition("#")
        clean = self.identity.scrub_query(query)
        return base + ("?" + clean if clean else "") + hsh + frag

    def build(self, conn: "Connection", req: RequestHead, resp: ResponseHead | None) -> dict:
        # the hot path of every transaction: locals and memos, no helper calls on the common path
        h = req.headers
        get = h.get
        idn = self.identity
        uri, path, query = self._uri[req.uri]
        host = get(b"host")
        if req.method == b"CONNECT":  # authority-form target: no path (host is the Host header's, as for any request)
            path = query = ""
        host = self._host[host] if host else ""
        ua = get(b"user-agent") or b""
        ref = get(b"referer")
        cookie = get(b"cookie")
        cookies = self._cookies[cookie] if cookie else {}
        client_ip = conn.client_ip
        for name in self._client_ip_headers:
            if name in h:
                client_ip = idn.client_ip(h, client_ip)
                break
        set_cookies = resp.set_cookies if resp is not None else None
        if self.learner is not None:
            self.learner.observe((client_ip, ua), cookie, set_cookies, req.ts)
        if set_cookies or self._member_param or self._member_header in h or self._member_cookie in cookies:
            member = idn.member_key(cookies, query if self._member_param else "", h, set_cookies)
            member_id = self._member[member] if member else ""
        else:
            member_id = ""
        extra = {}
        if self.extra:
            rh = resp.headers if resp is not None else {}
            for name, bname in self.extra:
                v = get(bname) or rh.get(bname)
                if v:
                    extra[name] = _text(v)
        if req.body_fields:
            extra.update(req.body_fields)
        ts = req.ts
        us = round(ts * 1e6)
        eid = blake2b(conn.id_prefix + b"%d|%d" % (us, req.index), digest_size=16).hexdigest()
        if resp is not None:
            status = resp.status
            ct = resp.headers.get(b"content-type")
            content_type = self._ctype[ct] if ct else ""
            latency = round((resp.ts - ts) * 1e6) / 1000  # whole microseconds, as the numba writer prints them
            resp_bytes = resp.body_bytes
        else:
            status = None
            content_type = ""
            latency = None
            resp_bytes = 0
        text = self._text
        visitor = None
        if cookies:
            for name in self._visitor_cookies:
                v = cookies.get(name)
                if v:
                    visitor = self._visitor[v]
                    if self.aliases:
                        visitor = self.aliases.get(visitor, visitor)
                    break
        if visitor is None:
            visitor = self._anon[(client_ip, ua)]
            if set_cookies and self.assigned is not None:
                # the site assigns its visitor cookie in this response: that id counts once the client sends
                # the cookie back (capture.first_requests), until then this is the IP+UA id's event
                v = idn.assigned_visitor_cookie(set_cookies)
                if v:
                    given = self._visitor[v]
                    self.assigned[eid] = self.aliases.get(given, given).encode() if self.aliases else given.encode()
        return {
            "event_id": eid,
            "ts": us / 1e6,
            "client_ip": client_ip if self._shown_ip is None else self._shown_ip[client_ip],
            "client_port": conn.client_port,
            "server_ip": conn.server_ip,
            "server_port": conn.server_port,
            "method": text[req.method],
            "host": host,
            "uri": uri,
            "path": path,
            "query": query,
            "referrer": self._referrer[ref] if ref else "",
            "user_agent": text[ua] if ua else "",
            "status": status,
            "resp_bytes": resp_bytes,
            "content_type": content_type,
            "latency_ms": latency,
            "visitor_id": visitor,
            "member_id": member_id,
            "http_version": req.version,
            "no_response": resp is None,
            "extra": extra,
        }


def anonymize_ip(ip: str, how: str, idn: Identity) -> str:
    """client_ip as events show it: IPv4 /24 or IPv6 /48 network address, or a salted hash."""
    if how == "hash":
        return idn.hash(ip, b"ip:")
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    return str(ipaddress.ip_network(f"{a}/{24 if a.version == 4 else 48}", strict=False).network_address)


def _host(raw: bytes) -> str:
    host = _text(raw).lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if ":" in host:
        return host.rsplit(":", 1)[0]
    return host


class Connection:
    """Request/response pairing for one TCP connection (owner of both MessageReaders)."""

    __slots__ = ("client_ip", "client_port", "server_ip", "server_port", "pending", "current", "unanswered",
                 "n_requests", "req_reader", "resp_reader", "out", "builder", "heads", "stats", "max_pending",
                 "seen_http", "id_prefix", "scan", "last_req", "tunnel", "told")

    def __init__(self, client: tuple[str, int], server: tuple[str, int], midstream: bool,
                 builder: EventBuilder, heads: HeadParser, out: list, stats: dict, max_pending: int, scan=None,
                 budget=None, told: set | None = None):
        self.client_ip, self.client_port = client
        self.server_ip, self.server_port = server
        self.pending: deque[RequestHead] = deque()
        self.current: tuple[RequestHead, ResponseHead] | None = None
        self.unanswered = 0   # requests already emitted as timed out whose response may still arrive
        self.n_requests = 0
        self.builder = builder
        self.heads = heads
        self.out = out
        self.stats = stats
        self.max_pending = max_pending
        self.seen_http = False
        self.last_req: RequestHead | None = None  # a bare HTTP/0.9 line's header lines may follow it
        self.tunnel = False  # a CONNECT waits for its answer: the client's bytes meanwhile are the tunnel's
        self.told = told  # (what, port) already said: TLS / HTTP/2 on a captured port
        self.scan = scan  # the decoder's per-batch head scan (capture.frame_kernels.scan_heads), shared
        # event_id = hash(client ip/port, server ip/port, request start, index in the connection)
        self.id_prefix = f"{self.client_ip}|{self.client_port}|{self.server_ip}|{self.server_port}|".encode()
        self.req_reader = MessageReader(self, True, midstream, budget=budget)
        self.resp_reader = MessageReader(self, False, midstream, budget=budget)

    # -- MessageReader callbacks ---------------------------------------------------------
    def on_scanned(self, reader: MessageReader, data: bytes, j: int):
        """(parsed head, head length) when the numba scanner found this packet's whole head, else None."""
        sc = self.scan
        kind = sc.kind[j]
        if reader.is_request:
            if kind != 1:
                return None
            row = sc.spans[j].tolist()
            return self.heads.request_scanned(data, sc.a[j], sc.b[j], sc.c[j], sc.minor[j], row), sc.end[j]
        if kind != 2:
            return None
        row = sc.spans[j].tolist()
        return self.heads.response_scanned(data, sc.a[j], sc.minor[j], row), sc.end[j]

    def on_head(self, reader: MessageReader, head: bytes | None, ts: float, parsed=None):
        if reader.is_request:
            req = parsed if parsed is not None else self.heads.request(head)
            if req.method == b"PRI" and req.uri == b"*" and req.version == "2.0" and not self.seen_http:
                self.stats["non_http"] += 1  # the HTTP/2 connection preface
                self._wrong_leg("http2_flows", "HTTP/2")
                self.resp_reader.state = DEAD
                return "dead", 0
            req.ts = ts
            req.index = self.n_requests
            self.n_requests += 1
            self.seen_http = True
            self.stats["requests"] += 1
            self.pending.append(req)
            self.last_req = req
            if len(self.pending) > self.max_pending:
                self.stats["dropped_pending"] += 1
                self._emit(self.pending.popleft(), None)
                self.unanswered += 1
            if req.bare:
                reader.fields_may_follow = True
            if req.method == b"CONNECT":
                # whatever the client sends before the answer belongs to the tunnel (or is dropped with it)
                self.tunnel = True
                return "dead", 0
            framing = self._request_framing(req)
            if self.builder.bodies is not None:
                self._keep_body(reader, req, *framing)
            return framing
        resp = parsed if parsed is not None else self.heads.response(head)
        resp.ts = ts
        status = resp.status
        self.seen_http = True
        if 100 <= status < 200 and status != 101:
            return "none", 0  # interim (100 Continue, 103 Early Hints): the final response follows
        if self.unanswered:
            self.unanswered -= 1  # the answer to a request we already reported as timed out
            self.stats["late_responses"] += 1
            req = None
        elif self.pending:
            req = self.pending.popleft()
        else:
            self.stats["orphan_responses"] += 1
            req = None
        method = req.method if req is not None else b"GET"
        if req is not None:
            self.current = (req, resp)
        if self.tunnel and method == b"CONNECT" and not 200 <= status < 300:
            self.tunnel = False  # refused: the client goes on speaking HTTP
            if self.req_reader.state == DEAD:
                self.req_reader.state = RESYNC
        if status == 101 or (method == b"CONNECT" and 200 <= status < 300):
            # the connection stops speaking HTTP (websocket, tunnel)
            self._finish()
            self.req_reader.state = self.resp_reader.state = DEAD
            return "dead", 0
        if method == b"HEAD" or status in (204, 304):
            return "none", 0
        if resp.bad_framing:
            # conflicting / invalid Content-Length: the status stands, the body length is unknown; report the
            # transaction now and hunt for the next status line
            self.stats["framing_anomalies"] += 1
            resp.content_length = resp.body_bytes = 0
            self._finish()
            return "resync", 0
        if resp.chunked:
            return "chunked", 0
        if resp.content_length >= 0:
            resp.body_bytes = resp.content_length
            return "length", resp.content_length
        return "close", 0

    def _request_framing(self, req: RequestHead) -> tuple[str, int]:
        if req.bad_framing:
            # Content-Length: -1, conflicting lengths, CL beside chunked: a smuggling attempt or a broken
            # client. Counted; the request is still reported, and unless chunked frames it the stream
            # resynchronises on the next request line, so the valid requests after it are reported too
            self.stats["framing_anomalies"] += 1
            if not req.chunked:
                return "resync", 0
        if req.chunked:
            return "chunked", 0
        return "length", req.content_length

    def _keep_body(self, reader: MessageReader, req: RequestHead, kind: str, n: int) -> None:
        """Keep the body while it arrives when its fields are configured (capture.bodies) and it is small."""
        bodies = self.builder.bodies
        if not (kind == "chunked" or (kind == "length" and n)) or bodies.fields_for(req.method, req.uri) is None:
            return
        if kind == "chunked":
            bodies.dropped(self.stats, "chunked")
        elif n > bodies.max_bytes:
            bodies.dropped(self.stats, f"{n} bytes, more than capture.max_body_bytes = {bodies.max_bytes}")
        else:
            reader.keep = bytearray()

    def on_more_fields(self, reader: MessageReader, block: bytes) -> tuple[str, int]:
        """Header lines that came after a bare HTTP/0.9 request line belong to that request."""
        req = self.last_req
        headers, n, chunked, bad = self.heads.more_request_fields(block)
        if req is None:
            return "none", 0
        for k, v in headers.items():
            req.headers.setdefault(k, v)
        req.content_length, req.chunked, req.bad_framing, req.bare = n, chunked, bad, False
        return self._request_framing(req)

    def raw_response_expected(self) -> bool:
        return bool(self.pending) and self.pending[0].version == "0.9" and not self.unanswered

    def on_raw_response(self, ts: float) -> None:
        # the answer to an HTTP/0.9 request is a bare body up to the close (a server answers a line without
        # a version so, and the reference analyser reads whatever comes as that body, a status line included):
        # the status is unknown, not 200
        resp = ResponseHead(None, "0.9", {}, [], -1, False)
        resp.ts = ts
        self.current = (self.pending.popleft(), resp)

    def on_body_done(self, reader: MessageReader) -> None:
        if not reader.is_request:
            self._finish()
        elif reader.keep is not None:
            body, reader.keep = bytes(reader.keep), None
            req = self.last_req
            if req is not None:
                bodies = self.builder.bodies
                got = bodies.parse(body, req.headers.get(b"content-type"), bodies.fields_for(req.method, req.uri))
                if got is None:
                    bodies.dropped(self.stats, "neither a form nor a JSON object")
                else:
                    req.body_fields = got

    def on_error(self, reader: MessageReader, what: str) -> None:
        if what == "body_gap":
            self.builder.bodies.dropped(self.stats, "a capture gap in it")
            return
        self.stats["gaps" if what == "gap" else "parse_errors"] += 1

    def on_lost_sync(self, reader: MessageReader, flush: bool = True) -> None:
        if not reader.is_request:
            self._finish()  # report what we have of the interrupted response
            # responses of the requests waiting now were in the bytes we lost (flush): report them unanswered
            # rather than pairing them with whatever response we find next
            while flush and self.pending:
                self._emit(self.pending.popleft(), None)

    def on_not_http(self, reader: MessageReader, first: bytes = b"") -> None:
        other = self.resp_reader if reader.is_request else self.req_reader
        if not self.seen_http and other.state != DEAD:  # the connection's first verdict: counted once
            self.stats["non_http"] += 1
            # a TLS record header: handshake (22), version 3.x
            if reader.is_request and first[:1] == b"\x16" and first[1:2] == b"\x03" and first[2:3] <= b"\x04":
                self._wrong_leg("tls_flows", "TLS")
        if reader.is_request:
            other.state = DEAD  # a client that does not speak HTTP: nothing of the connection is
        elif not self.seen_http:
            # the server spoke first and not HTTP (an SSH banner on port 80): a request its client still
            # sends is reported, unanswered, as the reference analyser does; a line without a version is not one
            other.strict = True
        # else: the client spoke HTTP and its server answered something else: its requests are still reported

    def _wrong_leg(self, stat: str, what: str) -> None:
        """A flow on a captured port that is encrypted / HTTP/2: counted, and said once per port."""
        self.stats[stat] += 1
        key = (what, self.server_port)
        if self.told is not None and key not in self.told:
            self.told.add(key)
            log.warning("port %d carries %s: visitwire reads plain HTTP/1.x, so capture behind the TLS terminator "
                        "(the HTTP between it and the app servers, with capture.trusted_proxies naming it for the "
                        "real client address)", self.server_port, what)

    # -- helpers -----------------------------------------------------------------------
    def _finish(self) -> None:
        cur = self.current
        if cur is None:
            return
        self.current = None
        req, resp = cur
        r = self.resp_reader
        if resp.chunked or resp.content_length < 0:
            resp.body_bytes = r.body
        self._emit(req, resp)

    def _emit(self, req: RequestHead, resp: ResponseHead | None) -> None:
        if resp is None:
            self.stats["no_response"] += 1
        self.stats["transactions"] += 1
        self.out.append(self.builder.build(self, req, resp))

    def expire(self, now: float, timeout: float) -> None:
        """Requests older than `timeout` still waiting for a response head are reported unanswered."""
        p = self.pending
        while p and p[0].ts + timeout < now:
            self._emit(p.popleft(), None)
            self.unanswered += 1

    def close(self) -> None:
        """The connection is over: finish a body that ran until close, report unanswered requests."""
        self.req_reader.close()
        r = self.resp_reader
        r.close()
        if self.current is not None and r.state == BODY:
            self.current[1].body_bytes -= r.skip  # cut short: the bytes that came, not the declared length
        self._finish()
        while self.pending:
            self._emit(self.pending.popleft(), None)
