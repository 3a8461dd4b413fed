"""Chain watcher: registry logs from a cursor (stored), woken early by a WebSocket subscription.

Log polling by block range is the source of truth; the WebSocket subscription (newHeads) only wakes
the loop, and if it fails the loop still polls every poll_ms.
"""

from __future__ import annotations

import asyncio
import json
import logging

from node.chain.logs import LogBatch
from node.protocol.commit import StreamHead

from .core import Node
from .models import hx
from .sync import sync_all

log = logging.getLogger("node.watcher")

CURSOR = "chain_cursor"
MAX_RANGE = 2000


def apply_log_batch(node: Node, batch: LogBatch) -> None:
    """Record what the chain says (streams, replica changes, commits) in the node's chain view and
    storage; blocks are applied by sync. The one apply of registry logs (the producer's receipt too)."""
    node.view.apply_logs(batch, node.chain.cached_block_time)


_poll_lock: asyncio.Lock | None = None


async def poll_once(node: Node) -> int:
    global _poll_lock
    if _poll_lock is None:
        _poll_lock = asyncio.Lock()
    async with _poll_lock:
        return await _poll_once(node)


async def _poll_once(node: Node) -> int:
    latest, _ts = await node.chain.latest_block()
    cursor = int(node.storage.get_kv(CURSOR) or node.cfg.start_block - 1)
    n = 0
    while cursor < latest:
        to = min(latest, cursor + MAX_RANGE)
        batch = await node.chain.scan(cursor + 1, to)
        apply_log_batch(node, batch)
        if batch.nodes_changed:
            await node.refresh_nodes()
        cursor = to
        node.storage.set_kv(CURSOR, str(cursor))
        n += len(batch.committed)
    node.chain_block = latest
    node.metrics.chain_block.set(latest)
    return n


async def init_heads(node: Node) -> None:
    """On start: the chain's head of every known stream (authoritative, with its timestamp)."""
    for row in node.storage.all_streams():
        try:
            n, h, ts = await node.chain.stream_head(row.stream_id)
            node.view.load_head(row.stream_id, StreamHead(n, h, ts), await node.chain.replicas_of(row.stream_id))
        except Exception as exc:  # noqa: BLE001 - any RPC failure: the watcher's logs bring the head later
            log.warning("head of %s: %s", hx(row.stream_id), exc)


async def watch_loop(node: Node) -> None:
    interval = node.cfg.poll_ms / 1000
    last_epoch = None
    while not node.stopping:
        try:
            await poll_once(node)
            e = node.current_epoch()
            if e != last_epoch:
                await node.refresh_nodes()
                last_epoch = e
            await sync_all(node)
            node.ready = True
        except Exception as exc:  # noqa: BLE001 - the loop outlives any failure of one round; it retries
            log.warning("watch round failed: %s", exc)
        try:
            await asyncio.wait_for(node.wake_sync.wait(), timeout=interval)
        except TimeoutError:
            pass
        node.wake_sync.clear()


async def ws_loop(node: Node) -> None:
    """Subscribe to new heads over WebSocket; each notification wakes the watcher. Falls back silently."""
    url = node.cfg.ws_url
    if not url:
        return
    import websockets

    backoff = 0.5
    while not node.stopping:
        try:
            async with websockets.connect(url, max_size=2**22, open_timeout=5) as ws:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                          "params": ["logs", {"address": node.chain.address}]}))
                backoff = 0.5
                async for _msg in ws:
                    node.wake_sync.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any subscription failure falls back to polling
            log.debug("websocket subscription failed (%s); polling only", exc)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 10)
