"""Chain watcher: registry logs from a cursor (stored), woken early by a WebSocket subscription.

Log polling by block range is the source of truth; the WebSocket subscription (newHeads) only wakes
the loop, and if it fails the loop still polls every poll_ms. Each poll first checks that the chain under
the cursor is still the one scanned (node.server.reorg: a reorg rolls back what orphaned blocks brought),
then scans to the latest block, recording the block hashes with the cursor.
"""

from __future__ import annotations

import asyncio
import json
import logging

from node.chain.logs import LogBatch

from .core import Node
from .headreads import load_heads
from .reorg import check_reorg, final_block, note_rollbacks, reload_heads
from .sync import sync_all

log = logging.getLogger("node.watcher")

MAX_RANGE = 2000


def apply_log_batch(node: Node, batch: LogBatch) -> None:
    """Record what the chain says (streams, replica changes, commits) in the node's chain view and
    storage; blocks are applied by sync. The one apply of registry logs (the producer's receipt too)."""
    rollbacks = node.view.apply_logs(batch, node.chain.cached_block_time)
    if rollbacks:
        note_rollbacks(node, rollbacks, "replaced header")


_poll_lock: asyncio.Lock | None = None


async def poll_once(node: Node) -> int:
    global _poll_lock
    if _poll_lock is None:
        _poll_lock = asyncio.Lock()
    async with _poll_lock:
        return await _poll_once(node)


async def _poll_once(node: Node) -> int:
    latest, latest_hash = await node.chain.latest_block_hash()
    if node.rescan_from is not None:
        stored, _h = node.storage.cursor()
        if stored is not None and stored >= node.rescan_from:
            node.storage.set_cursor(node.rescan_from - 1, None)
        node.rescan_from = None
    await check_reorg(node, latest)
    stored, _h = node.storage.cursor()
    cursor = node.cfg.start_block - 1 if stored is None else stored
    n = 0
    while cursor < latest:
        to = min(latest, cursor + MAX_RANGE)
        if to == latest:
            to_hash: bytes | None = latest_hash
        else:
            b = await node.chain.block_hash(to)
            to_hash = b[1] if b else None
        batch = await node.chain.scan(cursor + 1, to)
        apply_log_batch(node, batch)
        if batch.nodes_changed:
            await node.refresh_nodes()
        cursor = to
        node.storage.set_cursor(cursor, to_hash, batch.block_hashes)
        n += len(batch.committed)
    await reload_heads(node)
    node.chain_block = latest
    node.final_block = await final_block(node, latest)
    node.metrics.chain_block.set(latest)
    node.metrics.final_block.set(node.final_block)
    return n


async def init_heads(node: Node, concurrency: int = 16) -> None:
    """On start: every stream's head and replicas from the store (recorded from the logs up to the cursor;
    the next scan brings what came after), so a restart costs one query, not two chain calls per stream.
    Streams whose head timestamp the store lacks (a data dir from before it was recorded) are read from the
    registry, `concurrency` at a time. The streams behind their chain head go on sync's work list."""
    rows = node.storage.stored_heads()
    unknown = node.view.load_stored(rows)
    node.sync_todo.update(r.stream_id for r in rows if r.local_head < r.number)
    if unknown:
        log.info("%d of %d streams without a recorded head timestamp: reading their heads from the registry",
                 len(unknown), len(rows))
    await load_heads(node, (r.stream_id for r in unknown), concurrency=concurrency)  # failed: the logs bring them


async def watch_loop(node: Node) -> None:
    interval = node.cfg.poll_ms / 1000
    last_epoch = None
    while not node.stopping:
        try:
            commits = await poll_once(node)
            e = node.current_epoch()
            if e != last_epoch:
                await node.refresh_nodes()
                last_epoch = e
            await sync_all(node)
            node.ready = True
            if commits:  # heads moved and their blocks are applied: the next leaders may build now
                node.wake_produce.set()
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
