"""Registry v2 encodings (docs/protocol.md, "Version 2"): the packed commit batch, EIP-2098 compact
signatures, and the per-transaction history tree with its proofs.

The header itself (fields, EIP-712 type, hash) is v1's; only the domain version ("2"), the calldata
and the history are new. Everything here is pure and mirrors MiniblockRegistryV2.sol and
contracts/src/lib/HistoryProof.sol byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .eip712 import SignatureError
from .hashing import keccak
from .merkle import node_hash
from .types import DOMAIN_NAME, Domain, Header

DOMAIN_VERSION_V2 = "2"
RECORD_FIXED = 156
HEAD_HASH_BITS = 144
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
    first, then attesters by ascending position)."""

    header: Header
    leader_pos: int
    reveal_index: int
    attesters: int
    signatures: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """A record as calldata carries it (the leader address and the reveal are resolved on chain)."""

    stream_id: bytes
    prev_hash: bytes
    events_root: bytes
    state_root: bytes
    number: int
    epoch: int
    event_count: int
    attempt: int
    leader_pos: int
    reveal_index: int
    attesters: int
    signatures: tuple[bytes, ...]


def encode_record(r: Record) -> bytes:
    h = r.header
    if len(r.signatures) != 1 + bin(r.attesters).count("1"):
        raise BatchError("one signature for the leader and one per attester bit")
    out = h.stream_id + h.prev_hash + h.events_root + h.state_root
    out += h.number.to_bytes(8, "big") + h.epoch.to_bytes(8, "big")
    out += h.event_count.to_bytes(4, "big") + h.attempt.to_bytes(4, "big")
    out += bytes([r.leader_pos, r.reveal_index]) + r.attesters.to_bytes(2, "big")
    for s in r.signatures:
        if len(s) != 64:
            raise BatchError("signatures are 64-byte compact ones")
        out += s
    return out


def encode_batch(records: Sequence[Record], reveals: Sequence[bytes]) -> bytes:
    """uint16 n ‖ uint8 k ‖ k reveals ‖ n records (the `batch` argument of commitMiniblocks)."""
    if not 1 <= len(records) <= MAX_BATCH or len(reveals) > 255:
        raise BatchError("1..256 records and at most 255 reveals")
    out = len(records).to_bytes(2, "big") + bytes([len(reveals)]) + b"".join(reveals)
    return out + b"".join(encode_record(r) for r in records)


def decode_batch(batch: bytes) -> tuple[list[bytes], list[DecodedRecord]]:
    """The reveals and records of a batch; raises BatchError where the contract reverts."""
    if len(batch) < 3:
        raise BatchError("TruncatedBatch(0)")
    n = int.from_bytes(batch[:2], "big")
    k = batch[2]
    if not 1 <= n <= MAX_BATCH:
        raise BatchError(f"BadBatchSize({n})")
    o = 3 + 32 * k
    if o > len(batch):
        raise BatchError("TruncatedBatch(3)")
    reveals = [batch[3 + 32 * j : 35 + 32 * j] for j in range(k)]
    recs: list[DecodedRecord] = []
    for _ in range(n):
        if o + RECORD_FIXED > len(batch):
            raise BatchError(f"TruncatedBatch({o})")
        b = batch[o : o + RECORD_FIXED]
        attesters = int.from_bytes(b[154:156], "big")
        nsig = 1 + bin(attesters).count("1")
        end = o + RECORD_FIXED + 64 * nsig
        if end > len(batch):
            raise BatchError(f"TruncatedBatch({o})")
        sigs = tuple(batch[o + RECORD_FIXED + 64 * i : o + RECORD_FIXED + 64 * (i + 1)] for i in range(nsig))
        recs.append(
            DecodedRecord(
                stream_id=b[0:32],
                prev_hash=b[32:64],
                events_root=b[64:96],
                state_root=b[96:128],
                number=int.from_bytes(b[128:136], "big"),
                epoch=int.from_bytes(b[136:144], "big"),
                event_count=int.from_bytes(b[144:148], "big"),
                attempt=int.from_bytes(b[148:152], "big"),
                leader_pos=b[152],
                reveal_index=b[153],
                attesters=attesters,
                signatures=sigs,
            )
        )
        o = end
    if o != len(batch):
        raise BatchError(f"TrailingBytes({o})")
    return reveals, recs


# --- the history tree ------------------------------------------------------------------------------


def history_leaf(stream_id: bytes, number: int, header_hash: bytes) -> bytes:
    """keccak256(streamId ‖ uint64 number ‖ headerHash)."""
    return keccak(stream_id + number.to_bytes(8, "big") + header_hash)


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    level = list(leaves)
    levels = [level]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def history_root(leaves: Sequence[bytes]) -> bytes:
    """Root over a commit transaction's leaves, in batch order of the accepted headers."""
    if not leaves:
        raise ValueError("a commit without accepted headers has no history root")
    return _levels(leaves)[-1][0]


@dataclass(frozen=True, slots=True)
class HistoryProof:
    """The contract's HistoryProof struct: (commitIndex, leafIndex, leafCount, siblings)."""

    commit_index: int
    leaf_index: int
    leaf_count: int
    siblings: tuple[bytes, ...]

    def as_abi(self) -> tuple[int, int, int, list[bytes]]:
        return (self.commit_index, self.leaf_index, self.leaf_count, list(self.siblings))


def history_proof(commit_index: int, leaves: Sequence[bytes], index: int) -> HistoryProof:
    if not 0 <= index < len(leaves):
        raise IndexError("leaf index out of range")
    sib: list[bytes] = []
    i = index
    for level in _levels(leaves)[:-1]:
        if i % 2 == 1:
            sib.append(level[i - 1])
        elif i + 1 < len(level):
            sib.append(level[i + 1])
        i //= 2
    return HistoryProof(commit_index, index, len(leaves), tuple(sib))


def verify_history(root: bytes, leaf: bytes, proof: HistoryProof) -> bool:
    """History.verify of the contract."""
    if root == b"\x00" * 32 or not 0 <= proof.leaf_index < proof.leaf_count:
        return False
    h, i, n, p = leaf, proof.leaf_index, proof.leaf_count, 0
    while n > 1:
        if i % 2 == 1:
            if p >= len(proof.siblings):
                return False
            h = node_hash(proof.siblings[p], h)
            p += 1
        elif i + 1 < n:
            if p >= len(proof.siblings):
                return False
            h = node_hash(h, proof.siblings[p])
            p += 1
        i //= 2
        n = (n + 1) // 2
    return h == root and p == len(proof.siblings)


def head_prefix(header_hash: bytes) -> bytes:
    """The 18 bytes of a header hash the head slot keeps (streamHead's `hashPrefix`)."""
    return header_hash[: HEAD_HASH_BITS // 8]
