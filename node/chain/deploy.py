"""Deploy the registry, allow-list operators, register nodes, create streams.

Nodes registered in epoch e are active from e + 1 and streams pick their replicas
among active nodes, so when both nodes and streams are asked for, deploy waits for
the next epoch before creating the streams: on a dev chain it can move time
(``warp=True``: evm_increaseTime, Anvil only), elsewhere it waits for chain time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from .abi import abi_version, load_artifact, registry_contract
from .deployment import DeployedNode, Deployment
from .logs import Receipt
from .registry import Registry, RegistryError, TxSender
from .rpc import url_of

if TYPE_CHECKING:
    from web3 import Web3

__all__ = ["NodeSpec", "deploy", "deploy_registry", "load_artifact", "parse_node_spec", "parse_stream_id",
           "wait_for_epoch"]


@dataclass
class NodeSpec:
    address: str
    url: str
    randao_commit: bytes
    # The operator that registers it (must be allow-listed); None: the deployer.
    operator: LocalAccount | None = None


def parse_stream_id(s: str | bytes) -> bytes:
    """0x + 64 hex digits is taken as is; any other text is hashed (keccak256 of UTF-8)."""
    if isinstance(s, bytes):
        if len(s) != 32:
            raise ValueError("stream id must be 32 bytes")
        return s
    if s.startswith("0x") and len(s) == 66:
        return bytes.fromhex(s[2:])
    return keccak(text=s)


def parse_node_spec(s: str) -> NodeSpec:
    """ADDR=URL=COMMIT (COMMIT: 0x + 32-byte hex randao commitment)."""
    try:
        addr, rest = s.split("=", 1)
        url, commit = rest.rsplit("=", 1)
    except ValueError:
        raise ValueError(f"--node wants ADDR=URL=COMMIT, got {s!r}") from None
    c = bytes.fromhex(commit[2:] if commit.startswith("0x") else commit)
    if len(c) != 32:
        raise ValueError(f"randao commit must be 32 bytes: {commit!r}")
    return NodeSpec(to_checksum_address(addr), url, c)


# The dead-replica rule's defaults (constructor parameters of MiniblockRegistry): a replica skipped in
# DEAD_MISSES slots since it last led, that led nothing for DEAD_EPOCHS epochs, may be replaced by anyone.
DEAD_MISSES = 3
DEAD_EPOCHS = 2


def deploy_registry(
    sender: TxSender,
    *,
    epoch_length: int,
    leader_timeout: int,
    replication_factor: int,
    artifact: dict[str, Any],
    dead_misses: int = DEAD_MISSES,
    dead_epochs: int = DEAD_EPOCHS,
) -> tuple[str, Receipt]:
    """Deploy the contract; returns (address, receipt). `dead_misses`/`dead_epochs` are v1's dead-replica
    rule immutables (a test shortens them; production keeps the defaults); v2 has them as constants
    (3 and 2) and refuses others."""
    if abi_version(artifact["abi"]) == 2:
        if (dead_misses, dead_epochs) != (DEAD_MISSES, DEAD_EPOCHS):
            raise ValueError("registry v2's dead-replica rule is constant (3 misses, 2 epochs)")
        receipt = sender.deploy(artifact, epoch_length, leader_timeout, replication_factor)
    else:
        receipt = sender.deploy(artifact, epoch_length, leader_timeout, replication_factor, dead_misses,
                                dead_epochs)
    assert receipt.contract_address is not None
    return receipt.contract_address, receipt


def wait_for_epoch(
    registry: Registry, target: int, *, warp: bool = False, timeout: float = 3600.0,
    log: Callable[[str], None] = lambda s: None,
) -> int:
    """Block until the registry's current epoch (as views see it) is >= target."""
    genesis = registry.genesis_time()
    length = registry.epoch_length()
    boundary = genesis + target * length
    if warp:
        now = registry.chain_time()
        if now < boundary:
            registry.rpc("evm_increaseTime", [boundary - now])
            registry.rpc("evm_mine", [])
    deadline = time.monotonic() + timeout
    announced = False
    # Chain time need not be wall time (a dev chain may run ahead) and, on an
    # automining chain, the latest block is stale: estimate it once from the pending
    # block (fallback: latest), then let it run with the wall clock.
    try:
        chain_now0 = registry.block_time("pending")
    except RegistryError:
        chain_now0 = registry.chain_time()
    t0 = time.monotonic()
    while registry.current_epoch() < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"epoch {target} did not start within {timeout}s")
        left = boundary - (chain_now0 + time.monotonic() - t0)
        if not announced:
            log(f"waiting ~{max(left, 0):.0f}s for epoch {target} so that new nodes are active")
            announced = True
        if left <= 0 and registry.sender is not None:
            # Chain time moves only with blocks: on an automining chain make one that
            # also materialises the epoch (reverts EpochNotOver if still too early).
            try:
                registry.advance_epoch()
                continue
            except RegistryError:
                pass
        time.sleep(min(max(left, 0.2), 1.0))
    return registry.current_epoch()


def deploy(
    w3: Web3 | str,
    account: LocalAccount | TxSender,
    *,
    epoch_length: int,
    leader_timeout: int,
    replication_factor: int,
    dead_misses: int = DEAD_MISSES,
    dead_epochs: int = DEAD_EPOCHS,
    operators: Sequence[str] = (),
    nodes: Sequence[NodeSpec] = (),
    streams: Sequence[bytes] = (),
    artifact: dict[str, Any] | str | Path | None = None,
    registry_version: int = 1,
    rpc_url: str | None = None,
    ws_url: str | None = None,
    out: str | Path | None = None,
    warp: bool = False,
    epoch_timeout: float = 3600.0,
    log: Callable[[str], None] = lambda s: None,
) -> Deployment:
    """Deploy and set up a registry; returns (and with ``out`` writes) its Deployment.

    With ``out``, the ABI is written beside it as <out stem>.abi.json and the
    deployment's abi_path points there; without, abi_path is the build artifact. `registry_version`
    picks the contract (1: MiniblockRegistry, 2: MiniblockRegistryV2) when no artifact is given; the
    deployment records the version of what was deployed.
    """
    art = load_artifact(artifact, registry_version)
    registry_version = abi_version(art["abi"])
    sender = account if isinstance(account, TxSender) else TxSender(w3, account)
    address, receipt = deploy_registry(
        sender, epoch_length=epoch_length, leader_timeout=leader_timeout,
        replication_factor=replication_factor, artifact=art, dead_misses=dead_misses, dead_epochs=dead_epochs,
    )
    log(f"registry deployed at {address} (block {receipt.block_number})")
    reg = Registry(w3, address, art["abi"], sender)

    ops: list[str] = [to_checksum_address(o) for o in operators]
    needs_self = any(n.operator is None for n in nodes)
    for n in nodes:
        if n.operator is not None and n.operator.address not in ops:
            ops.append(n.operator.address)
    if needs_self and sender.address not in ops:
        ops.append(sender.address)
    for op in dict.fromkeys(ops):
        reg.allow_operator(op)
        log(f"operator allowed: {op}")

    deployed_nodes: list[DeployedNode] = []
    op_senders: dict[str, TxSender] = {}
    for n in nodes:
        if n.operator is None:
            r = reg
        else:
            s = op_senders.setdefault(n.operator.address, TxSender(w3, n.operator))
            r = reg.with_account(s)
        r.register_node(n.address, n.url, n.randao_commit)
        assert r.sender is not None
        op = r.sender.address
        deployed_nodes.append(
            DeployedNode(address=n.address, operator=op, url=n.url, randao_commit="0x" + n.randao_commit.hex())
        )
        log(f"node registered: {n.address} {n.url}")

    if streams:
        if nodes:
            wait_for_epoch(reg, reg.current_epoch() + 1, warp=warp, timeout=epoch_timeout, log=log)
        for sid in streams:
            reg.create_stream(sid)
            log(f"stream created: 0x{sid.hex()} replicas {reg.replicas_of(sid)}")

    dep = Deployment(
        chain_id=reg.chain_id(),
        rpc_url=rpc_url or url_of(w3),
        ws_url=ws_url,
        registry=address,
        registry_version=registry_version,
        deploy_block=receipt.block_number,
        deploy_tx="0x" + receipt.tx_hash.hex(),
        abi_path="",
        epoch_length=epoch_length,
        leader_timeout=leader_timeout,
        replication_factor=replication_factor,
        genesis_time=reg.genesis_time(),
        owner=sender.address,
        operators=list(dict.fromkeys(ops)),
        nodes=deployed_nodes,
        streams=["0x" + s.hex() for s in streams],
    )
    if out is not None:
        out = Path(out)
        abi_file = out.with_name(out.stem + ".abi.json")
        abi_file.parent.mkdir(parents=True, exist_ok=True)
        import json

        abi_file.write_text(json.dumps(art["abi"], indent=1))
        dep.abi_path = abi_file.name
        dep.save(out)
        log(f"deployment written to {out}")
    else:
        from node.build import OUT_DIR

        dep.abi_path = str(OUT_DIR / f"{registry_contract(registry_version)}.json")
    return dep
