"""A TLS terminator for tests: TLS on a port, plain TCP to what is behind it (tansu, or the SASL gateway), so
a broker that speaks plain TCP can be reached only over TLS when it advertises the terminator's address."""
from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from server_thread import ServerThread


class TlsTerminator:
    """TLS on `port`, plain TCP to `upstream`."""

    def __init__(self, port: int, upstream: int, cert: Path, key: Path):
        self.port, self.upstream = port, upstream
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(cert), str(key))
        self.thread = ServerThread(self._client, port, self.context)

    async def _client(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError, ssl.SSLError):
                pass
            finally:
                dst.close()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        self.thread.stop()
