"""The leader: each tick, for every stream this node replicates with pending events and leads at
(chain head + 1, open attempt): votes, combination, order, block, attestations, signature; then ONE
commitMiniblocks transaction for all headers of the tick."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

from node.chain.logs import TxResult
from node.protocol import v2
from node.protocol.block_rules import AgedEntry, age_order, block_event_cap, events_with_quorum, select_events
from node.protocol.commit import StreamHead
from node.protocol.eip712 import hash_header, recover_header_signer, sign_header
from node.protocol.merkle import merkle_root
from node.protocol.onion import OnionExhausted
from node.protocol.state import StateDelta, state_delta
from node.protocol.state_root import root_after
from node.protocol.types import MAX_BATCH, MAX_REVEAL_SKIP, EventEntry, Header, RejectReason

from . import commitbatch
from .core import Node
from .delegate import hand_off
from .models import HeaderOut, hx, unhex
from .sync import apply_committed, fetch_events
from .watcher import apply_log_batch

log = logging.getLogger("node.producer")


TRANSIENT = {RejectReason.WRONG_EPOCH, RejectReason.ATTEMPT_NOT_OPEN, RejectReason.BAD_RANDAO_REVEAL,
             RejectReason.INACTIVE_ATTESTER, RejectReason.NO_QUORUM, RejectReason.NOT_ELECTED_LEADER}


@dataclass
class Draft:
    sid: bytes
    number: int
    attempt: int
    epoch: int
    prev_hash: bytes
    items: list[EventEntry]
    delta: StateDelta
    state_root: bytes
    header: Header | None = None
    sigs: list[bytes] | None = None


def signed(d: Draft) -> tuple[Header, list[bytes]]:
    """A draft's header and signatures, once built (the header) and attested (the signatures)."""
    assert d.header is not None, "draft without a header"
    return d.header, d.sigs or []


def slots_to_lead(node: Node, epoch: int, seed: bytes) -> list[tuple[bytes, int, int]]:
    """(stream, number, attempt) this node leads now."""
    out = []
    for sid in node.storage.streams_with_pending():
        if not node.replicates(sid):
            continue
        ch = node.view.head(sid)
        row = node.storage.get_stream(sid)
        if ch is None or row is None or row.head_number != ch.number or row.head_hash != ch.hash:
            continue  # behind the chain: sync first (never build on a stale parent)
        attempt = node.current_attempt(ch.timestamp)
        n = ch.number + 1
        if node.leader_of(seed, sid, n, attempt) != node.me:
            continue
        if node.tried.get((sid, n, attempt), 0) > time.time():
            continue
        seen = node.attested_at.get((sid, n))
        if seen is not None and seen[0] < attempt and time.time() - seen[1] < node.params.leader_timeout:
            continue  # this node just attested an earlier attempt's header: let that leader finish first
        out.append((sid, n, attempt))
    return out


GRACE_S = 0.15  # once a quorum answered, how long to wait for the other replicas


async def quorum_gather(coros: list, need: int, timeout: float, grace: float = GRACE_S) -> list:
    """Run `coros`; return their results (None for failed or unfinished ones) as soon as `need` of them
    returned something not None and `grace` more seconds passed, or all finished, or `timeout` passed.
    A slow or hung replica then costs the leader `grace`, not a full peer timeout."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    pending = set(tasks)
    ok = 0
    try:
        while pending:
            left = end - loop.time()
            if left <= 0:
                break
            done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            ok += sum(1 for t in done if not t.cancelled() and t.exception() is None and t.result() is not None)
            if ok >= need and pending:
                end = min(end, loop.time() + grace)
    finally:
        for t in pending:
            t.cancel()
    return [t.result() if t.done() and not t.cancelled() and t.exception() is None else None for t in tasks]


async def gather_votes(node: Node, sid: bytes, replicas: list[str]) -> list[list[bytes]]:
    async def one(url: str) -> list[bytes] | None:
        try:
            resp = await node.peers.votes(url, hx(sid))
            return [unhex(h) for h in resp.get("hashes", [])]
        except Exception as exc:  # noqa: BLE001 - any peer failure is a missing vote
            log.debug("votes from %s: %s", url, exc)
            return None

    peers = node.peer_urls(replicas)
    others = await quorum_gather([one(u) for _a, u in peers], node.quorum(sid) - 1, node.cfg.peer_timeout_s)
    return [node.storage.pool_hashes(sid), *(o for o in others if o)]


async def draft_block(node: Node, sid: bytes, number: int, attempt: int, epoch: int) -> Draft | None:
    replicas = node.replicas_of(sid)
    votes = await gather_votes(node, sid, replicas)
    now = time.time()
    kept = [h for h in events_with_quorum(votes, node.quorum(sid)) if node.invalid_events.get(h, 0) < now]
    if not kept:
        return None
    local = node.storage.get_events(kept)
    # Age: when this node first saw the event (local knowledge; the attesters check the cap, not the age).
    aged = [AgedEntry(EventEntry(h, se.event, se.signature), se.received) for h, se in local.items()
            if se.block is None and se.event.stream_id == sid]
    missing = [h for h in kept if h not in local]
    if missing:
        voters = [(a, u) for a, u in node.peer_urls(replicas)]
        got = {h: v for h, v in (await fetch_events(node, missing, voters)).items() if v[0].stream_id == sid}
        if got:  # fetch_events checked each event's hash and signature
            node.storage.add_events([EventEntry(h, ev, sig) for h, (ev, sig) in got.items()], gossiped=True)
        aged += [AgedEntry(EventEntry(h, ev, sig), now) for h, (ev, sig) in got.items()]
    row = node.storage.get_stream(sid)
    state = node.storage.state(sid)
    if row is None or state is None or row.head_number != number - 1 or state.number != number - 1:
        return None
    rules = node.rules_of(state)
    selection = select_events(state.members, age_order(aged), block_event_cap(node.cfg.max_block_events),
                              max_bytes=node.cfg.max_block_bytes, rules=rules, author_cap=node.cfg.max_author_events)
    good, invalid = selection.kept, selection.invalid
    if invalid:
        node.storage.drop_pool_events(invalid)
        if len(node.invalid_events) > 100_000:
            node.invalid_events.clear()
        for h in invalid:  # not fetched back while invalid (may turn valid after a later block: expires)
            node.invalid_events[h] = time.time() + 5.0
    if not good:
        return None
    events = [e for _, e, _ in good]
    delta = state_delta(state.members, events, rules, strict=False)
    return Draft(sid, number, attempt, epoch, row.head_hash, good, delta,
                 root_after(state.members, rules.invite_only, state.nonces, delta, events))


async def collect_attestations(node: Node, d: Draft) -> list[bytes] | None:
    header = d.header
    assert header is not None
    body = {"header": HeaderOut.of(header).model_dump(), "event_hashes": [hx(h) for h, _, _ in d.items]}
    replicas = node.replicas_of(d.sid)

    async def one(addr: str, url: str) -> bytes | None:
        try:
            resp = await node.peers.attest(url, body, timeout=max(node.cfg.peer_timeout_s, 5.0))
            sig = unhex(resp["signature"])
            if recover_header_signer(node.domain, header, sig) == addr:
                return sig
            log.warning("attestation from %s does not recover to it", addr)
        except Exception as exc:  # noqa: BLE001 - any peer failure or refusal is a missing attestation
            log.info("attest %s #%d by %s refused: %s", hx(d.sid)[:10], d.number, addr, exc)
        return None

    peers = [(a, u) for a, u in node.peer_urls(replicas) if node.is_active(a, d.epoch)]
    got = await quorum_gather([one(a, u) for a, u in peers], node.quorum(d.sid) - 1,
                              max(node.cfg.peer_timeout_s, 5.0))
    sigs = [s for s in got if s is not None]
    if len(sigs) + 1 < node.quorum(d.sid):
        return None
    return sigs


async def produce_once(node: Node) -> int:
    """One tick. Returns the number of headers committed."""
    if not node.ready or node.near_epoch_end():
        return 0
    epoch = node.current_epoch()
    if not node.is_active(node.me, epoch):
        return 0
    seed = await node.seed_for(epoch)
    if seed is None:
        return 0
    slots = slots_to_lead(node, epoch, seed)[:MAX_BATCH]
    if not slots:
        return 0
    now = time.time()
    if len(node.tried) > 50_000:
        node.tried = {k: v for k, v in node.tried.items() if v > now}

    t0 = time.monotonic()
    drafts = [d for d in await asyncio.gather(*(draft_block(node, sid, n, a, epoch) for sid, n, a in slots))
              if d is not None]
    if not drafts:
        return 0
    # RANDAO reveals in batch order, from the chain's current commitment of this node (v2: one reveal for
    # all of them, the contract checks it once per leader per transaction; it keeps the top 24 bytes).
    if node.randao_commit is None:
        node.randao_commit = await node.chain.randao_commit(node.me)
    match = v2.COMMIT_PREFIX_BYTES if commitbatch.is_v2(node) else 32
    try:
        if commitbatch.is_v2(node):
            reveals = node.onion.reveals(node.randao_commit, 1, match) * len(drafts)
        else:
            reveals = node.onion.reveals(node.randao_commit, len(drafts))
    except (OnionExhausted, ValueError) as exc:
        if time.time() - node.onion_alarm > 60:  # once a minute, not every tick
            log.error("cannot reveal RANDAO layers (this node cannot lead): %s", exc)
            node.onion_alarm = time.time()
        node.randao_commit = None
        return 0
    left = node.onion.position(node.randao_commit, match) - len(drafts)
    if left < 1000 and time.time() - node.onion_alarm > 60:
        log.warning("RANDAO onion: %d layers left; register a fresh commitment before it runs out", left)
        node.onion_alarm = time.time()
    for d, rv in zip(drafts, reveals, strict=False):
        d.header = Header(d.sid, d.number, d.prev_hash, merkle_root([h for h, _, _ in d.items]), len(d.items),
                          d.epoch, d.attempt, node.me, rv, d.state_root)
    t1 = time.monotonic()
    atts = await asyncio.gather(*(collect_attestations(node, d) for d in drafts))
    t2 = time.monotonic()
    ready: list[Draft] = []
    for d, a in zip(drafts, atts, strict=False):
        if a is None:
            node.tried[(d.sid, d.number, d.attempt)] = time.time() + 0.5  # replicas may be syncing: retry soon
            continue
        header, _ = signed(d)
        d.sigs = [sign_header(node.domain, header, node.key), *a]
        node.storage.add_proposal(hash_header(header), header, [h for h, _, _ in d.items])
        ready.append(d)
    # A gap of more than MAX_REVEAL_SKIP layers before a header would make its reveal invalid.
    batch, last_pos = [], 0
    for i, d in enumerate(drafts):
        if d in ready:
            if i + 1 - last_pos > MAX_REVEAL_SKIP and not commitbatch.is_v2(node):  # v2: one reveal for all
                break
            batch.append(d)
            last_pos = i + 1
    if not batch:
        return 0
    done = await commit(node, batch)
    log.info("tick: %d headers (%d events) committed %d; draft %.3fs attest %.3fs commit+apply %.3fs", len(batch),
             sum(len(d.items) for d in batch), done, t1 - t0, t2 - t1, time.monotonic() - t2)
    return done


async def commit(node: Node, batch: list[Draft]) -> int:
    """Commit the tick's headers: through the slot's aggregator (node/server/delegate.py) when it takes them,
    else, or for what it did not commit within `aggregate_wait_ms`, in this node's own transaction."""
    node.metrics.blocks_led.inc(len(batch))
    for d in batch:  # one submission per slot: a rejected slot is given up, the next attempt takes over
        node.tried[(d.sid, d.number, d.attempt)] = float("inf")
    done = 0
    if node.cfg.aggregate:
        pairs = [signed(d) for d in batch]
        handed = await hand_off(node, [h for h, _ in pairs], [sigs for _, sigs in pairs])
        if handed.result is not None:
            done = await settle(node, batch, handed.result, apply_logs=not handed.applied)
            seen = {c.header_hash for c in handed.result.committed} | {r.header_hash for r in handed.result.rejected}
            batch = [d for d in batch if hash_header(signed(d)[0]) not in seen]
        if batch and handed.waited:  # it may have landed after all (a slow aggregator): look before sending
            await resync_heads(node, [d.sid for d in batch])
            batch = [d for d in batch if (h := node.view.head(d.sid)) is None or h.number < d.number]
        if not batch:
            return done
    try:
        pairs = [signed(d) for d in batch]
        res = await commitbatch.send(node, [h for h, _ in pairs], [sigs for _, sigs in pairs])
    except Exception as exc:  # noqa: BLE001 - any send failure (RPC, nonce, timeout): retry the slots soon
        log.warning("commitMiniblocks failed (%d headers): %s", len(batch), exc)
        node.metrics.commit_txs.labels("error").inc()
        for d in batch:
            node.tried[(d.sid, d.number, d.attempt)] = time.time() + 1.0
        node.randao_commit = None
        await resync_heads(node, [d.sid for d in batch])
        return done
    node.metrics.gas_spent.inc(res.gas_used)
    node.metrics.commit_txs.labels("ok" if res.status == 1 else "reverted").inc()
    return done + await settle(node, batch, res)


async def settle(node: Node, batch: list[Draft], res: TxResult, apply_logs: bool = True) -> int:
    """What a mined commit did to this leader's headers (`batch`; the tx may hold other leaders' too): its
    logs go to the chain view (unless the aggregator here already applied them), its own blocks are applied
    at once, rejected ones are retried or given up. Returns the number of its headers committed."""
    if res.status != 1:
        node.randao_commit = None
        await resync_heads(node, [d.sid for d in batch])
        return 0
    logs = res.batch()
    by_hash = {hash_header(signed(d)[0]): d for d in batch}
    # the receipt block's timestamp when the send read it, else the local chain clock
    ts = res.block_timestamp if res.block_timestamp is not None else int(node.chain_now())
    logs = replace(logs, block_times={**logs.block_times, res.block_number: ts})
    done = 0
    for c in logs.committed:
        mine = by_hash.get(c.header_hash)
        if mine is not None:
            node.randao_commit = signed(mine)[0].randao_reveal
            done += 1
    if apply_logs:
        apply_log_batch(node, logs)  # the same apply as the watcher's (commits, chain heads)
    for c in logs.committed:  # apply our own blocks right away (same path as any committed block)
        mine = by_hash.get(c.header_hash)
        if mine is None:
            continue
        row = node.storage.get_stream(mine.sid)
        if row is not None and row.head_number == mine.number - 1 and row.head_hash == mine.prev_hash:
            apply_committed(node, row, signed(mine)[0], c.header_hash, mine.items, c.tx_hash, mine.delta)
    node.metrics.blocks_led_committed.inc(done)
    rejected = [r for r in logs.rejected if r.header_hash in by_hash]
    if rejected:
        for r in rejected:
            name = RejectReason(r.reason).name if r.reason in tuple(RejectReason) else str(r.reason)
            node.metrics.blocks_rejected.labels(name).inc()
            log.info("header %s #%d rejected: %s", hx(r.stream_id)[:10], r.number, name)
            lost = by_hash[r.header_hash]
            if r.reason in TRANSIENT:
                node.tried[(lost.sid, lost.number, lost.attempt)] = time.time() + 0.5
        node.randao_commit = None
        await resync_heads(node, [r.stream_id for r in rejected])
    return done


async def resync_heads(node: Node, sids: list[bytes]) -> None:
    for sid in set(sids):
        try:
            n, h, ts = await node.chain.stream_head(sid)
            node.view.load_head(sid, StreamHead(n, h, ts), await node.chain.replicas_of(sid))
        except Exception as exc:  # noqa: BLE001 - any RPC failure: the watcher's logs bring the head later
            log.warning("head of %s: %s", hx(sid), exc)
    node.wake_sync.set()


async def produce_loop(node: Node) -> None:
    if not node.cfg.produce:  # --no-produce: never lead (the mini-pool only grows; benchmarks, stalled leaders)
        log.warning("production disabled (produce = false): this node never leads or commits")
        return
    interval = node.cfg.tick_ms / 1000
    while not node.stopping:
        t0 = time.monotonic()
        try:
            await produce_once(node)
        except Exception:  # noqa: BLE001 - the loop must outlive any failure of one tick; the next retries
            log.exception("production tick failed")
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)))
