"""The peer wire: the JSON bodies nodes send each other (/peer/*), built and parsed with compiled libraries.

Why not pydantic here: a node parses and serialises every event 3-6 times over the peer endpoints, and
FastAPI's body handling plus pydantic cost 2.6-3.8 µs per event for a batch (msgspec 0.45, orjson 0.59;
issue 12). The client edge (/v1/...) keeps its pydantic models and the OpenAPI docs; the peer endpoints'
bodies are documented there by the same pydantic models (node/server/models.py) and parsed here by
msgspec structs with the same fields and constraints, so a peer's body is checked as strictly (stricter:
no numeric strings for integers) and a bad one still gets a clear 4xx (400 `malformed_json`, 422
`invalid_request`, with the field's path in `detail`).

Encoding: an event's wire bytes are built once (`event_bytes`) and the same bytes go into every peer's
gossip body (`join_list`); each request is then signed over its exact body (node.protocol.peer_auth).
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol, TypeVar

import msgspec
import orjson
from fastapi.responses import Response
from msgspec import Meta, Struct

from node.protocol.hexutil import unhex
from node.protocol.types import Event, Header

from .models import MAX_PEER_BATCH

# Exact lengths here (checked in C); that the characters are hex is checked by `hex_ok` after decoding
# (msgspec's `pattern` runs Python's re: 5.7 µs per event for these four fields, the rest of the decode 0.45).
Hex32 = Annotated[str, Meta(min_length=66, max_length=66)]
Address = Annotated[str, Meta(min_length=42, max_length=42)]
HexBytes = str
Signature = Annotated[str, Meta(min_length=132, max_length=132)]
MAX_HASHES = 20_000  # as models.FetchIn / AttestIn (the node's own caps, 413, are lower)


class EventLike(Protocol):
    """An event as it came over HTTP: models.EventIn (client edge) or WireEvent (peer wire)."""

    @property
    def stream_id(self) -> str: ...
    @property
    def author(self) -> str: ...
    @property
    def nonce(self) -> int: ...
    @property
    def kind(self) -> int: ...
    @property
    def payload(self) -> str: ...


class SignedEventLike(Protocol):
    @property
    def event(self) -> EventLike: ...
    @property
    def signature(self) -> str: ...


class WireEvent(Struct):
    stream_id: Hex32
    author: Address
    nonce: Annotated[int, Meta(ge=0)]  # < 2**64: make_event (msgspec bounds stop at int64)
    kind: Annotated[int, Meta(ge=0, le=255)]
    payload: HexBytes


class WireSignedEvent(Struct):
    event: WireEvent
    signature: Signature


class GossipIn(Struct):
    events: list[WireSignedEvent]


class VotesIn(Struct):
    stream_id: Hex32


class VotesBatchIn(Struct):
    stream_ids: Annotated[list[Hex32], Meta(min_length=1, max_length=MAX_PEER_BATCH)]


class FetchIn(Struct):
    hashes: Annotated[list[str], Meta(max_length=MAX_HASHES)]


class WireHeader(Struct):
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

    def to_header(self) -> Header:
        """As models.HeaderOut.to_header (a bad hex field: ValueError, attest's 422 `malformed`)."""
        return Header(unhex(self.stream_id), self.number, unhex(self.prev_hash), unhex(self.events_root),
                      self.event_count, self.epoch, self.attempt, self.leader, unhex(self.randao_reveal),
                      unhex(self.state_root))


class HeaderLike(Protocol):
    @property
    def stream_id(self) -> str: ...
    @property
    def number(self) -> int: ...
    @property
    def leader(self) -> str: ...
    def to_header(self) -> Header: ...


class AttestIn(Struct):
    header: WireHeader
    event_hashes: Annotated[list[str], Meta(max_length=MAX_HASHES)]


class AttestBatchIn(Struct):
    proposals: Annotated[list[AttestIn], Meta(min_length=1, max_length=MAX_PEER_BATCH)]


class ProposalLike(Protocol):
    """A proposal to attest: models.AttestIn or wire.AttestIn."""

    @property
    def header(self) -> HeaderLike: ...
    @property
    def event_hashes(self) -> list[str]: ...


T = TypeVar("T")
_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}


class BadBody(ValueError):
    """A peer body that does not parse (400 `malformed_json`) or does not fit its struct (422)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def hex_ok(s: str) -> bool:
    """`s` is "0x" and an even number of hex digits, nothing else (as models' patterns; bytes.fromhex alone
    would skip whitespace: "0x..\n" would pass as another spelling of the same bytes)."""
    if s[:2] != "0x":
        return False
    try:
        return len(bytes.fromhex(s[2:])) * 2 + 2 == len(s)
    except ValueError:
        return False


def _all_hex(*fields: str) -> bool:
    if any(f[:2] != "0x" for f in fields):
        return False
    h = "".join(f[2:] for f in fields)
    try:
        return len(bytes.fromhex(h)) * 2 == len(h)
    except ValueError:
        return False


def _check_hex(out: Any) -> None:
    """The hex fields of a decoded body (those the pydantic models constrain by pattern)."""
    if isinstance(out, GossipIn):
        for i, se in enumerate(out.events):
            e = se.event
            # one fromhex over the four fields (each of the fixed ones is of even length, so an odd payload
            # makes the whole odd); the field is named only when one is bad
            if _all_hex(e.stream_id, e.author, e.payload, se.signature):
                continue
            for name, v in (("event.stream_id", e.stream_id), ("event.author", e.author),
                            ("event.payload", e.payload), ("signature", se.signature)):
                if not hex_ok(v):
                    raise BadBody(422, "invalid_request", f"Expected 0x-hex - at `$.events[{i}].{name}`")
    elif isinstance(out, VotesBatchIn):
        for i, s in enumerate(out.stream_ids):
            if not hex_ok(s):
                raise BadBody(422, "invalid_request", f"Expected 0x-hex - at `$.stream_ids[{i}]`")
    elif isinstance(out, VotesIn) and not hex_ok(out.stream_id):
        raise BadBody(422, "invalid_request", "Expected 0x-hex - at `$.stream_id`")


def decode(kind: type[T], body: bytes) -> T:
    """`body` parsed into `kind`, every constraint checked; BadBody if it is not one."""
    dec = _DECODERS.get(kind)
    if dec is None:
        dec = _DECODERS[kind] = msgspec.json.Decoder(kind)
    try:
        out: T = dec.decode(body)
    except msgspec.ValidationError as exc:
        raise BadBody(422, "invalid_request", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadBody(400, "malformed_json", str(exc)) from None
    _check_hex(out)
    return out


def dumps(obj: Any) -> bytes:
    """JSON bytes of plain data (orjson: compact, UTF-8)."""
    return orjson.dumps(obj)


loads = orjson.loads


def event_bytes(ev: Event, sig: bytes) -> bytes:
    """One stored event's wire form ({"event": {...}, "signature": ...}, as intake.to_wire) as JSON bytes.
    Every field is hex, an integer or a checksummed address checked at intake: nothing to escape."""
    return (b'{"event":{"stream_id":"0x%s","author":"%s","nonce":%d,"kind":%d,"payload":"0x%s"},"signature":"0x%s"}'
            % (ev.stream_id.hex().encode(), ev.author.encode(), ev.nonce, ev.kind, ev.payload.hex().encode(),
               sig.hex().encode()))


def join_list(key: bytes, parts: list[bytes]) -> bytes:
    """{"key": [part, part, ...]} from already encoded parts (each built once for all peers)."""
    return b'{"' + key + b'":[' + b",".join(parts) + b"]}"


class JSONBytes(Response):
    """A JSON answer rendered by orjson (starlette's JSONResponse runs the stdlib encoder)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else orjson.dumps(content)
