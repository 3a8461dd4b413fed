"""0x-hex <-> bytes, once for the whole tree (HTTP bodies, chain data, CLIs, tests)."""

from __future__ import annotations


def hx(b: bytes) -> str:
    """bytes -> "0x…" lower-case hex."""
    return "0x" + bytes(b).hex()


def unhex(s: str) -> bytes:
    """ "0x…" (or bare) hex -> bytes."""
    return bytes.fromhex(s[2:] if s.startswith(("0x", "0X")) else s)


def bytes32(v: bytes | bytearray | memoryview | str) -> bytes:
    """32 bytes from bytes-like or hex; ValueError for any other length."""
    b = unhex(v) if isinstance(v, str) else bytes(v)
    if len(b) != 32:
        raise ValueError(f"expected 32 bytes, got {len(b)}")
    return b
