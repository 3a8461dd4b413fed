"""Stream snapshots (docs/protocol.md, "Snapshots"): the format, its canonical bytes and its check.

A snapshot is the state a stream's next block is judged by, after block `number`: the member slots, the
creator and the JOIN policy, and every (author, nonce) committed in blocks 1..number in commit order (the
replay rule: a (stream, author, nonce) is committed at most once, ever). A node that has it, and the blocks
after it, can check and build every later block without the stream's older history.

What the chain vouches for: `header` must hash to the registry's header hash at `number`, and the snapshot's
members, policy and nonce list must give that header's stateRoot (node.protocol.state_root, which commits
to all three); the creator is the StreamCreated log's. So `check_snapshot` alone decides whether a snapshot
is true: no peer has to be trusted, or agree with another.

Bytes: `body` = canonical JSON (sorted keys, no spaces; the nonces as [author index, nonce] pairs in commit
order over a sorted author table), `digest` = keccak256(body), and the wire/storage form is zlib(body).
Every honest node builds the same body for the same (stream, number), so digests can be compared across peers.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils.address import is_checksum_address

from .eip712 import hash_header
from .hashing import keccak
from .hexutil import hx, unhex
from .member_tree import slots_root
from .state_root import NonceFrontier, nonce_leaf, state_root
from .types import Header

VERSION = 2  # 1: nonces grouped per author, not under stateRoot


class SnapshotError(ValueError):
    """A snapshot that is malformed, or that the chain's header does not vouch for."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of `stream_id` after block `number` (see the module docstring).

    slots: member slots in join order (None: that member left); used: the (author, nonce) of every event of
    blocks 1..number, in commit order (block number, then index in the block), no pair twice."""

    stream_id: bytes
    number: int
    header: Header
    creator: str | None
    invite_only: bool
    slots: tuple[str | None, ...]
    used: tuple[tuple[str, int], ...]

    @property
    def nonce_count(self) -> int:
        return len(self.used)

    def frontier(self) -> NonceFrontier:
        """The nonce accumulator after block `number`, rebuilt from the list: O(nonces)."""
        return NonceFrontier.of(nonce_leaf(a, n) for a, n in self.used)


# ---- bytes ------------------------------------------------------------------------------------------

def _header_json(h: Header) -> dict[str, Any]:
    return {"stream_id": hx(h.stream_id), "number": h.number, "prev_hash": hx(h.prev_hash),
            "events_root": hx(h.events_root), "event_count": h.event_count, "epoch": h.epoch,
            "attempt": h.attempt, "leader": h.leader, "randao_reveal": hx(h.randao_reveal),
            "state_root": hx(h.state_root)}


def encode(s: Snapshot) -> bytes:
    """The canonical body (what the digest is over): `authors` = the distinct authors of `used`, ascending;
    `nonces` = [index in `authors`, nonce] per used nonce, in commit order."""
    authors = sorted({a for a, _n in s.used})
    index = {a: i for i, a in enumerate(authors)}
    obj = {"v": VERSION, "stream_id": hx(s.stream_id), "number": s.number, "header": _header_json(s.header),
           "creator": s.creator, "invite_only": s.invite_only, "slots": list(s.slots), "authors": authors,
           "nonces": [[index[a], n] for a, n in s.used]}
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
    raw_slots, raw_authors, raw_nonces = o.get("slots"), o.get("authors"), o.get("nonces")
    if not isinstance(raw_slots, list) or not isinstance(raw_authors, list) or not isinstance(raw_nonces, list):
        raise SnapshotError("slots, authors and nonces must be lists")
    slots = tuple(None if s is None else _addr(s, "slot") for s in raw_slots)
    present = [s for s in slots if s is not None]
    if len(set(present)) != len(present):
        raise SnapshotError("a member holds two slots")
    authors = [_addr(a, "authors") for a in raw_authors]
    if any(a >= b for a, b in zip(authors, authors[1:], strict=False)):
        raise SnapshotError("authors: not strictly ascending")
    used: list[tuple[str, int]] = []
    for item in raw_nonces:
        if not isinstance(item, list) or len(item) != 2:
            raise SnapshotError("nonces: each item is [author index, nonce]")
        k = _int(item[0], "nonces author index", 32)
        if k >= len(authors):
            raise SnapshotError(f"nonces: author index {k} out of range")
        used.append((authors[k], _int(item[1], "nonce")))
    if len(set(used)) != len(used):
        raise SnapshotError("nonces: an (author, nonce) used twice")
    snap = Snapshot(_b32(o.get("stream_id"), "stream_id"), _int(o.get("number"), "number"), _header(o.get("header")),
                    creator, o["invite_only"], slots, tuple(used))
    if encode(snap) != body:
        raise SnapshotError("body is not in canonical form")
    return snap


# ---- the check ------------------------------------------------------------------------------------

def check_snapshot(snap: Snapshot, *, stream_id: bytes, header_hash: bytes, creator: str | None) -> NonceFrontier:
    """Raise SnapshotError unless the chain vouches for `snap`: `header_hash` is the registry's header hash
    of (stream_id, snap.number), the snapshot's header hashes to it, and its member slots, policy and nonce
    list give that header's stateRoot; `creator` (the StreamCreated log's, None if not known here) must be
    the snapshot's. Returns the nonce accumulator it rebuilt (what the node keeps)."""
    if snap.stream_id != stream_id or snap.header.stream_id != stream_id:
        raise SnapshotError("snapshot of another stream")
    if snap.number < 1 or snap.header.number != snap.number:
        raise SnapshotError(f"header #{snap.header.number} is not block {snap.number}")
    if hash_header(snap.header) != header_hash:
        raise SnapshotError(f"header of #{snap.number} does not hash to the chain's header hash {hx(header_hash)}")
    frontier = snap.frontier()
    if state_root(slots_root(snap.slots), snap.invite_only, frontier.root) != snap.header.state_root:
        raise SnapshotError(f"members, policy and nonces do not give the committed stateRoot of #{snap.number}")
    if creator is not None and snap.creator != creator:
        raise SnapshotError(f"creator {snap.creator} is not the stream's creator {creator}")
    return frontier
