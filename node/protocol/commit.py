"""The registry's commit checks in spec form (docs/protocol.md, "Commit"): `validate_header` runs the
checks `commitMiniblocks` runs on each header of a batch, in the contract's order, and answers the
`MiniblockRejected` reason the contract would emit, or None if it would accept the header.

It reads the registry as the contract sees it when the transaction runs (`CommitView`: block time,
current epoch and seed after the advance, stream heads, replica lists, node terms, RANDAO commitments).
tests/test_validate_header.py holds it equal to the contract, one test per rejection reason.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from .eip712 import SignatureError, hash_header, header_digest, recover_digest
from .election import attempt_opens_at, elected_leader
from .onion import reveal_matches
from .registry import RegistryParams, is_active, quorum
from .types import MAX_EVENTS_PER_BLOCK, ZERO32, Domain, Header, RejectReason


@dataclass(frozen=True, slots=True)
class StreamHead:
    """A stream's on-chain head: its number, header hash, and the chain time it was committed at
    (or the stream created at)."""

    number: int
    hash: bytes
    timestamp: int


class NodeTerms(Protocol):
    """What the commit checks read of a registered node (the contract's NodeRec)."""

    @property
    def join_epoch(self) -> int: ...

    @property
    def leave_epoch(self) -> int: ...


@dataclass(frozen=True, slots=True)
class CommitView:
    """The registry's state as `commitMiniblocks` sees it for one header."""

    now: int  # block.timestamp
    epoch: int  # the current epoch (after the call's advance)
    seed: bytes  # that epoch's seed
    heads: Mapping[bytes, StreamHead]  # the existing streams
    replicas: Mapping[bytes, Sequence[str]]  # each stream's stored replica list, in order
    nodes: Mapping[str, NodeTerms]  # the registered nodes
    randao_commits: Mapping[str, bytes]  # each node's current RANDAO commitment (randaoCommitOf)
    # A node whose onion was renewed (renewOnion) reveals against it only from this epoch on
    # (livenessOf's lastLedEpoch while it is > epoch); absent: usable now.
    onion_usable_from: Mapping[str, int] = field(default_factory=dict)


def _recover(digest32: bytes, signature: bytes) -> str | None:
    """The signer, or None where the contract's ECDSA.tryRecover reports an error."""
    try:
        return recover_digest(digest32, signature)
    except SignatureError:
        return None


def _registered(view: CommitView, address: str) -> NodeTerms | None:
    terms = view.nodes.get(address)
    return terms if terms is not None and terms.join_epoch != 0 else None


def _active(terms: NodeTerms, epoch: int) -> bool:
    return is_active(terms.join_epoch, terms.leave_epoch, epoch)


def validate_header(view: CommitView, params: RegistryParams, domain: Domain, header: Header,
                    signatures: Sequence[bytes]) -> RejectReason | None:
    """The contract's checks 1..11 of one header; the first failing one's reason, or None."""
    # 1-3: the stream, its next number, its parent
    head = view.heads.get(header.stream_id)
    if head is None:
        return RejectReason.UNKNOWN_STREAM
    if header.number != head.number + 1:
        return RejectReason.BAD_NUMBER
    if header.prev_hash != head.hash:
        return RejectReason.BAD_PARENT
    # 4-5: the epoch, the attempt's window
    if header.epoch != view.epoch:
        return RejectReason.WRONG_EPOCH
    if view.now < attempt_opens_at(head.timestamp, header.attempt, params.leader_timeout):
        return RejectReason.ATTEMPT_NOT_OPEN
    # 6: the elected leader (a registered node at the elected replica position)
    replicas = list(view.replicas.get(header.stream_id, ()))
    leader_terms = _registered(view, header.leader)
    if leader_terms is None or header.leader != elected_leader(view.seed, header.stream_id, header.number,
                                                                header.attempt, replicas):
        return RejectReason.NOT_ELECTED_LEADER
    # 7: the leader's signature, which is its attestation, counted first
    digest32 = header_digest(domain, header)
    if not signatures or _recover(digest32, signatures[0]) != header.leader:
        return RejectReason.BAD_LEADER_SIGNATURE
    if not _active(leader_terms, view.epoch):
        return RejectReason.INACTIVE_ATTESTER
    # 8: each attestation
    counted = {header.leader}
    for signature in signatures[1:]:
        signer = _recover(digest32, signature)
        if signer is None:
            return RejectReason.BAD_ATTESTATION
        terms = _registered(view, signer)
        if terms is None or signer not in replicas:
            return RejectReason.NOT_REPLICA
        if signer in counted:
            return RejectReason.DUPLICATE_ATTESTER
        if not _active(terms, view.epoch):
            return RejectReason.INACTIVE_ATTESTER
        counted.add(signer)
    # 9: the quorum of the stored replica count
    if len(counted) < quorum(len(replicas)):
        return RejectReason.NO_QUORUM
    # 10-11: the RANDAO reveal (a renewed onion only from its usable epoch), the event count
    if view.onion_usable_from.get(header.leader, 0) > view.epoch:
        return RejectReason.BAD_RANDAO_REVEAL
    if not reveal_matches(header.randao_reveal, view.randao_commits.get(header.leader, ZERO32)):
        return RejectReason.BAD_RANDAO_REVEAL
    if header.event_count > MAX_EVENTS_PER_BLOCK:
        return RejectReason.TOO_MANY_EVENTS
    return None


def validate_batch(view: CommitView, params: RegistryParams, domain: Domain, headers: Sequence[Header],
                   signatures: Sequence[Sequence[bytes]]) -> list[RejectReason | None]:
    """`validate_header` over a whole `commitMiniblocks` batch, in order, as the contract runs it: an
    accepted header moves its stream's head (number, header hash, block time) and its leader's RANDAO
    commitment (to its reveal) for the headers after it; a rejected one changes nothing."""
    # the batch's own head moves over the view's heads, not a copy of them (a node's view has every stream:
    # copying 100,000 heads per check was most of an aggregator's CPU at that scale, py-spy)
    heads: ChainMap[bytes, StreamHead] = ChainMap({}, view.heads)  # type: ignore[arg-type]  # only maps[0] is written
    commits = dict(view.randao_commits)
    usable = dict(view.onion_usable_from)
    out: list[RejectReason | None] = []
    for header, sigs in zip(headers, signatures, strict=True):
        v = replace(view, heads=heads, randao_commits=commits, onion_usable_from=usable)
        reason = validate_header(v, params, domain, header, sigs)
        out.append(reason)
        if reason is None:
            heads[header.stream_id] = StreamHead(header.number, hash_header(header), view.now)
            commits[header.leader] = header.randao_reveal
            usable.pop(header.leader, None)  # leading makes lastLedEpoch the current epoch
    return out
