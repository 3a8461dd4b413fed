"""The events Merkle tree (docs/protocol.md, "Merkle tree"): positional, domain-separated, odd node promoted."""

from __future__ import annotations

from collections.abc import Sequence

from .hashing import keccak

ZERO_ROOT = b"\x00" * 32


def leaf_hash(event_hash: bytes) -> bytes:
    return keccak(b"\x00" + event_hash)


def node_hash(left: bytes, right: bytes) -> bytes:
    return keccak(b"\x01" + left + right)


def merkle_levels(event_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """The tree bottom-up: the leaves, then each level up to the root (one node); none for no events."""
    level = [leaf_hash(h) for h in event_hashes]
    levels = [level]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def merkle_root(event_hashes: Sequence[bytes]) -> bytes:
    """Root over the ordered event hashes; bytes32(0) for none."""
    if not event_hashes:
        return ZERO_ROOT
    return merkle_levels(event_hashes)[-1][0]


def merkle_proof(event_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Siblings bottom-up for the event at `index`, skipping levels where it was promoted."""
    if not 0 <= index < len(event_hashes):
        raise IndexError(f"index {index} out of range for {len(event_hashes)} events")
    return proof_from_levels(merkle_levels(event_hashes), index)


def proof_from_levels(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """merkle_proof from the tree's levels (merkle_levels), to serve many proofs of one tree cheaply."""
    proof: list[bytes] = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_proof(root: bytes, count: int, index: int, event_hash: bytes, proof: Sequence[bytes]) -> bool:
    """The verifier walk of docs/protocol.md; the same as Merkle.sol's."""
    if not 0 <= index < count:
        return False
    h, p, n = leaf_hash(event_hash), 0, count
    while n > 1:
        if index % 2 == 1:
            if p >= len(proof):
                return False
            h, p = node_hash(proof[p], h), p + 1
        elif index + 1 < n:
            if p >= len(proof):
                return False
            h, p = node_hash(h, proof[p]), p + 1
        index //= 2
        n = (n + 1) // 2
    return h == root and p == len(proof)
