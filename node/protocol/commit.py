"""The registry's commit checks in spec form (docs/protocol.md, "Commit"): `validate_header` runs the
checks `commitMiniblocks` runs on each header of a batch, in the contract's order, and answers the
`MiniblockRejected` reason the contract would emit, or None if it would accept the header.

It reads the registry as the contract sees it when the transaction runs (`CommitView`: block time,
current epoch and seed after the advance, stream heads, replica lists, node terms, RANDAO commitments).
tests/test_validate_header.py holds it equal to the contract, one test per rejection reason.

`validate_batch_v2` is the same for MiniblockRegistryV2 (docs/protocol.md "Version 2"): its checks in
its order over packed records, with the reveal table (one reveal per elected leader per transaction)
and the header the contract hashes (leader, reveal, prevHash[0:18] and epoch derived, not sent);
tests/test_v2_validate.py holds it equal to that contract.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from . import v2
from .eip712 import SignatureError, hash_header, header_digest, recover_digest
from .election import attempt_opens_at, elected_leader, leader_index
from .onion import reveal_matches
from .registry import RegistryParams, is_active, quorum
from .types import MAX_EVENTS_PER_BLOCK, ZERO32, Domain, Header, RejectReason

ZERO_ADDRESS = "0x" + "00" * 20


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


# ---- registry v2 ----------------------------------------------------------------------------------


def _recover_compact(digest32: bytes, sig64: bytes) -> str | None:
    """The signer of a compact signature as the v2 contract's ecrecover sees it (high s: None)."""
    if int.from_bytes(sig64[32:], "big") & ((1 << 255) - 1) > v2._HALF_N:
        return None
    return _recover(digest32, v2.from_compact(sig64))


def v2_hashed_header(view: CommitView, record: v2.Record, leader: str | None, reveal: bytes) -> Header:
    """The header v2 hashes for a record: its sent fields, the derived leader (zero when the record's
    position is not the elected one) and reveal, prevHash[0:18] from the head, the current epoch."""
    h = record.header
    head = view.heads.get(h.stream_id)
    prev = (head.hash[:v2.PREV_SENT_FROM] if head is not None else bytes(v2.PREV_SENT_FROM))
    return replace(h, prev_hash=prev + h.prev_hash[v2.PREV_SENT_FROM:], epoch=view.epoch,
                   leader=leader or ZERO_ADDRESS, randao_reveal=reveal)


def validate_batch_v2(view: CommitView, params: RegistryParams, domain: Domain, records: Sequence[v2.Record],
                      reveals: Sequence[bytes]) -> list[RejectReason | None]:
    """MiniblockRegistryV2.commitMiniblocks over a packed batch (records in batch order, the reveal
    table), record by record in its order of checks: the first failing reason, or None (accepted).

    As the contract runs it: a record whose leaderPos is the elected position of an existing stream
    takes its leader's reveal-table entry (the next unused one at that leader's first such record; none
    left: reveal 0), whatever its other checks say; the header is hashed with the derived fields; the
    reveal is checked once per leader per transaction, at its first record that passed checks 1..12,
    against the commitment from before the transaction (commitments change only after all records);
    an accepted record moves its stream's head (its hash, block time) for the records after it."""
    heads = dict(view.heads)
    entry: dict[str, int | None] = {}  # leader -> its reveal-table index (None: the table ran out)
    verified: set[str] = set()
    next_j = 0
    out: list[RejectReason | None] = []
    for rec in records:
        h = rec.header
        head = heads.get(h.stream_id)
        reps = list(view.replicas.get(h.stream_id, ())) if head is not None else []
        r = len(reps)
        pos = leader_index(view.seed, h.stream_id, h.number, h.attempt, r) if r else 0
        leader: str | None = None
        if r and rec.leader_pos == pos:
            leader = reps[pos]
            if leader not in entry:
                entry[leader] = next_j if next_j < len(reveals) else None
                next_j += 1 if next_j < len(reveals) else 0
        j = entry.get(leader) if leader is not None else None
        reveal = reveals[j] if j is not None else ZERO32
        hv = replace(view, heads=heads)
        hashed = v2_hashed_header(hv, rec, leader, reveal)
        reason = _v2_checks(hv, params, domain, rec, head, reps, pos, leader, hashed, j, reveal, verified)
        out.append(reason)
        if reason is None:
            heads[h.stream_id] = StreamHead(h.number, hash_header(hashed), view.now)
    return out


def _v2_checks(view: CommitView, params: RegistryParams, domain: Domain, rec: v2.Record, head: StreamHead | None,
               reps: list[str], pos: int, leader: str | None, hashed: Header, j: int | None, reveal: bytes,
               verified: set[str]) -> RejectReason | None:
    h, r = rec.header, len(reps)
    # 1-6: the stream, its next number, the two overlapping parent bytes, the epoch, the attempt's window,
    # the elected position
    if head is None or r == 0:
        return RejectReason.UNKNOWN_STREAM
    if h.number != head.number + 1:
        return RejectReason.BAD_NUMBER
    if h.prev_hash[v2.PREV_SENT_FROM:20] != head.hash[v2.PREV_SENT_FROM:20]:
        return RejectReason.BAD_PARENT
    if h.epoch != view.epoch:
        return RejectReason.WRONG_EPOCH
    if view.now < attempt_opens_at(head.timestamp, h.attempt, params.leader_timeout):
        return RejectReason.ATTEMPT_NOT_OPEN
    if leader is None:
        return RejectReason.NOT_ELECTED_LEADER
    # 7-10: the event count, the attesters' bitmap, the quorum by count
    if h.event_count > MAX_EVENTS_PER_BLOCK:
        return RejectReason.TOO_MANY_EVENTS
    if rec.attesters >> r:
        return RejectReason.NOT_REPLICA
    if rec.attesters >> pos & 1:
        return RejectReason.DUPLICATE_ATTESTER
    if 1 + bin(rec.attesters).count("1") < quorum(r):
        return RejectReason.NO_QUORUM
    # 11-12: the leader's signature over the hashed header, then each attester's, each then active
    digest32 = header_digest(domain, hashed)
    if _recover_compact(digest32, rec.signatures[0]) != leader:
        return RejectReason.BAD_LEADER_SIGNATURE
    if not _v2_active(view, leader):
        return RejectReason.INACTIVE_ATTESTER
    k = 1
    for bit in range(r):
        if rec.attesters >> bit & 1:
            if _recover_compact(digest32, rec.signatures[k]) != reps[bit]:
                return RejectReason.BAD_ATTESTATION
            if not _v2_active(view, reps[bit]):
                return RejectReason.INACTIVE_ATTESTER
            k += 1
    # 13: the reveal, once per leader per transaction
    if leader not in verified:
        if j is None or view.onion_usable_from.get(leader, 0) > view.epoch or \
                not v2.reveal_opens(reveal, view.randao_commits.get(leader, ZERO32)):
            return RejectReason.BAD_RANDAO_REVEAL
        verified.add(leader)
    return None


def _v2_active(view: CommitView, address: str) -> bool:
    terms = view.nodes.get(address)
    return terms is not None and _active(terms, view.epoch)
