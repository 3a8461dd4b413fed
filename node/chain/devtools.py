"""Helpers for tests, benchmarks and the devnet: build a next header for a stream the
way its elected leader would, with attestations from known replica keys.

Not used by nodes (they vote and attest over HTTP); this only needs the chain's
views and the protocol's Python, so it doubles as an end-to-end check of both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from node.protocol import eip712
from node.protocol.merkle import merkle_root
from node.protocol.onion import HashOnion
from node.protocol.types import ZERO32, Header

from .registry import Registry


@dataclass
class NodeKeys:
    """A node's signing key and its RANDAO onion."""

    private_key: bytes
    onion: HashOnion

    @property
    def address(self) -> str:
        return eip712.address_of(self.private_key)


def next_header(
    reg: Registry,
    stream_id: bytes,
    keys: Mapping[str, NodeKeys],
    *,
    event_hashes: Sequence[bytes] = (),
    attempt: int = 0,
    state_root: bytes = ZERO32,
    reveal_offset: int = 0,
) -> Header:
    """The header for head + 1 of ``stream_id`` led by its elected leader (views read
    from the chain; the reveal is the next onion layer after ``reveal_offset`` layers
    already used in the same batch)."""
    head = reg.stream_head(stream_id)
    leader = reg.elected_leader(stream_id, head.number + 1, attempt)
    nk = keys[leader]
    commit = reg.randao_commit_of(leader)
    reveal = nk.onion.reveals(commit, reveal_offset + 1)[-1]
    return Header(
        stream_id=stream_id,
        number=head.number + 1,
        prev_hash=head.header_hash,
        events_root=merkle_root(list(event_hashes)),
        event_count=len(event_hashes),
        epoch=reg.current_epoch(),
        attempt=attempt,
        leader=leader,
        randao_reveal=reveal,
        state_root=state_root,
    )


def sign_header(
    reg: Registry,
    header: Header,
    keys: Mapping[str, NodeKeys],
    *,
    attesters: int | None = None,
) -> list[bytes]:
    """The leader's signature first, then ``attesters`` other replicas' attestations
    (default: just enough for the quorum floor(r/2)+1 including the leader)."""
    domain = reg.domain()
    replicas = reg.replicas_of(header.stream_id)
    if attesters is None:
        attesters = len(replicas) // 2
    others = [r for r in replicas if r != header.leader][:attesters]
    return [eip712.sign_header(domain, header, keys[header.leader].private_key)] + [
        eip712.sign_header(domain, header, keys[r].private_key) for r in others
    ]
