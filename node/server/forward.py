"""Streams this node does not store (docs/node.md, "Streams a node does not replicate").

A node stores only the streams it follows (`Node.follows`: those it replicates, unless `sync_all_streams`). A
client may still post to it or read from it: it passes the request on to a replica of the stream, unchanged
and unchecked (the replica checks the events and answers once they are on its disk, so the 2xx the client
gets means what it means on a replica), and hands back the replica's answer as it is.

Bounds: one upstream request per client request (a batch: one per replica its streams need, at most the
replication factor of tries per event), `peers.RELAY_INFLIGHT` at once (503 `busy` beyond),
`relay_timeout_s`, an answer read up to `answer_cap` (a replica cannot make this node buffer without bound).
No loops: a passed-on request carries `X-Forwarded-By`, and a node never passes on such a request (421
`not_replica`). A client may set the header too; it only ever stops forwarding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import Request
from fastapi.responses import Response

from . import wire
from .core import Node
from .intake import Rejected
from .models import BatchItemResult, EventBatch, SignedEvent, hx
from .peers import PeerError, Relayed

HDR_FORWARDED = "x-forwarded-by"
RETRY = {"Retry-After": "1"}


def forwarded(request: Request) -> bool:
    """The request was passed on by another node already (never pass it on again)."""
    return HDR_FORWARDED in request.headers


def elsewhere(node: Node, sid: bytes) -> bool:
    """Requests about `sid` go to a replica: the chain knows the stream and this node does not store it."""
    return node.view.head(sid) is not None and not node.follows(sid)


def replica_urls(node: Node, sid: bytes) -> list[str]:
    """The stream's active replicas' URLs (not this node), in replica order, those whose last request from
    here failed last (a hung replica costs one relay timeout, not one per request)."""
    urls = [u for a, u in node.peer_urls(node.replicas_of(sid)) if node.is_active(a)]
    ok, fail = node.peers.last_ok, node.peers.last_fail
    return sorted(urls, key=lambda u: fail.get(u, 0.0) > ok.get(u, 0.0))


def not_replica(node: Node, sid: bytes) -> Rejected:
    urls = replica_urls(node, sid)
    return Rejected(421, "not_replica", f"this node does not store stream {hx(sid)}; its replicas: "
                    f"{', '.join(urls) or 'none reachable'}", {"X-Replicas": ",".join(urls)} if urls else None)


def remember(node: Node, hashes: Sequence[bytes], sid: bytes) -> None:
    """Events passed on to `sid`'s replicas: `GET /v1/events/{hash}` here asks a replica for them."""
    for h in hashes:
        node.forwarded.put(h, sid)


HEADERS = {"content-type": "application/json", HDR_FORWARDED: "1"}


def answer_cap(node: Node) -> int:
    """The largest answer relayed: a block list or a batch's results, with room (the replica's own caps)."""
    return node.cfg.max_blocks_bytes + node.cfg.max_body


async def _try(node: Node, sid: bytes, method: str, target: str, body: bytes | None) -> tuple[str, Relayed]:
    """The first replica that answers (a 503 or no answer: the next one)."""
    if node.peers.relay_busy():
        raise Rejected(503, "busy", "too many requests passed on to replicas; retry shortly", RETRY)
    last = "no active replica with a URL"
    for url in replica_urls(node, sid):
        try:
            r = await node.peers.relay(method, url, target, body, HEADERS, answer_cap(node),
                                       timeout=node.cfg.relay_timeout_s)
        except PeerError as exc:
            last = str(exc)
            continue
        if r.status_code == 503:
            last = f"{url}: 503"
            continue
        return url, r
    raise Rejected(503, "replica_unavailable", f"no replica of {hx(sid)} answered ({last})", RETRY)


def _answer(url: str, r: Relayed) -> Response:
    headers = {"X-Served-By": url}
    for k in ("retry-after", "x-replicas"):
        if k in r.headers:
            headers[k] = r.headers[k]
    return Response(r.content, status_code=r.status_code, headers=headers,
                    media_type=r.headers.get("content-type", "application/json"))


async def relay_read(node: Node, request: Request, sid: bytes) -> Response:
    """A read of a stream stored elsewhere (its state, a block, an event): the replica's answer."""
    if forwarded(request):
        raise not_replica(node, sid)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url, r = await _try(node, sid, "GET", target, None)
    return _answer(url, r)


async def relay_event(node: Node, request: Request, body: SignedEvent, h: bytes, sid: bytes) -> Response:
    """One client event of a stream stored elsewhere: posted as it came to a replica, its answer returned."""
    if forwarded(request):
        raise not_replica(node, sid)
    url, r = await _try(node, sid, "POST", "/v1/events", body.model_dump_json().encode())
    if r.status_code < 300:
        remember(node, [h], sid)
    return _answer(url, r)


async def relay_batch(node: Node, events: list[SignedEvent], items: list[tuple[bytes, bytes]]
                      ) -> list[BatchItemResult]:
    """Client events (with their (hash, stream)) of streams stored elsewhere, in groups per replica: each
    group in one `/v1/events/batch` request, the groups at once; a group whose replica did not answer tries
    each event's next replica. Per event its replica's result, in order."""
    out: list[BatchItemResult | None] = [None] * len(items)
    tries = [0] * len(items)
    cands = [replica_urls(node, sid) for _h, sid in items]
    todo = list(range(len(items)))
    while todo:
        groups: dict[str, list[int]] = {}
        for i in todo:
            if tries[i] >= len(cands[i]):
                h, sid = items[i]
                out[i] = BatchItemResult(hash=hx(h), ok=False, status=503, error="replica_unavailable",
                                         detail=f"no replica of {hx(sid)} answered")
            else:
                groups.setdefault(cands[i][tries[i]], []).append(i)
        if node.peers.relay_busy() and groups:
            for i in (i for g in groups.values() for i in g):
                out[i] = BatchItemResult(hash=hx(items[i][0]), ok=False, status=503, error="busy",
                                         detail="too many requests passed on to replicas; retry shortly")
            break
        done = await asyncio.gather(*(_post_group(node, url, [events[i] for i in idx]) for url, idx in groups.items()))
        todo = []
        for (_url, idx), res in zip(groups.items(), done, strict=True):
            if res is None:  # no answer: each event's next replica
                for i in idx:
                    tries[i] += 1
                todo += idx
                continue
            for i, r in zip(idx, res, strict=True):
                out[i] = r
                if r.ok:
                    remember(node, [items[i][0]], items[i][1])
    return [r for r in out if r is not None]


async def _post_group(node: Node, url: str, events: list[SignedEvent]) -> list[BatchItemResult] | None:
    body = EventBatch(events=events).model_dump_json().encode()  # pydantic-core's encoder: no dicts built
    try:
        r = await node.peers.relay("POST", url, "/v1/events/batch", body, HEADERS, answer_cap(node),
                                   timeout=node.cfg.relay_timeout_s)
    except PeerError:
        return None
    if r.status_code != 200:
        return None
    try:
        res = [BatchItemResult.model_validate(x) for x in wire.loads(r.content)["results"]]
    except (ValueError, KeyError, TypeError):
        return None
    return res if len(res) == len(events) else None
