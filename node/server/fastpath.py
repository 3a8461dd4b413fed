"""Hot-path helpers: build Events without re-checksumming known addresses, and check an event
signature from its already computed hash. Same rules as node.protocol (types, eip712); only faster
for the thousands of events a node handles each second.
"""

from __future__ import annotations

from eth_utils import to_checksum_address

from node.protocol.eip712 import digest, recover_digest_raw
from node.protocol.types import Domain, Event, EventKind

_KINDS = frozenset(int(k) for k in EventKind)
_checksums: dict[str, str] = {}


def checksum(addr: str) -> str:
    c = _checksums.get(addr)
    if c is None:
        c = to_checksum_address(addr)
        if len(_checksums) > 100_000:
            _checksums.clear()
        _checksums[addr] = c
    return c


def trusted_event(stream_id: bytes, author: str, nonce: int, kind: int, payload: bytes) -> Event:
    """An Event from already validated data (storage rows): no checks."""
    ev = object.__new__(Event)
    object.__setattr__(ev, "stream_id", stream_id)
    object.__setattr__(ev, "author", author)
    object.__setattr__(ev, "nonce", nonce)
    object.__setattr__(ev, "kind", kind)
    object.__setattr__(ev, "payload", payload)
    return ev


def share_names(ev: Event, stream_id: bytes, author: str) -> None:
    """Point an event's stream id and author at equal objects already held elsewhere (the in-memory pool
    keeps one of each, not one per event: ~150 B per pending event). The values do not change."""
    object.__setattr__(ev, "stream_id", stream_id)
    object.__setattr__(ev, "author", author)


def make_event(stream_id: bytes, author: str, nonce: int, kind: int, payload: bytes) -> Event:
    """Event(...) with the same checks, the author's checksum cached."""
    if len(stream_id) != 32:
        raise ValueError("stream_id must be 32 bytes")
    if not 0 <= nonce < 2**64:
        raise ValueError("nonce must fit uint64")
    if kind not in _KINDS:
        raise ValueError(f"unknown event kind {kind}")
    return trusted_event(stream_id, checksum(author), nonce, kind, payload)


def check_event_signature(domain: Domain, event_hash: bytes, author: str, signature: bytes) -> str | None:
    """None if `signature` is the author's over the event's EIP-712 digest, else the recovered signer
    (or raises SignatureError if malformed / high-s / unrecoverable): no checksum on the good path."""
    addr = recover_digest_raw(digest(domain, event_hash), signature)
    if addr == bytes.fromhex(author[2:]):
        return None
    return to_checksum_address(addr)


def _hexbytes(s: str, n: int | None = None) -> bytes:
    if not isinstance(s, str) or not s.startswith("0x"):
        raise ValueError("expected 0x-hex")
    b = bytes.fromhex(s[2:])
    if n is not None and len(b) != n:
        raise ValueError(f"expected {n} bytes")
    return b


def parse_wire(item: dict) -> tuple[Event, bytes]:
    """A peer's signed event ({"event": {...}, "signature": ...}) -> (Event, signature). Raises ValueError."""
    e = item["event"]
    nonce, kind = e["nonce"], e["kind"]
    if not isinstance(nonce, int) or not isinstance(kind, int):
        raise ValueError("nonce and kind must be integers")
    author = e["author"]
    if not isinstance(author, str) or len(author) != 42:
        raise ValueError("bad author")
    ev = make_event(_hexbytes(e["stream_id"], 32), author, nonce, kind, _hexbytes(e["payload"]))
    return ev, _hexbytes(item["signature"], 65)
