"""Pydantic models of the HTTP API (JSON; bytes as 0x-hex). OpenAPI is published at /openapi.json."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from node.protocol.hexutil import hx, unhex
from node.protocol.types import Event, Header

__all__ = ["hx", "unhex"]  # re-exported: the server modules import them from here

HEX32 = r"^0x[0-9a-fA-F]{64}$"
ADDR = r"^0x[0-9a-fA-F]{40}$"


class EventIn(BaseModel):
    """An event as signed by its author (EIP-712 typed data `Event`)."""

    stream_id: str = Field(pattern=HEX32, description="bytes32, 0x-hex")
    author: str = Field(pattern=ADDR)
    nonce: int = Field(ge=0, lt=2**64)
    kind: int = Field(ge=0, le=255, description="0 MESSAGE, 1 JOIN, 2 LEAVE, 3 POLICY")
    payload: str = Field(description="0x-hex bytes", pattern=r"^0x([0-9a-fA-F]{2})*$")

    def to_event(self) -> Event:
        return Event(unhex(self.stream_id), self.author, self.nonce, self.kind, unhex(self.payload))

    @classmethod
    def of(cls, ev: Event) -> EventIn:
        return cls(stream_id=hx(ev.stream_id), author=ev.author, nonce=ev.nonce, kind=ev.kind, payload=hx(ev.payload))


class SignedEvent(BaseModel):
    event: EventIn
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="65-byte r||s||v over the EIP-712 digest")


class EventBatch(BaseModel):
    events: list[SignedEvent]


class Accepted(BaseModel):
    hash: str
    status: Literal["pending", "committed"]
    known: bool = Field(False, description="the node already held this event")


class BatchItemResult(BaseModel):
    hash: str | None = None
    ok: bool
    status: int
    error: str | None = None
    detail: str | None = None


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItemResult]


class ErrorOut(BaseModel):
    error: str
    detail: str


class HeaderOut(BaseModel):
    stream_id: str
    number: int
    prev_hash: str
    events_root: str
    event_count: int
    epoch: int
    attempt: int
    leader: str
    randao_reveal: str
    state_root: str

    @classmethod
    def of(cls, h: Header) -> HeaderOut:
        return cls(stream_id=hx(h.stream_id), number=h.number, prev_hash=hx(h.prev_hash),
                   events_root=hx(h.events_root), event_count=h.event_count, epoch=h.epoch, attempt=h.attempt,
                   leader=h.leader, randao_reveal=hx(h.randao_reveal), state_root=hx(h.state_root))

    def to_header(self) -> Header:
        return Header(unhex(self.stream_id), self.number, unhex(self.prev_hash), unhex(self.events_root),
                      self.event_count, self.epoch, self.attempt, self.leader, unhex(self.randao_reveal),
                      unhex(self.state_root))


class EventStatus(BaseModel):
    hash: str
    status: Literal["pending", "committed"]
    event: EventIn
    signature: str
    stream_id: str
    block: int | None = None
    index: int | None = None
    header_hash: str | None = None
    header: HeaderOut | None = None
    proof: list[str] | None = Field(default=None, description="Merkle siblings bottom-up (docs/protocol.md)")
    chain_block: int | None = Field(default=None, description="the chain block holding the block's commit")
    final: bool | None = Field(default=None, description="the commit is as deep as the node's finality setting asks; "
                               "a block that is not final may still be rolled back by a reorg")


class StreamOut(BaseModel):
    stream_id: str
    head_number: int
    head_hash: str
    chain_head_number: int | None
    members: list[str] = Field(description="members after the head (the first 1,000 to join, sorted)")
    member_count: int = 0
    creator: str | None = None
    invite_only: bool = Field(False, description="JOINs need an invitation signed by the creator")
    replicas: list[str]
    pool_size: int
    replicated_here: bool
    diverged_at: int | None = Field(default=None, description="a block whose stateRoot differs from the members "
                                    "computed here: the node stopped following the stream there")


class StreamList(BaseModel):
    streams: list[StreamOut]


class BlockOut(BaseModel):
    header: HeaderOut
    header_hash: str
    event_hashes: list[str]
    events: list[SignedEvent] | None = None
    tx_hash: str | None = None
    chain_block: int | None = None
    final: bool | None = None


class BlockList(BaseModel):
    blocks: list[BlockOut]


class VotesIn(BaseModel):
    stream_id: str = Field(pattern=HEX32)


class VotesOut(BaseModel):
    head_number: int
    hashes: list[str]


MAX_PEER_BATCH = 256  # streams per batched /peer/votes/batch or /peer/attest/batch request (a leader's tick)


class VotesBatchIn(BaseModel):
    """The streams a leader drafts with this node in one tick (each answered on its own)."""

    stream_ids: list[Annotated[str, Field(pattern=HEX32)]] = Field(min_length=1, max_length=MAX_PEER_BATCH)


class VoteItem(BaseModel):
    """One stream's vote (as /peer/votes answers it), or why it is refused (`error`, `status`)."""

    stream_id: str
    status: int = 200
    head_number: int | None = None
    hashes: list[str] = Field(default_factory=list)
    error: str | None = None
    detail: str | None = None


class VotesBatchOut(BaseModel):
    votes: list[VoteItem]


class FetchIn(BaseModel):
    hashes: list[str] = Field(max_length=20000)  # the node's own cap (max_fetch_hashes, 413) is lower


class FetchOut(BaseModel):
    events: list[SignedEvent]


class AttestIn(BaseModel):
    header: HeaderOut
    event_hashes: list[str] = Field(max_length=20000)


class AttestOut(BaseModel):
    signature: str
    header_hash: str


class AttestBatchIn(BaseModel):
    """The proposals a leader asks this node to attest in one tick (each checked and answered on its own)."""

    proposals: list[AttestIn] = Field(min_length=1, max_length=MAX_PEER_BATCH)


class AttestItem(BaseModel):
    """One proposal's attestation (as /peer/attest answers it), or its refusal (`status`, `error`, `detail`)."""

    status: int = 200
    signature: str | None = None
    header_hash: str | None = None
    error: str | None = None
    detail: str | None = None


class AttestBatchOut(BaseModel):
    results: list[AttestItem]


class GossipOut(BaseModel):
    accepted: int
    known: int
    rejected: int


class Health(BaseModel):
    ok: bool
    address: str
    active: bool
    epoch: int | None
    streams: int
    replicated: int
    behind: int
    pool: int
    chain_block: int


class NodeInfoOut(BaseModel):
    """What a client needs to sign events for this node's registry (the EIP-712 domain) and who the node is."""

    address: str
    chain_id: int
    registry: str
    domain_name: str
    domain_version: str
    epoch: int | None
    public_url: str | None = None
    chain_time: float | None = Field(None, description="this node's chain time (s), X-Peer-Time's reference")
