"""A stream's member set and its stateRoot (docs/protocol.md, "Stream state")."""

from __future__ import annotations

from collections.abc import Iterable

from eth_utils.address import to_checksum_address

from .hashing import keccak
from .merkle import merkle_root
from .types import Event, EventKind


class MembershipError(ValueError):
    """An event the member set after the previous block does not allow."""


def members_root(members: Iterable[str]) -> bytes:
    """Merkle root over keccak256(address) of the members sorted by address value."""
    ordered = sorted(bytes.fromhex(to_checksum_address(m)[2:]) for m in members)
    return merkle_root([keccak(a) for a in ordered])


def check_membership(members: frozenset[str] | set[str], event: Event) -> None:
    """Raise MembershipError if `event` is not allowed against `members` (the set after block n-1)."""
    is_member = event.author in members
    if event.kind == EventKind.MESSAGE and not is_member:
        raise MembershipError(f"{event.author} is not a member of the stream (post a JOIN first)")
    if event.kind == EventKind.JOIN and is_member:
        raise MembershipError(f"{event.author} is already a member of the stream")
    if event.kind == EventKind.LEAVE and not is_member:
        raise MembershipError(f"{event.author} is not a member of the stream")


def apply_membership(members: Iterable[str], events: Iterable[Event], *, strict: bool = True) -> frozenset[str]:
    """The member set after a block: every event checked against the set *before* the block.

    strict (a block being built or attested): raise MembershipError if any event of the block is
    invalid against the previous set, or if one author has two membership events in the block.
    Not strict (a block the chain already committed): such events change nothing and are skipped.
    """
    before = frozenset(members)
    after = set(before)
    changed: set[str] = set()
    for event in events:
        try:
            check_membership(before, event)
            if event.kind in (EventKind.JOIN, EventKind.LEAVE) and event.author in changed:
                raise MembershipError(f"{event.author} has two membership events in one block")
        except MembershipError:
            if strict:
                raise
            continue
        if event.kind in (EventKind.JOIN, EventKind.LEAVE):
            changed.add(event.author)
            if event.kind == EventKind.JOIN:
                after.add(event.author)
            else:
                after.discard(event.author)
    return frozenset(after)
