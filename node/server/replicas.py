"""Replica-set upkeep: a replica that is no longer active is replaced on-chain (replaceReplica).

One node acts per stream to avoid a stampede: the first replica (in stored order) that is active; if
none is, the first active node of the registry. A revert (already replaced, no candidate) is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .core import Node
from .handoff import handoff_once
from .models import hx

log = logging.getLogger("node.replicas")


def needs_replacing(node: Node, sid: bytes, addr: str, epoch: int) -> bool:
    """The one rule for "this replica of `sid` should be replaced": today, not active in `epoch` (left or
    never joined). A contract rule for a registered-but-dead replica (issue 10) is one more condition here
    (e.g. it led none of its elected slots for K epochs), the call below staying `replaceReplica`."""
    return not node.is_active(addr, epoch)


async def upkeep_once(node: Node) -> int:
    if not node.cfg.replace_replicas or not node.view.nodes:
        return 0
    epoch = node.current_epoch()
    if not node.is_active(node.me, epoch):
        return 0
    active_nodes = [a for a in node.view.nodes if node.is_active(a, epoch)]
    sent = 0
    for row in node.storage.all_streams():
        reps = node.replicas_of(row.stream_id)
        stale = [i for i, a in enumerate(reps) if needs_replacing(node, row.stream_id, a, epoch)]
        if not stale:
            continue
        acting = next((a for a in reps if node.is_active(a, epoch)), active_nodes[0] if active_nodes else None)
        if acting != node.me:
            continue
        for i in stale:
            key = ("replace", row.stream_id, i, epoch)
            if node.tried.get(key, 0) > time.time():
                continue
            node.tried[key] = time.time() + 5.0
            try:
                rc = await node.chain.replace_replica(row.stream_id, i, check=False)
                node.metrics.gas_spent.inc(rc.gas_used)
                log.info("replaced replica %d of %s (tx status %s)", i, hx(row.stream_id), rc.status)
                sent += 1
            except Exception as exc:  # noqa: BLE001 - a revert (already replaced) or RPC failure: retried
                log.info("replaceReplica(%s, %d) failed: %s", hx(row.stream_id), i, exc)
        node.wake_sync.set()
    return sent


async def upkeep_loop(node: Node, interval: float = 1.0) -> None:
    while not node.stopping:
        try:
            await upkeep_once(node)
            await handoff_once(node)
        except Exception:  # noqa: BLE001 - the loop must outlive any failure of one round
            log.exception("replica upkeep failed")
        await asyncio.sleep(interval)
