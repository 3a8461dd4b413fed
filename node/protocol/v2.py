"""Registry v2 encodings (docs/protocol.md, "Version 2"): the packed commit batch, EIP-2098 compact
signatures, the commit log, and the history (a root per commit transaction, an accumulator with
checkpoints) with its proofs.

The header itself (fields, EIP-712 type, hash) is v1's; only the domain version ("2"), the calldata
and the history are new. Everything here is pure and mirrors MiniblockRegistryV2.sol and
contracts/src/lib/HistoryProof.sol byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .eip712 import SignatureError, hash_header
from .hashing import keccak
from .types import DOMAIN_NAME, ZERO32, Domain, Header

DOMAIN_VERSION_V2 = "2"
RECORD_FIXED = 127
HEAD_HASH_BITS = 160
HISTORY_WINDOW = 64
# prevHash[0:18] comes from the head slot; prevHash[18:32] is sent, its bytes 18 and 19 overlapping
# the stored 20-byte prefix (the BadParent check).
PREV_SENT_FROM = 18
MAX_BATCH = 256
_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


def domain_v2(chain_id: int, registry: str) -> Domain:
    """The EIP-712 domain of a v2 registry."""
    return Domain(chain_id, registry, DOMAIN_NAME, DOMAIN_VERSION_V2)


# --- compact signatures (EIP-2098) ---------------------------------------------------------------


def to_compact(sig65: bytes) -> bytes:
    """r ‖ s ‖ v (v in {27, 28}, low s) -> r ‖ (yParity << 255 | s)."""
    if len(sig65) != 65 or sig65[64] not in (27, 28):
        raise SignatureError("expected a 65-byte signature with v in {27, 28}")
    s = int.from_bytes(sig65[32:64], "big")
    if s > _HALF_N:
        raise SignatureError("high-s signature")
    return sig65[:32] + (s | ((sig65[64] - 27) << 255)).to_bytes(32, "big")


def from_compact(sig64: bytes) -> bytes:
    """r ‖ yParityAndS -> r ‖ s ‖ v."""
    if len(sig64) != 64:
        raise SignatureError("compact signature must be 64 bytes")
    vs = int.from_bytes(sig64[32:], "big")
    return sig64[:32] + (vs & ((1 << 255) - 1)).to_bytes(32, "big") + bytes([27 + (vs >> 255)])


# --- the packed batch ------------------------------------------------------------------------------


class BatchError(ValueError):
    """A batch that the contract would revert (TruncatedBatch, TrailingBytes, BadBatchSize)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One header of a batch: the header, its leader's replica position, its reveal-table index, the
    bitmap of attesting replica positions (leader excluded) and the compact signatures (leader
    first, then attesters by ascending position). The reveal index is not sent: entry j belongs to
    the j-th distinct leader in record order, and `encode_batch` checks that it is."""

    header: Header
    leader_pos: int
    reveal_index: int
    attesters: int
    signatures: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """A record as calldata carries it (the leader address and the reveal are resolved on chain)."""

    stream_id: bytes
    prev_tail: bytes  # prevHash[18:32]; prevHash[0:18] is the head slot's
    events_root: bytes
    state_root: bytes
    number: int
    epoch: int
    event_count: int
    attempt: int
    leader_pos: int
    attesters: int
    signatures: tuple[bytes, ...]


def encode_record(r: Record) -> bytes:
    """The record's fixed 127 bytes: streamId ‖ eventsRoot ‖ stateRoot ‖ uint32 number ‖ uint32 epoch ‖
    uint16 eventCount ‖ uint32 attempt ‖ uint8 leaderPos ‖ uint16 attesters ‖ prevHash[18:32] (the
    contract takes prevHash[0:18] from the stream's head slot; the signatures go after all records)."""
    h = r.header
    if h.number >= 1 << 32 or h.epoch >= 1 << 32 or h.event_count >= 1 << 16:
        raise BatchError("number and epoch must fit 32 bits, eventCount 16 bits")
    out = h.stream_id + h.events_root + h.state_root
    out += h.number.to_bytes(4, "big") + h.epoch.to_bytes(4, "big")
    out += h.event_count.to_bytes(2, "big") + h.attempt.to_bytes(4, "big")
    out += bytes([r.leader_pos]) + r.attesters.to_bytes(2, "big")
    return out + h.prev_hash[PREV_SENT_FROM:]


def encode_signatures(r: Record) -> bytes:
    """The record's signatures as the batch's signature region carries them (64 bytes each)."""
    if len(r.signatures) != 1 + bin(r.attesters).count("1"):
        raise BatchError("one signature for the leader and one per attester bit")
    for s in r.signatures:
        if len(s) != 64:
            raise BatchError("signatures are 64-byte compact ones")
    return b"".join(r.signatures)


def reveal_order(records: Sequence[Record]) -> list[bytes]:
    """The reveal table the contract expects: each leader's reveal, in the order leaders first appear."""
    seen: dict[str, bytes] = {}
    for r in records:
        seen.setdefault(r.header.leader.lower(), r.header.randao_reveal)
    return list(seen.values())


def encode_batch(records: Sequence[Record], reveals: Sequence[bytes]) -> bytes:
    """uint16 n ‖ uint8 k ‖ k reveals ‖ n records ‖ their signatures (the `batch` argument of
    commitMiniblocks). Reveal j belongs to the j-th distinct leader in record order: each record's
    `reveal_index` must say so (BatchError otherwise)."""
    if not 1 <= len(records) <= MAX_BATCH or len(reveals) > 255:
        raise BatchError("1..256 records and at most 255 reveals")
    first: dict[str, int] = {}
    for r in records:
        j = first.setdefault(r.header.leader.lower(), len(first))
        if r.reveal_index != j:
            raise BatchError("reveal j belongs to the j-th distinct leader in record order")
    out = len(records).to_bytes(2, "big") + bytes([len(reveals)]) + b"".join(reveals)
    out += b"".join(encode_record(r) for r in records)
    return out + b"".join(encode_signatures(r) for r in records)


def decode_batch(batch: bytes) -> tuple[list[bytes], list[DecodedRecord]]:
    """The reveals and records of a batch; raises BatchError where the contract reverts:
    TruncatedBatch(needed) / TrailingBytes(needed) with `needed` the bytes its header, records and
    signatures take (3 while the batch is shorter than its 3-byte header)."""
    if len(batch) < 3:
        raise BatchError("TruncatedBatch(3)")
    n = int.from_bytes(batch[:2], "big")
    k = batch[2]
    if not 1 <= n <= MAX_BATCH:
        raise BatchError(f"BadBatchSize({n})")
    o = 3 + 32 * k
    sp = o + RECORD_FIXED * n
    if sp > len(batch):
        raise BatchError(f"TruncatedBatch({sp})")
    reveals = [batch[3 + 32 * j : 35 + 32 * j] for j in range(k)]
    recs: list[DecodedRecord] = []
    for _ in range(n):
        b = batch[o : o + RECORD_FIXED]
        attesters = int.from_bytes(b[111:113], "big")
        nsig = 1 + bin(attesters).count("1")
        sigs = tuple(batch[sp + 64 * i : sp + 64 * (i + 1)] for i in range(nsig))
        recs.append(
            DecodedRecord(
                stream_id=b[0:32],
                events_root=b[32:64],
                state_root=b[64:96],
                number=int.from_bytes(b[96:100], "big"),
                epoch=int.from_bytes(b[100:104], "big"),
                event_count=int.from_bytes(b[104:106], "big"),
                attempt=int.from_bytes(b[106:110], "big"),
                leader_pos=b[110],
                attesters=attesters,
                prev_tail=b[113:127],
                signatures=sigs,
            )
        )
        o += RECORD_FIXED
        sp += 64 * nsig
    if sp > len(batch):
        raise BatchError(f"TruncatedBatch({sp})")
    if sp < len(batch):
        raise BatchError(f"TrailingBytes({sp})")
    return reveals, recs


# --- the commit log and the history --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitLog:
    """MiniblocksCommitted(uint64 indexed commitIndex), its data packed (not ABI-encoded):
    uint256 accepted ‖ m × bytes32 headerHash. The history root is derived (keccak256 of the hashes);
    historyAcc and the mix are not logged (`historyAcc()`, `randaoMix()`, or folded from the roots)."""

    commit_index: int
    accepted: int  # bit i: record i of the batch was accepted
    header_hashes: tuple[bytes, ...]

    @property
    def history_root(self) -> bytes:
        """keccak256 of the header hashes concatenated (the contract's historyRoot of the transaction)."""
        return history_root(self.header_hashes)


def decode_commit_log(commit_index: int, data: bytes) -> CommitLog:
    """The log's packed data: accepted (32 bytes) ‖ m header hashes (32 bytes each), m >= 1."""
    if len(data) < 0x40 or len(data) % 32:
        raise ValueError("not a MiniblocksCommitted data field")
    accepted = int.from_bytes(data[0:32], "big")
    hashes = tuple(data[32 + 32 * i : 64 + 32 * i] for i in range((len(data) - 32) // 32))
    if accepted.bit_count() != len(hashes):
        raise ValueError("headerHashes count does not match the accepted bitmap")
    return CommitLog(commit_index, accepted, hashes)


def accepted_records(batch: bytes, log: CommitLog) -> list[tuple[DecodedRecord, bytes]]:
    """The accepted records of a commit transaction's input with their header hashes (from its log):
    (streamId, number) from the input, headerHash from the log."""
    _, recs = decode_batch(batch)
    picked = [r for i, r in enumerate(recs) if log.accepted >> i & 1]
    if len(picked) != len(log.header_hashes) or log.accepted >> len(recs):
        raise ValueError("the log's accepted bitmap does not match the batch")
    return list(zip(picked, log.header_hashes, strict=True))


def prev_hash_of(head_prefix20: bytes, prev_tail: bytes) -> bytes:
    """The prevHash the contract hashes: the head slot's first 18 bytes ‖ the record's 14 bytes."""
    if len(head_prefix20) != 20 or len(prev_tail) != 32 - PREV_SENT_FROM:
        raise ValueError("a 20-byte head prefix and a 14-byte tail")
    return head_prefix20[:PREV_SENT_FROM] + prev_tail


def history_root(header_hashes: Sequence[bytes]) -> bytes:
    """keccak256(h_0 ‖ ... ‖ h_{m-1}) over a commit transaction's accepted header hashes."""
    if not header_hashes:
        raise ValueError("a commit without accepted headers has no history root")
    return keccak(b"".join(header_hashes))


def acc_step(acc: bytes, root: bytes) -> bytes:
    """The history accumulator after one more commit: keccak256(acc ‖ root)."""
    return keccak(acc + root)


def history_acc(roots: Sequence[bytes]) -> bytes:
    """historyAcc after the commits whose roots are `roots` (0 for none)."""
    acc = ZERO32
    for r in roots:
        acc = acc_step(acc, r)
    return acc


@dataclass(frozen=True, slots=True)
class HistoryProof:
    """The contract's HistoryProof struct: (commitIndex, position, headerHashes, prevAcc, laterRoots)."""

    commit_index: int
    position: int
    header_hashes: tuple[bytes, ...]
    prev_acc: bytes
    later_roots: tuple[bytes, ...]

    def as_abi(self) -> tuple[int, int, list[bytes], bytes, list[bytes]]:
        return (self.commit_index, self.position, list(self.header_hashes), self.prev_acc, list(self.later_roots))


def history_proof(
    roots: Sequence[bytes], hashes: Sequence[bytes], commit_index: int, position: int,
    window: int = HISTORY_WINDOW,
) -> HistoryProof:
    """The proof of header `position` of commit `commit_index`, given every commit's root so far
    (`roots`, by commit index) and that commit's accepted header hashes: to the checkpoint of its
    window when that window is closed, else to the latest commit (then it must be extended, or
    rebuilt, once later commits arrive)."""
    if not 0 <= commit_index < len(roots) or not 0 <= position < len(hashes):
        raise IndexError("no such commit or position")
    if history_root(hashes) != roots[commit_index]:
        raise ValueError("the hashes are not that commit's")
    last = min((commit_index // window + 1) * window - 1, len(roots) - 1)
    return HistoryProof(
        commit_index, position, tuple(hashes), history_acc(roots[:commit_index]),
        tuple(roots[commit_index + 1 : last + 1]),
    )


def verify_history(
    header_hash: bytes, proof: HistoryProof, *, commit_count: int, acc_now: bytes,
    checkpoint: bytes | None, window: int = HISTORY_WINDOW,
) -> bool:
    """verifyHeaderCommitted of the contract, given its state: commitCount(), historyAcc() and
    historyCheckpoint((commitIndex + len(laterRoots)) // window) (None if not read)."""
    last = proof.commit_index + len(proof.later_roots)
    if last >= commit_count or not 0 <= proof.position < len(proof.header_hashes):
        return False
    if proof.header_hashes[proof.position] != header_hash:
        return False
    acc = acc_step(proof.prev_acc, history_root(proof.header_hashes))
    for r in proof.later_roots:
        acc = acc_step(acc, r)
    if last == commit_count - 1 and acc == acc_now:
        return True
    return last % window == window - 1 and checkpoint is not None and acc == checkpoint


# --- RANDAO commitments as v2 keeps them ------------------------------------------------------------

COMMIT_PREFIX_BYTES = 24  # the registry keeps a commitment's top 192 bits (randaoCommitOf: low 8 bytes 0)


def onion_position(layers: Sequence[bytes], stored_commit: bytes) -> int:
    """The index of the onion layer whose top 192 bits are the registry's `randaoCommitOf` (the
    next reveal is layer index - 1); ValueError if none is."""
    want = stored_commit[:COMMIT_PREFIX_BYTES]
    for i in range(len(layers) - 1, -1, -1):
        if layers[i][:COMMIT_PREFIX_BYTES] == want:
            return i
    raise ValueError("the on-chain commitment is not a layer of this onion")


def reveal_opens(reveal: bytes, stored_commit: bytes, max_skip: int = 8) -> bool:
    """Check 13 of v2: the top 192 bits of keccak256^d(reveal) are the stored ones, 1 <= d <= max_skip."""
    h = reveal
    for _ in range(max_skip):
        h = keccak(h)
        if h[:COMMIT_PREFIX_BYTES] == stored_commit[:COMMIT_PREFIX_BYTES]:
            return True
    return False


def head_prefix(header_hash: bytes) -> bytes:
    """The 20 bytes of a header hash the head slot keeps (streamHead's `hashPrefix`)."""
    return header_hash[: HEAD_HASH_BITS // 8]


# --- records from signed headers, headers from records (helpers of the node) ----------------------


def records_of(
    domain: Domain, headers: Sequence[Header], signatures: Sequence[Sequence[bytes]],
    replicas: Mapping[bytes, Sequence[str]],
) -> list[Record]:
    """The batch records of signed headers (`signatures[i]`: 65-byte, the leader's first, then the
    attestations in any order): the leader's replica position, the attesters' bitmap (each attestation's
    signer recovered and placed at its position, ascending), compact signatures, and each record's
    reveal index (the j-th distinct leader in this order). BatchError for a header whose leader or an
    attester is not a replica of its stream, or whose attesters repeat."""
    from .eip712 import header_digest, recover_digest

    first: dict[str, int] = {}
    out: list[Record] = []
    for h, sigs in zip(headers, signatures, strict=True):
        reps = list(replicas.get(h.stream_id, ()))
        if h.leader not in reps or not sigs:
            raise BatchError(f"{h.leader} is not a replica of stream 0x{h.stream_id.hex()}")
        pos = reps.index(h.leader)
        digest = header_digest(domain, h)
        by_pos: dict[int, bytes] = {}
        for s in sigs[1:]:
            signer = recover_digest(digest, s)
            if signer not in reps or reps.index(signer) == pos or reps.index(signer) in by_pos:
                raise BatchError(f"attestation by {signer}: not another replica, or twice")
            by_pos[reps.index(signer)] = s
        bits = sum(1 << k for k in by_pos)
        compact = (to_compact(sigs[0]), *(to_compact(by_pos[k]) for k in sorted(by_pos)))
        out.append(Record(h, pos, first.setdefault(h.leader.lower(), len(first)), bits, compact))
    return out


def header_of(rec: DecodedRecord, leader: str, reveal: bytes, prev_head_hash: bytes) -> Header:
    """The header the contract hashed for a record: `leader` = replicas[leaderPos], `reveal` = its
    reveal-table entry, prevHash = the previous head's first 18 bytes ‖ the record's 14 (a reader of a
    commit transaction knows the previous full hash from its log; the header hash then confirms all)."""
    return Header(
        stream_id=rec.stream_id, number=rec.number, prev_hash=prev_hash_of(prev_head_hash[:20], rec.prev_tail),
        events_root=rec.events_root, event_count=rec.event_count, epoch=rec.epoch, attempt=rec.attempt,
        leader=leader, randao_reveal=reveal, state_root=rec.state_root,
    )


def packed_size(signature_counts: Sequence[int], leaders: int) -> int:
    """Bytes of a packed batch: header, one reveal per leader, 127 per record, 64 per signature."""
    return 3 + 32 * leaders + RECORD_FIXED * len(signature_counts) + 64 * sum(signature_counts)


ZERO_ADDRESS = "0x" + "00" * 20


def rebuild_header(
    rec: DecodedRecord, leaders: Sequence[str], reveals: Sequence[bytes], prev_heads: Sequence[bytes],
    header_hash: bytes,
) -> Header | None:
    """The header a commit transaction's record stands for, given the candidates for what the record
    does not carry (the leader, the reveal, the previous head's full hash): the one that hashes to the
    hash the chain logged (None if none does). A reader of the chain alone uses it: the hash match
    confirms every field, the history proof then that the hash was committed."""
    for prev in prev_heads:
        for leader in leaders:
            for reveal in reveals:
                h = header_of(rec, leader, reveal, prev)
                if hash_header(h) == header_hash:
                    return h
    return None


def record_signatures(rec: DecodedRecord) -> list[bytes]:
    """A record's signatures as 65-byte r ‖ s ‖ v, the leader's first, then the attesters' by ascending
    replica position (the order of the attesters bitmap)."""
    return [from_compact(s) for s in rec.signatures]


def attester_positions(rec: DecodedRecord) -> list[int]:
    """The replica positions of a record's signatures: the leader's, then each attester bit's."""
    return [rec.leader_pos] + [k for k in range(16) if rec.attesters >> k & 1]
