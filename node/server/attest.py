"""A replica's checks before it signs (attests) a header proposed by a leader.

`attest` runs the named checks below in this order; each refuses with its own `Refusal` (an HTTP
status and an error code, answered as {"error", "detail"}), and signs only if none does:

    parse_proposal            422 malformed          the header and event hashes parse
    check_stream_known        404 unknown_stream     the stream is known here
    check_replica_here        409 not_replica        this node is one of its replicas
    check_current_epoch       409 wrong_epoch        the header names the current epoch
    check_active_here         409 inactive           this node is active in it
    check_seed_known          503 no_seed            the epoch's seed is known here
    check_elected_leader      409 not_elected        the header's leader is the elected one
      (sync first if this node is behind the chain)
    check_parent              409 bad_parent         it builds on this node's head
    check_attempt_open        409 attempt_not_open   its attempt's window is open (with tolerance)
    check_events_root         409 bad_events_root    eventsRoot/eventCount match the event list
    check_distinct_events     409 duplicate_event    no event twice
    check_all_fetched         409 missing_events     events not held here were fetched from peers
    check_event_stream        409 wrong_stream       every event belongs to the stream
    check_author_signature    409 bad_signature      a fetched event is signed by its author
    check_not_committed       409 already_committed  no event held here is in a block already
    check_nonce_unused        409 replayed_nonce     no fetched event replays a committed nonce
    check_events_valid        409 invalid_event      the block rules hold (order, membership, JOIN policy,
                                                     nonces, the per-author cap, the block caps)
    check_state_root          409 bad_state_root     stateRoot commits to the members, policy and used
                                                     nonces after the block
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Container, Sequence
from dataclasses import dataclass
from enum import Enum

from node.protocol.block_rules import check_block_events
from node.protocol.commit import NodeTerms, StreamHead
from node.protocol.eip712 import hash_header, recover_event_signer, sign_header
from node.protocol.election import attempt_opens_at, elected_leader
from node.protocol.merkle import merkle_root
from node.protocol.registry import RegistryParams, is_active
from node.protocol.state import OPEN, StreamRules, state_delta
from node.protocol.state_root import root_after
from node.protocol.types import Domain, Event, EventEntry, Header

from .core import Node
from .intake import Rejected
from .models import hx, unhex
from .storage import StoredEvent, StreamRow, StreamState
from .sync import apply_local, fetch_events, sources_for, sync_stream
from .watcher import poll_once
from .wire import ProposalLike

log = logging.getLogger("node.attest")

ATTEMPT_TOLERANCE_S = 2


class Refusal(Enum):
    """Why an attester refuses: (HTTP status, error code), one per check."""

    MALFORMED = (422, "malformed")
    UNKNOWN_STREAM = (404, "unknown_stream")
    NOT_REPLICA = (409, "not_replica")
    WRONG_EPOCH = (409, "wrong_epoch")
    INACTIVE = (409, "inactive")
    NO_SEED = (503, "no_seed")
    NOT_ELECTED = (409, "not_elected")
    BAD_PARENT = (409, "bad_parent")
    ATTEMPT_NOT_OPEN = (409, "attempt_not_open")
    BAD_EVENTS_ROOT = (409, "bad_events_root")
    DUPLICATE_EVENT = (409, "duplicate_event")
    MISSING_EVENTS = (409, "missing_events")
    WRONG_STREAM = (409, "wrong_stream")
    BAD_SIGNATURE = (409, "bad_signature")
    ALREADY_COMMITTED = (409, "already_committed")
    REPLAYED_NONCE = (409, "replayed_nonce")
    INVALID_EVENT = (409, "invalid_event")
    BAD_STATE_ROOT = (409, "bad_state_root")

    @property
    def status(self) -> int:
        return int(self.value[0])

    @property
    def error(self) -> str:
        return str(self.value[1])


class AttestRefused(Exception):
    """A refusal: `refusal` names the check; `status`, `error`, `detail` are the HTTP answer."""

    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.refusal = refusal
        self.status, self.error, self.detail = refusal.status, refusal.error, detail


# ---- the checks, in attest's order ------------------------------------------------------------------

def parse_proposal(req: ProposalLike) -> tuple[Header, list[bytes]]:
    try:
        return req.header.to_header(), [unhex(h) for h in req.event_hashes]
    except ValueError as exc:
        raise AttestRefused(Refusal.MALFORMED, str(exc)) from exc


def check_stream_known(row: StreamRow | None) -> StreamRow:
    if row is None:
        raise AttestRefused(Refusal.UNKNOWN_STREAM, "stream unknown here")
    return row


def check_replica_here(me: str, sid: bytes, replicas: Sequence[str]) -> None:
    if me not in replicas:
        raise AttestRefused(Refusal.NOT_REPLICA, f"{me} is not a replica of {hx(sid)}")


def check_current_epoch(header: Header, epoch: int) -> None:
    if header.epoch != epoch:
        raise AttestRefused(Refusal.WRONG_EPOCH, f"header epoch {header.epoch}, current epoch here {epoch}")


def check_active_here(terms: NodeTerms | None, epoch: int) -> None:
    if terms is None or not is_active(terms.join_epoch, terms.leave_epoch, epoch):
        raise AttestRefused(Refusal.INACTIVE, "this node is not active in the current epoch")


def check_seed_known(seed: bytes | None) -> bytes:
    if seed is None:
        raise AttestRefused(Refusal.NO_SEED, "epoch seed unknown here yet")
    return seed


def check_elected_leader(header: Header, seed: bytes, replicas: Sequence[str]) -> None:
    elected = elected_leader(seed, header.stream_id, header.number, header.attempt, replicas)
    if header.leader != elected:
        raise AttestRefused(Refusal.NOT_ELECTED,
                            f"leader of #{header.number} attempt {header.attempt} is {elected}")


def check_parent(header: Header, row: StreamRow) -> None:
    if header.number != row.head_number + 1 or header.prev_hash != row.head_hash:
        raise AttestRefused(Refusal.BAD_PARENT,
                            f"proposal #{header.number} on {hx(header.prev_hash)}, head here #{row.head_number} "
                            f"{hx(row.head_hash)}")


def check_attempt_open(header: Header, head: StreamHead | None, now: float, params: RegistryParams) -> None:
    """Attempt 0 is always open; a later one once the chain time here is within the tolerance of its window."""
    if head is None or header.attempt == 0:
        return
    opens = attempt_opens_at(head.timestamp, header.attempt, params.leader_timeout)
    if now + ATTEMPT_TOLERANCE_S < opens:
        raise AttestRefused(Refusal.ATTEMPT_NOT_OPEN, f"attempt {header.attempt} opens at {opens}")


def check_events_root(header: Header, hashes: Sequence[bytes]) -> None:
    if header.event_count != len(hashes) or merkle_root(hashes) != header.events_root:
        raise AttestRefused(Refusal.BAD_EVENTS_ROOT, "eventsRoot/eventCount do not match the event list")


def check_distinct_events(hashes: Sequence[bytes]) -> None:
    if len(set(hashes)) != len(hashes):
        raise AttestRefused(Refusal.DUPLICATE_EVENT, "an event appears twice")


def check_all_fetched(missing: Sequence[bytes], fetched: dict[bytes, tuple[Event, bytes]]) -> None:
    still = [h for h in missing if h not in fetched]
    if still:
        raise AttestRefused(Refusal.MISSING_EVENTS,
                            f"{len(still)} events could not be fetched, e.g. {hx(still[0])}")


def check_event_stream(sid: bytes, h: bytes, event: Event) -> None:
    if event.stream_id != sid:
        raise AttestRefused(Refusal.WRONG_STREAM, f"event {hx(h)} belongs to another stream")


def check_author_signature(domain: Domain, h: bytes, event: Event, signature: bytes) -> None:
    try:
        ok = recover_event_signer(domain, event, signature) == event.author
    except ValueError:
        ok = False
    if not ok:
        raise AttestRefused(Refusal.BAD_SIGNATURE, f"event {hx(h)} has a bad signature")


def check_not_committed(h: bytes, stored: StoredEvent) -> None:
    if stored.block is not None:
        raise AttestRefused(Refusal.ALREADY_COMMITTED, f"event {hx(h)} is in block {stored.block}")


def check_nonce_unused(h: bytes, committed_with_nonce: bytes | None) -> None:
    """`committed_with_nonce`: another event of the same (stream, author, nonce) in a block (storage)."""
    if committed_with_nonce is not None:
        raise AttestRefused(Refusal.REPLAYED_NONCE, f"event {hx(h)} replays a committed nonce")


def check_events_valid(members: Container[str], entries: Sequence[EventEntry], rules: StreamRules = OPEN) -> None:
    why = check_block_events(members, entries, rules)
    if why:
        raise AttestRefused(Refusal.INVALID_EVENT, why)


def check_state_root(header: Header, state: StreamState, entries: Sequence[EventEntry],
                     rules: StreamRules = OPEN) -> None:
    """stateRoot after the block (node.protocol.state_root.root_after: the changed slots and the block's
    nonces only), from the state after the parent."""
    events = [e[1] for e in entries]
    delta = state_delta(state.members, events, rules, strict=False)
    if root_after(state.members, rules.invite_only, state.nonces, delta, events) != header.state_root:
        raise AttestRefused(Refusal.BAD_STATE_ROOT,
                            "stateRoot does not match the members, policy and used nonces after the block")


CHECKS = (
    (parse_proposal, Refusal.MALFORMED), (check_stream_known, Refusal.UNKNOWN_STREAM),
    (check_replica_here, Refusal.NOT_REPLICA), (check_current_epoch, Refusal.WRONG_EPOCH),
    (check_active_here, Refusal.INACTIVE), (check_seed_known, Refusal.NO_SEED),
    (check_elected_leader, Refusal.NOT_ELECTED), (check_parent, Refusal.BAD_PARENT),
    (check_attempt_open, Refusal.ATTEMPT_NOT_OPEN), (check_events_root, Refusal.BAD_EVENTS_ROOT),
    (check_distinct_events, Refusal.DUPLICATE_EVENT), (check_all_fetched, Refusal.MISSING_EVENTS),
    (check_event_stream, Refusal.WRONG_STREAM), (check_author_signature, Refusal.BAD_SIGNATURE),
    (check_not_committed, Refusal.ALREADY_COMMITTED), (check_nonce_unused, Refusal.REPLAYED_NONCE),
    (check_events_valid, Refusal.INVALID_EVENT), (check_state_root, Refusal.BAD_STATE_ROOT),
)
"""Every check with the one refusal it answers, in the order `attest` runs them."""


# ---- the attester -----------------------------------------------------------------------------------

@dataclass(slots=True)
class Checked:
    """A proposal that passed every check: what `record` stores before it is signed."""

    header: Header
    header_hash: bytes
    hashes: list[bytes]
    fetched: dict[bytes, tuple[Event, bytes]]


async def attest(node: Node, req: ProposalLike) -> tuple[bytes, bytes]:
    """Check the proposal; return (signature, headerHash). Raises AttestRefused."""
    [c] = record(node, [await check_proposal(node, req)])
    return sign_header(node.domain, c.header, node.key), c.header_hash


async def attest_many(node: Node, reqs: Sequence[ProposalLike],
                      timeout: float) -> list[tuple[bytes, bytes] | AttestRefused | Rejected]:
    """`attest` for a leader's batch (/peer/attest/batch): every proposal checked on its own and concurrently
    (at most `timeout` each: one stream behind does not hold the others), the ones that pass stored in ONE
    transaction, then signed. Per proposal: (signature, headerHash) or its refusal."""
    async def one(req: ProposalLike) -> Checked | AttestRefused | Rejected:
        try:
            return await asyncio.wait_for(check_proposal(node, req), timeout)
        except (AttestRefused, Rejected) as exc:
            return exc
        except TimeoutError:
            return Rejected(503, "attest_timeout", f"not checked within {timeout:g}s; ask again")

    await catch_up(node, reqs)
    got = await asyncio.gather(*(one(r) for r in reqs))
    record(node, [c for c in got if isinstance(c, Checked)])
    return [(sign_header(node.domain, c.header, node.key), c.header_hash) if isinstance(c, Checked) else c
            for c in got]


async def catch_up(node: Node, reqs: Sequence[ProposalLike]) -> None:
    """Before a batch's checks: one chain poll and one local apply (sync.apply_local) for every stream this
    node is behind on, instead of one poll and one sync per proposal (check_parent still decides)."""
    behind = []
    for r in reqs:
        try:
            sid = unhex(r.header.stream_id)
        except ValueError:
            continue
        row = node.storage.get_stream(sid)
        if row is not None and (row.head_number < r.header.number - 1 or node.behind(sid)):
            behind.append(sid)
    if not behind:
        return
    try:
        await poll_once(node)
    except Exception as exc:  # noqa: BLE001 - best effort: each proposal's own check syncs if still behind
        log.debug("poll before attest batch failed: %s", exc)
    apply_local(node, behind)


def record(node: Node, checked: list[Checked]) -> list[Checked]:
    """Store what was checked before any signature leaves: the events fetched for it and the proposals (one
    transaction each for the whole batch), and note when each slot was attested."""
    fetched = [EventEntry(h, ev, sig) for c in checked for h, (ev, sig) in c.fetched.items()]
    if fetched:
        node.storage.add_events(fetched, gossiped=True)
    node.storage.add_proposals([(c.header_hash, c.header, c.hashes) for c in checked])
    if len(node.attested_at) > 100_000:
        node.attested_at.clear()
    for c in checked:
        node.attested_at[(c.header.stream_id, c.header.number)] = (c.header.attempt, time.time())
    return checked


async def check_proposal(node: Node, req: ProposalLike) -> Checked:
    """Every check of CHECKS, in order, on one proposal. Raises AttestRefused."""
    header, hashes = parse_proposal(req)
    sid = header.stream_id
    row = check_stream_known(node.storage.get_stream(sid))
    check_replica_here(node.me, sid, node.replicas_of(sid))
    epoch = node.current_epoch()
    check_current_epoch(header, epoch)
    check_active_here(node.view.nodes.get(node.me), epoch)
    seed = check_seed_known(await node.seed_for(epoch))
    check_elected_leader(header, seed, node.replicas_of(sid))

    # Parent: this node must have applied the chain's head first (sync if behind).
    if row.head_number < header.number - 1 or node.behind(sid):
        if row.head_number < header.number - 1:
            try:  # the leader saw a commit this node's watcher has not polled yet
                await poll_once(node)
            except Exception as exc:  # noqa: BLE001 - best effort: the sync below works from what is known
                log.debug("poll before attest failed: %s", exc)
        await node_sync(node, sid)
        row = check_stream_known(node.storage.get_stream(sid))
    check_parent(header, row)
    check_attempt_open(header, node.view.head(sid), node.chain_now(), node.params)

    # Events: present (or fetched from the leader), correct, valid, ordered.
    check_events_root(header, hashes)
    check_distinct_events(hashes)
    local = node.storage.get_events(hashes)
    missing = [h for h in hashes if h not in local]
    fetched: dict[bytes, tuple[Event, bytes]] = {}
    if missing:
        fetched = await fetch_events(node, missing, sources_for(node, sid, header.leader))
        check_all_fetched(missing, fetched)
        for h, (ev, sig) in fetched.items():
            check_event_stream(sid, h, ev)
            check_author_signature(node.domain, h, ev, sig)
    entries: list[EventEntry] = []
    for h in hashes:
        if h in local:
            se = local[h]
            check_not_committed(h, se)
            check_event_stream(sid, h, se.event)
            entries.append(EventEntry(h, se.event, se.signature))
        else:
            ev, sig = fetched[h]
            entries.append(EventEntry(h, ev, sig))
    # Replays: an event held here cannot share (stream, author, nonce) with another stored one (unique
    # index), so only the fetched ones need the look-up.
    for h, (ev, _sig) in fetched.items():
        check_nonce_unused(h, node.storage.committed_with_nonce(ev, h))
    # The state after the parent (re-read: a sync may have run while events were fetched).
    row = check_stream_known(node.storage.get_stream(sid))
    check_parent(header, row)
    state = current_state(node, sid, header)
    rules = node.rules_of(state)
    check_events_valid(state.members, entries, rules)
    check_state_root(header, state, entries, rules)

    # No one-header-per-slot rule: a leader rebuilds its header for the same slot after a transient
    # rejection (new RANDAO reveal), and the contract takes at most one header per number anyway.
    return Checked(header, hash_header(header), hashes, fetched)


def current_state(node: Node, sid: bytes, header: Header) -> StreamState:
    """The stream's state after the header's parent (part of check_parent: the state moves with the head)."""
    state = node.storage.state(sid)
    if state is None or state.number != header.number - 1:
        raise AttestRefused(Refusal.BAD_PARENT, f"state here is after #{state.number if state else '?'}")
    return state


async def node_sync(node: Node, sid: bytes) -> None:
    try:
        await sync_stream(node, sid)
    except Exception as exc:  # noqa: BLE001 - best effort: the parent check below refuses if still behind
        log.warning("sync before attest failed: %s", exc)
