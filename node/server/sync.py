"""Apply exactly what the chain committed, strictly in order per stream.

The header comes from a local proposal matched by headerHash, or from a peer (checked against the
on-chain headerHash), or from the commit transaction's calldata (v2: rebuilt from its packed record,
`header_from_packed`). The ordered event list comes from
the proposal or from peers (the block's leader first), checked against eventsRoot; every event a peer
serves is checked against its hash and its author's signature (`signed_by_author`) before it is used or
stored, so a peer cannot make this node store or re-serve a forged event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from node.protocol import v2
from node.protocol.eip712 import SignatureError, hash_event, hash_header
from node.protocol.merkle import merkle_root
from node.protocol.state import StateDelta, state_delta
from node.protocol.state_root import root_after
from node.protocol.types import Domain, Event, EventEntry, Header

from . import snapshots
from .core import Node
from .fastpath import check_event_signature, parse_wire
from .models import HeaderOut, hx, unhex
from .reorg import note_rollbacks
from .storage import BlockApply, CommitRow, StreamRow

log = logging.getLogger("node.sync")

RANGE = 32  # blocks per peer range request


def sources_for(node: Node, sid: bytes, leader: str | None) -> list[tuple[str, str]]:
    """Peers to ask, the block's leader first, then the stream's replicas, then every other node."""
    order: list[str] = []
    if leader:
        order.append(leader)
    order += [r for r in node.replicas_of(sid) if r not in order]
    order += [a for a in node.view.nodes if a not in order]
    return node.peer_urls(order)


def signed_by_author(domain: Domain, h: bytes, ev: Event, sig: bytes) -> bool:
    """The check intake makes (fastpath.check_event_signature) for an event a peer served."""
    try:
        return check_event_signature(domain, h, ev.author, sig) is None
    except SignatureError:
        return False


async def fetch_events(node: Node, hashes: list[bytes],
                       sources: list[tuple[str, str]]) -> dict[bytes, tuple[Event, bytes]]:
    """Events by hash from peers in order; each checked against its hash and its author's signature (a
    forged copy from one peer is skipped, and asked of the next)."""
    want = set(hashes)
    got: dict[bytes, tuple[Event, bytes]] = {}
    for _addr, url in sources:
        if not want:
            break
        lst = [hx(h) for h in want]
        try:
            resp = await node.peers.fetch_events(url, lst)
        except Exception as exc:  # noqa: BLE001 - any peer failure: ask the next peer
            log.debug("fetch from %s failed: %s", url, exc)
            continue
        for item in resp.get("events", []):
            try:
                ev, sig = parse_wire(item)
            except Exception:  # noqa: BLE001 - a peer's malformed item (any shape) is skipped
                continue
            h = hash_event(ev)
            if h in want and signed_by_author(node.domain, h, ev, sig):
                got[h] = (ev, sig)
                want.discard(h)
            elif h in want:
                log.warning("peer %s served event %s with a bad signature; skipped", url, hx(h))
    return got


async def _block_from_peers(node: Node, c: CommitRow, last: int) -> dict[int, tuple[Header, list[bytes], dict]]:
    """Blocks c.number..last of the stream from a peer, each header checked against the chain's hash."""
    out: dict[int, tuple[Header, list[bytes], dict]] = {}
    for _addr, url in sources_for(node, c.stream_id, c.leader):
        try:
            resp = await node.peers.blocks(url, hx(c.stream_id), c.number, last)
        except Exception as exc:  # noqa: BLE001 - any peer failure: ask the next peer
            log.debug("blocks from %s failed: %s", url, exc)
            continue
        for b in resp.get("blocks", []):
            try:
                header = HeaderOut.model_validate(b["header"]).to_header()
                hashes = [unhex(x) for x in b["event_hashes"]]
                evs = {}
                for item in b.get("events") or []:
                    ev, sig = parse_wire(item)
                    eh = hash_event(ev)
                    if signed_by_author(node.domain, eh, ev, sig):  # else fetched by hash later
                        evs[eh] = (ev, sig)
            except Exception:  # noqa: BLE001 - a peer's malformed block (any shape) is skipped
                continue
            out[header.number] = (header, hashes, evs)
        if c.number in out:
            break
    return out


async def sync_stream(node: Node, sid: bytes, max_blocks: int = 512) -> int:
    """Apply committed blocks after the local head, in order, as far as data allows. Returns blocks applied."""
    lock = node.sync_locks.setdefault(sid, asyncio.Lock())
    async with lock:
        if snapshots.wanted(node, sid):  # far behind, or peers pruned the blocks it needs
            await snapshots.start_from_snapshot(node, sid)
        n = await _sync_stream(node, sid, max_blocks)
        snapshots.note_pass(node, sid, n)
        return n


async def _sync_stream(node: Node, sid: bytes, max_blocks: int) -> int:
    applied = 0
    prefetched: dict[int, tuple[Header, list[bytes], dict]] = {}
    ch = node.view.head(sid)
    while applied < max_blocks:
        row = node.storage.get_stream(sid)
        if row is None:
            return applied
        n = row.head_number + 1
        c = node.storage.get_commit(sid, n)
        if c is None:
            return applied
        header: Header | None = None
        hashes: list[bytes] | None = None
        extra: dict[bytes, tuple[Event, bytes]] = {}
        prop = node.storage.get_proposal(c.header_hash)
        if prop is not None:
            header, hashes = prop
        elif n in prefetched:
            header, hashes, extra = prefetched.pop(n)
        else:
            last = min(n + RANGE - 1, ch.number if ch else n)
            prefetched = await _block_from_peers(node, c, max(last, n))
            if n in prefetched:
                header, hashes, extra = prefetched.pop(n)
        if header is not None and hash_header(header) != c.header_hash:
            log.warning("header for %s #%d does not match the chain's hash; ignoring it", hx(sid), n)
            header, hashes = None, None
        if header is None and node.chain.version == 2:
            header = await header_from_packed(node, c, row.head_hash)
            if header is None:
                return applied
        if header is None:
            try:
                for h in await node.chain.headers_of_tx(c.tx_hash):
                    if h.stream_id == sid and h.number == n and hash_header(h) == c.header_hash:
                        header = h
                    elif h.stream_id == sid and h.number > n and h.event_count == 0:
                        # later empty blocks of this tx need nothing else: kept, checked against the chain when used
                        prefetched.setdefault(h.number, (h, [], {}))
            except Exception as exc:  # noqa: BLE001 - any RPC failure: retried on the next pass
                log.warning("cannot read commit tx of %s #%d: %s", hx(sid), n, exc)
            if header is None:
                return applied
        if hashes is None and header.event_count == 0:
            hashes = []  # an empty block's event list is known from its header alone
        if hashes is None:
            return applied  # no peer could tell the event list yet; retry later
        if merkle_root(hashes) != header.events_root or len(hashes) != header.event_count:
            log.warning("event list for %s #%d does not match eventsRoot; refetching later", hx(sid), n)
            return applied
        local = node.storage.get_events(hashes)
        events: dict[bytes, tuple[Event, bytes]] = {eh: (se.event, se.signature) for eh, se in local.items()}
        for eh, v in extra.items():
            events.setdefault(eh, v)
        missing = [h for h in hashes if h not in events]
        if missing:
            events.update(await fetch_events(node, missing, sources_for(node, sid, header.leader)))
            missing = [h for h in hashes if h not in events]
            if missing:
                log.info("%s #%d: %d events still missing; retry later", hx(sid), n, len(missing))
                return applied
        ordered = [EventEntry(h, events[h][0], events[h][1]) for h in hashes]
        row = node.storage.get_stream(sid)  # re-read: the producer may have applied it meanwhile
        if row is None or row.head_number != n - 1:
            continue
        if header.prev_hash != row.head_hash:
            orphaned_head(node, row, c)
            return applied
        try:
            apply_committed(node, row, header, c.header_hash, ordered, c.tx_hash)
        except StateMismatch:
            return applied
        applied += 1
    return applied


async def header_from_packed(node: Node, c: CommitRow, prev_hash: bytes) -> Header | None:
    """v2: the header of commit `c` rebuilt from its transaction's packed batch: the record of (stream,
    number), its leader from the replica list, prevHash from the local head (the block's parent), the
    reveal the table entry whose header hashes to the chain's hash (None: not rebuilt here)."""
    try:
        reveals, recs = v2.decode_batch(await node.chain.packed_batch(c.tx_hash))
    except Exception as exc:  # noqa: BLE001 - any RPC or decoding failure: retried on the next pass
        log.warning("cannot read commit tx of %s #%d: %s", hx(c.stream_id), c.number, exc)
        return None
    reps = node.replicas_of(c.stream_id)
    for rec in recs:
        if rec.stream_id != c.stream_id or rec.number != c.number or rec.leader_pos >= len(reps):
            continue
        for reveal in reveals:
            h = v2.header_of(rec, reps[rec.leader_pos], reveal, prev_hash)
            if hash_header(h) == c.header_hash:
                return h
    return None


def orphaned_head(node: Node, row: StreamRow, c: CommitRow) -> None:
    """The chain's block n builds on another n - 1 than the local head: the local head came from an
    orphaned branch that the reorg check did not see (yet). Undo it and rescan the chain from there."""
    prev = node.storage.get_commit(row.stream_id, row.head_number)
    first = min(c.chain_block, prev.chain_block if prev else c.chain_block)
    log.warning("%s #%d builds on %s, not on the local head %s: rolling back and rescanning from chain block %d",
                hx(row.stream_id)[:10], c.number, hx(c.prev_hash)[:10], hx(row.head_hash)[:10], first)
    rb = node.storage.rollback_stream(row.stream_id, max(0, row.head_number - 1))
    node.rescan_from = first if node.rescan_from is None else min(node.rescan_from, first)
    note_rollbacks(node, [rb] if rb else [], "parent mismatch")


class StateMismatch(RuntimeError):
    """A committed block's stateRoot is not the root of the members this node computes for it."""


def apply_committed(node: Node, row: StreamRow, header: Header, header_hash: bytes, entries: Sequence[EventEntry],
                    tx_hash: bytes | None, delta: StateDelta | None = None) -> StateDelta:
    """Apply a block the chain committed on the local head `row` (block number - 1): store it, move the
    head and the stream state (member rows and tree, policy), prune the pool, count it. The one path of
    the leader's own blocks (producer.commit, which passes the delta it built the block with) and of
    synced ones. Cost: the block's events and changed member slots, not the member count.

    A block whose stateRoot differs from the state computed here is not applied: this node would enforce
    a state the replicas did not attest. It stops following the stream instead (loudly: log, metric,
    /v1/streams diverged_at) rather than diverge silently."""
    [(b, _why)] = apply_committed_many(node, [(header, header_hash, entries, tx_hash, delta)])
    if b is None:
        raise StateMismatch(f"stateRoot mismatch at {hx(header.stream_id)} #{header.number}")
    return b.delta


Committed = tuple[Header, bytes, Sequence[EventEntry], bytes | None, StateDelta | None]


def apply_committed_many(node: Node, blocks: Sequence[Committed]) -> list[tuple[BlockApply | None, str | None]]:
    """`apply_committed` for blocks of distinct streams (a leader's tick, a sync pass) in ONE SQLite transaction.
    Per block: what was applied, or None and why not (its stateRoot differs: that stream stops, as above)."""
    out: list[tuple[BlockApply | None, str | None]] = []
    todo: list[BlockApply] = []
    for header, header_hash, entries, tx_hash, delta in blocks:
        state = node.storage.state(header.stream_id)
        if delta is None and state is not None:
            events = [e[1] for e in entries]
            rules = node.rules_of(state)
            delta = state_delta(state.members, events, rules, strict=False)
            if root_after(state.members, rules.invite_only, state.nonces, delta, events) != header.state_root:
                node.metrics.state_mismatch.inc()
                node.diverged[header.stream_id] = header.number
                log.error("stateRoot of %s #%d differs from the state computed here: not applied; this node stops "
                          "following the stream (resync its data dir)", hx(header.stream_id), header.number)
                out.append((None, "state_mismatch"))
                continue
        b = BlockApply(header, header_hash, list(entries), delta or StateDelta(), tx_hash)
        todo.append(b)
        out.append((b, None))
    node.storage.apply_blocks(todo)
    for b in todo:
        on_applied(node, b.header, [e[0] for e in b.events], bool(b.delta))
        snapshots.on_applied(node, b.header, b.header_hash)
    return out


PRUNE_EVERY_S = 10.0


def on_applied(node: Node, header: Header, hashes: list[bytes], state_changed: bool = True) -> None:
    # Pool pruning reads the stream's whole pool: after a membership change, else at most every 10 s; and
    # never while the stream is behind the chain (a later block may make a pending MESSAGE valid).
    sid = header.stream_id
    last = node.pruned_at.get(sid, 0.0)
    state = node.storage.state(sid)
    if state is not None and not node.behind(sid) and (state_changed or time.time() - last > PRUNE_EVERY_S):
        node.storage.prune_pool(sid, state.members)
        node.pruned_at[sid] = time.time()
    node.metrics.blocks_committed.inc()
    node.metrics.events_committed.inc(len(hashes))
    now = time.time()
    acc = node.accepted_at
    for h in hashes:
        t = acc.pop(h, None)
        if t is not None:
            node.metrics.commit_latency.observe(now - t)


def behind_streams(node: Node) -> list[bytes]:
    """The streams on sync's work list that this node follows and that are behind their chain head; the
    others leave the list (the view's change hook puts a stream back when its head or replicas change).
    Cost: the work list, not the stream count."""
    todo = []
    for sid in list(node.sync_todo):
        if node.follows(sid) and node.behind(sid):
            todo.append(sid)
        else:
            node.sync_todo.discard(sid)
    return todo


def behind_count(node: Node) -> int:
    """How many followed streams are behind their chain head (read-only; cost: the work list)."""
    return sum(1 for sid in list(node.sync_todo) if node.follows(sid) and node.behind(sid))


def local_next(node: Node, sid: bytes) -> Committed | None:
    """The stream's next committed block when everything it needs is here already (the header from a local
    proposal, every event stored): what an attester of the block holds. None otherwise (sync_stream asks
    the peers or the chain)."""
    row = node.storage.get_stream(sid)
    if row is None:
        return None
    c = node.storage.get_commit(sid, row.head_number + 1)
    prop = node.storage.get_proposal(c.header_hash) if c is not None else None
    if c is None or prop is None:
        return None
    header, hashes = prop
    if header.prev_hash != row.head_hash or hash_header(header) != c.header_hash:
        return None
    local = node.storage.get_events(hashes)
    if len(local) != len(hashes):
        return None
    return header, c.header_hash, [EventEntry(h, local[h].event, local[h].signature) for h in hashes], c.tx_hash, None


LOCAL_ROUNDS = 4  # rounds of the local pass per sync_all (a stream several blocks behind moves one per round)


def apply_local(node: Node, sids: list[bytes]) -> int:
    """Apply, for every stream in `sids` not being synced right now, its next blocks held here entirely, ONE
    SQLite transaction per round for all of them (at 1,000 streams a pass applies hundreds of blocks).
    Synchronous: nothing else runs between the reads and the write. Returns the blocks applied."""
    applied = 0
    todo = [s for s in sids if not (node.sync_locks.get(s) and node.sync_locks[s].locked())]
    for _ in range(LOCAL_ROUNDS):
        ready = [b for b in (local_next(node, s) for s in todo) if b is not None]
        if not ready:
            break
        done = apply_committed_many(node, ready)
        applied += sum(1 for b, _why in done if b is not None)
        todo = [b.header.stream_id for b, _why in done if b is not None]
    return applied


async def sync_all(node: Node) -> None:
    """One pass over every stream behind the chain: first what is held here (one transaction per round),
    then each stream it replicates still behind on its own (peers, the chain). Streams it does not replicate
    (sync_all_streams) are synced by one background pass at a time, so their peer fetches never hold up
    the watcher's next round, nor with it the streams this node leads and attests."""
    todo = behind_streams(node)
    if todo and apply_local(node, todo):
        todo = behind_streams(node)
    node.metrics.streams_behind.set(len(todo))
    mine = [s for s in todo if node.replicates(s)]
    others = [s for s in todo if not node.replicates(s)]
    if others and (node.sync_others is None or node.sync_others.done()):
        node.sync_others = asyncio.ensure_future(sync_each(node, others))
    await sync_each(node, mine)


async def sync_each(node: Node, todo: list[bytes]) -> None:
    if todo:
        sem = asyncio.Semaphore(8)

        async def one(s: bytes) -> None:
            async with sem:
                try:
                    await sync_stream(node, s)
                except Exception:  # noqa: BLE001 - one stream's failure must not stop the others' sync
                    log.exception("sync of %s failed", hx(s))

        await asyncio.gather(*(one(s) for s in todo))
