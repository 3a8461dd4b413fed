"""Streams' heads and replica lists read from the registry's views into the chain view, a bounded number
at a time: where the logs cannot be trusted alone (a start without recorded timestamps, a rollback, a
rejected or timed-out commit). One place for the read, its bound and its failure handling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from node.protocol.commit import StreamHead

from .core import Node
from .models import hx

log = logging.getLogger("node.heads")

CONCURRENCY = 16  # heads read at once (a tick: up to 256 streams; a deep reorg: every stream)


async def load_heads(node: Node, sids: Iterable[bytes], *, reset: bool = False, why: str = "",
                     concurrency: int = CONCURRENCY) -> set[bytes]:
    """Read each stream's head and replicas and load them into the view (`reset`: first put the head back,
    after a rollback). Returns the streams whose read failed (RPC errors are logged, not raised)."""
    sem = asyncio.Semaphore(concurrency)
    failed: set[bytes] = set()

    async def one(sid: bytes) -> None:
        async with sem:
            try:
                n, h, ts = await node.chain.stream_head(sid)
                replicas = await node.chain.replicas_of(sid)
                if reset and not replicas and n == 0:  # every stream has replicas: this one is not on chain now
                    if node.view.forget_stream(sid):
                        log.warning("stream %s%s: not on chain any more (its creation was orphaned): forgotten",
                                    hx(sid), why)
                    return
                if reset:
                    node.view.reset_head(sid, StreamHead(n, h, ts))
                node.view.load_head(sid, StreamHead(n, h, ts), replicas)
            except Exception as exc:  # noqa: BLE001 - any RPC failure: the caller or the watcher's logs retry
                log.warning("head of %s%s: %s", hx(sid), why, exc)
                failed.add(sid)

    await asyncio.gather(*(one(sid) for sid in set(sids)))
    return failed
