"""Stream snapshots (docs/protocol.md, "Snapshots"): the format, its canonical bytes and its check.

A snapshot is the state a stream's next block is judged by, after block `number`: the member slots
(behind stateRoot), the creator and the JOIN policy, and the nonces already used per author (the
replay rule: a (stream, author, nonce) is committed at most once, ever). A node that has it, and the
blocks after it, can check and build every later block without the stream's older history.

What the chain vouches for: `header` must hash to the registry's header hash at `number`, and the
member slots must give that header's stateRoot. The policy and the nonces are not under stateRoot (the
header format is kept as it is), so a node takes them only from a snapshot that several peers serve
with the same digest (node/server/snapshots.py); `check_snapshot` checks all that the chain can.

Bytes: `body` = canonical JSON (sorted keys, no spaces; nonces delta-encoded per author), `digest` =
keccak256(body), and the wire/storage form is zlib(body). Every honest node builds the same body for
the same (stream, number), so digests can be compared across peers.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils.address import is_checksum_address

from .eip712 import hash_header
from .hashing import keccak
from .hexutil import hx, unhex
from .member_tree import slots_root
from .types import Header

VERSION = 1


class SnapshotError(ValueError):
    """A snapshot that is malformed, or that the chain's header does not vouch for."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of `stream_id` after block `number` (see the module docstring).

    slots: member slots in join order (None: that member left); nonces: per author (ascending addresses),
    the nonces of its events committed in blocks 1..number, ascending."""

    stream_id: bytes
    number: int
    header: Header
    creator: str | None
    invite_only: bool
    slots: tuple[str | None, ...]
    nonces: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def nonce_count(self) -> int:
        return sum(len(ns) for _a, ns in self.nonces)

    def used(self) -> Iterable[tuple[str, int]]:
        for a, ns in self.nonces:
            for n in ns:
                yield a, n


def group_nonces(pairs: Iterable[tuple[str, int]]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(author, nonce) pairs in any order -> the snapshot's sorted, de-duplicated form."""
    by: dict[str, set[int]] = {}
    for a, n in pairs:
        by.setdefault(a, set()).add(n)
    return tuple((a, tuple(sorted(by[a]))) for a in sorted(by))


# ---- bytes ------------------------------------------------------------------------------------------

def _header_json(h: Header) -> dict[str, Any]:
    return {"stream_id": hx(h.stream_id), "number": h.number, "prev_hash": hx(h.prev_hash),
            "events_root": hx(h.events_root), "event_count": h.event_count, "epoch": h.epoch,
            "attempt": h.attempt, "leader": h.leader, "randao_reveal": hx(h.randao_reveal),
            "state_root": hx(h.state_root)}


def _deltas(ns: Sequence[int]) -> list[int]:
    return [ns[0]] + [b - a for a, b in zip(ns, ns[1:], strict=False)] if ns else []


def encode(s: Snapshot) -> bytes:
    """The canonical body (what the digest is over)."""
    obj = {"v": VERSION, "stream_id": hx(s.stream_id), "number": s.number, "header": _header_json(s.header),
           "creator": s.creator, "invite_only": s.invite_only, "slots": list(s.slots),
           "nonces": [[a, _deltas(ns)] for a, ns in s.nonces]}
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def digest(body: bytes) -> bytes:
    return keccak(body)


def pack(body: bytes) -> bytes:
    """The stored and served form."""
    return zlib.compress(body, 6)


def unpack(blob: bytes, max_bytes: int) -> bytes:
    """zlib-decompress at most `max_bytes` (a peer's blob could be a decompression bomb)."""
    d = zlib.decompressobj()
    try:
        body = d.decompress(blob, max_bytes)
    except zlib.error as exc:
        raise SnapshotError(f"not zlib data: {exc}") from None
    if d.unconsumed_tail or not d.eof:
        raise SnapshotError(f"snapshot body over {max_bytes} bytes, or truncated")
    return body


def _addr(v: Any, what: str) -> str:
    if not isinstance(v, str) or not is_checksum_address(v):
        raise SnapshotError(f"{what}: not a checksum address: {v!r}")
    return v


def _int(v: Any, what: str, bits: int = 64) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**bits:
        raise SnapshotError(f"{what}: not a uint{bits}: {v!r}")
    return v


def _b32(v: Any, what: str) -> bytes:
    try:
        b = unhex(v) if isinstance(v, str) else b""
    except ValueError:
        b = b""
    if len(b) != 32:
        raise SnapshotError(f"{what}: not 32 bytes of 0x-hex")
    return b


def _header(o: Any) -> Header:
    if not isinstance(o, Mapping):
        raise SnapshotError("header: not an object")
    try:
        return Header(_b32(o.get("stream_id"), "header.stream_id"), _int(o.get("number"), "header.number"),
                      _b32(o.get("prev_hash"), "header.prev_hash"), _b32(o.get("events_root"), "header.events_root"),
                      _int(o.get("event_count"), "header.event_count", 32), _int(o.get("epoch"), "header.epoch"),
                      _int(o.get("attempt"), "header.attempt", 32), _addr(o.get("leader"), "header.leader"),
                      _b32(o.get("randao_reveal"), "header.randao_reveal"),
                      _b32(o.get("state_root"), "header.state_root"))
    except ValueError as exc:
        raise SnapshotError(f"header: {exc}") from None


def decode(body: bytes) -> Snapshot:
    """Parse a body (from a peer: every field is checked for shape; SnapshotError otherwise). The body
    must be canonical: re-encoding the result gives the same bytes, so the digest names one snapshot."""
    try:
        o = json.loads(body)
    except ValueError as exc:
        raise SnapshotError(f"not JSON: {exc}") from None
    if not isinstance(o, dict) or o.get("v") != VERSION:
        raise SnapshotError(f"not a version {VERSION} snapshot")
    creator = o.get("creator")
    if creator is not None:
        creator = _addr(creator, "creator")
    if not isinstance(o.get("invite_only"), bool):
        raise SnapshotError("invite_only: not a boolean")
    raw_slots, raw_nonces = o.get("slots"), o.get("nonces")
    if not isinstance(raw_slots, list) or not isinstance(raw_nonces, list):
        raise SnapshotError("slots and nonces must be lists")
    slots = tuple(None if s is None else _addr(s, "slot") for s in raw_slots)
    present = [s for s in slots if s is not None]
    if len(set(present)) != len(present):
        raise SnapshotError("a member holds two slots")
    nonces: list[tuple[str, tuple[int, ...]]] = []
    for item in raw_nonces:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list) or not item[1]:
            raise SnapshotError("nonces: each item is [author, [first, delta, ...]]")
        author = _addr(item[0], "nonces author")
        if nonces and author <= nonces[-1][0]:
            raise SnapshotError("nonces: authors not in ascending order")
        ns, cur = [], -1
        for k, d in enumerate(item[1]):
            d = _int(d, "nonce")
            if k and d == 0:
                raise SnapshotError("nonces: not strictly ascending")
            cur = d if k == 0 else cur + d
            ns.append(_int(cur, "nonce"))
        nonces.append((author, tuple(ns)))
    snap = Snapshot(_b32(o.get("stream_id"), "stream_id"), _int(o.get("number"), "number"), _header(o.get("header")),
                    creator, o["invite_only"], slots, tuple(nonces))
    if encode(snap) != body:
        raise SnapshotError("body is not in canonical form")
    return snap


# ---- the check ------------------------------------------------------------------------------------

def check_snapshot(snap: Snapshot, *, stream_id: bytes, header_hash: bytes, creator: str | None) -> None:
    """Raise SnapshotError unless the chain vouches for `snap`: `header_hash` is the registry's header hash
    of (stream_id, snap.number), the snapshot's header hashes to it, and its member slots give that header's
    stateRoot; `creator` (the StreamCreated log's, None if not known here) must be the snapshot's."""
    if snap.stream_id != stream_id or snap.header.stream_id != stream_id:
        raise SnapshotError("snapshot of another stream")
    if snap.number < 1 or snap.header.number != snap.number:
        raise SnapshotError(f"header #{snap.header.number} is not block {snap.number}")
    if hash_header(snap.header) != header_hash:
        raise SnapshotError(f"header of #{snap.number} does not hash to the chain's header hash {hx(header_hash)}")
    if slots_root(snap.slots) != snap.header.state_root:
        raise SnapshotError(f"member slots do not give the committed stateRoot of #{snap.number}")
    if creator is not None and snap.creator != creator:
        raise SnapshotError(f"creator {snap.creator} is not the stream's creator {creator}")
