"""The RANDAO hash onion a node commits to and peels one layer per header it leads."""

from __future__ import annotations

from .hashing import keccak
from .types import MAX_REVEAL_SKIP


class OnionExhausted(RuntimeError):
    """Every layer has been revealed: the node must register a fresh commitment."""


class HashOnion:
    """Layer 0 is the secret, layer i = keccak256(layer i-1); the commitment is layer `depth`."""

    def __init__(self, secret: bytes, depth: int) -> None:
        if len(secret) != 32:
            raise ValueError("the onion secret is 32 bytes")
        if depth < 1:
            raise ValueError("the onion needs at least one layer")
        layers = [secret]
        for _ in range(depth):
            layers.append(keccak(layers[-1]))
        self._layers = layers
        self._index = {layer: i for i, layer in enumerate(layers)}
        self._prefix_index: dict[int, dict[bytes, int]] = {}  # by top `match` bytes (v2: 24), built at first use

    @property
    def depth(self) -> int:
        return len(self._layers) - 1

    @property
    def commitment(self) -> bytes:
        return self._layers[-1]

    def layer(self, i: int) -> bytes:
        return self._layers[i]

    def position(self, current_commit: bytes, match: int = 32) -> int:
        """Which layer the chain holds as this node's commitment now. `match`: the bytes of it the
        registry keeps (v1 all 32; v2 the top 24, `randaoCommitOf`'s low 8 bytes are zero)."""
        try:
            if match >= 32:
                return self._index[current_commit]
            index = self._prefix_index.get(match)
            if index is None:
                index = self._prefix_index[match] = {layer[:match]: i for i, layer in enumerate(self._layers)}
            return index[current_commit[:match]]
        except KeyError:
            raise ValueError("the on-chain commitment is not a layer of this onion") from None

    def reveals(self, current_commit: bytes, count: int, match: int = 32) -> list[bytes]:
        """The next `count` reveals after the chain's commitment, in the order they must be used."""
        pos = self.position(current_commit, match)
        if count > pos:
            raise OnionExhausted(f"only {pos} layers left, {count} asked")
        return [self._layers[pos - 1 - k] for k in range(count)]

    def next_reveal(self, current_commit: bytes) -> bytes:
        return self.reveals(current_commit, 1)[0]


def reveal_matches(reveal: bytes, commit: bytes, max_skip: int = MAX_REVEAL_SKIP) -> bool:
    """The contract's check: keccak256^d(reveal) == commit for some 1 <= d <= max_skip."""
    h = reveal
    for _ in range(max_skip):
        h = keccak(h)
        if h == commit:
            return True
    return False


def mix_reveal(mix: bytes, reveal: bytes) -> bytes:
    """The contract's RANDAO mixing: mix' = keccak256(abi.encode(mix, reveal))."""
    return keccak(mix + reveal)
