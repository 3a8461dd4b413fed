"""The commit hand-off to the chain, for the registry this node runs against: how a list of signed
headers (the leader's signature first, then attestations; 65 bytes each) is checked as the contract
will check it, sized, and sent in one `commitMiniblocks`.

v1 sends the headers and signatures as they are; v2 packs them (node/protocol/v2.py: replica
positions, the attesters' bitmap, compact signatures, one reveal per leader). The producer and the
aggregator both go through here, so each rule has one place.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.chain.logs import TxResult
from node.protocol import v2
from node.protocol.commit import CommitView, validate_batch, validate_batch_v2
from node.protocol.types import Header, RejectReason

from .core import Node


def is_v2(node: Node) -> bool:
    return node.chain.version == 2


def records(node: Node, headers: Sequence[Header], sigs: Sequence[Sequence[bytes]]) -> list[v2.Record]:
    """v2 records of the headers in this order, with the replica lists of the chain view."""
    reps = {h.stream_id: node.replicas_of(h.stream_id) for h in headers}
    return v2.records_of(node.domain, headers, sigs, reps)


def verdicts(node: Node, view: CommitView, headers: Sequence[Header],
             sigs: Sequence[Sequence[bytes]]) -> list[RejectReason | None]:
    """The contract's verdict on each header if these were sent in this order in one transaction."""
    if not is_v2(node):
        return validate_batch(view, node.params, node.domain, headers, sigs)
    try:
        recs = records(node, headers, [list(s) for s in sigs])
    except (v2.BatchError, ValueError):
        return [_one_v2(node, view, h, s) for h, s in zip(headers, sigs, strict=True)]
    return validate_batch_v2(view, node.params, node.domain, recs, v2.reveal_order(recs))


def _one_v2(node: Node, view: CommitView, header: Header, sigs: Sequence[bytes]) -> RejectReason | None:
    """A header that cannot even be packed (its leader or an attester is not a replica here)."""
    try:
        recs = records(node, [header], [list(sigs)])
    except (v2.BatchError, ValueError):
        return RejectReason.NOT_REPLICA
    return validate_batch_v2(view, node.params, node.domain, recs, v2.reveal_order(recs))[0]


def calldata_bytes(node: Node, sigs: Sequence[bytes]) -> int:
    """About how many calldata bytes one header takes (v2: its record, signatures and a reveal)."""
    if is_v2(node):
        return v2.packed_size([len(sigs)], 1) - 3
    # v1 ABI: the 10-word struct, its signature array's offset and length, per 65-byte signature an
    # offset, a length and 3 words
    return 384 + 160 * len(sigs)


async def send(node: Node, headers: Sequence[Header], sigs: Sequence[Sequence[bytes]],
               send_by: float | None = None) -> TxResult:
    """One commitMiniblocks with these headers, in this order (a fixed gas budget: chain.client); not sent
    (SendTooLate) once the chain time is past `send_by` (their attempt windows: node/server/window.py)."""
    if not is_v2(node):
        return await node.chain.commit_budgeted(list(headers), [list(s) for s in sigs], send_by)
    recs = records(node, headers, [list(s) for s in sigs])
    batch = v2.encode_batch(recs, v2.reveal_order(recs))
    return await node.chain.commit_packed_budgeted(batch, len(recs), send_by)
