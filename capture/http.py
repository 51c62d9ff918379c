"""HTTP/1.x message framing for one direction of a TCP stream.

`MessageReader` is fed in-order stream data (and gaps) by the reassembler. It finds
message heads (request/status line + headers), hands them to its owner, then skips
the body by length without ever buffering it: Content-Length, chunked (chunk sizes
parsed incrementally across segments), no body (HEAD/1xx/204/304), or until the
connection closes. Anything it cannot frame is a counted parse error, after which
it hunts for the next request/status line ("resync"); it never raises.

`HeadParser` turns a complete head into RequestHead/ResponseHead, pulling out only
the headers someone needs (one regex pass, names of any case, obsolete folding).
"""
from __future__ import annotations

import re

import numpy as np

MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE = 4096
MAX_BODY_BYTES = 1 << 40  # a declared length beyond 1 TiB is hostile, not a body

# reader states
HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, UNTIL_CLOSE, RESYNC, DEAD = range(9)

RESYNC_REQUEST = re.compile(
    rb"(?:\A|\n)((?:GET|POST|HEAD|PUT|DELETE|OPTIONS|PATCH|TRACE|CONNECT|PROPFIND) \S+ HTTP/1\.[01]\r?\n)")
# a status line read as liberally as the reference analyser reads it: "HTTP/" of any case then the version, any run
# of spaces or tabs, and the first three characters after it the status ("HTTP/1.1  200", "HTTP/1.0 404", "200OK",
# "http/1.1 200")
_STATUS_LINE = re.compile(rb"[Hh][Tt][Tt][Pp]/([^ \t]*)[ \t]+([0-9]{3})")
# a status line that stray bytes ran into ("hello" after a HEAD answer, then "HTTP/1.1 200 OK")
_STATUS_INSIDE = re.compile(rb"HTTP/1\.[01] [1-5][0-9][0-9]")
RESYNC_RESPONSE = re.compile(rb"(?:\A|\n)(HTTP/1\.[01] [1-5][0-9][0-9][ \r\n])")
# any prefix of "METHOD " (a method is a token of any case, as split_request_line reads it)
_REQUEST_START = re.compile(rb"[A-Za-z][A-Za-z0-9_.!#$%&'*+^`|~-]{0,31}(?:[ \t]|\Z)")
# a request line is a method, whitespace, then the target; the version is the last word when it is one
_METHOD_SP = re.compile(rb"([A-Za-z][A-Za-z0-9_.!#$%&'*+^`|~-]{0,31})[ \t]+")
# the version word: the first "HTTP/d.d" (of any case: "http/1.1" too) after whitespace (anything after it is crud
# the reference analysers ignore), or at the very start of the target when the URI is missing ("GET HTTP/1.1")
_VERSION_WORD = re.compile(rb"(?:\A|[ \t]+)[Hh][Tt][Tt][Pp]/([0-9])\.([0-9])")
# the start of a header field line ("Name:" or the beginning of one still arriving)
_FIELD_START = re.compile(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:[ \t]*:|\Z)")
# request header fields whose lines make one value, and their separator: cookies, and the lists proxies append to
_JOINED = {b"cookie": b"; ", b"x-forwarded-for": b", ", b"forwarded": b", "}
_FIELD_LINE = re.compile(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]+[ \t]*:")


class HttpError(ValueError):
    """A head or body framing we refuse to trust (counted, then resync)."""


def split_request_line(line: bytes) -> tuple[bytes, bytes, str]:
    """(method, target, version) of a request line, the target exactly as on the wire.

    Liberal like the reference analysers (Zeek's request-line reader): the target runs from after the
    method to the first whitespace followed by HTTP/d.d, which is the version whatever follows it
    ("GET /x HTTP/1.1 crud" and "GET /x HTTP/1.1crud" are 1.1 requests for /x); the target may hold spaces
    and quotes; an empty target ("GET HTTP/1.1") is kept empty; a line without a version word is HTTP/0.9,
    whose target is all the rest ("GET /indexHTTP/1.1" included), and needs a method of 3 letters or more."""
    m = _METHOD_SP.match(line)
    if m is None:
        raise HttpError(f"not a request line: {line[:60]!r}")
    rest = line[m.end():].rstrip(b" \t")
    v = _VERSION_WORD.search(rest)
    if v is not None:
        return m.group(1), rest[:v.start()], f"{v.group(1).decode()}.{v.group(2).decode()}"
    if not rest or len(m.group(1)) < 3:
        raise HttpError(f"not a request line: {line[:60]!r}")
    return m.group(1), rest, "0.9"


class RequestHead:
    __slots__ = ("method", "uri", "version", "headers", "content_length", "chunked", "ts", "index", "expect_continue",
                 "bare", "bad_framing", "body_fields")

    def __init__(self, method: bytes, uri: bytes, version: str, headers: dict, content_length: int, chunked: bool):
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.ts = 0.0
        self.index = 0
        self.bare = False         # a request line alone (HTTP/0.9): header lines may still follow it
        self.bad_framing = False  # Content-Length invalid or beside chunked: a smuggling attempt, counted
        self.body_fields: dict[str, str] | None = None  # named body fields (capture.bodies), when configured


class ResponseHead:
    __slots__ = ("status", "version", "headers", "set_cookies", "content_length", "chunked", "ts", "body_bytes",
                 "bad_framing")

    def __init__(self, status: int, version: str, headers: dict, set_cookies: list, content_length: int, chunked: bool):
        self.status = status
        self.version = version
        self.headers = headers
        self.set_cookies = set_cookies
        self.content_length = content_length
        self.chunked = chunked
        self.ts = 0.0
        self.body_bytes = 0
        self.bad_framing = False  # Content-Length invalid or conflicting: the status stands, the body is unknown


def _header_regex(names: list[str]) -> re.Pattern:
    alts = b"|".join(re.escape(n.lower().encode("latin-1")) for n in sorted(set(names), key=len, reverse=True))
    # value may continue on folded lines (obsolete line folding: next line starts with SP/HT)
    return re.compile(rb"\n(" + alts + rb")[ \t]*:[ \t]*([^\r\n]*(?:\r?\n[ \t]+[^\r\n]*)*)", re.IGNORECASE)


def _clean(value: bytes) -> bytes:
    if b"\n" in value:  # unfold
        value = re.sub(rb"\r?\n[ \t]+", b" ", value)
    return value.rstrip(b" \t\r")


def _content_length(values: list[bytes]) -> int:
    n = -1
    for v in values:
        for part in v.split(b","):  # "5, 5" is legal repetition
            part = part.strip()
            if not part.isdigit() or len(part) > 16:
                raise HttpError(f"invalid Content-Length {v[:40]!r}")
            k = int(part)
            if n >= 0 and k != n:
                raise HttpError("conflicting Content-Length values")
            n = k
    if n > MAX_BODY_BYTES:
        raise HttpError(f"absurd Content-Length {n}")
    return n


def _slot_headers(data: bytes, row: list, slots) -> dict[bytes, bytes]:
    """The wanted headers the numba scanner found: per (index of the value's span in row, name)."""
    headers = {}
    for k, name in slots:
        s = row[k]
        if s >= 0:
            headers[name] = data[s:row[k + 1]]
    return headers


def _has_version(line: bytes) -> bool:
    """Whether split_request_line finds a version word (False too when it is no request line at all)."""
    m = _METHOD_SP.match(line)
    return m is not None and _VERSION_WORD.search(line.rstrip(b"\r \t"), m.end(1)) is not None


def _fields_end(buf, start: int, scan: int) -> int:
    """End of header lines starting at buf[start] (after their blank line), -1 = not complete yet."""
    if buf[start:start + 2] == b"\r\n":
        return start + 2
    if buf[start:start + 1] == b"\n":
        return start + 1
    i = buf.find(b"\n\r\n", max(start, scan - 1))
    j = buf.find(b"\n\n", max(start, scan - 1))
    if i < 0:
        return -1 if j < 0 else j + 2
    return i + 3 if j < 0 or i < j else j + 2


def _read_fields(rx: re.Pattern, head: bytes, nl: int, joined: dict, set_cookies: list | None
                 ) -> tuple[dict, list | None, bool]:
    """The wanted header fields after head[nl] (one regex pass): (headers, Content-Length values or None,
    chunked). A repeated field keeps its first value unless `joined` gives the separator its lines are joined
    with (Host keeps its last); Set-Cookie lines go to `set_cookies` when given (a response's)."""
    headers: dict[bytes, bytes] = {}
    lengths = None
    chunked = False
    for name, value in rx.findall(head, nl):
        name = name.lower()
        value = _clean(value)
        if name == b"content-length":
            lengths = [value] if lengths is None else lengths + [value]
        elif name == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
        elif name == b"set-cookie" and set_cookies is not None:
            set_cookies.append(value)
        elif name not in headers or name == b"host":  # a repeated Host: the last one, as Zeek's http.log keeps
            headers[name] = value
        elif name in joined:  # one value across header lines: proxies append the last list entry
            headers[name] += joined[name] + value
    return headers, lengths, chunked


class HeadParser:
    """Parses complete heads; only the configured header names are extracted."""

    def __init__(self, request_headers: list[str], response_headers: list[str]):
        base = ["content-length", "transfer-encoding"]
        req_names = base + ["host", "user-agent", "referer", "cookie"] + [h.lower() for h in request_headers]
        resp_names = base + ["content-type", "set-cookie", "connection"] + [h.lower() for h in response_headers]
        self._req = _header_regex(req_names)
        self._resp = _header_regex(resp_names)
        # the table the numba head scanner matches (capture.frame_kernels.scan_heads)
        track = sorted(set(req_names) | set(resp_names))
        enc = [t.encode("latin-1") for t in track]
        self.names = np.frombuffer(b"".join(enc) or b"\0", dtype=np.uint8).copy()
        self.name_off = np.cumsum([0] + [len(t) for t in enc]).astype(np.int64)
        self.slot_of = {t: k for k, t in enumerate(track)}  # name -> index of its span pair in a scan row
        slot = {t: 2 * k for t, k in self.slot_of.items()}
        skip = {"content-length", "transfer-encoding", "set-cookie"}
        self._req_slots = [(slot[t], t.encode("latin-1")) for t in sorted(set(req_names) - skip)]
        self._resp_slots = [(slot[t], t.encode("latin-1")) for t in sorted(set(resp_names) - skip)]
        self._cl = slot["content-length"]
        self._te = slot["transfer-encoding"]
        self._sc = slot["set-cookie"]
        self.cl_slot = self._cl  # column of Content-Length / Transfer-Encoding in a scan row (fast path)
        self.te_slot = self._te

    def request_scanned(self, data: bytes, a: int, b: int, c: int, minor: int, row: list) -> RequestHead:
        """A head the numba scanner already split (same result as request() on the same bytes)."""
        headers = _slot_headers(data, row, self._req_slots)
        s = row[self._te]
        if s >= 0 and b"chunked" in data[s:row[self._te + 1]].lower():
            req = RequestHead(data[:a], data[b:c], "1.1" if minor else "1.0", headers, -1, True)
            req.bad_framing = row[self._cl] >= 0  # CL beside TE
            return req
        s = row[self._cl]
        n = _content_length([data[s:row[self._cl + 1]]]) if s >= 0 else 0
        return RequestHead(data[:a], data[b:c], "1.1" if minor else "1.0", headers, n, False)

    def request_framed(self, data: bytes, a: int, b: int, c: int, minor: int, row: list, content_length: int,
                       chunked: bool) -> RequestHead:
        """request_scanned when the fast path already read Content-Length (-1: absent) / chunked."""
        headers = _slot_headers(data, row, self._req_slots)
        return RequestHead(data[:a], data[b:c], "1.1" if minor else "1.0", headers,
                           -1 if chunked else (content_length if content_length > 0 else 0), chunked)

    def response_framed(self, data: bytes, status: int, minor: int, row: list, content_length: int,
                        chunked: bool) -> ResponseHead:
        """response_scanned when the fast path already read Content-Length (-1: absent) / chunked."""
        headers = _slot_headers(data, row, self._resp_slots)
        s = row[self._sc]
        set_cookies = [data[s:row[self._sc + 1]]] if s >= 0 else []
        return ResponseHead(status, "1.1" if minor else "1.0", headers, set_cookies,
                            -1 if chunked else content_length, chunked)

    def response_scanned(self, data: bytes, status: int, minor: int, row: list) -> ResponseHead:
        headers = _slot_headers(data, row, self._resp_slots)
        s = row[self._sc]
        set_cookies = [data[s:row[self._sc + 1]]] if s >= 0 else []
        s = row[self._te]
        if s >= 0 and b"chunked" in data[s:row[self._te + 1]].lower():
            return ResponseHead(status, "1.1" if minor else "1.0", headers, set_cookies, -1, True)
        s = row[self._cl]
        n = _content_length([data[s:row[self._cl + 1]]]) if s >= 0 else -1
        return ResponseHead(status, "1.1" if minor else "1.0", headers, set_cookies, n, False)

    def request(self, head: bytes) -> RequestHead:
        nl = head.find(b"\n")
        line = (head[:nl] if nl >= 0 else head).rstrip(b"\r")
        method, uri, version = split_request_line(line)
        has_fields = nl >= 0 and bool(head[nl + 1:].strip(b"\r\n"))
        headers, lengths, chunked = self._fields(head, nl) if has_fields else ({}, None, False)
        bad = False
        content_length = 0
        if chunked:
            content_length = -1
            bad = lengths is not None  # CL beside TE: the classic smuggling pair; TE frames (RFC 9112 6.3)
        elif lengths is not None:
            try:
                content_length = _content_length(lengths)
            except HttpError:
                bad = True  # e.g. "Content-Length: -1": the body cannot be framed; resync on the next request
        req = RequestHead(method, uri, version, headers, content_length, chunked)
        req.bare = version == "0.9" and not has_fields
        req.bad_framing = bad
        return req

    def more_request_fields(self, block: bytes) -> tuple[dict, int, bool, bool]:
        """Header lines that followed a bare HTTP/0.9 request line: (headers, length, chunked, bad framing)."""
        headers, lengths, chunked = self._fields(b"\n" + block, 0)
        if chunked:
            return headers, -1, True, lengths is not None
        if lengths is None:
            return headers, 0, False, False
        try:
            return headers, _content_length(lengths), False, False
        except HttpError:
            return headers, 0, False, True

    def _fields(self, head: bytes, nl: int) -> tuple[dict, list | None, bool]:
        return _read_fields(self._req, head, nl, _JOINED, None)

    def response(self, head: bytes) -> ResponseHead:
        nl = head.find(b"\n")
        line = (head[:nl] if nl >= 0 else head).rstrip(b"\r")
        m = _STATUS_LINE.match(line)
        if m is None:
            raise HttpError(f"not a status line: {line[:60]!r}")
        code = m.group(2)
        version = m.group(1)[:3].decode("latin-1")
        set_cookies: list[bytes] = []
        headers, lengths, chunked = _read_fields(self._resp, head, max(nl, 0), {}, set_cookies)
        content_length = -1  # unknown: until close
        bad = False
        if not chunked and lengths is not None:
            try:
                content_length = _content_length(lengths)
            except HttpError:
                bad = True  # "Content-Length: 3" beside "Content-Length: 5": the answer counts, its body cannot
        resp = ResponseHead(int(code), version, headers, set_cookies, content_length, chunked)
        resp.bad_framing = bad
        return resp


class MessageReader:
    """Frames the messages of one direction; `owner` gets heads and message ends.

    owner.on_head(reader, head_bytes, ts) -> body framing: ('length', n) | ('chunked', 0)
    | ('close', 0) | ('none', 0) | ('dead', 0); raising HttpError there counts a parse error.
    owner.on_body_done(reader) when the current message's body is complete.
    owner.on_error(reader, what) for counted problems.
    """

    __slots__ = ("owner", "is_request", "state", "skip", "body", "partial", "partial_ts", "line",
                 "messages", "sniff", "max_head", "budget", "fields_may_follow", "keep", "strict")

    def __init__(self, owner, is_request: bool, resync: bool, max_head: int = MAX_HEAD_BYTES, budget=None):
        self.owner = owner
        self.is_request = is_request
        self.state = RESYNC if resync else HEAD
        self.skip = 0
        self.body = 0            # body bytes of the current message (chunked: sum of chunk sizes)
        self.partial = None      # bytearray of an incomplete head (or chunk-size / trailer line)
        self.partial_ts = 0.0
        self.line = None
        self.messages = 0
        self.sniff = not resync  # first bytes of a connection seen from its start: must look like HTTP
        self.max_head = max_head
        self.budget = budget     # capture.reassembly.Budget: incomplete heads count against the total limit
        self.fields_may_follow = False  # after a bare HTTP/0.9 request line: its header lines may come next
        self.keep: bytearray | None = None  # the current body's bytes, when its owner asked (capture.bodies)
        self.strict = False  # the server spoke first and not HTTP: the client's first line must carry a version

    @property
    def buffered(self) -> int:
        return (len(self.partial) if self.partial else 0) + (len(self.line) if self.line else 0)

    # -- input -------------------------------------------------------------------------
    def feed(self, seg, ts: float, j: int = -1) -> None:
        """In-order bytes (bytes or memoryview). Body bytes are only counted, never copied."""
        n = len(seg)
        st = self.state
        if st == BODY or st == CHUNK_DATA:
            # body bytes: count them off, never copy them (unless the owner keeps this body)
            if self.keep is not None and self.skip >= n:
                self.keep += seg
            if self.skip > n:
                self.skip -= n
                return
            if self.skip == n:
                self.skip = 0
                self._data_done(st)
                return
        if st == UNTIL_CLOSE:
            self.body += n
            return
        if st == DEAD:
            return
        data = seg if isinstance(seg, bytes) else bytes(seg)
        p = 0
        while True:
            try:
                while p < n:
                    start = p
                    st = self.state
                    if st == HEAD:
                        p = self._head(data, p, ts, j if p == 0 else -1)
                    elif st == BODY or st == CHUNK_DATA:
                        k = min(self.skip, n - p)
                        if self.keep is not None:
                            self.keep += data[p:p + k]
                        self.skip -= k
                        p += k
                        if self.skip == 0:
                            self._data_done(st)
                    elif st == CHUNK_CRLF:
                        # tolerate a bare LF after chunk data
                        if data[p] == 0x0A:
                            self.skip = 0
                        elif self.skip == 1:
                            raise HttpError("chunk data not followed by CRLF")
                        else:
                            self.skip -= 1
                        p += 1
                        if self.skip == 0:
                            self.state = CHUNK_SIZE
                    elif st == CHUNK_SIZE:
                        p = self._chunk_size(data, p)
                    elif st == TRAILER:
                        p = self._trailer(data, p)
                    elif st == UNTIL_CLOSE:
                        self.body += n - p
                        p = n
                    elif st == RESYNC:
                        p = self._resync(data, p)
                    else:  # DEAD
                        return
                return
            except HttpError as e:
                self._error(str(e))
                if self.state != RESYNC:
                    return
                # hunt for the next message line in the rest of this segment (a smuggled request right
                # after a bad chunk size is still reported); one byte on, so the bad line never matches again
                p = start + 1

    def gap(self, n: int) -> None:
        """`n` stream bytes were never captured (or were dropped)."""
        st = self.state
        if self.keep is not None:
            self.keep = None
            self.owner.on_error(self, "body_gap")  # a kept body with a hole: its fields are not read
        if (st == BODY or st == CHUNK_DATA) and self.skip >= n:
            self.skip -= n
            if self.skip == 0:
                self._data_done(st)
            return
        if st == UNTIL_CLOSE:
            self.body += n
            return
        if st == DEAD or st == RESYNC:
            return
        self.owner.on_error(self, "gap")
        if st == HEAD and self.is_request and self.partial is not None and not self.fields_may_follow:
            self._interrupted_head()
        self._lost_sync()

    def close(self) -> None:
        """The direction ended (FIN/RST/expiry): a body that runs until close is complete."""
        if self.state == UNTIL_CLOSE:
            self._done()
        self._forget()
        self.line = None
        self.keep = None

    # -- states ------------------------------------------------------------------------
    def _head(self, data: bytes, p: int, ts: float, j: int = -1) -> int:
        n = len(data)
        if not self.is_request and self.partial is None and self.owner.raw_response_expected():
            self.sniff = False
            self.messages += 1
            self.body = 0
            self.state = UNTIL_CLOSE  # HTTP/0.9: the response is a bare body up to the close, status line or not
            self.owner.on_raw_response(ts)
            return p
        if j >= 0 and self.partial is None:
            # fast path: the scanner found this packet's whole head
            try:
                parsed = self.owner.on_scanned(self, data, j)
            except HttpError:
                parsed = None  # let the slow path count and handle it exactly as usual
            if parsed is not None:
                self._on_head(None, ts, parsed)
                return parsed[1]
        if self.partial is None:
            if self.fields_may_follow:
                if _FIELD_START.match(data, p):
                    return self._more_fields(data, p, ts)
                self.fields_may_follow = False
            # blank lines between messages are allowed (RFC 9112 2.2)
            while p < n and data[p] in (0x0D, 0x0A):
                p += 1
            if p >= n:
                return n
            end = self._head_end(data, p, p)
            if end < 0:
                if self.sniff and not self._plausible(data[p:]):
                    return self._not_http(bytes(data[p:p + 24]))
                if not self.is_request and not self.sniff:
                    nl = self._bad_status_line(data, p)
                    if nl >= 0:  # no head to wait for: the next status line is hunted for from here
                        return self._stray(data, p, nl, p)
                if n - p > self.max_head:
                    raise HttpError("head larger than 64 KiB")
                self.partial = bytearray(data[p:])
                self.partial_ts = ts
                self._grow(n - p)
                return n
            self._on_head(data[p:end], ts)
            return end
        buf = self.partial
        old = len(buf)
        buf += data[p:]
        self._grow(n - p)
        scan = max(0, old - 3)
        if not self.is_request and not self.sniff:
            nl = self._bad_status_line(buf, 0)
            if nl >= 0:  # as above (the fast path may have held the whole line: then from p on)
                return p - old + self._stray(buf, 0, nl, old)
        if self.fields_may_follow:
            nl = buf.find(b"\n")
            if nl < 0 or _FIELD_LINE.match(buf, 0, nl):
                return self._more_fields_end(buf, old, p, n)
            self.fields_may_follow = False  # not header lines after all: a message of its own
            scan = 0
        end = self._head_end(buf, 0, scan)
        if end < 0:
            if self.sniff and not self._plausible(buf):
                return self._not_http(bytes(buf[:24]))
            if len(buf) > self.max_head:
                self._forget()
                raise HttpError("head larger than 64 KiB")
            return n
        head = bytes(buf[:end])
        self._forget()
        self._on_head(head, self.partial_ts)
        return p + (end - old)

    def _interrupted_head(self) -> None:
        """A capture gap cut the request head being read: the request its complete lines name (the request line
        and the header lines before the gap) is still reported, as the reference analyser reports it, and
        framed by nothing (the stream resynchronises after it)."""
        buf = self.partial
        nl = buf.rfind(b"\n")
        if nl < 0:
            return  # not even the request line: nothing to report
        try:
            self.owner.on_head(self, bytes(buf[:nl + 1]), self.partial_ts)
        except HttpError:
            return  # not a request line: the gap is counted, nothing else
        self.sniff = False
        self.messages += 1
        self.fields_may_follow = False

    def _more_fields(self, data: bytes, p: int, ts: float) -> int:
        """Header lines after a bare request line, up to the blank line ending them."""
        end = _fields_end(data, p, p)
        if end < 0:
            if len(data) - p > self.max_head:
                self.fields_may_follow = False
                raise HttpError("head larger than 64 KiB")
            self.partial = bytearray(data[p:])
            self.partial_ts = ts
            self._grow(len(data) - p)
            return len(data)
        self._on_fields(data[p:end])
        return end

    def _more_fields_end(self, buf: bytearray, old: int, p: int, n: int) -> int:
        end = _fields_end(buf, 0, max(0, old - 2))
        if end < 0:
            if len(buf) > self.max_head:
                self._forget()
                self.fields_may_follow = False
                raise HttpError("head larger than 64 KiB")
            return n
        block = bytes(buf[:end])
        self._forget()
        self._on_fields(block)
        return p + (end - old)

    def _on_fields(self, block: bytes) -> None:
        self.fields_may_follow = False
        self._framing(*self.owner.on_more_fields(self, block))

    def _grow(self, k: int) -> None:
        b = self.budget
        if b is None:
            return
        b.total += k
        if b.total > b.max_total or len(self.partial) > b.max_flow:
            b.stats["dropped_overflow_bytes"] += len(self.partial)
            b.stats["dropped_overflow_segments"] += 1
            self._forget()
            raise HttpError("incomplete head dropped: buffer limit reached")

    def _forget(self) -> None:
        if self.partial is not None:
            if self.budget is not None:
                self.budget.total -= len(self.partial)
            self.partial = None

    def _head_end(self, buf, start: int, scan: int) -> int:
        nl = buf.find(b"\n", start)
        if nl < 0:
            return -1
        if self.is_request and not _has_version(bytes(buf[start:nl])):
            # no version: the line is the whole head (HTTP/0.9) unless header lines follow it at once
            nl2 = buf.find(b"\n", nl + 1)
            if nl2 < 0 or not _FIELD_LINE.match(buf, nl + 1, nl2):
                return nl + 1
            return _fields_end(buf, nl + 1, max(nl + 1, scan))
        i = buf.find(b"\r\n\r\n", max(nl - 1, scan))
        if i >= 0:
            return i + 4
        i = buf.find(b"\n\n", max(nl, scan))
        return i + 2 if i >= 0 else -1

    @staticmethod
    def _bad_status_line(buf, p: int) -> int:
        """The end (its newline) of a complete first line at buf[p] that is no status line, else -1."""
        nl = buf.find(b"\n", p)
        if nl < 0 or _STATUS_LINE.match(bytes(buf[p:nl])):
            return -1
        return nl

    def _plausible(self, buf) -> bool:
        # the start of a connection's first message, before the line is complete
        if self.is_request:
            return bool(_REQUEST_START.match(bytes(buf[:33])))
        return b"HTTP/"[:len(buf)].startswith(bytes(buf[:5]).upper())

    def _on_head(self, head: bytes | None, ts: float, scanned=None) -> None:
        self.fields_may_follow = False
        if self.strict and head is not None and self.messages == 0 and not _has_version(head.split(b"\n", 1)[0]):
            self._not_http(head[:24])  # e.g. "EHLO x" after an SMTP banner: no request
            return
        try:
            kind, length = self.owner.on_head(self, head, ts, scanned[0] if scanned else None)
        except HttpError:
            if self.sniff and self.messages == 0:
                self._not_http(head[:24] if head else b"")
                return
            raise
        self.sniff = False
        self.messages += 1
        self._framing(kind, length)

    def _framing(self, kind: str, length: int) -> None:
        self.body = 0
        if kind == "length":
            if length == 0:
                self._done()
            else:
                self.state = BODY
                self.skip = length
        elif kind == "chunked":
            self.state = CHUNK_SIZE
            self.line = bytearray()
        elif kind == "close":
            self.state = UNTIL_CLOSE
        elif kind == "dead":
            self.state = DEAD
        elif kind == "resync":  # the body cannot be framed: hunt for the next message line
            self.state = RESYNC
            self.skip = 0
        else:
            self._done()

    def _chunk_size(self, data: bytes, p: int) -> int:
        nl = data.find(b"\n", p)
        if nl < 0:
            self.line += data[p:]
            if len(self.line) > MAX_CHUNK_LINE:
                raise HttpError("chunk-size line too long")
            return len(data)
        self.line += data[p:nl]
        text = bytes(self.line).split(b";", 1)[0].strip()
        self.line = bytearray()
        if not text or len(text) > 12 or text.strip(b"0123456789abcdefABCDEF"):
            raise HttpError(f"invalid chunk size {text[:20]!r}")
        size = int(text, 16)
        if size == 0:
            self.state = TRAILER
        else:
            self.body += size
            self.state = CHUNK_DATA
            self.skip = size
        return nl + 1

    def _trailer(self, data: bytes, p: int) -> int:
        nl = data.find(b"\n", p)
        if nl < 0:
            self.line += data[p:]
            if len(self.line) > self.max_head:
                raise HttpError("trailer too long")
            return len(data)
        self.line += data[p:nl]
        empty = not bytes(self.line).strip(b"\r")
        self.line = bytearray()
        if empty:
            self._done()
        return nl + 1

    def _resync(self, data: bytes, p: int) -> int:
        rx = RESYNC_REQUEST if self.is_request else RESYNC_RESPONSE
        # a line starting right at p (after a head's blank line or a bad chunk line) counts: search from its
        # newline, which \A would not see when p > 0
        m = rx.search(data, p - 1 if p > 0 and data[p - 1] == 0x0A else p)
        if m is None:
            return len(data)
        self.state = HEAD
        self._forget()
        return m.start(1)

    # -- transitions -------------------------------------------------------------------
    def _data_done(self, st: int) -> None:
        """The body (st BODY) or the chunk's data (CHUNK_DATA) just counted off is complete."""
        if st == BODY:
            self._done()
        else:
            self.state = CHUNK_CRLF
            self.skip = 2

    def _done(self) -> None:
        self.state = HEAD
        self.skip = 0
        self.line = None
        self.owner.on_body_done(self)

    def _not_http(self, first: bytes = b"") -> int:
        self.state = DEAD
        self._forget()
        self.owner.on_not_http(self, first)
        return 1 << 62

    def _stray(self, buf, p: int, nl: int, floor: int) -> int:
        """buf[p:nl] is a line where an answer should start and is none: bytes after an answer's declared body (a
        miscounted Content-Length, a body after a HEAD answer). Counted; the answers still due follow them, so the
        waiting requests keep waiting (Zeek stops reading the server there). Returns where reading goes on in buf
        (not before `floor`): at a status line the stray bytes ran into, else hunting from the next line."""
        line = bytes(buf[p:nl])
        self.owner.on_error(self, f"not a status line: {line[:40]!r}")
        self._lost_sync(flush=False)
        m = _STATUS_INSIDE.search(line)
        if m is not None and p + m.start() >= floor:
            self.state = HEAD
            return p + m.start()
        return max(nl + 1, floor)

    def _lost_sync(self, flush: bool = True) -> None:
        self.keep = None
        self.owner.on_lost_sync(self, flush)
        self.state = RESYNC
        self._forget()
        self.line = None
        self.skip = 0

    def _error(self, what: str) -> None:
        self.owner.on_error(self, what)
        self._lost_sync()
