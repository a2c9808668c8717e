"""A TLS front for a plain redis-server, for testing `rediss://` URLs: the redis-server binary the
tests use is built without TLS. The relay runs its own event loop in a thread, so that the tests'
blocking calls cannot stall it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from pathlib import Path

import trustme

CHUNK = 65536


def redis_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed with its key, made at test time."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    ca_file, cert, key = folder / "redis-ca.pem", folder / "redis-tls.crt", folder / "redis-tls.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return ca_file, cert, key


class TlsRelay:
    """Accepts TLS on a free loopback port and forwards the plain bytes to a Redis port."""

    def __init__(self, cert: Path, key: Path, redis_port: int) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)
        self._redis_port = redis_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-relay", daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0
        # Connections whose TLS handshake completed: proof that the clients spoke TLS.
        self.handshakes = 0

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._context)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self._redis_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, redis_w), self._pipe(redis_r, client_w))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, ssl.SSLError):
            writer.close()

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
