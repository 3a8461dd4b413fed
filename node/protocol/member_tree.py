"""The members tree behind membersRoot, one part of stateRoot (docs/protocol.md, "Stream state"), kept
incrementally.

The tree is the events Merkle tree (node.protocol.merkle) over the stream's member *slots*: slot i is
the i-th JOIN ever applied in the stream (in block order), its leaf input `keccak256(address)` while
that member stays, `bytes32(0)` once it left. A JOIN appends a slot, a LEAVE zeroes one, so a block
changes only its own slots and their paths: `root_after(delta)` and `apply(delta)` cost
O(changed slots x log(slots)), never O(members). `slots_root` is the definition from scratch (tests
and start-up hold the two equal).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from eth_utils.address import to_checksum_address

from .hashing import keccak
from .merkle import ZERO_ROOT, leaf_hash, merkle_root, node_hash
from .types import ZERO32


def member_leaf_input(address: str) -> bytes:
    """keccak256(abi.encodePacked(address)): what a member's slot holds."""
    return keccak(bytes.fromhex(to_checksum_address(address)[2:]))


def slots_root(slots: Iterable[str | None]) -> bytes:
    """membersRoot from scratch: the Merkle root over the slots in order (None = a member that left)."""
    return merkle_root([ZERO32 if s is None else member_leaf_input(s) for s in slots])


@dataclass(frozen=True, slots=True)
class MemberDelta:
    """What one block changes in the member set: JOINs (new slots, in block order) and LEAVEs."""

    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.joined or self.left)


@dataclass
class MemberTree:
    """A stream's member slots with their Merkle levels; `index` maps a present member to its slot."""

    slots: list[str | None] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    levels: list[list[bytes]] = field(default_factory=lambda: [[]])

    @classmethod
    def from_slots(cls, slots: Sequence[str | None]) -> MemberTree:
        """Build the whole tree once (start-up): O(slots)."""
        tree = cls()
        tree.slots = list(slots)
        tree.index = {s: i for i, s in enumerate(tree.slots) if s is not None}
        level = [leaf_hash(ZERO32 if s is None else member_leaf_input(s)) for s in tree.slots]
        tree.levels = [level]
        while len(level) > 1:
            nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            tree.levels.append(nxt)
            level = nxt
        return tree

    # ---- the set --------------------------------------------------------------------------------
    def __contains__(self, address: object) -> bool:
        return address in self.index

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    @property
    def root(self) -> bytes:
        top = self.levels[-1]
        return top[0] if top else ZERO_ROOT

    # ---- incremental updates ----------------------------------------------------------------------
    def _changes(self, delta: MemberDelta) -> tuple[dict[int, bytes], int]:
        """(leaf index -> new leaf hash, new slot count) of a delta; KeyError for a LEAVE of a non-member."""
        leaves: dict[int, bytes] = {}
        for a in delta.left:
            leaves[self.index[a]] = leaf_hash(ZERO32)
        n = len(self.slots)
        for a in delta.joined:
            leaves[n] = leaf_hash(member_leaf_input(a))
            n += 1
        return leaves, n

    def _overlay(self, leaves: dict[int, bytes], count: int) -> list[dict[int, bytes]]:
        """The changed nodes per level (bottom-up) if `leaves` were set and the leaf count were `count`."""
        out = [leaves]
        changed, length, j = leaves, count, 0
        while length > 1:
            base = self.levels[j] if j < len(self.levels) else []
            parents: dict[int, bytes] = {}
            for i in sorted({k // 2 for k in changed}):
                left = changed.get(2 * i)
                if left is None:
                    left = base[2 * i]
                if 2 * i + 1 < length:
                    right = changed.get(2 * i + 1)
                    if right is None:
                        right = base[2 * i + 1]
                    parents[i] = node_hash(left, right)
                else:
                    parents[i] = left  # odd count: promoted unchanged
            # A level that grew may turn its old last node (promoted) into a hashed pair, and vice versa:
            # both are covered because the new index's parent is the old last node's parent.
            out.append(parents)
            changed, length, j = parents, (length + 1) // 2, j + 1
        return out

    def root_after(self, delta: MemberDelta) -> bytes:
        """membersRoot if `delta` were applied; the tree is not changed."""
        if not delta:
            return self.root
        leaves, count = self._changes(delta)
        if count == 0:
            return ZERO_ROOT
        return self._overlay(leaves, count)[-1][0]  # any changed leaf changes the root: index 0 is in it

    def apply(self, delta: MemberDelta) -> None:
        """Apply a block's delta (LEAVEs of members, JOINs of non-members, as the block rules allow)."""
        if not delta:
            return
        leaves, count = self._changes(delta)
        overlay = self._overlay(leaves, count)
        for a in delta.left:
            self.slots[self.index.pop(a)] = None
        for a in delta.joined:
            self.index[a] = len(self.slots)
            self.slots.append(a)
        lengths = [count]
        while lengths[-1] > 1:
            lengths.append((lengths[-1] + 1) // 2)
        while len(self.levels) < len(lengths):
            self.levels.append([])
        for j, changed in enumerate(overlay):
            level = self.levels[j]
            if len(level) < lengths[j]:
                level.extend([ZERO32] * (lengths[j] - len(level)))
            for i, h in changed.items():
                level[i] = h
