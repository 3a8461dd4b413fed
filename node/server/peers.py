"""HTTP client to peer nodes (httpx, pooled connections). Peer URLs come from the registry."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx

from node.protocol.peer_auth import HDR_RESPONSE_SIGNATURE, HDR_SIGNATURE, PeerAuthError, recover_response
from node.protocol.types import Domain

from . import wire

log = logging.getLogger("node.peers")


class PeerError(RuntimeError):
    def __init__(self, url: str, msg: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {msg}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Relayed:
    """A relayed request's answer (node/server/forward.py)."""

    status_code: int
    headers: httpx.Headers
    content: bytes


class RequestSigner(Protocol):
    @property
    def domain(self) -> Domain: ...

    def headers(self, method: str, target: str, body: bytes) -> dict[str, str]: ...

    def addresses_at(self, url: str) -> set[str]: ...


FETCH_CHUNK = 1024  # hashes per /peer/events request (the server's count cap)
RELAY_INFLIGHT = 32  # client requests relayed to replicas at once (node/server/forward.py); more: 503


class Peers:
    """Every request is signed (node.protocol.peer_auth) once `signer` is set (node.server.peer_auth.install);
    answers to votes and attestations must carry the signature of a node registered at the URL asked."""

    signer: RequestSigner | None = None

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
        # Client requests a non-replica relays to a replica (node/server/forward.py): their own pool and bound,
        # so a client flood through this node never queues ahead of its consensus requests.
        self.relay_client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 1.0)),
                                              limits=httpx.Limits(max_connections=RELAY_INFLIGHT,
                                                                  max_keepalive_connections=8),
                                              trust_env=False, follow_redirects=False)
        self.relay_inflight = asyncio.Semaphore(RELAY_INFLIGHT)

    async def close(self) -> None:
        await self.client.aclose()
        await self.relay_client.aclose()

    def relay_busy(self) -> bool:
        return self.relay_inflight.locked()

    async def relay(self, method: str, url: str, target: str, body: bytes | None, headers: dict[str, str],
                    max_bytes: int, timeout: float | None = None) -> Relayed:
        """A client request passed on unsigned to `url` (another node's client API) as it came; the answer as
        it is (any status), read up to `max_bytes` (a larger one is a PeerError: a registered node cannot make
        this one buffer without bound). Raises PeerError if the node cannot be reached."""
        async with self.relay_inflight:
            try:
                kw: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
                req = self.relay_client.build_request(method, url.rstrip("/") + target, content=body,
                                                      headers=headers, **kw)
                r = await self.relay_client.send(req, stream=True)
                try:
                    data = bytearray()
                    async for chunk in r.aiter_bytes():
                        data += chunk
                        if len(data) > max_bytes:
                            raise PeerError(url, f"answer over {max_bytes} bytes", r.status_code)
                finally:
                    await r.aclose()
            except httpx.HTTPError as exc:
                self.last_fail[url] = time.time()
                raise PeerError(url, f"{type(exc).__name__}: {exc}") from exc
        self.last_ok[url] = time.time()
        return Relayed(r.status_code, r.headers, bytes(data))

    def reachable(self, within: float = 30.0) -> int:
        now = time.time()
        return sum(1 for u, t in self.last_ok.items() if now - t < within and t >= self.last_fail.get(u, 0))

    async def _req(self, method: str, url: str, path: str, json: Any = None, params: Any = None,
                   timeout: float | None = None, signed_answer: bool = False, body: bytes | None = None) -> Any:
        """`json` (plain data, encoded here) or `body` (JSON bytes already encoded, node/server/wire.py)."""
        target = path + ("?" + urlencode(params) if params else "")
        if body is None and json is not None:
            body = wire.dumps(json)
        async with self.inflight:
            return await self._req1(method, url, target, body, timeout, signed_answer)

    async def _req1(self, method: str, url: str, target: str, body: bytes | None, timeout: float | None,
                    signed_answer: bool) -> Any:
        # The exact bytes sent are the bytes signed (method, path and query, body).
        headers = {"content-type": "application/json"} if body is not None else {}
        body = body or b""
        if self.signer is not None:
            headers.update(self.signer.headers(method, target, body))
        try:
            kw: dict[str, Any] = {}
            if timeout is not None:
                kw["timeout"] = timeout
            r = await self.client.request(method, url.rstrip("/") + target, content=body or None, headers=headers,
                                          **kw)
        except httpx.HTTPError as exc:
            self.last_fail[url] = time.time()
            raise PeerError(url, f"{type(exc).__name__}: {exc}") from exc
        self.last_ok[url] = time.time()
        if r.status_code >= 400:
            try:
                detail = wire.loads(r.content)
            except ValueError:
                detail = r.text[:200]
            raise PeerError(url, f"HTTP {r.status_code}: {detail}", r.status_code)
        if signed_answer and self.signer is not None:
            self._check_answer(url, headers, r)
        try:
            return wire.loads(r.content)
        except ValueError as exc:
            raise PeerError(url, f"answer is not JSON: {exc}", r.status_code) from None

    def _check_answer(self, url: str, sent: dict[str, str], r: httpx.Response) -> None:
        """The answer must be signed, over this request's signature, by a node registered at `url`."""
        assert self.signer is not None
        req_sig = bytes.fromhex(sent[HDR_SIGNATURE][2:])
        try:
            who = recover_response(self.signer.domain, req_sig, r.status_code, r.content,
                                   r.headers.get(HDR_RESPONSE_SIGNATURE))
        except PeerAuthError as exc:
            raise PeerError(url, str(exc), r.status_code) from None
        if who not in self.signer.addresses_at(url):
            raise PeerError(url, f"answer signed by {who}, not by the node registered at {url}", r.status_code)

    async def votes(self, url: str, sid_hex: str) -> dict:
        return await self._req("POST", url, "/peer/votes", json={"stream_id": sid_hex}, signed_answer=True)

    async def votes_batch(self, url: str, sid_hexes: list[str]) -> dict:
        """Votes for several streams in one request (/peer/votes/batch); each item answered or refused."""
        return await self._req("POST", url, "/peer/votes/batch", json={"stream_ids": sid_hexes}, signed_answer=True)

    async def attest_batch(self, url: str, proposals: list[bytes], timeout: float | None = None) -> dict:
        """Attestations for several proposals (each its JSON bytes, built once for all peers: wire.dumps) in
        one request (/peer/attest/batch); each answered or refused."""
        return await self._req("POST", url, "/peer/attest/batch", body=wire.join_list(b"proposals", proposals),
                               timeout=timeout, signed_answer=True)

    async def fetch_events(self, url: str, hashes: list[str]) -> dict:
        """Events by hash, in requests of at most FETCH_CHUNK hashes; a server that answers only a prefix
        (its byte cap) says where it stopped (`next`) and the rest is asked again."""
        events: list[dict] = []
        todo = list(hashes)
        while todo:
            chunk = todo[:FETCH_CHUNK]
            resp = await self._req("POST", url, "/peer/events", json={"hashes": chunk})
            events += resp.get("events", [])
            nxt = resp.get("next")
            done = len(chunk) if not isinstance(nxt, int) or not 0 < nxt <= len(chunk) else nxt
            todo = todo[done:]
        return {"events": events}

    async def attest(self, url: str, body: dict, timeout: float | None = None) -> dict:
        return await self._req("POST", url, "/peer/attest", json=body, timeout=timeout, signed_answer=True)

    async def commit(self, url: str, body: dict, timeout: float) -> dict:
        """Hand signed headers to the aggregator at `url` (node/server/aggregate.py); it answers once mined."""
        return await self._req("POST", url, "/peer/commit", json=body, timeout=timeout)

    async def gossip(self, url: str, events: list[bytes]) -> dict:
        """Events (each its wire bytes, built once for all peers: wire.event_bytes) in one /peer/gossip."""
        return await self._req("POST", url, "/peer/gossip", body=wire.join_list(b"events", events))

    async def blocks(self, url: str, sid_hex: str, first: int, last: int) -> dict:
        return await self._req("GET", url, f"/peer/blocks/{sid_hex}", params={"from": first, "to": last})

    async def snapshots(self, url: str, sid_hex: str) -> dict:
        """The snapshots a peer holds for a stream (node/server/snapshots.py)."""
        return await self._req("GET", url, f"/peer/snapshot/{sid_hex}")

    async def snapshot_page(self, url: str, sid_hex: str, number: int, offset: int) -> dict:
        return await self._req("GET", url, f"/peer/snapshot/{sid_hex}", params={"number": number, "offset": offset})

    async def health(self, url: str) -> dict:
        return await self._req("GET", url, "/healthz", timeout=1.0)
