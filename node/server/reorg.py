"""Reorgs and finality: what the watcher does when the chain it followed changed under it.

Policy (docs/node.md, "Finality and reorgs"): a node applies committed blocks as soon as their logs (or
its own commit's receipt) show them, tentatively, and says in its client answers whether a block is final,
that is whether the chain block holding its commit is at least `confirmations` deep (or at or below the
`safe` / `finalized` block when `finality` names that tag). Why tentative rather than waiting: the
registry itself checks every header's parent on chain, so a leader that builds on an unconfirmed head
risks nothing but a rejected header; waiting `confirmations` blocks before every next block would cut a
stream's rate to one block per `confirmations` chain blocks (and stall an automining dev chain).

What makes it safe is the roll-back:

- the watcher keeps the hash of its cursor block and of the blocks logs came from (storage
  `chain_blocks`), and each commit row keeps the hash of the chain block it was seen in;
- each poll first checks the cursor block's hash (it commits to every block below it) and the blocks of
  commits seen above the cursor (the leader's own receipts);
- on a change it finds the fork point (the newest recorded block still canonical), rolls every stream
  back below its first commit after that point (`Storage.rollback_stream`: the events return to the
  mini-pool, nothing accepted is lost, heads and members go back), moves the cursor to the fork point,
  re-reads the heads and replica lists from the registry, and the normal scan re-applies what the
  canonical chain holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .core import Node
from .headreads import load_heads
from .models import hx
from .storage import Rollback

log = logging.getLogger("node.reorg")

FINALITY_TAGS = ("safe", "finalized")


def note_rollbacks(node: Node, rollbacks: Iterable[Rollback], why: str) -> None:
    """Count and log rollbacks; their streams' heads are re-read from the registry by the watcher."""
    for rb in rollbacks:
        node.metrics.rolled_back_blocks.inc(rb.blocks)
        node.metrics.rolled_back_events.inc(rb.events)
        node.heads_to_reload.add(rb.stream_id)
        log.warning("%s: stream %s back to #%d (%d blocks undone, %d events back in the pool)", why,
                    hx(rb.stream_id)[:10], rb.head_number, rb.blocks, rb.events)
    node.wake_sync.set()
    node.wake_gossip.set()


async def find_fork(node: Node, latest: int) -> tuple[int, bytes | None]:
    """The newest recorded chain block that is still canonical (every block under it is too)."""
    for number, h in node.storage.chain_block_hashes():
        if number > latest:
            continue
        now = await node.chain.block_hash(number)
        if now is not None and now[1] == h:
            return number, h
    floor = node.cfg.start_block - 1
    log.error("reorg deeper than the %d chain blocks recorded: rescanning from block %d", len(
        node.storage.chain_block_hashes()), floor + 1)
    return floor, None


async def check_reorg(node: Node, latest: int) -> bool:
    """Detect a reorg under the cursor, or of a commit seen above it, and roll back. True if it rolled back."""
    st = node.storage
    cursor, chash = st.cursor()
    if cursor is None:
        return False
    if chash is not None:
        now = await node.chain.block_hash(cursor) if cursor <= latest else None
        if now is None or now[1] != chash:
            fork, fork_hash = await find_fork(node, latest)
            depth = cursor - fork
            rollbacks = st.rollback_after_block(fork)
            st.set_cursor(fork, fork_hash)
            node.chain.forget_blocks_after(fork)
            node.metrics.reorgs.inc()
            node.reorg_depths.append(depth)
            log.warning("reorg: chain block %d changed; fork at %d (depth %d); %d streams rolled back", cursor,
                        fork, depth, len(rollbacks))
            note_rollbacks(node, rollbacks, "reorg")
            node.heads_to_reload.update(r.stream_id for r in st.all_streams())  # replica lists may differ too
            node.nodes_stale = True
            return True
    # Commits seen above the cursor (this node's own receipts): still where they were seen?
    bad: dict[bytes, int] = {}
    checked: dict[int, bytes | None] = {}
    for c in st.commits_after_block(cursor):
        if c.chain_block > latest or not c.block_hash:
            continue  # not visible yet at this endpoint: checked on a later poll
        if c.chain_block not in checked:
            now = await node.chain.block_hash(c.chain_block)
            checked[c.chain_block] = now[1] if now else None
        if checked[c.chain_block] != c.block_hash:
            bad[c.stream_id] = min(bad.get(c.stream_id, c.number), c.number)
    if not bad:
        return False
    rollbacks = [rb for sid, n in bad.items() if (rb := st.rollback_stream(sid, n - 1)) is not None]
    node.metrics.reorgs.inc()
    node.reorg_depths.append(1)
    note_rollbacks(node, rollbacks, "orphaned commit")
    return True


async def reload_heads(node: Node, concurrency: int = 16) -> None:
    """Heads and replica lists of rolled-back streams, read from the registry (authoritative now),
    `concurrency` streams at a time (a deep reorg reloads every stream)."""
    if node.nodes_stale:
        await node.refresh_nodes()
        node.nodes_stale = False
    todo, node.heads_to_reload = node.heads_to_reload, set()
    node.heads_to_reload |= await load_heads(node, todo, reset=True, why=" after a rollback",
                                             concurrency=concurrency)  # tried again on the next poll


async def final_block(node: Node, latest: int) -> int:
    """The newest chain block this node counts as final: `confirmations` under the latest, and not above
    the `safe` / `finalized` block when `finality` names that tag."""
    final = latest - node.cfg.confirmations
    tag = node.cfg.finality
    if tag in FINALITY_TAGS:
        b = await node.chain.block_hash(tag)
        if b is not None:
            final = min(final, b[0])
    return final
