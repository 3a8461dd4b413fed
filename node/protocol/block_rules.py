"""The leader's block rules (docs/protocol.md, "Ordering rule"), in the order a leader applies them:

1. `events_with_quorum`: keep the hashes a majority `quorum(r)` of the replicas voted for;
2. `age_order`: order them oldest first (first seen by the leader: local knowledge);
3. `select_events`: walk that order against the state after the previous block (members, JOIN
   policy), dropping invalid events and deferring what cannot share this block, at most
   `MAX_AUTHOR_EVENTS_PER_BLOCK` per author, `block_event_cap` events and `MAX_BLOCK_BYTES` of event
   data (node.protocol.limits); the kept events in block order, `(author, nonce, eventHash)` ascending.

An attester checks a proposed list with `check_block_events` (the same rules, as a verdict: what it can
check, i.e. validity, order, the per-author cap and the block caps; not the leader's age order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

from .limits import MAX_AUTHOR_EVENTS_PER_BLOCK, MAX_BLOCK_BYTES, block_within_limits, event_size
from .state import OPEN, MembershipError, StreamRules, changes_state, check_membership
from .types import MAX_EVENTS_PER_BLOCK, Event, EventEntry

OrderKey = tuple[bytes, int, bytes]


def event_order_key(event_hash: bytes, event: Event) -> OrderKey:
    """(author as its 20-byte value, nonce, eventHash): the block order, ascending."""
    return (bytes.fromhex(event.author[2:]), event.nonce, event_hash)


def order_events(entries: Iterable[EventEntry]) -> list[EventEntry]:
    """The entries in block order."""
    return sorted(entries, key=lambda e: event_order_key(e[0], e[1]))


def events_with_quorum(votes: Iterable[Iterable[bytes]], needed: int) -> list[bytes]:
    """The hashes at least `needed` votes hold (each vote counts a hash once), in first-seen order."""
    counts: Counter[bytes] = Counter()
    for vote in votes:
        counts.update(set(vote))
    return [h for h, c in counts.items() if c >= needed]


def block_event_cap(configured: int) -> int:
    """A node's own cap on a block's events, never above the contract's MAX_EVENTS_PER_BLOCK."""
    return min(configured, MAX_EVENTS_PER_BLOCK)


def author_event_cap(configured: int = MAX_AUTHOR_EVENTS_PER_BLOCK) -> int:
    """A node's own cap on one author's events per block, never above MAX_AUTHOR_EVENTS_PER_BLOCK."""
    return max(1, min(configured, MAX_AUTHOR_EVENTS_PER_BLOCK))


def age_order(entries: Iterable[AgedEntry]) -> list[EventEntry]:
    """The leader's candidates oldest first: (first seen here, then block order) ascending."""
    return [a.entry for a in sorted(entries, key=lambda a: (a.seen, event_order_key(a.entry[0], a.entry[1])))]


@dataclass(frozen=True, slots=True)
class AgedEntry:
    """A candidate event with the time the leader first saw it (local knowledge: never checked by others)."""

    entry: EventEntry
    seen: float


@dataclass(frozen=True, slots=True)
class Selection:
    """What `select_events` made of the candidates.

    kept: the block's events, in block order; invalid: hashes invalid against the state (drop them from
    the pool); deferred: hashes that stay pending for a later block (a second JOIN/LEAVE/POLICY of one
    author, a second event of one (author, nonce), over the author's share, or over the block's caps).
    """

    kept: list[EventEntry]
    invalid: list[bytes]
    deferred: list[bytes]


def select_events(members: Container[str], candidates: Sequence[EventEntry], cap: int,
                  max_bytes: int = MAX_BLOCK_BYTES, *, rules: StreamRules = OPEN,
                  author_cap: int = MAX_AUTHOR_EVENTS_PER_BLOCK) -> Selection:
    """Walk the candidates in the order given (the leader's age order, `age_order`: oldest first); keep
    those valid against the state after the previous block (`members`, `rules`), at most `author_cap`
    per author, `cap` events and `max_bytes` of event data (each clamped to the protocol's limits);
    return the kept ones in block order."""
    cap, max_bytes = block_event_cap(cap), min(max_bytes, MAX_BLOCK_BYTES)
    author_cap = author_event_cap(author_cap)
    size = 0
    kept: list[EventEntry] = []
    invalid: list[bytes] = []
    deferred: list[bytes] = []
    changed: set[str] = set()
    nonces: set[tuple[str, int]] = set()
    per_author: Counter[str] = Counter()
    for entry in candidates:
        h, ev = entry[0], entry[1]
        if len(kept) >= cap or size + event_size(ev) > max_bytes or per_author[ev.author] >= author_cap:
            deferred.append(h)
            continue
        try:
            check_membership(members, ev, rules)
        except MembershipError:
            invalid.append(h)
            continue
        if (ev.author, ev.nonce) in nonces:
            deferred.append(h)
            continue
        if changes_state(ev):
            if ev.author in changed:
                deferred.append(h)
                continue
            changed.add(ev.author)
        nonces.add((ev.author, ev.nonce))
        per_author[ev.author] += 1
        kept.append(entry)
        size += event_size(ev)
    return Selection(order_events(kept), invalid, deferred)


def check_block_events(members: Container[str], entries: Sequence[EventEntry], rules: StreamRules = OPEN) -> str | None:
    """An attester's check of a proposed event list: None if every event is valid against the state after
    the previous block, in block order, and no author has more than MAX_AUTHOR_EVENTS_PER_BLOCK events,
    else why not (also a list over the caps of node.protocol.limits)."""
    too_big = block_within_limits([entry[1] for entry in entries])
    if too_big:
        return f"block over the limits: {too_big}"
    prev: OrderKey | None = None
    changed: set[str] = set()
    nonces: set[tuple[str, int]] = set()
    per_author: Counter[str] = Counter()
    for entry in entries:
        h, ev = entry[0], entry[1]
        k = event_order_key(h, ev)
        if prev is not None and k <= prev:
            return "events are not in (author, nonce, hash) order"
        prev = k
        per_author[ev.author] += 1
        if per_author[ev.author] > MAX_AUTHOR_EVENTS_PER_BLOCK:
            return f"{ev.author} has more than {MAX_AUTHOR_EVENTS_PER_BLOCK} events in the block (its share)"
        try:
            check_membership(members, ev, rules)
        except MembershipError as exc:
            return f"event {h.hex()}: {exc}"
        if (ev.author, ev.nonce) in nonces:
            return f"event {h.hex()}: nonce used twice in the block"
        nonces.add((ev.author, ev.nonce))
        if changes_state(ev):
            if ev.author in changed:
                return f"event {h.hex()}: two JOIN/LEAVE/POLICY events of one author"
            changed.add(ev.author)
    return None
