"""Peer authentication: the one rule by which a node signs and checks node-to-node requests and the
answers to them (docs/protocol.md, "Peer authentication").

A request carries an EIP-712 signature by the sending node's key, under the registry's domain
(chain id + registry address), over

    PeerRequest(string method,string path,bytes32 bodyHash,uint64 timestamp,uint64 nonce)

`method` upper case, `path` the request target exactly as sent (path, and `?query` when there is
one), `bodyHash = keccak256(raw body bytes)` (of the empty string when there is no body),
`timestamp` the sender's chain time in milliseconds, `nonce` a random 64-bit number (two identical
requests in one millisecond still differ). The answer to a request whose answer is signed carries

    PeerResponse(bytes32 requestHash,uint16 status,bytes32 bodyHash)

signed by the answering node: `requestHash = keccak256(the request's 65-byte signature)`, `status`
the HTTP status, `bodyHash = keccak256(raw response body)`. Same signature rules as events and
headers (65-byte r || s || v, low s, v in {27, 28}); the signing and recovery go through coincurve.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address

from .eip712 import EIP712_DOMAIN_TYPE, SignatureError, digest, domain_data, recover_digest_raw, sign_digest
from .hashing import keccak
from .types import Domain

HDR_ADDRESS = "x-peer-address"
HDR_TIME = "x-peer-time"
HDR_NONCE = "x-peer-nonce"
HDR_SIGNATURE = "x-peer-signature"
HDR_RESPONSE_SIGNATURE = "x-peer-response-signature"

PEER_REQUEST_TYPE = [
    {"name": "method", "type": "string"},
    {"name": "path", "type": "string"},
    {"name": "bodyHash", "type": "bytes32"},
    {"name": "timestamp", "type": "uint64"},
    {"name": "nonce", "type": "uint64"},
]
PEER_RESPONSE_TYPE = [
    {"name": "requestHash", "type": "bytes32"},
    {"name": "status", "type": "uint16"},
    {"name": "bodyHash", "type": "bytes32"},
]


def _type_string(name: str, fields: list[dict[str, str]]) -> bytes:
    return f"{name}({','.join(f['type'] + ' ' + f['name'] for f in fields)})".encode()


PEER_REQUEST_TYPEHASH = keccak(_type_string("PeerRequest", PEER_REQUEST_TYPE))
PEER_RESPONSE_TYPEHASH = keccak(_type_string("PeerResponse", PEER_RESPONSE_TYPE))
MAX_PATH = 2048
_U64 = 2**64


class PeerAuthError(ValueError):
    """A missing, malformed or wrong proof (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class PeerProof:
    address: str  # as claimed (checksummed)
    timestamp_ms: int
    nonce: int
    signature: bytes


def _u(v: int) -> bytes:
    return v.to_bytes(32, "big")


def request_hash(method: str, path: str, body_hash: bytes, timestamp_ms: int, nonce: int) -> bytes:
    """hashStruct(PeerRequest)."""
    if len(body_hash) != 32:
        raise ValueError("bodyHash must be 32 bytes")
    if not (0 <= timestamp_ms < _U64 and 0 <= nonce < _U64):
        raise ValueError("timestamp and nonce must fit uint64")
    return keccak(PEER_REQUEST_TYPEHASH + keccak(method.encode()) + keccak(path.encode()) + body_hash
                  + _u(timestamp_ms) + _u(nonce))


def response_hash(request_signature: bytes, status: int, body_hash: bytes) -> bytes:
    """hashStruct(PeerResponse)."""
    if len(body_hash) != 32 or not 0 <= status < 2**16:
        raise ValueError("bad response fields")
    return keccak(PEER_RESPONSE_TYPEHASH + keccak(request_signature) + _u(status) + body_hash)


def request_digest(domain: Domain, method: str, path: str, body: bytes, timestamp_ms: int, nonce: int) -> bytes:
    return digest(domain, request_hash(method.upper(), path, keccak(body), timestamp_ms, nonce))


def response_digest(domain: Domain, request_signature: bytes, status: int, body: bytes) -> bytes:
    return digest(domain, response_hash(request_signature, status, keccak(body)))


def sign_request(domain: Domain, private_key: bytes, address: str, method: str, path: str, body: bytes,
                 timestamp_ms: int, nonce: int | None = None) -> dict[str, str]:
    """The proof headers of one request (lower-case names)."""
    n = secrets.randbits(64) if nonce is None else nonce
    sig = sign_digest(request_digest(domain, method, path, body, timestamp_ms, n), private_key)
    return {HDR_ADDRESS: address, HDR_TIME: str(timestamp_ms), HDR_NONCE: str(n), HDR_SIGNATURE: "0x" + sig.hex()}


def _int_field(value: str | None, name: str) -> int:
    if value is None:
        raise PeerAuthError(f"missing {name} header")
    if not value.isdigit() or len(value) > 20:
        raise PeerAuthError(f"{name} must be a decimal integer")
    v = int(value)
    if v >= _U64:
        raise PeerAuthError(f"{name} must fit uint64")
    return v


def parse_proof(headers: Mapping[str, str]) -> PeerProof:
    """The proof from request headers (names lower case). Raises PeerAuthError if absent or malformed."""
    addr = headers.get(HDR_ADDRESS)
    sig_hex = headers.get(HDR_SIGNATURE)
    if addr is None or sig_hex is None:
        raise PeerAuthError("peer request without proof (X-Peer-Address, X-Peer-Time, X-Peer-Nonce, "
                            "X-Peer-Signature)")
    if len(addr) != 42 or not addr.startswith("0x"):
        raise PeerAuthError("X-Peer-Address must be a 0x address")
    try:
        address = to_checksum_address(addr)
    except ValueError:
        raise PeerAuthError("X-Peer-Address must be a 0x address") from None
    if len(sig_hex) != 132 or not sig_hex.startswith("0x"):
        raise PeerAuthError("X-Peer-Signature must be 65 bytes of 0x-hex")
    try:
        sig = bytes.fromhex(sig_hex[2:])
    except ValueError:
        raise PeerAuthError("X-Peer-Signature must be 65 bytes of 0x-hex") from None
    return PeerProof(address, _int_field(headers.get(HDR_TIME), "X-Peer-Time"),
                     _int_field(headers.get(HDR_NONCE), "X-Peer-Nonce"), sig)


def check_fresh(proof: PeerProof, now_s: float, window_s: float) -> None:
    """Refuse a timestamp further than `window_s` from `now_s` (the receiver's chain time)."""
    skew = proof.timestamp_ms / 1000 - now_s
    if abs(skew) > window_s:
        raise PeerAuthError(f"X-Peer-Time is {skew:+.1f} s from this node's chain time (window +-{window_s:g} s)")


def verify_request(domain: Domain, proof: PeerProof, method: str, path: str, body: bytes) -> str:
    """The signer's checksummed address, which must be the claimed one. Raises PeerAuthError."""
    if len(path) > MAX_PATH:
        raise PeerAuthError("request path too long")
    d = request_digest(domain, method, path, body, proof.timestamp_ms, proof.nonce)
    try:
        signer = recover_digest_raw(d, proof.signature)
    except SignatureError as exc:
        raise PeerAuthError(f"X-Peer-Signature: {exc}") from None
    if signer != bytes.fromhex(proof.address[2:]):
        raise PeerAuthError(f"X-Peer-Signature recovers to {to_checksum_address(signer)}, not {proof.address}, "
                            f"for this request under the EIP-712 domain (chainId {domain.chain_id}, registry "
                            f"{domain.verifying_contract})")
    return proof.address


def sign_response(domain: Domain, private_key: bytes, request_signature: bytes, status: int, body: bytes) -> str:
    """The X-Peer-Response-Signature value."""
    return "0x" + sign_digest(response_digest(domain, request_signature, status, body), private_key).hex()


def recover_response(domain: Domain, request_signature: bytes, status: int, body: bytes, header: str | None) -> str:
    """The answering node's checksummed address. Raises PeerAuthError if absent or malformed."""
    if header is None or len(header) != 132 or not header.startswith("0x"):
        raise PeerAuthError("answer without a valid X-Peer-Response-Signature")
    try:
        sig = bytes.fromhex(header[2:])
        signer = recover_digest_raw(response_digest(domain, request_signature, status, body), sig)
    except (ValueError, SignatureError) as exc:
        raise PeerAuthError(f"X-Peer-Response-Signature: {exc}") from None
    return to_checksum_address(signer)


def typed_data_request(domain: Domain, method: str, path: str, body: bytes, timestamp_ms: int,
                       nonce: int) -> dict[str, Any]:
    """The same request as an eth-account / eth_signTypedData_v4 message (tests hold the two equal)."""
    return {"types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "PeerRequest": PEER_REQUEST_TYPE},
            "primaryType": "PeerRequest", "domain": domain_data(domain),
            "message": {"method": method.upper(), "path": path, "bodyHash": keccak(body), "timestamp": timestamp_ms,
                        "nonce": nonce}}


def typed_data_response(domain: Domain, request_signature: bytes, status: int, body: bytes) -> dict[str, Any]:
    return {"types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "PeerResponse": PEER_RESPONSE_TYPE},
            "primaryType": "PeerResponse", "domain": domain_data(domain),
            "message": {"requestHash": keccak(request_signature), "status": status, "bodyHash": keccak(body)}}
