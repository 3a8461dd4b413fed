"""HTTP client to peer nodes (httpx, pooled connections). Peer URLs come from the registry."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

log = logging.getLogger("node.peers")


class PeerError(RuntimeError):
    def __init__(self, url: str, msg: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {msg}")
        self.status = status


class Peers:
    def __init__(self, timeout: float) -> None:
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 1.0)),
                                        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                                        trust_env=False)
        self.last_ok: dict[str, float] = {}
        self.last_fail: dict[str, float] = {}
        # At most as many requests in flight as the pool has connections: httpcore assigns queued requests
        # to connections in a loop over the whole queue on every change (quadratic), so a leader of hundreds
        # of streams (2 votes + 2 attestations per stream per tick) spent its CPU there (py-spy, 1,000 streams).
        self.inflight = asyncio.Semaphore(64)

    async def close(self) -> None:
        await self.client.aclose()

    def reachable(self, within: float = 30.0) -> int:
        now = time.time()
        return sum(1 for u, t in self.last_ok.items() if now - t < within and t >= self.last_fail.get(u, 0))

    async def _req(self, method: str, url: str, path: str, json: Any = None, params: Any = None,
                   timeout: float | None = None) -> Any:
        full = url.rstrip("/") + path
        async with self.inflight:
            return await self._req1(method, url, full, json, params, timeout)

    async def _req1(self, method: str, url: str, full: str, json: Any, params: Any, timeout: float | None) -> Any:
        try:
            kw: dict[str, Any] = {}
            if timeout is not None:
                kw["timeout"] = timeout
            r = await self.client.request(method, full, json=json, params=params, **kw)
        except httpx.HTTPError as exc:
            self.last_fail[url] = time.time()
            raise PeerError(url, f"{type(exc).__name__}: {exc}") from exc
        self.last_ok[url] = time.time()
        if r.status_code >= 400:
            try:
                detail = r.json()
            except ValueError:
                detail = r.text[:200]
            raise PeerError(url, f"HTTP {r.status_code}: {detail}", r.status_code)
        return r.json()

    async def votes(self, url: str, sid_hex: str) -> dict:
        return await self._req("POST", url, "/peer/votes", json={"stream_id": sid_hex})

    async def fetch_events(self, url: str, hashes: list[str]) -> dict:
        return await self._req("POST", url, "/peer/events", json={"hashes": hashes})

    async def attest(self, url: str, body: dict, timeout: float | None = None) -> dict:
        return await self._req("POST", url, "/peer/attest", json=body, timeout=timeout)

    async def gossip(self, url: str, events: list[dict]) -> dict:
        return await self._req("POST", url, "/peer/gossip", json={"events": events})

    async def blocks(self, url: str, sid_hex: str, first: int, last: int) -> dict:
        return await self._req("GET", url, f"/peer/blocks/{sid_hex}", params={"from": first, "to": last})

    async def health(self, url: str) -> dict:
        return await self._req("GET", url, "/healthz", timeout=1.0)
