"""The HTTP side of peer authentication (rule: node.protocol.peer_auth; scheme: docs/protocol.md,
"Peer authentication"), and the bound on concurrent requests.

`PeerAuth` is a pure ASGI middleware in front of the API. For every `/peer/*` request it reads the
proof headers first (none or malformed, or a timestamp outside the window: 401 before the body is
read), then the raw body bytes (capped by `BodyLimit` outside it), checks the signature over them
(401), that the signer is a registered node active in the current epoch (403), and that the exact
signature was not seen before (401). The endpoint then finds the authenticated sender in
`request.state.peer`. Answers to `/peer/votes` and `/peer/attest` (and their `/batch` forms) get an
`X-Peer-Response-Signature`.

`Concurrency` bounds requests in flight (client and peer requests separately, so a client flood
cannot starve consensus traffic): over the bound, 503 with Retry-After, nothing is read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

from node.protocol.peer_auth import (
    HDR_RESPONSE_SIGNATURE,
    PeerAuthError,
    check_fresh,
    parse_proof,
    sign_request,
    sign_response,
    verify_request,
)
from node.protocol.types import Domain

if TYPE_CHECKING:
    from .core import Node

log = logging.getLogger("node.peer_auth")

SIGNED_ANSWERS = ("/peer/votes", "/peer/attest", "/peer/votes/batch", "/peer/attest/batch")
EXEMPT = ("/healthz", "/metrics")


def _err(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail}, headers=headers)


class ReplayGuard:
    """Signatures seen within the window, per sender, at most `per_sender` each. When a sender's set is
    full its oldest entry is dropped and its timestamp becomes that sender's low-water mark: a request
    not newer than the mark is refused too, so an evicted signature can never be replayed."""

    def __init__(self, per_sender: int, window_s: float) -> None:
        self.per_sender = per_sender
        self.window_ms = int(window_s * 1000)
        self._seen: dict[str, OrderedDict[bytes, int]] = {}
        self._mark: dict[str, int] = {}

    def fresh(self, sender: str, signature: bytes, ts_ms: int, now_ms: int) -> bool:
        """True (and remembered) the first time; False for a replay."""
        d = self._seen.get(sender)
        if d is None:
            d = self._seen[sender] = OrderedDict()
        if signature in d or ts_ms <= self._mark.get(sender, -1):
            return False
        d[signature] = ts_ms
        horizon = now_ms - self.window_ms
        while d and next(iter(d.values())) < horizon:
            d.popitem(last=False)
        while len(d) > self.per_sender:
            _sig, old = d.popitem(last=False)
            self._mark[sender] = max(self._mark.get(sender, -1), old)
        return True

    def __len__(self) -> int:
        return sum(len(d) for d in self._seen.values())


class PeerAuth:
    def __init__(self, app: Any, node: Node) -> None:
        self.app, self.node = app, node
        cfg = node.cfg
        self.window = float(cfg.peer_auth_window_s)
        # Senders are active registered nodes only (at most MAX_NODES): the guard is bounded.
        self.replays = ReplayGuard(cfg.peer_replay_cache, self.window)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/peer/"):
            await self.app(scope, receive, send)
            return
        node = self.node
        hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())
                if k.startswith(b"x-peer-")}
        try:
            proof = parse_proof(hdrs)
            check_fresh(proof, node.chain_now(), self.window)
        except PeerAuthError as exc:
            node.metrics.peer_refused.labels("401").inc()
            await _err(401, "unauthenticated", str(exc))(scope, receive, send)
            return
        chunks = []
        while True:  # raw bytes only; BodyLimit (outside) refuses an oversize body with 413
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        raw = scope.get("raw_path") or scope["path"].encode()
        target = raw.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        try:
            sender = verify_request(node.domain, proof, scope["method"], target, body)
        except PeerAuthError as exc:
            node.metrics.peer_refused.labels("401").inc()
            await _err(401, "unauthenticated", str(exc))(scope, receive, send)
            return
        if not node.is_active(sender):
            node.metrics.peer_refused.labels("403").inc()
            await _err(403, "not_a_node", f"{sender} is not a registered node active in epoch "
                       f"{node.current_epoch()}")(scope, receive, send)
            return
        if not self.replays.fresh(sender, proof.signature, proof.timestamp_ms, int(node.chain_now() * 1000)):
            node.metrics.peer_refused.labels("401").inc()
            await _err(401, "replayed", "this request was seen before")(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["peer"] = sender
        given = False

        async def replay_body() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        if scope["path"] not in SIGNED_ANSWERS:
            await self.app(scope, replay_body, send)
            return
        start: dict[str, Any] = {}
        parts: list[bytes] = []

        async def signed_send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                start.update(msg)
                return
            if msg["type"] != "http.response.body":
                await send(msg)
                return
            parts.append(msg.get("body", b""))
            if msg.get("more_body"):
                return
            out = b"".join(parts)
            sig = sign_response(node.domain, node.key, proof.signature, int(start["status"]), out)
            headers = [*start.get("headers", []), (HDR_RESPONSE_SIGNATURE.encode(), sig.encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": out, "more_body": False})

        await self.app(scope, replay_body, signed_send)
        return


class Concurrency:
    """At most `client` client and `peer` peer requests in flight; over it, 503 with Retry-After."""

    def __init__(self, app: Any, client: int, peer: int) -> None:
        self.app = app
        self.client, self.peer = asyncio.Semaphore(client), asyncio.Semaphore(peer)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        sem = self.peer if scope["path"].startswith("/peer/") else self.client
        if sem.locked():
            return await _err(503, "busy", "too many requests in flight; retry shortly",
                              {"Retry-After": "1"})(scope, receive, send)
        async with sem:
            await self.app(scope, receive, send)
            return


class Signer:
    """What node.server.peers.Peers uses to sign its requests and to know who should answer."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def headers(self, method: str, target: str, body: bytes) -> dict[str, str]:
        n = self.node
        return sign_request(n.domain, n.key, n.me, method, target, body, int(n.chain_now() * 1000))

    def addresses_at(self, url: str) -> set[str]:
        u = url.rstrip("/")
        return {a for a, r in self.node.nodes.items() if r.url and r.url.rstrip("/") == u}

    @property
    def domain(self) -> Domain:
        return self.node.domain


def install(node: Node, api: Any) -> Any:
    """Sign the node's outgoing peer requests; wrap `api` with PeerAuth. Returns the wrapped app."""
    node.peers.signer = Signer(node)
    return PeerAuth(api, node)
