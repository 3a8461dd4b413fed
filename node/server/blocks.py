"""The leader's ordering rule and the validity filter (docs/protocol.md, "Ordering rule")."""

from __future__ import annotations

from node.protocol.limits import MAX_BLOCK_BYTES, MAX_BLOCK_EVENTS, block_within_limits, event_size
from node.protocol.state import MembershipError, check_membership
from node.protocol.types import Event, EventKind


def order_key(h: bytes, ev: Event) -> tuple[bytes, int, bytes]:
    return (bytes.fromhex(ev.author[2:]), ev.nonce, h)


def order(items: list[tuple[bytes, Event, bytes]]) -> list[tuple[bytes, Event, bytes]]:
    """Ascending by (author as 20-byte value, nonce, eventHash)."""
    return sorted(items, key=lambda it: order_key(it[0], it[1]))


def filter_valid(members: frozenset[str], items: list[tuple[bytes, Event, bytes]], cap: int,
                 committed_nonces=None, max_bytes: int = MAX_BLOCK_BYTES,
                 ) -> tuple[list[tuple[bytes, Event, bytes]], list[bytes], list[bytes]]:
    """Walk the ordered events; keep those valid against the members after the previous block.

    Returns (kept, invalid hashes to drop from the pool, deferred hashes that stay pending: a second
    membership event of an author in one block, a second event of one (author, nonce), or over the cap).
    """
    kept: list[tuple[bytes, Event, bytes]] = []
    invalid: list[bytes] = []
    deferred: list[bytes] = []
    changed: set[str] = set()
    nonces: set[tuple[str, int]] = set()
    cap, size = min(cap, MAX_BLOCK_EVENTS), 0
    max_bytes = min(max_bytes, MAX_BLOCK_BYTES)
    for h, ev, sig in items:
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
        if ev.kind in (EventKind.JOIN, EventKind.LEAVE):
            if ev.author in changed:
                deferred.append(h)
                continue
            changed.add(ev.author)
        nonces.add((ev.author, ev.nonce))
        kept.append((h, ev, sig))
        size += event_size(ev)
    return kept, invalid, deferred


def check_block(members: frozenset[str], items: list[tuple[bytes, Event, bytes]]) -> str | None:
    """An attester's check of a proposed event list: None if every event is valid, in order, and the block
    is within the caps of node.protocol.limits, else why not."""
    too_big = block_within_limits([ev for _h, ev, _s in items])
    if too_big:
        return f"block over the limits: {too_big}"
    prev = None
    changed: set[str] = set()
    nonces: set[tuple[str, int]] = set()
    for h, ev, _sig in items:
        k = order_key(h, ev)
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
        if ev.kind in (EventKind.JOIN, EventKind.LEAVE):
            if ev.author in changed:
                return f"event {h.hex()}: two membership events of one author"
            changed.add(ev.author)
    return None
