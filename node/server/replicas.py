"""Replica-set upkeep: a replica that is no longer active, or that the contract holds dead, is replaced
on-chain (replaceReplica).

One node acts per stream to avoid a stampede: the first replica (in stored order) that is active and not
known dead; if none is, the first such node of the registry. A revert (already replaced, not dead after
all, no candidate) is harmless.

Deadness is the contract's rule (livenessOf: skipped in deadMisses slots since it last led, and no lead
for deadEpochs epochs); the node only reads it. To keep RPC cost bounded it reads it only for the
replicas of streams this node stores, at most once per (replica, epoch), and again within an epoch only
when one of the replica's streams has stalled (no commit for STALL_ATTEMPTS attempts), at most every
`_requery_s` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .core import Node
from .handoff import handoff_once
from .models import hx

log = logging.getLogger("node.replicas")

# A stream counts as stalled once this many attempts' windows passed without a commit.
STALL_ATTEMPTS = 3

# addr -> (epoch read at, monotonic time read at, dead); per process, bounded by the node count.
_liveness: dict[str, tuple[int, float, bool]] = {}


def _requery_s(node: Node) -> float:
    return float(max(1, node.params.leader_timeout))


def known_dead(addr: str, epoch: int) -> bool:
    """What the last liveness read said for `addr` in this epoch (False if not read this epoch)."""
    got = _liveness.get(addr)
    return got is not None and got[0] == epoch and got[2]


def needs_replacing(node: Node, sid: bytes, addr: str, epoch: int) -> bool:
    """The one rule for "this replica of `sid` should be replaced": not active in `epoch` (left, evicted or
    never joined), or active but dead by the contract's rule (livenessOf, read by `refresh_liveness`).
    Either way the call is `replaceReplica`, which checks the same rule on-chain."""
    return not node.is_active(addr, epoch) or known_dead(addr, epoch)


def _stalled_since(node: Node, head_ts: int) -> bool:
    """A stream whose head has this timestamp has had no commit for STALL_ATTEMPTS attempts' windows."""
    return bool(head_ts) and node.chain_now() >= head_ts + STALL_ATTEMPTS * node.params.leader_timeout


async def refresh_liveness(node: Node, epoch: int) -> int:
    """Reads livenessOf for the active replicas of this node's streams: once per (replica, epoch), and
    again when one of its streams stalled and `_requery_s` passed. Returns the number of RPC reads.
    The replicas and the oldest head of their streams come from upkeep's index (`look`), not a scan."""
    want: list[str] = []
    for a, oldest in list(node.upkeep.oldest.items()):
        if a == node.me or not node.is_active(a, epoch):
            continue
        got = _liveness.get(a)
        if got is None or got[0] != epoch:
            want.append(a)
        elif not got[2] and time.monotonic() - got[1] >= _requery_s(node) and _stalled_since(node, oldest):
            want.append(a)
    reads = 0
    for a in want:
        try:
            _misses, _led, dead = await node.chain.liveness_of(a)
        except Exception as exc:  # noqa: BLE001 - an RPC failure or an old registry: treat as alive, retry later
            log.debug("livenessOf(%s) failed: %s", a, exc)
            continue
        reads += 1
        _liveness[a] = (epoch, time.monotonic(), dead)
        if dead:
            log.info("replica %s is dead by the contract's rule (epoch %d)", a, epoch)
    return reads


def _inputs(node: Node, epoch: int) -> tuple:
    """What `needs_replacing` and the acting node depend on besides a stream's replicas."""
    dead = frozenset(a for a in node.view.nodes if known_dead(a, epoch))
    return epoch, tuple(node.view.nodes.values()), dead


def look(node: Node, epoch: int) -> int:
    """Bring upkeep's index up to date: every stream once when the epoch, the node records or the dead set
    changed, else only the streams whose replicas changed since (the view's hook). Keeps the streams this
    node must act for (a replica to replace, this node the first active, live replica or, if none, the
    registry's first) and, per replica address, the oldest head timestamp of its streams. Returns the
    streams looked at."""
    up = node.upkeep
    key = _inputs(node, epoch)
    if key != up.key:
        up.key, up.stale, up.oldest = key, {}, {}
        todo: set[bytes] | list[bytes] = list(node.view.heads)
        up.dirty.clear()
    else:
        todo, up.dirty = up.dirty, set()
    active_nodes = [a for a in node.view.nodes if node.is_active(a, epoch) and not known_dead(a, epoch)]
    for sid in todo:
        reps = node.replicas_of(sid)
        head = node.view.head(sid)
        ts = head.timestamp if head is not None else 0
        for a in reps:
            if ts and (a not in up.oldest or not up.oldest[a] or ts < up.oldest[a]):
                up.oldest[a] = ts
            else:
                up.oldest.setdefault(a, 0)
        stale = [i for i, a in enumerate(reps) if needs_replacing(node, sid, a, epoch)]
        acting = next((a for a in reps if node.is_active(a, epoch) and not known_dead(a, epoch)),
                      active_nodes[0] if active_nodes else None) if stale else None
        if stale and acting == node.me:
            up.stale[sid] = stale
        else:
            up.stale.pop(sid, None)
    return len(todo)


async def upkeep_once(node: Node) -> int:
    if not node.cfg.replace_replicas or not node.view.nodes:
        return 0
    epoch = node.current_epoch()
    if not node.is_active(node.me, epoch):
        return 0
    await refresh_liveness(node, epoch)
    look(node, epoch)
    sent = 0
    for sid, stale in list(node.upkeep.stale.items()):
        reps = node.replicas_of(sid)
        for i in stale:
            key = ("replace", sid, i, epoch)
            if node.tried.get(key, 0) > time.time():
                continue
            node.tried[key] = time.time() + 5.0
            try:
                rc = await node.chain.replace_replica(sid, i, check=False)
                node.metrics.gas_spent.inc(rc.gas_used)
                log.info("replaced replica %d of %s (tx status %s)", i, hx(sid), rc.status)
                _liveness.pop(reps[i], None)
                sent += 1
            except Exception as exc:  # noqa: BLE001 - a revert (already replaced) or RPC failure: retried
                log.info("replaceReplica(%s, %d) failed: %s", hx(sid), i, exc)
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
