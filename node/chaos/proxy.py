"""A tiny asyncio TCP proxy on loopback, in front of the chain's RPC (HTTP and WebSocket alike: it copies
bytes). The chaos run points the nodes at it and then cuts it: `drop()` closes every open connection,
`restart(down_s)` also stops listening for a while (connections are refused), as an RPC provider's
restart or a load balancer's failover looks to a client.

It runs its own event loop in a daemon thread; the methods are called from any other thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from node.netutil import free_port

CHUNK = 1 << 16


class Proxy:
    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos-proxy", daemon=True)
        self.connections = 0
        self.drops = 0
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close(True))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def drop(self) -> int:
        """Close every open connection (clients see resets / EOF mid-request). Returns how many."""
        self.drops += 1
        return self._call(self._close(False))

    def restart(self, down_s: float) -> None:
        """Stop listening and drop everything for `down_s` seconds, then listen again on the same port."""
        self.restarts += 1
        self._call(self._close(True))
        time.sleep(down_s)
        self._call(self._listen())

    # ---- on the proxy's loop ------------------------------------------------------------------------
    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self) -> None:
        for _ in range(50):  # the port may linger for a moment after a close
            try:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise OSError(f"proxy cannot listen on 127.0.0.1:{self.port} again")

    async def _close(self, stop_listening: bool) -> int:
        if stop_listening and self._server is not None:
            self._server.close()
            self._server = None
        n = len(self._conns)
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        return n

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._conns.update((writer, up_w))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(CHUNK):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):  # the other side may be gone already
                    w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._conns.discard(writer)
        self._conns.discard(up_w)
