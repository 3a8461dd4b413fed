"""A replica's checks before it signs (attests) a header proposed by a leader."""

from __future__ import annotations

import logging
import time

from node.protocol.eip712 import hash_header, recover_event_signer, sign_header
from node.protocol.merkle import merkle_root
from node.protocol.state import apply_membership, members_root

from .blocks import check_block
from .core import Node
from .models import AttestIn, hx, unhex
from .sync import fetch_events, sources_for, sync_stream
from .watcher import poll_once

log = logging.getLogger("node.attest")

ATTEMPT_TOLERANCE_S = 2


class AttestRefused(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


async def attest(node: Node, req: AttestIn) -> tuple[bytes, bytes]:
    """Check the proposal; return (signature, headerHash). Raises AttestRefused."""
    try:
        header = req.header.to_header()
        hashes = [unhex(h) for h in req.event_hashes]
    except ValueError as exc:
        raise AttestRefused(422, "malformed", str(exc)) from exc
    sid = header.stream_id
    if node.storage.get_stream(sid) is None:
        raise AttestRefused(404, "unknown_stream", "stream unknown here")
    if not node.replicates(sid):
        raise AttestRefused(409, "not_replica", f"{node.me} is not a replica of {hx(sid)}")
    epoch = node.current_epoch()
    if header.epoch != epoch:
        raise AttestRefused(409, "wrong_epoch", f"header epoch {header.epoch}, current epoch here {epoch}")
    if not node.is_active(node.me, epoch):
        raise AttestRefused(409, "inactive", "this node is not active in the current epoch")
    seed = await node.seed_for(epoch)
    if seed is None:
        raise AttestRefused(503, "no_seed", "epoch seed unknown here yet")
    elected = node.leader_of(seed, sid, header.number, header.attempt)
    if header.leader != elected:
        raise AttestRefused(409, "not_elected", f"leader of #{header.number} attempt {header.attempt} is {elected}")

    # Parent: this node must have applied the chain's head first (sync if behind).
    row = node.storage.get_stream(sid)
    if row.head_number < header.number - 1 or node.behind(sid):
        if row.head_number < header.number - 1:
            try:  # the leader saw a commit this node's watcher has not polled yet
                await poll_once(node)
            except Exception as exc:  # noqa: BLE001
                log.debug("poll before attest failed: %s", exc)
        await node_sync(node, sid)
        row = node.storage.get_stream(sid)
    if header.number != row.head_number + 1 or header.prev_hash != row.head_hash:
        raise AttestRefused(409, "bad_parent",
                            f"proposal #{header.number} on {hx(header.prev_hash)}, head here #{row.head_number} "
                            f"{hx(row.head_hash)}")
    ch = node.chain_heads.get(sid)
    if ch is not None and header.attempt > 0:
        opens = ch.ts + header.attempt * node.params["leader_timeout"]
        if node.chain_now() + ATTEMPT_TOLERANCE_S < opens:
            raise AttestRefused(409, "attempt_not_open", f"attempt {header.attempt} opens at {opens}")

    # Events: present (or fetched from the leader), correct, valid, ordered.
    if header.event_count != len(hashes) or merkle_root(hashes) != header.events_root:
        raise AttestRefused(409, "bad_events_root", "eventsRoot/eventCount do not match the event list")
    if len(set(hashes)) != len(hashes):
        raise AttestRefused(409, "duplicate_event", "an event appears twice")
    local = node.storage.get_events(hashes)
    missing = [h for h in hashes if h not in local]
    fetched = {}
    if missing:
        fetched = await fetch_events(node, missing, sources_for(node, sid, header.leader))
        still = [h for h in missing if h not in fetched]
        if still:
            raise AttestRefused(409, "missing_events", f"{len(still)} events could not be fetched, e.g. {hx(still[0])}")
        for h, (ev, sig) in fetched.items():
            if ev.stream_id != sid:
                raise AttestRefused(409, "wrong_stream", f"event {hx(h)} belongs to another stream")
            try:
                ok = recover_event_signer(node.domain, ev, sig) == ev.author
            except ValueError:
                ok = False
            if not ok:
                raise AttestRefused(409, "bad_signature", f"event {hx(h)} has a bad signature")
    items = []
    for h in hashes:
        if h in local:
            se = local[h]
            if se.block is not None:
                raise AttestRefused(409, "already_committed", f"event {hx(h)} is in block {se.block}")
            if se.event.stream_id != sid:
                raise AttestRefused(409, "wrong_stream", f"event {hx(h)} belongs to another stream")
            items.append((h, se.event, se.signature))
        else:
            ev, sig = fetched[h]
            items.append((h, ev, sig))
    # Replays: an event held here cannot share (stream, author, nonce) with another stored one (unique
    # index), so only the fetched ones need the look-up.
    for h, (ev, _sig) in fetched.items():
        r = node.storage.db.execute("SELECT hash FROM events WHERE stream_id=? AND author=? AND nonce=? AND hash<>?"
                                    " AND block IS NOT NULL", (sid, ev.author, ev.nonce, h)).fetchone()
        if r is not None:
            raise AttestRefused(409, "replayed_nonce", f"event {hx(h)} replays a committed nonce")
    why = check_block(row.members, items)
    if why:
        raise AttestRefused(409, "invalid_event", why)
    after = apply_membership(row.members, [ev for _, ev, _ in items], strict=False)
    if members_root(after) != header.state_root:
        raise AttestRefused(409, "bad_state_root", "stateRoot does not match the members after the block")

    # No one-header-per-slot rule: a leader rebuilds its header for the same slot after a transient
    # rejection (new RANDAO reveal), and the contract takes at most one header per number anyway.
    hh = hash_header(header)
    if fetched:
        node.storage.add_events([(h, ev, sig) for h, (ev, sig) in fetched.items()], gossiped=True)
    node.storage.add_proposal(hh, header, hashes)
    if len(node.attested_at) > 100_000:
        node.attested_at.clear()
    node.attested_at[(sid, header.number)] = (header.attempt, time.time())
    return sign_header(node.domain, header, node.key), hh


async def node_sync(node: Node, sid: bytes) -> None:
    try:
        await sync_stream(node, sid)
    except Exception as exc:  # noqa: BLE001
        log.warning("sync before attest failed: %s", exc)
