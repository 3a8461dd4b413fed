"""Decoding a `commitMiniblocks(Header[], bytes[][])` call: how anyone recovers the full headers and
their signatures of a commit from the chain alone (the log carries only some header fields); and
v2's `commitMiniblocks(bytes)`, whose argument is the packed batch (node/protocol/v2.py decodes it).

Used by the node's sync fallback and by the header explorer.
"""

from __future__ import annotations

from eth_abi.abi import decode as abi_decode

from node.protocol.hashing import keccak
from node.protocol.types import Header

HEADER_TUPLE = "(bytes32,uint64,bytes32,bytes32,uint32,uint64,uint32,address,bytes32,bytes32)"
COMMIT_INPUT_TYPES = [HEADER_TUPLE + "[]", "bytes[][]"]
COMMIT_SELECTOR = keccak(f"commitMiniblocks({','.join(COMMIT_INPUT_TYPES)})".encode())[:4]
COMMIT_V2_SELECTOR = keccak(b"commitMiniblocks(bytes)")[:4]


class NotACommitCall(ValueError):
    """Calldata that is not a well-formed commitMiniblocks call."""


def decode_commit_call(data: bytes) -> list[tuple[Header, list[bytes]]]:
    """The (header, signatures) pairs of a commitMiniblocks call, in batch order."""
    if data[:4] != COMMIT_SELECTOR:
        raise NotACommitCall("the transaction is not a commitMiniblocks call")
    try:
        headers, signatures = abi_decode(COMMIT_INPUT_TYPES, data[4:])
        return [(Header.from_abi(tuple(h)), [bytes(s) for s in sigs])
                for h, sigs in zip(headers, signatures, strict=False)]
    except Exception as exc:  # noqa: BLE001 -- eth-abi raises several decoding errors; Header raises ValueError
        raise NotACommitCall(f"calldata not decodable as commitMiniblocks: {exc}") from exc


def decode_packed_call(data: bytes) -> bytes:
    """The packed batch of a v2 `commitMiniblocks(bytes)` call (NotACommitCall otherwise)."""
    if data[:4] != COMMIT_V2_SELECTOR:
        raise NotACommitCall("the transaction is not a v2 commitMiniblocks call")
    try:
        (batch,) = abi_decode(["bytes"], data[4:])
    except Exception as exc:  # noqa: BLE001 -- eth-abi raises several decoding errors
        raise NotACommitCall(f"calldata not decodable as commitMiniblocks(bytes): {exc}") from exc
    return bytes(batch)
