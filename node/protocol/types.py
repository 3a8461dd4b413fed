"""Plain data of the protocol: events, headers and the EIP-712 domain (docs/protocol.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

from eth_utils.address import to_checksum_address

ZERO32 = b"\x00" * 32
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

DOMAIN_NAME = "MiniblockRegistry"
DOMAIN_VERSION = "1"

MAX_NODES = 256
MAX_REPLICATION = 16
MAX_BATCH = 256
MAX_EVENTS_PER_BLOCK = 15_000
MAX_REVEAL_SKIP = 8
MAX_PAYLOAD_BYTES = 64 * 1024


class EventKind(IntEnum):
    MESSAGE = 0
    JOIN = 1
    LEAVE = 2
    POLICY = 3


class RejectReason(IntEnum):
    """Reason codes of MiniblockRejected, in the contract's check order."""

    UNKNOWN_STREAM = 1
    BAD_NUMBER = 2
    BAD_PARENT = 3
    WRONG_EPOCH = 4
    ATTEMPT_NOT_OPEN = 5
    NOT_ELECTED_LEADER = 6
    BAD_LEADER_SIGNATURE = 7
    BAD_ATTESTATION = 8
    NOT_REPLICA = 9
    DUPLICATE_ATTESTER = 10
    INACTIVE_ATTESTER = 11
    NO_QUORUM = 12
    BAD_RANDAO_REVEAL = 13
    TOO_MANY_EVENTS = 14


def _check32(name: str, value: bytes) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes")


@dataclass(frozen=True, slots=True)
class Event:
    """A client's event; its identity is hash_event(event), the EIP-712 struct hash."""

    stream_id: bytes
    author: str
    nonce: int
    kind: int
    payload: bytes

    def __post_init__(self) -> None:
        _check32("stream_id", self.stream_id)
        object.__setattr__(self, "author", to_checksum_address(self.author))
        if not 0 <= self.nonce < 2**64:
            raise ValueError("nonce must fit uint64")
        if self.kind not in tuple(EventKind):
            raise ValueError(f"unknown event kind {self.kind}")

    def as_abi(self) -> tuple[bytes, str, int, int, bytes]:
        return (self.stream_id, self.author, self.nonce, self.kind, self.payload)


class EventEntry(NamedTuple):
    """An event with its identity and its author's signature: (hash_event(event), event, signature).

    The unit a node stores, votes on, fetches and puts in a block (a tuple, so `h, ev, sig = entry` works).
    """

    hash: bytes
    event: Event
    signature: bytes


@dataclass(frozen=True, slots=True)
class Header:
    """A mini-block header; its identity is hash_header(header), the EIP-712 struct hash."""

    stream_id: bytes
    number: int
    prev_hash: bytes
    events_root: bytes
    event_count: int
    epoch: int
    attempt: int
    leader: str
    randao_reveal: bytes
    state_root: bytes

    def __post_init__(self) -> None:
        for name in ("stream_id", "prev_hash", "events_root", "randao_reveal", "state_root"):
            _check32(name, getattr(self, name))
        object.__setattr__(self, "leader", to_checksum_address(self.leader))
        for name, bits in (("number", 64), ("event_count", 32), ("epoch", 64), ("attempt", 32)):
            if not 0 <= getattr(self, name) < 2**bits:
                raise ValueError(f"{name} must fit uint{bits}")

    def as_abi(self) -> tuple[bytes, int, bytes, bytes, int, int, int, str, bytes, bytes]:
        return (
            self.stream_id, self.number, self.prev_hash, self.events_root, self.event_count,
            self.epoch, self.attempt, self.leader, self.randao_reveal, self.state_root,
        )

    @classmethod
    def from_abi(cls, t: Sequence[Any]) -> Header:
        fields: list[Any] = [bytes(x) if isinstance(x, (bytes, bytearray)) else x for x in t]
        return cls(*fields)

    @classmethod
    def genesis(cls, stream_id: bytes, epoch: int) -> Header:
        """Block 0 of a stream, as the contract stores it at createStream."""
        return cls(stream_id, 0, ZERO32, ZERO32, 0, epoch, 0, ZERO_ADDRESS, ZERO32, ZERO32)


@dataclass(frozen=True, slots=True)
class Domain:
    """The EIP-712 domain: the registry on one chain."""

    chain_id: int
    verifying_contract: str
    name: str = field(default=DOMAIN_NAME)
    version: str = field(default=DOMAIN_VERSION)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verifying_contract", to_checksum_address(self.verifying_contract))
