"""Leader election from the RANDAO seed and the block number (docs/protocol.md, "Election")."""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi.abi import encode

from .hashing import keccak


def leader_index(seed: bytes, stream_id: bytes, number: int, attempt: int, replica_count: int) -> int:
    """Index into the stream's replica list of the leader of (number, attempt)."""
    if replica_count <= 0:
        raise ValueError("a stream has at least one replica")
    base = int.from_bytes(keccak(encode(["bytes32", "bytes32", "uint64"], [seed, stream_id, number])), "big")
    return (base % replica_count + attempt) % replica_count


def elected_leader(seed: bytes, stream_id: bytes, number: int, attempt: int, replicas: Sequence[str]) -> str:
    return replicas[leader_index(seed, stream_id, number, attempt, len(replicas))]


def attempt_opens_at(head_timestamp: int, attempt: int, leader_timeout: int) -> int:
    """Chain time from which the contract accepts a header of this attempt."""
    return head_timestamp + attempt * leader_timeout


def open_attempt(now: int, head_timestamp: int, leader_timeout: int) -> int:
    """The highest attempt whose window is open at chain time `now`."""
    if leader_timeout <= 0 or now < head_timestamp:
        return 0
    return (now - head_timestamp) // leader_timeout
