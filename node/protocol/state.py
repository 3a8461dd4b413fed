"""A stream's state: its member set and its JOIN policy (docs/protocol.md, "Stream state").

Every rule on who may post what is here, once: `check_membership` judges one event against the state
after the previous block, `state_delta` turns a block into what it changes (for the incremental
members tree of node.protocol.member_tree; node.protocol.state_root puts members, policy and the used
nonces under stateRoot).
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

from .eip712 import SignatureError, digest, recover_digest_raw, sign_digest
from .hashing import keccak
from .member_tree import MemberDelta, slots_root
from .types import Domain, Event, EventKind

INVITE_TYPEHASH = keccak(b"Invite(bytes32 streamId,address invitee)")
INVITE_BYTES = 65  # a JOIN's payload starts with the invitation (a 65-byte signature) in an invite-only stream
POLICY_OPEN, POLICY_INVITE = b"\x00", b"\x01"  # a POLICY event's whole payload


class MembershipError(ValueError):
    """An event the state after the previous block does not allow."""


@dataclass(frozen=True, slots=True)
class StreamRules:
    """What a stream's events are judged by besides its members.

    creator: the `creator` of the registry's StreamCreated log (None: not known, then no POLICY is valid);
    invite_only: the policy after the previous block (POLICY events change it); domain: the registry's
    EIP-712 domain, to check invitations (None: invitations cannot be checked, so none is valid).
    """

    creator: str | None = None
    invite_only: bool = False
    domain: Domain | None = None


OPEN = StreamRules()


def invite_hash(stream_id: bytes, invitee: str) -> bytes:
    """hashStruct(Invite(streamId, invitee))."""
    return keccak(INVITE_TYPEHASH + stream_id + bytes(12) + bytes.fromhex(invitee[2:]))


def sign_invite(domain: Domain, stream_id: bytes, invitee: str, creator_key: bytes) -> bytes:
    """The creator's invitation of `invitee`: the payload prefix of the invitee's JOIN."""
    return sign_digest(digest(domain, invite_hash(stream_id, invitee)), creator_key)


def invited(rules: StreamRules, event: Event) -> bool:
    """True if the JOIN's payload starts with the creator's invitation of its author to its stream."""
    if rules.domain is None or rules.creator is None or len(event.payload) < INVITE_BYTES:
        return False
    try:
        signer = recover_digest_raw(digest(rules.domain, invite_hash(event.stream_id, event.author)),
                                    event.payload[:INVITE_BYTES])
    except SignatureError:
        return False
    return signer == bytes.fromhex(rules.creator[2:])


def check_membership(members: Container[str], event: Event, rules: StreamRules = OPEN) -> None:
    """Raise MembershipError if `event` is not allowed by the state after block n-1 (members, rules)."""
    is_member = event.author in members
    if event.kind == EventKind.MESSAGE and not is_member:
        raise MembershipError(f"{event.author} is not a member of the stream (post a JOIN first)")
    if event.kind == EventKind.JOIN:
        if is_member:
            raise MembershipError(f"{event.author} is already a member of the stream")
        if rules.invite_only and event.author != rules.creator and not invited(rules, event):
            raise MembershipError(f"the stream is invite-only: {event.author}'s JOIN carries no invitation "
                                  "signed by the stream's creator")
    if event.kind == EventKind.LEAVE and not is_member:
        raise MembershipError(f"{event.author} is not a member of the stream")
    if event.kind == EventKind.POLICY:
        if rules.creator is None or event.author != rules.creator:
            raise MembershipError(f"only the stream's creator may set its policy, not {event.author}")
        if event.payload not in (POLICY_OPEN, POLICY_INVITE):
            raise MembershipError("a POLICY payload is one byte: 0x00 (open) or 0x01 (invite-only)")


def changes_state(event: Event) -> bool:
    """A JOIN, LEAVE or POLICY: at most one per author per block (so a block is judged as a whole)."""
    return event.kind in (EventKind.JOIN, EventKind.LEAVE, EventKind.POLICY)


@dataclass(frozen=True, slots=True)
class StateDelta:
    """What a block changes: members (new slots, leavers) and the policy (None: unchanged)."""

    members: MemberDelta = MemberDelta()
    invite_only: bool | None = None

    def __bool__(self) -> bool:
        return bool(self.members) or self.invite_only is not None


NO_CHANGE = StateDelta()


def state_delta(members: Container[str], events: Iterable[Event], rules: StreamRules = OPEN, *,
                strict: bool = True) -> StateDelta:
    """What a block's events change, each judged against the state *before* the block.

    strict (a block being built or attested): raise MembershipError if any event is invalid against
    the previous state, or if one author has two state-changing events in the block. Not strict (a
    block the chain already committed): such events change nothing and are skipped.
    """
    joined: list[str] = []
    left: list[str] = []
    policy: bool | None = None
    changed: set[str] = set()
    for event in events:
        try:
            check_membership(members, event, rules)
            if changes_state(event) and event.author in changed:
                raise MembershipError(f"{event.author} has two JOIN/LEAVE/POLICY events in one block")
        except MembershipError:
            if strict:
                raise
            continue
        if changes_state(event):
            changed.add(event.author)
            if event.kind == EventKind.JOIN:
                joined.append(event.author)
            elif event.kind == EventKind.LEAVE:
                left.append(event.author)
            else:
                policy = event.payload == POLICY_INVITE
    return StateDelta(MemberDelta(tuple(joined), tuple(left)), policy)


def apply_membership(members: Iterable[str], events: Iterable[Event], *, strict: bool = True,
                     rules: StreamRules = OPEN) -> frozenset[str]:
    """The member set after a block, as a plain set (small sets: tests, tools)."""
    before = frozenset(members)
    d = state_delta(before, events, rules, strict=strict).members
    return (before - frozenset(d.left)) | frozenset(d.joined)


def members_root(slots: Iterable[str | None]) -> bytes:
    """membersRoot of the member slots in join order (None: a member that left), one part of stateRoot
    (node.protocol.state_root); see member_tree."""
    return slots_root(slots)
