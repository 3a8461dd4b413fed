"""The deployment file: where the registry lives and how it was configured.

Written by `python -m node deploy` (node.chain.deploy), read by nodes, tests and
benchmarks.  ``abi_path`` is stored relative to the deployment file when it lies
beside it (the deploy step copies the ABI there, pinned to the deployed code).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eth_utils.address import is_address, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator


def _checksum(v: str) -> str:
    if not is_address(v):
        raise ValueError(f"not an address: {v!r}")
    return to_checksum_address(v)


class DeployedNode(BaseModel):
    model_config = ConfigDict(extra="allow")

    address: str
    operator: str
    url: str
    randao_commit: str  # 0x-hex, 32 bytes

    _a = field_validator("address", "operator")(_checksum)


class Deployment(BaseModel):
    model_config = ConfigDict(extra="allow")

    chain_id: int
    rpc_url: str
    registry: str
    deploy_block: int
    abi_path: str
    epoch_length: int
    leader_timeout: int
    replication_factor: int
    # Which registry is deployed: 1 (MiniblockRegistry) or 2 (MiniblockRegistryV2, docs/protocol.md
    # "Version 2"); files written before v2 existed are v1.
    registry_version: int = Field(default=1, ge=1, le=2)
    # Informational extras (the chain is the truth for all of them).
    ws_url: str | None = None
    owner: str | None = None
    deploy_tx: str | None = None
    genesis_time: int | None = None
    operators: list[str] = Field(default_factory=list)
    nodes: list[DeployedNode] = Field(default_factory=list)
    streams: list[str] = Field(default_factory=list)  # 0x-hex stream ids

    _file: Path | None = PrivateAttr(default=None)

    _r = field_validator("registry")(_checksum)

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str | None) -> str | None:
        return None if v is None else _checksum(v)

    @field_validator("operators")
    @classmethod
    def _ops(cls, v: list[str]) -> list[str]:
        return [_checksum(x) for x in v]

    # -- files --------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Deployment:
        p = Path(path)
        dep = cls.model_validate_json(p.read_text())
        dep._file = p.resolve()
        return dep

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n")
        os.replace(tmp, p)
        self._file = p.resolve()
        return p

    def resolved_abi_path(self) -> Path:
        p = Path(self.abi_path)
        if not p.is_absolute() and self._file is not None:
            p = self._file.parent / p
        return p

    def abi(self) -> list[dict[str, Any]]:
        """The ABI file's contents (a list, or an artifact's "abi"); raises if it cannot be read."""
        from .abi import read_abi_file

        return read_abi_file(self.resolved_abi_path())
