"""Pair requests with responses on one connection and build Hit events.

A `Connection` owns the two MessageReaders of a TCP connection. Requests queue up
in order (pipelining); each final response takes the oldest one. The event is
emitted when the response body is complete (so resp_bytes is known), when the
request times out, or when the connection ends without an answer.
"""
from __future__ import annotations

import hashlib
from collections import deque

from capture.http import DEAD, HeadParser, MessageReader, RequestHead, ResponseHead
from capture.identity import Identity
from config.settings import CaptureSettings


def _text(b: bytes | None) -> str:
    if not b:
        return ""
    try:
        return b.decode("ascii")
    except UnicodeDecodeError:
        return b.decode("utf-8", "replace")


class EventBuilder:
    """Turns (request, response) into a Hit dict whose keys are exactly config.events.HIT_FIELD_NAMES."""

    def __init__(self, cfg: CaptureSettings):
        self.identity = Identity(cfg)
        self.extra = [(h.lower(), h.lower().encode("latin-1")) for h in cfg.extra_headers]
        self._ids: dict[tuple, str] = {}

    def request_headers(self) -> list[str]:
        i = self.identity
        names = [n for n, _ in self.extra]
        for b in (i.member_header, i.client_ip_header):
            if b:
                names.append(b.decode("latin-1"))
        return names

    def response_headers(self) -> list[str]:
        return [n for n, _ in self.extra]

    def build(self, conn: "Connection", req: RequestHead, resp: ResponseHead | None) -> dict:
        h = req.headers
        idn = self.identity
        uri = _text(req.uri)
        path, _, query = uri.partition("?")
        if path[:1] != "/" and "://" in path:  # absolute-form (proxy requests)
            rest = path.split("://", 1)[1]
            slash = rest.find("/")
            path = rest[slash:] if slash >= 0 else "/"
        if query:
            clean = idn.scrub_query(query.split("#", 1)[0])
            if clean != query:  # the uri must not carry what the query lost (passwords, tokens)
                uri = uri.split("?", 1)[0] + ("?" + clean if clean else "")
            query = clean
        host = h.get(b"host")
        if host:
            host = _text(host).lower()
            if host.startswith("["):
                host = host[1:].split("]", 1)[0]
            elif ":" in host:
                host = host.rsplit(":", 1)[0]
        else:
            host = ""
        ua = h.get(b"user-agent") or b""
        cookies = idn.cookies(h.get(b"cookie"))
        client_ip = idn.client_ip(h, conn.client_ip) if idn.client_ip_header else conn.client_ip
        member = idn.member_key(cookies, query if idn.member_param else "", h, resp.set_cookies if resp else None)
        extra = {}
        if self.extra:
            rh = resp.headers if resp is not None else {}
            for name, bname in self.extra:
                v = h.get(bname) or rh.get(bname)
                if v:
                    extra[name] = _text(v)
        ts = req.ts
        eid = hashlib.blake2b(f"{conn.client_ip}|{conn.client_port}|{conn.server_ip}|{conn.server_port}|{round(ts * 1e6)}|{req.index}"
                              .encode(), digest_size=16).hexdigest()
        if resp is not None:
            status = resp.status
            ct = resp.headers.get(b"content-type")
            content_type = _text(ct.split(b";", 1)[0].strip().lower()) if ct else ""
            latency = round((resp.ts - ts) * 1000.0, 3)
            resp_bytes = resp.body_bytes
        else:
            status = None
            content_type = ""
            latency = None
            resp_bytes = 0
        return {
            "event_id": eid,
            "ts": round(ts, 6),
            "client_ip": client_ip,
            "client_port": conn.client_port,
            "server_ip": conn.server_ip,
            "server_port": conn.server_port,
            "method": _text(req.method),
            "host": host,
            "uri": uri,
            "path": path,
            "query": query,
            "referrer": _text(h.get(b"referer")),
            "user_agent": _text(ua),
            "status": status,
            "resp_bytes": resp_bytes,
            "content_type": content_type,
            "latency_ms": latency,
            "visitor_id": idn.visitor_id(cookies, client_ip, ua),
            "member_id": idn.member_id(member),
            "http_version": req.version,
            "no_response": resp is None,
            "extra": extra,
        }


class Connection:
    """Request/response pairing for one TCP connection (owner of both MessageReaders)."""

    __slots__ = ("client_ip", "client_port", "server_ip", "server_port", "pending", "current", "unanswered",
                 "n_requests", "req_reader", "resp_reader", "out", "builder", "heads", "stats", "max_pending",
                 "seen_http")

    def __init__(self, client: tuple[str, int], server: tuple[str, int], midstream: bool,
                 builder: EventBuilder, heads: HeadParser, out: list, stats: dict, max_pending: int):
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
        self.req_reader = MessageReader(self, True, midstream)
        self.resp_reader = MessageReader(self, False, midstream)

    # -- MessageReader callbacks ---------------------------------------------------------
    def on_head(self, reader: MessageReader, head: bytes, ts: float):
        if reader.is_request:
            req = self.heads.request(head)
            req.ts = ts
            req.index = self.n_requests
            self.n_requests += 1
            self.seen_http = True
            self.stats["requests"] += 1
            self.pending.append(req)
            if len(self.pending) > self.max_pending:
                self.stats["dropped_pending"] += 1
                self._emit(self.pending.popleft(), None)
                self.unanswered += 1
            if req.chunked:
                return "chunked", 0
            if req.version == "0.9":
                return "none", 0
            return "length", req.content_length
        resp = self.heads.response(head)
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
        if status == 101 or (method == b"CONNECT" and 200 <= status < 300):
            # the connection stops speaking HTTP (websocket, tunnel)
            self._finish()
            self.req_reader.state = self.resp_reader.state = DEAD
            return "dead", 0
        if method == b"HEAD" or status in (204, 304):
            return "none", 0
        if resp.chunked:
            return "chunked", 0
        if resp.content_length >= 0:
            resp.body_bytes = resp.content_length
            return "length", resp.content_length
        return "close", 0

    def raw_response_expected(self) -> bool:
        return bool(self.pending) and self.pending[0].version == "0.9" and not self.unanswered

    def on_raw_response(self, ts: float) -> None:
        # an HTTP/0.9 answer has no status line; the bare body means success
        resp = ResponseHead(200, "0.9", {}, [], -1, False)
        resp.ts = ts
        self.current = (self.pending.popleft(), resp)

    def on_body_done(self, reader: MessageReader) -> None:
        if not reader.is_request:
            self._finish()

    def on_error(self, reader: MessageReader, what: str) -> None:
        self.stats["gaps" if what == "gap" else "parse_errors"] += 1

    def on_lost_sync(self, reader: MessageReader) -> None:
        if not reader.is_request:
            self._finish()  # report what we have of the interrupted response
            # responses of the requests waiting now were in the bytes we lost: report them unanswered
            # rather than pairing them with whatever response we find next
            while self.pending:
                self._emit(self.pending.popleft(), None)

    def on_not_http(self, reader: MessageReader) -> None:
        if not self.seen_http:
            self.stats["non_http"] += 1
        self.req_reader.state = self.resp_reader.state = DEAD

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
        self.resp_reader.close()
        self._finish()
        while self.pending:
            self._emit(self.pending.popleft(), None)
