"""The leader: each tick, for every stream this node replicates with pending events and leads at
(chain head + 1, open attempt): votes, combination, order, block, attestations, signature; then ONE
commitMiniblocks transaction for all headers of the tick."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from node.chain.client import SendTooLate
from node.chain.logs import MiniblockCommitted, MiniblockRejected, TxResult
from node.protocol import v2
from node.protocol.block_rules import AgedEntry, age_order, block_event_cap, events_with_quorum, select_events
from node.protocol.eip712 import hash_header, sign_header
from node.protocol.merkle import merkle_root
from node.protocol.onion import OnionExhausted
from node.protocol.state import StateDelta, state_delta
from node.protocol.state_root import root_after
from node.protocol.types import MAX_BATCH, MAX_REVEAL_SKIP, Event, EventEntry, Header, RejectReason

from . import commitbatch, window
from .core import ATTEMPT_MARGIN_S, Node
from .delegate import hand_off
from .headreads import load_heads
from .models import hx
from .storage import StoredEvent
from .sync import apply_committed_many, fetch_events
from .tick_peers import attestations_for, votes_for
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
    head_ts: int  # the parent's chain time: the attempt window's origin (node/server/window.py)
    header: Header | None = None
    sigs: list[bytes] | None = None


def signed(d: Draft) -> tuple[Header, list[bytes]]:
    """A draft's header and signatures, once built (the header) and attested (the signatures)."""
    assert d.header is not None, "draft without a header"
    return d.header, d.sigs or []


def slots_to_lead(node: Node, epoch: int, seed: bytes) -> list[tuple[bytes, int, int]]:
    """(stream, number, attempt) this node leads now, with time left in the attempt's window to do it."""
    out = []
    timeout = node.params.leader_timeout
    need = window.start_need(node.send_lag_s, timeout, ATTEMPT_MARGIN_S)
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
        if window.time_left(node.chain_now(), ch.timestamp, attempt, timeout) < need:
            continue  # too late in the window to finish a tick: the next attempt's leader takes it
        seen = node.attested_at.get((sid, n))
        if seen is not None and seen[0] < attempt and time.time() - seen[1] < timeout \
                and node.chain_now() < window.earlier_settled_at(ch.timestamp, seen[0], timeout):
            continue  # this node just attested an earlier attempt's header: let it land (it is sent in its window)
        out.append((sid, n, attempt))
    return out


def late(node: Node, drafts: list[Draft]) -> tuple[list[Draft], list[Draft]]:
    """The drafts still sendable now (their attempt's window open, SEND_SLACK_S kept, and the chain view not
    already past their number), and the rest. A late draft is given up for its attempt and nothing else: its
    events stay pending, and no one waits on it (the next attempt's leader builds once the window closes)."""
    now, timeout = node.chain_now(), node.params.leader_timeout
    keep: list[Draft] = []
    gone: list[Draft] = []
    for d in drafts:
        h = node.view.head(d.sid)
        past = h is not None and h.number >= d.number
        (gone if past or window.time_left(now, d.head_ts, d.attempt, timeout) <= 0 else keep).append(d)
    for d in gone:
        node.tried[(d.sid, d.number, d.attempt)] = float("inf")
    return keep, gone


def drop_late(node: Node, drafts: list[Draft], stage: str) -> list[Draft]:
    """`late`, counted and logged by the stage that found them late."""
    keep, gone = late(node, drafts)
    if gone:
        node.metrics.drafts_late.labels(stage).inc(len(gone))
        log.info("%d of %d drafts past their attempt's send window (%s): dropped, events stay pending",
                 len(gone), len(drafts), stage)
    return keep


MAX_TX_HEADERS = 128  # headers per own commitMiniblocks: 128 x the 160k budget per header fits a 30M gas block
TICK_MAX_HEADERS = 64
TICK_CAP = min(MAX_BATCH, MAX_TX_HEADERS, TICK_MAX_HEADERS)
"""Headers per tick: at most one commit transaction's (v2 has one RANDAO reveal per leader per
transaction: a second transaction of the same tick carried the consumed reveal and all its headers
were rejected BAD_RANDAO_REVEAL), and at most TICK_MAX_HEADERS. At 1,000 streams a leader leads ~250
at once; a tick of all of them ran past the leader timeout (the next attempt's leader then races it:
BAD_NUMBER). The rest go in the next tick, oldest chain head first (`oldest_first`)."""


def oldest_first(node: Node, slots: list[tuple[bytes, int, int]]) -> list[tuple[bytes, int, int]]:
    """The slots by their stream's chain-head time, oldest first: a capped tick takes the streams that waited
    longest (the pending set's order would favour the same streams every tick)."""
    def since(slot: tuple[bytes, int, int]) -> int:
        h = node.view.head(slot[0])
        return h.timestamp if h is not None else 0
    return sorted(slots, key=since)


async def draft_blocks(node: Node, slots: list[tuple[bytes, int, int]], epoch: int) -> list[Draft]:
    """The tick's drafts: the votes of every slot's replicas in one request per peer (tick_peers.votes_for),
    the events a quorum holds, the missing ones fetched once for the whole tick, then each block built."""
    votes = await votes_for(node, [sid for sid, _n, _a in slots])
    now = time.time()
    kept = {sid: [h for h in events_with_quorum(votes[sid], node.quorum(sid)) if node.invalid_events.get(h, 0) < now]
            for sid, _n, _a in slots}
    local = node.storage.get_events([h for hs in kept.values() for h in hs])
    missing = [h for hs in kept.values() for h in hs if h not in local]
    got: dict[bytes, tuple[Event, bytes]] = {}
    if missing:  # fetch_events checked each event's hash and signature; asked of the voters, in turn
        voters = node.peer_urls(sorted({a for sid, _n, _a in slots for a in node.replicas_of(sid)}))
        got = await fetch_events(node, missing, voters)
        if got:
            node.storage.add_events([EventEntry(h, ev, sig) for h, (ev, sig) in got.items()], gossiped=True)
    drafts: list[Draft] = []
    invalid: list[bytes] = []
    for sid, n, a in slots:
        d = build_draft(node, sid, n, a, epoch, kept[sid], local, got, now, invalid)
        if d is not None:
            drafts.append(d)
    if invalid:
        node.storage.drop_pool_events(invalid)
    return drafts


def build_draft(node: Node, sid: bytes, number: int, attempt: int, epoch: int, kept: list[bytes],
                local: dict[bytes, StoredEvent], got: dict[bytes, tuple[Event, bytes]], now: float,
                invalid_out: list[bytes]) -> Draft | None:
    """One stream's block from the events a quorum holds: oldest first, valid against the state after the
    head, within the caps. Invalid ones are noted in `invalid_out` (they leave the pool)."""
    if not kept:
        return None
    # Age: when this node first saw the event (local knowledge; the attesters check the cap, not the age).
    aged = [AgedEntry(EventEntry(h, local[h].event, local[h].signature), local[h].received) for h in kept
            if h in local and local[h].block is None and local[h].event.stream_id == sid]
    aged += [AgedEntry(EventEntry(h, *got[h]), now) for h in kept if h not in local and h in got
             and got[h][0].stream_id == sid]
    row = node.storage.get_stream(sid)
    state = node.storage.state(sid)
    ch = node.view.head(sid)
    if row is None or state is None or row.head_number != number - 1 or state.number != number - 1 \
            or ch is None or ch.number != number - 1:
        return None
    rules = node.rules_of(state)
    selection = select_events(state.members, age_order(aged), block_event_cap(node.cfg.max_block_events),
                              max_bytes=node.cfg.max_block_bytes, rules=rules, author_cap=node.cfg.max_author_events)
    good, invalid = selection.kept, selection.invalid
    if invalid:
        invalid_out.extend(invalid)
        if len(node.invalid_events) > 100_000:
            node.invalid_events.clear()
        for h in invalid:  # not fetched back while invalid (may turn valid after a later block: expires)
            node.invalid_events[h] = time.time() + 5.0
    if not good:
        return None
    events = [e for _, e, _ in good]
    delta = state_delta(state.members, events, rules, strict=False)
    return Draft(sid, number, attempt, epoch, row.head_hash, good, delta,
                 root_after(state.members, rules.invite_only, state.nonces, delta, events), ch.timestamp)


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
    slots = oldest_first(node, slots_to_lead(node, epoch, seed))[:TICK_CAP]
    if not slots:
        return 0
    now = time.time()
    if len(node.tried) > 50_000:
        node.tried = {k: v for k, v in node.tried.items() if v > now}

    t0 = time.monotonic()
    drafts = drop_late(node, await draft_blocks(node, slots, epoch), "draft")
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
    atts = await attestations_for(node, [(signed(d)[0], [h for h, _, _ in d.items]) for d in drafts], epoch)
    t2 = time.monotonic()
    node.send_lag_s = window.next_lag(node.send_lag_s, t2 - t0)
    ready: list[Draft] = []
    for d, a in zip(drafts, atts, strict=True):
        if a is None:
            node.tried[(d.sid, d.number, d.attempt)] = time.time() + 0.5  # replicas may be syncing: retry soon
            continue
        header, _ = signed(d)
        d.sigs = [sign_header(node.domain, header, node.key), *a]
        ready.append(d)
    attested = len(ready)
    ready = drop_late(node, ready, "attest")
    node.storage.add_proposals([(hash_header(signed(d)[0]), signed(d)[0], [h for h, _, _ in d.items]) for d in ready])
    # A gap of more than MAX_REVEAL_SKIP layers before a header would make its reveal invalid.
    batch, last_pos = [], 0
    for i, d in enumerate(drafts):
        if d in ready:
            if i + 1 - last_pos > MAX_REVEAL_SKIP and not commitbatch.is_v2(node):  # v2: one reveal for all
                break
            batch.append(d)
            last_pos = i + 1
    if not batch:
        if attested:  # all attested ones late: the tick's time still counts (bench/active_streams.py reads it)
            log.info("tick: 0 headers (0 events) committed 0; draft %.3fs attest %.3fs commit+apply 0.000s",
                     t1 - t0, t2 - t1)
            node.metrics.tick_seconds.observe(time.monotonic() - t0)
        return 0
    done = await commit(node, batch)
    log.info("tick: %d headers (%d events) committed %d; draft %.3fs attest %.3fs commit+apply %.3fs", len(batch),
             sum(len(d.items) for d in batch), done, t1 - t0, t2 - t1, time.monotonic() - t2)
    node.metrics.tick_seconds.observe(time.monotonic() - t0)
    return done


async def commit(node: Node, batch: list[Draft]) -> int:
    """Commit the tick's headers: through the slot's aggregator (node/server/delegate.py) when it takes them
    (a tick of fewer than OWN_TX_FROM), else, or for what it did not commit within `aggregate_wait_ms`, in
    this node's own transaction."""
    node.metrics.blocks_led.inc(len(batch))
    for d in batch:  # one submission per slot: a rejected slot is given up, the next attempt takes over
        node.tried[(d.sid, d.number, d.attempt)] = float("inf")
    done = 0
    now, timeout = node.chain_now(), node.params.leader_timeout
    left = min(window.time_left(now, d.head_ts, d.attempt, timeout) for d in batch)
    # handed off only with time for the aggregator's hold and send, and the leader's own send after it
    handable = window.handoff_room(left) > node.cfg.aggregate_hold_ms / 1000
    if node.cfg.aggregate and len(batch) < OWN_TX_FROM and handable:
        pairs = [signed(d) for d in batch]
        handed = await hand_off(node, [h for h, _ in pairs], [sigs for _, sigs in pairs], left)
        spent = False  # the aggregator's transaction carried this leader's reveal: the rest cannot reuse it
        if handed.result is not None:
            done = await settle(node, batch, handed.result, apply_logs=not handed.applied)
            spent = done > 0
            by_hash = by_signed_hash(batch)
            seen = committed_slots(by_hash, handed.result.committed)
            seen |= {(d.sid, d.number) for _r, d in own_rejections(batch, by_hash, handed.result.committed,
                                                                   handed.result.rejected)}
            batch = [d for d in batch if (d.sid, d.number) not in seen]
        if batch and handed.waited:  # it may have landed after all (a slow aggregator): look before sending
            # and it may still land: the next reveal is taken past this one (valid either way, within the
            # contract's MAX_REVEAL_SKIP), not read back from a chain that may not show that send yet
            node.randao_commit = signed(batch[-1])[0].randao_reveal
            await resync_heads(node, [d.sid for d in batch])
            rest = [d for d in batch if (h := node.view.head(d.sid)) is None or h.number < d.number]
            spent = spent or len(rest) < len(batch)  # some landed through the aggregator, with this leader's reveal
            batch = rest
        if batch and (spent or handed.pending):
            # not sent again in this tick: with a spent reveal they would come back BAD_RANDAO_REVEAL, and
            # headers the aggregator may still send would race it (BAD_NUMBER). A spent reveal's slots are
            # drafted again next tick with the next reveal (their window permitting).
            for d in batch:
                node.tried[(d.sid, d.number, d.attempt)] = time.time() + 0.5 if spent else float("inf")
            node.metrics.handoff_not_resent.labels("reveal_spent" if spent else "aggregator_pending").inc(len(batch))
            log.info("%d headers not sent again after the hand-off (%s)", len(batch),
                     "reveal spent" if spent else "the aggregator may still send them")
            batch = []
        if not batch:
            return done
    batch = drop_late(node, batch, "send")
    for k in range(0, len(batch), MAX_TX_HEADERS):  # in order: each chunk's reveals follow the previous one's
        n = await commit_own(node, batch[k:k + MAX_TX_HEADERS])
        if n is None:  # not sent: the later chunks' reveals would skip too far; retried next tick
            for d in batch[k + MAX_TX_HEADERS:]:
                node.tried[(d.sid, d.number, d.attempt)] = time.time() + 1.0
            break
        done += n
    return done


OWN_TX_FROM = 32
"""A tick of this many headers sends its own transaction rather than hand them to the aggregator: it fills
one by itself (the base cost is shared by 32+ headers already), and at 1,000 streams a hand-off to a busy
aggregator timed out, after which the leader's own send raced the aggregator's (the loser's headers came
back BAD_NUMBER, and the next tick's BAD_RANDAO_REVEAL: a reveal consumed by the transaction it gave up on)."""


async def commit_own(node: Node, batch: list[Draft]) -> int | None:
    """Send headers in this node's own transaction; settle what it did. None: the send failed."""
    timeout = node.params.leader_timeout
    try:
        pairs = [signed(d) for d in batch]
        res = await commitbatch.send(node, [h for h, _ in pairs], [sigs for _, sigs in pairs],
                                     min(window.send_by(d.head_ts, d.attempt, timeout) for d in batch))
    except SendTooLate as exc:  # the reads before the send took the rest of the window: given up, as `late`
        node.metrics.drafts_late.labels("send").inc(len(batch))
        log.info("%d drafts not sent: %s; events stay pending", len(batch), exc)
        return 0
    except Exception as exc:  # noqa: BLE001 - any send failure (RPC, nonce, timeout): retry the slots soon
        log.warning("commitMiniblocks failed (%d headers): %s", len(batch), exc)
        node.metrics.commit_txs.labels("error").inc()
        for d in batch:
            node.tried[(d.sid, d.number, d.attempt)] = time.time() + 1.0
        node.randao_commit = None
        await resync_heads(node, [d.sid for d in batch])
        return None
    node.metrics.gas_spent.inc(res.gas_used)
    node.metrics.commit_txs.labels("ok" if res.status == 1 else "reverted").inc()
    return await settle(node, batch, res)


async def settle(node: Node, batch: list[Draft], res: TxResult, apply_logs: bool = True) -> int:
    """What a mined commit did to this leader's headers (`batch`; the tx may hold other leaders' too): its
    logs go to the chain view (unless the aggregator here already applied them), its own blocks are applied
    at once, rejected ones are retried or given up. Returns the number of its headers committed."""
    if res.status != 1:
        node.randao_commit = None
        await resync_heads(node, [d.sid for d in batch])
        return 0
    logs = res.batch()
    by_hash = by_signed_hash(batch)
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
    own = []  # apply our own blocks right away (same path as any committed block), in one transaction
    for c in logs.committed:
        mine = by_hash.get(c.header_hash)
        if mine is None:
            continue
        row = node.storage.get_stream(mine.sid)
        if row is not None and row.head_number == mine.number - 1 and row.head_hash == mine.prev_hash:
            own.append((signed(mine)[0], c.header_hash, mine.items, c.tx_hash, mine.delta))
    apply_committed_many(node, own)
    node.metrics.blocks_led_committed.inc(done)
    rejected = own_rejections(batch, by_hash, logs.committed, logs.rejected)
    if rejected:
        for r, lost in rejected:
            name = RejectReason(r.reason).name if r.reason in tuple(RejectReason) else str(r.reason)
            node.metrics.blocks_rejected.labels(name).inc()
            log.info("header %s #%d rejected: %s", hx(r.stream_id)[:10], r.number, name)
            if r.reason in TRANSIENT:
                node.tried[(lost.sid, lost.number, lost.attempt)] = time.time() + 0.5
        node.randao_commit = None
        await resync_heads(node, [r.stream_id for r, _d in rejected])
    return done


def by_signed_hash(batch: list[Draft]) -> dict[bytes, Draft]:
    """The batch's drafts by the hash of the header this leader signed."""
    return {hash_header(signed(d)[0]): d for d in batch}


def committed_slots(by_hash: dict[bytes, Draft], committed: Sequence[MiniblockCommitted]) -> set[tuple[bytes, int]]:
    """(stream, number) of the drafts whose own header a commit's logs show committed."""
    return {(d.sid, d.number) for c in committed if (d := by_hash.get(c.header_hash)) is not None}


def own_rejections(batch: list[Draft], by_hash: dict[bytes, Draft], committed: Sequence[MiniblockCommitted],
                   rejections: Sequence[MiniblockRejected]) -> list[tuple[MiniblockRejected, Draft]]:
    """The rejections of a mined commit that are this leader's headers, each with its draft. By header hash,
    else by (stream, number): v2 logs the hash of the header as the contract rebuilt it (the chain's head as
    parent, the current epoch; leader and reveal 0 off the elected position), which differs from the signed
    one exactly when the header is rejected for its parent, number, epoch or leader. A slot whose own header
    committed is not matched again (another leader's header at that number in the same transaction)."""
    by_slot = {(d.sid, d.number): d for d in batch}
    won = committed_slots(by_hash, committed)
    out: list[tuple[MiniblockRejected, Draft]] = []
    seen: set[tuple[bytes, int]] = set()
    for r in rejections:
        d = by_hash.get(r.header_hash)
        if d is None:
            d = by_slot.get((r.stream_id, r.number))
        if d is None or (d.sid, d.number) in won or (d.sid, d.number) in seen:
            continue
        seen.add((d.sid, d.number))
        out.append((r, d))
    return out


async def resync_heads(node: Node, sids: list[bytes]) -> None:
    await load_heads(node, sids)  # a failure: the watcher's logs bring the head later
    node.wake_sync.set()


async def produce_loop(node: Node) -> None:
    if not node.cfg.produce:  # --no-produce: never lead (the mini-pool only grows; benchmarks, stalled leaders)
        log.warning("production disabled (produce = false): this node never leads or commits")
        return
    interval = node.cfg.tick_ms / 1000
    while not node.stopping:
        t0 = time.monotonic()
        node.wake_produce.clear()  # commits applied from here on wake the next tick early
        try:
            await produce_once(node)
        except Exception:  # noqa: BLE001 - the loop must outlive any failure of one tick; the next retries
            log.exception("production tick failed")
        # the next tick: `tick_ms` after this one, or as soon as a watcher round applied commits (the streams
        # of one aggregator transaction then start their next blocks together, and their headers arrive
        # at the aggregator together); at least MIN_TICK_GAP_S apart
        await asyncio.sleep(MIN_TICK_GAP_S)
        try:
            await asyncio.wait_for(node.wake_produce.wait(),
                                   timeout=max(0.0, interval - (time.monotonic() - t0)))
        except TimeoutError:
            pass


MIN_TICK_GAP_S = 0.01  # a wake-up never makes the leader loop spin
