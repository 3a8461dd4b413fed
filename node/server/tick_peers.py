"""The leader's peer calls of one tick, batched: ONE votes request (/peer/votes/batch) and ONE attest request
(/peer/attest/batch) per peer, carrying every stream the leader drafts with that peer (at 1,000 streams a
leader's tick drafts 50-250 headers; one request per stream and peer was 4 HTTP calls per header).

Each stream keeps its own quorum: the tick goes on once every stream has a quorum of answers (or cannot get
one) plus a short grace, so a hung replica costs the tick `GRACE_S`, not a peer timeout. Answers are
signed by the peer (Peers checks it) and every attestation is checked to recover to its replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from node.protocol.eip712 import recover_header_signer
from node.protocol.types import Header

from . import wire
from .core import Node
from .models import MAX_PEER_BATCH, HeaderOut, hx, unhex

log = logging.getLogger("node.tick_peers")

GRACE_S = 0.15  # once every stream has a quorum of answers, how long to wait for the other replicas


async def gather_until(coros: Sequence[Awaitable[Any]], enough: Callable[[], bool], timeout: float,
                       grace: float = GRACE_S) -> None:
    """Run `coros` (each records its own result) until all finished, or `timeout` passed, or `enough()` has
    held for `grace` seconds. Unfinished ones are cancelled."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    pending = set(tasks)
    graced = False
    try:
        while pending:
            left = end - loop.time()
            if left <= 0:
                break
            _done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if not graced and pending and enough():
                end = min(end, loop.time() + grace)
                graced = True
    finally:
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _by_peer(node: Node, items: Sequence[tuple[bytes, Sequence[str]]]) -> dict[tuple[str, str], list[int]]:
    """(peer address, url) -> indexes of the items (stream, its replicas to ask) that peer is asked about."""
    out: dict[tuple[str, str], list[int]] = {}
    for i, (_sid, replicas) in enumerate(items):
        for a, u in node.peer_urls(list(replicas)):
            out.setdefault((a, u), []).append(i)
    return out


def _chunks(idx: list[int], size: int = MAX_PEER_BATCH) -> list[list[int]]:
    return [idx[k:k + size] for k in range(0, len(idx), size)]


async def votes_for(node: Node, sids: Sequence[bytes]) -> dict[bytes, list[list[bytes]]]:
    """Each stream's votes: this node's pool first, then every replica that answered within the bounds."""
    items = [(sid, node.replicas_of(sid)) for sid in sids]
    got: list[list[list[bytes]]] = [[] for _ in items]
    need = [node.quorum(sid) - 1 for sid in sids]
    asked = [0] * len(items)

    async def one(url: str, idx: list[int]) -> None:
        try:
            resp = await node.peers.votes_batch(url, [hx(items[i][0]) for i in idx])
            answers = resp.get("votes", [])
            for i, v in zip(idx, answers, strict=False):
                if v.get("stream_id") == hx(items[i][0]) and v.get("status") == 200:
                    got[i].append([unhex(h) for h in v.get("hashes", [])])
                else:
                    log.debug("vote for %s from %s refused: %s", hx(items[i][0])[:10], url, v.get("error"))
        except Exception as exc:  # noqa: BLE001 - any peer failure is a missing vote for its streams
            log.debug("votes from %s: %s", url, exc)

    calls = []
    for (_a, url), idx in _by_peer(node, items).items():
        for i in idx:
            asked[i] += 1
        calls += [one(url, c) for c in _chunks(idx)]
    await gather_until(calls, lambda: all(len(g) >= min(n, a) for g, n, a in zip(got, need, asked, strict=True)),
                       node.cfg.peer_timeout_s)
    return {sid: [node.storage.pool_hashes(sid), *got[i]] for i, sid in enumerate(sids)}


def attest_body(header: Header, hashes: Sequence[bytes]) -> dict[str, Any]:
    return {"header": HeaderOut.of(header).model_dump(), "event_hashes": [hx(h) for h in hashes]}


async def attestations_for(node: Node, proposals: Sequence[tuple[Header, Sequence[bytes]]],
                           epoch: int) -> list[list[bytes] | None]:
    """Each proposal's attestations (signatures that recover to one of its active replicas), None when fewer
    than a quorum (with the leader's own) came back."""
    items = [(h.stream_id, [a for a in node.replicas_of(h.stream_id) if node.is_active(a, epoch)])
             for h, _ in proposals]
    bodies = [wire.dumps(attest_body(h, hs)) for h, hs in proposals]  # each encoded once for all its peers
    got: list[list[bytes]] = [[] for _ in proposals]
    need = [node.quorum(h.stream_id) - 1 for h, _ in proposals]
    asked = [0] * len(items)
    timeout = max(node.cfg.peer_timeout_s, 5.0)
    cap = node.cfg.max_attest_batch_hashes

    async def one(addr: str, url: str, idx: list[int]) -> None:
        try:
            resp = await node.peers.attest_batch(url, [bodies[i] for i in idx], timeout=timeout)
            for i, r in zip(idx, resp.get("results", []), strict=False):
                header = proposals[i][0]
                if r.get("status") != 200:
                    log.info("attest %s #%d by %s refused: %s %s", hx(header.stream_id)[:10], header.number, addr,
                             r.get("error"), r.get("detail"))
                    continue
                sig = unhex(r["signature"])
                if recover_header_signer(node.domain, header, sig) == addr:
                    got[i].append(sig)
                else:
                    log.warning("attestation from %s does not recover to it", addr)
        except Exception as exc:  # noqa: BLE001 - any peer failure is a missing attestation for its proposals
            log.info("attest batch of %d by %s failed: %s", len(idx), addr, exc)

    calls = []
    for (addr, url), idx in _by_peer(node, items).items():
        for i in idx:
            asked[i] += 1
        chunk: list[int] = []
        size = 0
        for i in idx:  # at most MAX_PEER_BATCH proposals and `cap` event hashes per request
            n = len(proposals[i][1])
            if chunk and (len(chunk) >= MAX_PEER_BATCH or size + n > cap):
                calls.append(one(addr, url, chunk))
                chunk, size = [], 0
            chunk.append(i)
            size += n
        if chunk:
            calls.append(one(addr, url, chunk))
    await gather_until(calls, lambda: all(len(g) >= min(n, a) for g, n, a in zip(got, need, asked, strict=True)),
                       timeout)
    return [g if len(g) >= n else None for g, n in zip(got, need, strict=True)]
