"""keccak256, through the fastest backend installed.

safe-pysha3 hashes 32-64 bytes about 8x faster than eth-hash's default pycryptodome backend,
and a node hashes every event several times; eth-utils' keccak is the fallback.
"""

from __future__ import annotations

try:
    from sha3 import keccak_256 as _keccak_256

    def keccak(data: bytes) -> bytes:
        digest: bytes = _keccak_256(data).digest()
        return digest

except ImportError:  # pragma: no cover - safe-pysha3 is a declared dependency
    from eth_utils.crypto import keccak as _eth_keccak

    def keccak(data: bytes) -> bytes:
        return _eth_keccak(data)
