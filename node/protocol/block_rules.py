"""The leader's block rules (docs/protocol.md, "Ordering rule"), in the order a leader applies them:

1. `events_with_quorum`: keep the hashes a majority `quorum(r)` of the replicas voted for;
2. `order_events`: order them by `(author, nonce, eventHash)` ascending;
3. `select_events`: walk that order against the members after the previous block, dropping invalid
   events and deferring what cannot share this block, up to `block_event_cap` events and
   `MAX_BLOCK_BYTES` of event data (node.protocol.limits).

An attester checks a proposed list with `check_block_events` (the same rules, as a verdict).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .limits import MAX_BLOCK_BYTES, block_within_limits, event_size
from .state import MembershipError, check_membership
from .types import MAX_EVENTS_PER_BLOCK, Event, EventEntry, EventKind

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


def _is_membership_event(event: Event) -> bool:
    return event.kind in (EventKind.JOIN, EventKind.LEAVE)


@dataclass(frozen=True, slots=True)
class Selection:
    """What `select_events` made of an ordered list.

    kept: the block's events, in block order; invalid: hashes invalid against the members (drop them
    from the pool); deferred: hashes that stay pending for a later block (a second membership event of
    one author, a second event of one (author, nonce), or over the cap).
    """

    kept: list[EventEntry]
    invalid: list[bytes]
    deferred: list[bytes]


def select_events(members: frozenset[str], ordered: Sequence[EventEntry], cap: int,
                  max_bytes: int = MAX_BLOCK_BYTES) -> Selection:
    """Walk the ordered events; keep those valid against `members` (the set after the previous block),
    at most `cap` events and `max_bytes` of event data (each clamped to the protocol's limits)."""
    cap, max_bytes = block_event_cap(cap), min(max_bytes, MAX_BLOCK_BYTES)
    size = 0
    kept: list[EventEntry] = []
    invalid: list[bytes] = []
    deferred: list[bytes] = []
    changed: set[str] = set()
    nonces: set[tuple[str, int]] = set()
    for entry in ordered:
        h, ev = entry[0], entry[1]
        if len(kept) >= cap or size + event_size(ev) > max_bytes:
            deferred.append(h)
            continue
        try:
            check_membership(members, ev)
        except MembershipError:
            invalid.append(h)
            continue
        if (ev.author, ev.nonce) in nonces:
            deferred.append(h)
            continue
        if _is_membership_event(ev):
            if ev.author in changed:
                deferred.append(h)
                continue
            changed.add(ev.author)
        nonces.add((ev.author, ev.nonce))
        kept.append(entry)
        size += event_size(ev)
    return Selection(kept, invalid, deferred)


def check_block_events(members: frozenset[str], entries: Sequence[EventEntry]) -> str | None:
    """An attester's check of a proposed event list: None if every event is valid and in block order,
    else why not (also a list over the caps of node.protocol.limits)."""
    too_big = block_within_limits([entry[1] for entry in entries])
    if too_big:
        return f"block over the limits: {too_big}"
    prev: OrderKey | None = None
    changed: set[str] = set()
    nonces: set[tuple[str, int]] = set()
    for entry in entries:
        h, ev = entry[0], entry[1]
        k = event_order_key(h, ev)
        if prev is not None and k <= prev:
            return "events are not in (author, nonce, hash) order"
        prev = k
        try:
            check_membership(members, ev)
        except MembershipError as exc:
            return f"event {h.hex()}: {exc}"
        if (ev.author, ev.nonce) in nonces:
            return f"event {h.hex()}: nonce used twice in the block"
        nonces.add((ev.author, ev.nonce))
        if _is_membership_event(ev):
            if ev.author in changed:
                return f"event {h.hex()}: two membership events of one author"
            changed.add(ev.author)
    return None
