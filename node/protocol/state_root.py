"""stateRoot: one hash over everything a stream's next block is judged by (docs/protocol.md, "Stream state").

    stateRoot   = keccak256(0x02 ‖ membersRoot ‖ uint8(inviteOnly) ‖ noncesRoot)
    membersRoot = the member-slot root (node.protocol.member_tree)
    noncesRoot  = the Merkle root (node.protocol.merkle, the eventsRoot rule) over
                  keccak256(abi.encodePacked(address author, uint64 nonce)) of every event of blocks 1..n,
                  in commit order (block number, then index in the block)

Why this shape: a snapshot (node.protocol.snapshot) must be checkable against the chain alone, so the header
commits to every part of it the block rules read -- the members, the JOIN policy and the used nonces (the
creator is already on chain, in StreamCreated). The tag 0x02 keeps it apart from the tree's leaves (0x00) and
nodes (0x01). The nonce list only grows, and in commit order, so its root is an append-only accumulator:
`NonceFrontier` keeps the roots of the perfect subtrees ("peaks", one per set bit of the leaf count, at most
64), a block appends its leaves in O(events x log n) and the root is a fold of <= 64 peaks; a snapshot's list
rebuilds it in O(n). The tree is the events tree of merkle.py (odd node promoted), whose root over n leaves
is exactly the right fold of those peaks: `nonces_root` is the definition from scratch, and the tests hold
the two equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .hashing import keccak
from .member_tree import MemberTree, slots_root
from .merkle import ZERO_ROOT, leaf_hash, merkle_root, node_hash
from .state import StateDelta
from .types import Event

STATE_ROOT_TAG = b"\x02"
PEAK_BYTES = 32


def nonce_leaf(author: str, nonce: int) -> bytes:
    """keccak256(abi.encodePacked(address author, uint64 nonce)): the leaf input of one used nonce."""
    return keccak(bytes.fromhex(author[2:]) + nonce.to_bytes(8, "big"))


def block_leaves(events: Iterable[Event]) -> list[bytes]:
    """A block's nonce leaves: one per event, in block order (every event of a committed block uses its nonce,
    also one the state rules skip)."""
    return [nonce_leaf(e.author, e.nonce) for e in events]


def nonces_root(used: Iterable[tuple[str, int]]) -> bytes:
    """noncesRoot from scratch: the Merkle root over the (author, nonce) leaves in commit order."""
    return merkle_root([nonce_leaf(a, n) for a, n in used])


def state_root(members_root: bytes, invite_only: bool, nonces: bytes) -> bytes:
    """The one definition of stateRoot (module docstring)."""
    return keccak(STATE_ROOT_TAG + members_root + (b"\x01" if invite_only else b"\x00") + nonces)


@dataclass(frozen=True, slots=True)
class NonceFrontier:
    """The nonce accumulator after `count` leaves: `peaks`, the roots of its perfect subtrees, largest
    (leftmost) first; there is one per set bit of `count`. Immutable: a draft's root and the applied state
    never share a mutable tree, and a per-block copy is the history a rollback restores."""

    count: int = 0
    peaks: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, leaf_inputs: Iterable[bytes]) -> NonceFrontier:
        """Build from every leaf input in order (a snapshot's list, or a node's stored nonces): O(n)."""
        return cls().appended(leaf_inputs)

    def appended(self, leaf_inputs: Iterable[bytes]) -> NonceFrontier:
        """The frontier after appending `leaf_inputs` (a block's, in block order): O(leaves x log n)."""
        peaks, count = list(self.peaks), self.count
        for x in leaf_inputs:
            h, n = leaf_hash(x), count
            while n & 1:  # merge equal-sized subtrees, as the carry of count + 1
                h = node_hash(peaks.pop(), h)
                n >>= 1
            peaks.append(h)
            count += 1
        return NonceFrontier(count, tuple(peaks))

    @property
    def root(self) -> bytes:
        """noncesRoot: N(P_1, N(P_2, ... N(P_k-1, P_k))) over the peaks, largest first; bytes32(0) for none."""
        if not self.peaks:
            return ZERO_ROOT
        acc = self.peaks[-1]
        for p in reversed(self.peaks[:-1]):
            acc = node_hash(p, acc)
        return acc

    # ---- persistence (node/server/storage.py keeps one per stream and block) -------------------------------
    def peaks_blob(self) -> bytes:
        return b"".join(self.peaks)

    @classmethod
    def from_stored(cls, count: int, blob: bytes) -> NonceFrontier:
        """Inverse of (count, peaks_blob()); ValueError if the peaks do not fit the count."""
        peaks = tuple(bytes(blob[i:i + PEAK_BYTES]) for i in range(0, len(blob), PEAK_BYTES))
        if count < 0 or len(blob) % PEAK_BYTES or len(peaks) != count.bit_count():
            raise ValueError(f"{len(blob)} bytes of peaks do not fit {count} leaves")
        return cls(count, peaks)


def state_root_of(slots: Sequence[str | None], invite_only: bool, used: Iterable[tuple[str, int]]) -> bytes:
    """stateRoot from scratch (a snapshot's check, tests, tools)."""
    return state_root(slots_root(slots), invite_only, nonces_root(used))


def root_after(members: MemberTree, invite_only: bool, nonces: NonceFrontier, delta: StateDelta,
               events: Iterable[Event]) -> bytes:
    """stateRoot after a block with `events` whose state change is `delta`, given the state before it:
    O(changed slots x log slots + events x log nonces), nothing is changed. What the leader puts in the
    header, the attester checks and sync compares."""
    policy = invite_only if delta.invite_only is None else delta.invite_only
    return state_root(members.root_after(delta.members), policy, nonces.appended(block_leaves(events)).root)
