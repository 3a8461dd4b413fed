"""A node on its way out: stop taking client events it could not get into blocks, and hand off the ones
it holds.

Why: peers answer /peer/* only for nodes active in the current epoch, so once a node's leave epoch
begins its gossip is refused, and an event it accepted but had not forwarded would be stranded in its
pool (the chaos run found such losses). So:

- `refusing_clients`: from `LEAVE_MARGIN_S` before its leave epoch on, a node answers client posts
  503 `leaving` (with Retry-After): clients post to another node.
- `handoff_once` (from the upkeep loop): from that moment on, its pending events are posted, as a
  client would, to the client batch endpoint of an active replica of their stream (or any active node);
  accepted or already-known events are marked forwarded for good.
- `handoff_on_stop` (from the shutdown path): a node whose leave is requested and that is stopped before
  that moment (an operator stops it early) hands its pending events off first, bounded in time: an event
  it accepted but had not forwarded yet would otherwise be on no running node (the chaos run found it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import httpx

from node.protocol.registry import epoch_time_left

from .core import Node
from .intake import to_wire

log = logging.getLogger("node.handoff")

LEAVE_MARGIN_S = 5.0
HANDOFF_BATCH = 500


def leaving(node: Node) -> bool:
    """This node was registered and is out, or is out within LEAVE_MARGIN_S (its leave epoch)."""
    if not leave_requested(node):
        return False
    rec = node.view.nodes[node.me]
    epoch = node.current_epoch()
    if rec.leave_epoch <= epoch:
        return True
    return rec.leave_epoch == epoch + 1 and epoch_time_left(node.params, node.chain_now()) < LEAVE_MARGIN_S


def leave_requested(node: Node) -> bool:
    """This node was registered and has a leave scheduled (now or later)."""
    rec = node.view.nodes.get(node.me)
    return rec is not None and rec.join_epoch != 0 and rec.leave_epoch < 2**63


def refusing_clients(node: Node) -> str | None:
    """Why client posts are refused here now (None: they are taken)."""
    if leaving(node):
        return "this node is leaving the registry; post to another node"
    return None


def _target(node: Node, sid: bytes) -> str | None:
    epoch = node.current_epoch()
    for a in [*node.replicas_of(sid), *node.view.nodes]:
        if a != node.me and node.is_active(a, epoch) and node.url_of(a):
            return node.url_of(a)
    return None


async def handoff_once(node: Node, force: bool = False) -> int:
    """Post this leaving node's pending events to active nodes (with `force`: as soon as a leave is
    requested). Returns how many were taken."""
    if not (leaving(node) or (force and leave_requested(node))):
        return 0
    pending = node.storage.due_for_gossip(older_than=time.time() + 3600, limit=5000)
    if not pending:
        return 0
    by_url: dict[str, list] = defaultdict(list)
    for se in pending:
        url = _target(node, se.event.stream_id)
        if url is not None:
            by_url[url].append(se)
    taken = 0
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        for url, items in by_url.items():
            for k in range(0, len(items), HANDOFF_BATCH):
                chunk = items[k:k + HANDOFF_BATCH]
                try:
                    r = await http.post(f"{url}/v1/events/batch",
                                        json={"events": [to_wire(se.hash, se.event, se.signature) for se in chunk]})
                    results = r.json()["results"] if r.status_code == 200 else None
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    log.info("hand-off to %s failed: %s", url, exc)
                    continue
                if results is None:
                    continue
                done = [se.hash for se, res in zip(chunk, results, strict=False)
                        if res.get("ok") or res.get("status") in (409, 422)]  # taken, or final refusals there
                node.storage.mark_gossiped(done, time.time() + 10 * 365 * 86400)
                taken += sum(1 for res in results if res.get("ok"))
    if taken:
        log.info("leaving: handed %d pending events to active nodes (%s)", taken, ", ".join(by_url))
    return taken


async def handoff_on_stop(node: Node, timeout: float = 6.0) -> int:
    """On shutdown of a node whose leave is requested: hand its pending events off (bounded by `timeout`,
    under the 10 s a supervisor waits before SIGKILL). 0 if nothing was handed off."""
    if not leave_requested(node):
        return 0
    try:
        return await asyncio.wait_for(handoff_once(node, force=True), timeout)
    except Exception as exc:  # noqa: BLE001 - best effort on the way out; the pool stays on disk
        log.warning("hand-off on stop failed: %s", exc)
        return 0
