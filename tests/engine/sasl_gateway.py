"""A Kafka SASL gateway for tests: the server side of SASL PLAIN and SCRAM-SHA-256/512 in front of a plain tansu.

tansu 0.6.0 cannot check credentials itself: with `--authentication` it offers SCRAM-SHA-256/512 and
OAUTHBEARER (PLAIN gets NoSharedMechanism), and looks SCRAM users up in its storage engine, whose dynostore
(memory:// and s3://, the engines in the binary) keeps none: `tansu user create` exits 0 on a broker without
`--authentication` and writes nothing (an s3 bucket stays empty), is refused by one with it (NotAuthenticated),
and every SCRAM login then fails with unknown-user. So this gateway speaks the broker's half of the Kafka
SASL exchange (ApiVersions passed through, SaslHandshake v0-1, SaslAuthenticate v0-2) on each connection,
refuses anything else before the client has authenticated, and then pipes the connection to tansu, which
advertises the gateway's address: every connection a client makes passes the SASL check.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct
from pathlib import Path

from engine.services import Service, _spawn, free_port, tansu_binary
from server_thread import ServerThread
from tls_terminator import TlsTerminator

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
SCRAM_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _put_uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Scram:
    """The server side of one SCRAM exchange (RFC 5802), for one user and password."""

    def __init__(self, mechanism: str, users: dict[str, str]):
        self.hash = SCRAM_HASHES[mechanism]
        self.users = users
        self.step = 0
        self.salt, self.iterations = os.urandom(16), 4096

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash).digest()

    def respond(self, token: bytes) -> tuple[bool | None, bytes]:
        """(None: go on, True: authenticated, False: refused), the server's message."""
        msg = token.decode()
        if self.step == 0:
            self.step = 1
            self.client_first_bare = msg.split(",", 2)[2]  # after the GS2 header "n,,"
            fields = dict(kv.split("=", 1) for kv in self.client_first_bare.split(","))
            self.user, self.nonce = fields["n"], fields["r"] + base64.b64encode(os.urandom(18)).decode()
            self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={self.iterations}"
            return None, self.server_first.encode()
        without_proof, proof = msg.rsplit(",p=", 1)
        fields = dict(kv.split("=", 1) for kv in without_proof.split(","))
        password = self.users.get(self.user)
        if password is None or fields.get("r") != self.nonce:
            return False, b"e=unknown-user"
        salted = hashlib.pbkdf2_hmac(self.hash().name, password.encode(), self.salt, self.iterations)
        client_key = self._hmac(salted, b"Client Key")
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = self._hmac(self.hash(client_key).digest(), auth_message)
        sent_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
        if not hmac.compare_digest(self.hash(sent_key).digest(), self.hash(client_key).digest()):
            return False, b"e=invalid-proof"
        server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return True, b"v=" + base64.b64encode(server_signature)


class Plain:
    def __init__(self, users: dict[str, str]):
        self.users = users

    def respond(self, token: bytes) -> tuple[bool | None, bytes]:
        _authzid, user, password = token.decode().split("\0")
        self.user = user
        ok = user in self.users and hmac.compare_digest(self.users[user], password)
        return ok, b""


class SaslGateway:
    """SASL on `port`, then plain TCP to the broker on `upstream`. `users` = {name: password}."""

    def __init__(self, port: int, upstream: int, mechanism: str, users: dict[str, str]):
        self.port, self.upstream, self.mechanism, self.users = port, upstream, mechanism, users
        # client ids (prefixes) whose login is refused whatever their credentials, as a broker's per-client
        # rules would: e.g. ("rdkafka",) refuses visitwire's librdkafka clients and takes aiokafka's and Faust's
        self.refuse_clients: tuple[str, ...] = ()
        self.authenticated: dict[str, int] = {}  # user -> connections let through
        self.refused = 0  # connections closed: bad credentials, another mechanism, a request before SASL
        self.fronts: list = []  # stand-ins in front of this gateway (a TLS terminator), stopped with it
        self.thread = ServerThread(self._client, port)

    def stop(self) -> None:
        for front in self.fronts:
            front.stop()
        self.thread.stop()

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        return await reader.readexactly(size)

    @staticmethod
    def _send(writer: asyncio.StreamWriter, payload: bytes) -> None:
        writer.write(struct.pack(">i", len(payload)) + payload)

    def _handshake(self, version: int, corr: int, body: bytes) -> tuple[bytes, bool]:
        n = struct.unpack(">h", body[:2])[0]
        asked = body[2:2 + n].decode()
        ok = asked == self.mechanism
        mech = self.mechanism.encode()
        reply = struct.pack(">ihi", corr, 0 if ok else UNSUPPORTED_SASL_MECHANISM, 1) + \
            struct.pack(">h", len(mech)) + mech
        return reply, ok

    @staticmethod
    def _authenticate_reply(version: int, corr: int, error: int, message: str | None, token: bytes) -> bytes:
        if version >= 2:  # flexible: header v1 and compact fields, tagged fields empty
            msg = _put_uvarint(0) if message is None else _put_uvarint(len(message.encode()) + 1) + message.encode()
            return struct.pack(">i", corr) + b"\0" + struct.pack(">h", error) + msg + \
                _put_uvarint(len(token) + 1) + token + struct.pack(">q", 0) + b"\0"
        msg = struct.pack(">h", -1) if message is None else struct.pack(">h", len(message.encode())) + message.encode()
        out = struct.pack(">ih", corr, error) + msg + struct.pack(">i", len(token)) + token
        return out + (struct.pack(">q", 0) if version >= 1 else b"")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader = up_writer = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            exchange = None
            while True:
                frame = await self._frame(reader)
                api_key, version, corr = struct.unpack(">hhi", frame[:8])
                if api_key == API_VERSIONS:  # asked before SASL: the broker's own answer
                    self._send(up_writer, frame)
                    self._send(writer, await self._frame(up_reader))
                    continue
                n = struct.unpack(">h", frame[8:10])[0]  # client id (a nullable string in every header version)
                pos = 10 + max(n, 0)
                client_id = frame[10:pos].decode(errors="replace")
                if api_key == SASL_AUTHENTICATE and version >= 2:
                    tags, pos = _uvarint(frame, pos)
                    for _ in range(tags):
                        _, pos = _uvarint(frame, pos)
                        size, pos = _uvarint(frame, pos)
                        pos += size
                body = frame[pos:]
                if api_key == SASL_HANDSHAKE:
                    reply, ok = self._handshake(version, corr, body)
                    self._send(writer, reply)
                    if not ok:
                        break
                    exchange = Plain(self.users) if self.mechanism == "PLAIN" else Scram(self.mechanism, self.users)
                    continue
                if api_key != SASL_AUTHENTICATE or exchange is None:
                    break  # anything else before authentication: the connection is closed, as Kafka does
                if version >= 2:
                    size, pos = _uvarint(body, 0)
                    token = body[pos:pos + size - 1]
                else:
                    size = struct.unpack(">i", body[:4])[0]
                    token = body[4:4 + size]
                try:
                    done, answer = exchange.respond(token)
                except (ValueError, KeyError, UnicodeDecodeError):
                    done, answer = False, b""
                if done is not None and client_id.startswith(self.refuse_clients):
                    done = False
                if done is False:
                    self._send(writer, self._authenticate_reply(version, corr, SASL_AUTHENTICATION_FAILED,
                                                                "Authentication failed", b""))
                    await writer.drain()
                    break
                self._send(writer, self._authenticate_reply(version, corr, 0, None, answer))
                if done:
                    user = exchange.user
                    self.authenticated[user] = self.authenticated.get(user, 0) + 1
                    await writer.drain()
                    await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
                    return
            self.refused += 1
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()


def tansu_behind_gateway(mechanism: str, users: dict[str, str],
                         tls: tuple[Path, Path] | None = None) -> tuple[Service, SaslGateway, str]:
    """A plain tansu that advertises a SASL gateway in front of it: (broker, gateway, the bootstrap to use).
    With tls = (cert, key), a TLS terminator in front of the gateway is what tansu advertises (SASL_SSL:
    TLS terminator -> SASL gateway -> tansu); gateway.stop() stops it too."""
    plain, front = free_port(), free_port()
    gateway_port = free_port() if tls else front
    broker = _spawn("tansu", [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{plain}",
                              "--advertised-listener-url", f"tcp://127.0.0.1:{front}",
                              "--storage-engine", "memory://tansu/"], None, plain, 20, f"127.0.0.1:{plain}")
    gateway = SaslGateway(gateway_port, plain, mechanism, users)
    if tls is not None:
        gateway.fronts.append(TlsTerminator(front, gateway_port, *tls))
    return broker, gateway, f"127.0.0.1:{front}"
