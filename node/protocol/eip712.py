"""EIP-712 hashing, signing and recovery of Events and Headers (docs/protocol.md, "Typed data").

The struct hashes are encoded directly (they run for every event a node sees); `typed_data()`
builds the same objects as eth-account typed-data messages, and the tests hold the two equal,
and both equal to the contract's hashEvent/hashHeader/eventDigest/headerDigest.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import coincurve
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address

from .hashing import keccak
from .types import Domain, Event, Header

EVENT_TYPE = [
    {"name": "streamId", "type": "bytes32"},
    {"name": "author", "type": "address"},
    {"name": "nonce", "type": "uint64"},
    {"name": "kind", "type": "uint8"},
    {"name": "payload", "type": "bytes"},
]
HEADER_TYPE = [
    {"name": "streamId", "type": "bytes32"},
    {"name": "number", "type": "uint64"},
    {"name": "prevHash", "type": "bytes32"},
    {"name": "eventsRoot", "type": "bytes32"},
    {"name": "eventCount", "type": "uint32"},
    {"name": "epoch", "type": "uint64"},
    {"name": "attempt", "type": "uint32"},
    {"name": "leader", "type": "address"},
    {"name": "randaoReveal", "type": "bytes32"},
    {"name": "stateRoot", "type": "bytes32"},
]
EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def _type_string(name: str, fields: list[dict[str, str]]) -> bytes:
    return f"{name}({','.join(f['type'] + ' ' + f['name'] for f in fields)})".encode()


EVENT_TYPEHASH = keccak(_type_string("Event", EVENT_TYPE))
HEADER_TYPEHASH = keccak(_type_string("Header", HEADER_TYPE))

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2


class SignatureError(ValueError):
    """A signature that is malformed, malleable (high s) or does not recover."""


def _u(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _addr(address: str) -> bytes:
    return bytes.fromhex(address[2:]).rjust(32, b"\x00")


def hash_event(event: Event) -> bytes:
    """hashStruct(Event): the event's identity everywhere (votes, leaves, storage)."""
    return keccak(
        EVENT_TYPEHASH + event.stream_id + _addr(event.author) + _u(event.nonce) + _u(event.kind)
        + keccak(event.payload)
    )


def hash_header(header: Header) -> bytes:
    """hashStruct(Header): the header's identity, stored on-chain at (streamId, number)."""
    return keccak(
        HEADER_TYPEHASH + header.stream_id + _u(header.number) + header.prev_hash + header.events_root
        + _u(header.event_count) + _u(header.epoch) + _u(header.attempt) + _addr(header.leader)
        + header.randao_reveal + header.state_root
    )


def domain_data(domain: Domain) -> dict[str, Any]:
    return {
        "name": domain.name,
        "version": domain.version,
        "chainId": domain.chain_id,
        "verifyingContract": domain.verifying_contract,
    }


@lru_cache(maxsize=64)
def domain_separator(domain: Domain) -> bytes:
    """The domain separator, from eth-account's typed-data encoder (cached: computed once per registry)."""
    probe = encode_typed_data(full_message=typed_data(domain, Event(b"\x00" * 32, "0x" + "00" * 20, 0, 0, b"")))
    return bytes(probe.header)


def typed_data(domain: Domain, obj: Event | Header) -> dict[str, Any]:
    """The full EIP-712 message for eth-account (and wallets: eth_signTypedData_v4)."""
    if isinstance(obj, Event):
        primary, fields = "Event", EVENT_TYPE
        message: dict[str, Any] = {
            "streamId": obj.stream_id, "author": obj.author, "nonce": obj.nonce, "kind": obj.kind,
            "payload": obj.payload,
        }
    else:
        primary, fields = "Header", HEADER_TYPE
        message = {
            "streamId": obj.stream_id, "number": obj.number, "prevHash": obj.prev_hash,
            "eventsRoot": obj.events_root, "eventCount": obj.event_count, "epoch": obj.epoch,
            "attempt": obj.attempt, "leader": obj.leader, "randaoReveal": obj.randao_reveal,
            "stateRoot": obj.state_root,
        }
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, primary: fields},
        "primaryType": primary,
        "domain": domain_data(domain),
        "message": message,
    }


def digest(domain: Domain, struct_hash: bytes) -> bytes:
    """keccak256("\\x19\\x01" ‖ domainSeparator ‖ structHash): what is signed."""
    return keccak(b"\x19\x01" + domain_separator(domain) + struct_hash)


def event_digest(domain: Domain, event: Event) -> bytes:
    return digest(domain, hash_event(event))


def header_digest(domain: Domain, header: Header) -> bytes:
    return digest(domain, hash_header(header))


def sign_digest(digest32: bytes, private_key: bytes) -> bytes:
    """65-byte r ‖ s ‖ v signature (v in {27, 28}, low s) over a 32-byte digest."""
    sig = coincurve.PrivateKey(private_key).sign_recoverable(digest32, hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def recover_digest_raw(digest32: bytes, signature: bytes) -> bytes:
    """The signer's 20-byte address; rejects what the contract's ECDSA.tryRecover rejects."""
    if len(signature) != 65:
        raise SignatureError("signature must be 65 bytes")
    v = signature[64]
    if v not in (27, 28):
        raise SignatureError("signature v must be 27 or 28")
    s = int.from_bytes(signature[32:64], "big")
    if s > _HALF_N or s == 0:
        raise SignatureError("signature s is out of range (high-s signatures are malleable)")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(signature[:64] + bytes([v - 27]), digest32, hasher=None)
    except Exception as exc:  # coincurve raises bare Exception for unrecoverable signatures
        raise SignatureError(f"signature does not recover: {exc}") from exc
    return keccak(pub.format(compressed=False)[1:])[-20:]


def recover_digest(digest32: bytes, signature: bytes) -> str:
    """The signer's checksummed address (see recover_digest_raw)."""
    return to_checksum_address(recover_digest_raw(digest32, signature))


def sign_event(domain: Domain, event: Event, private_key: bytes) -> bytes:
    return sign_digest(event_digest(domain, event), private_key)


def sign_header(domain: Domain, header: Header, private_key: bytes) -> bytes:
    return sign_digest(header_digest(domain, header), private_key)


def recover_event_signer(domain: Domain, event: Event, signature: bytes) -> str:
    return recover_digest(event_digest(domain, event), signature)


def recover_header_signer(domain: Domain, header: Header, signature: bytes) -> str:
    return recover_digest(header_digest(domain, header), signature)


def address_of(private_key: bytes) -> str:
    pub = coincurve.PrivateKey(private_key).public_key.format(compressed=False)
    return to_checksum_address(keccak(pub[1:])[-20:])
