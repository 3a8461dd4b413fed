"""The synchronous registry wrapper for the CLIs, deploy, tests, devnet and bench.

`Registry` and `TxSender` run the async `node.chain.client.RegistryClient` / `node.chain.tx.TxSender`
on a private event loop thread (node.chain.rpc.run_sync): there is one implementation of every view,
log decoding and transaction rule, and these are only their blocking faces. Views return plain
Python / node.protocol types; transactions return a TxResult with the decoded MiniblockCommitted /
MiniblockRejected events; log queries return node.chain.logs dataclasses. A Registry is safe to
share between threads: sends are serialised per sender.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount

from node.protocol import v2
from node.protocol.types import Domain, Event, Header

from . import tx as _tx
from .abi import Abi, AbiList
from .client import (
    EIP712DomainInfo,
    NodeInfo,
    NodeRecord,
    NodeStatus,
    RegistryClient,
    StreamHead,
    Transaction,
)
from .deployment import Deployment
from .logs import (
    LogBatch,
    LogMeta,
    MiniblockCommitted,
    MiniblockRejected,
    NodeRegistered,
    RawLog,
    Receipt,
    ReplicaReplaced,
    StreamCreated,
    TxResult,
)
from .rpc import BlockId, RegistryError, Rpc, RpcError, http_web3, run_sync, url_of

if TYPE_CHECKING:
    from web3 import Web3

__all__ = [
    "EIP712DomainInfo", "LogBatch", "MiniblockCommitted", "MiniblockRejected", "NodeInfo", "NodeRecord",
    "NodeRegistered", "NodeStatus", "Receipt", "Registry", "RegistryError", "ReplicaReplaced", "RpcError",
    "StreamCreated", "StreamHead", "Transaction", "TxResult", "TxSender",
]

_rpcs: dict[tuple[str, float], Rpc] = {}


@atexit.register
def _close_rpcs() -> None:
    """Close the shared transports' HTTP sessions on the private loop before the interpreter ends."""
    for rpc in list(_rpcs.values()):
        with contextlib.suppress(Exception):  # the endpoint may be gone already; nothing to do then
            run_sync(rpc.close())
    _rpcs.clear()


def _rpc(w3_or_url: Any, timeout: float = 60.0) -> Rpc:
    """One transport per endpoint for all sync wrappers (they share the private loop)."""
    key = (url_of(w3_or_url), timeout)
    if key not in _rpcs:
        _rpcs[key] = Rpc(key[0], timeout)
    return _rpcs[key]


class TxSender:
    """Signs and sends transactions for one LocalAccount, keeping its nonce locally (node.chain.tx)."""

    def __init__(self, w3: Web3 | str, account: LocalAccount, **kw: Any) -> None:
        self.w3_or_url = w3
        self.core = _tx.TxSender(_rpc(w3), account, **kw)

    @property
    def account(self) -> LocalAccount:
        return self.core.account

    @property
    def address(self) -> str:
        return self.core.address

    def chain_id(self) -> int:
        return run_sync(self.core.chain_id())

    def reset_nonce(self) -> None:
        self.core.reset_nonce()

    def fees(self) -> dict[str, int]:
        return run_sync(self.core.fees())

    def chain_nonce(self) -> int:
        return run_sync(self.core.chain_nonce())

    def send(self, to: str | None, data: bytes = b"", *, gas: int | None = None, value: int = 0,
             wait: bool = True) -> Receipt | bytes:
        """Sign and send (to=None: create a contract); the receipt (``wait=True``) or the tx hash."""
        return run_sync(self.core.send(to, data, gas=gas, value=value, wait=wait))

    def transfer(self, to: str, value: int, *, wait: bool = True) -> Receipt | bytes:
        return self.send(to, b"", gas=21_000, value=value, wait=wait)

    def wait_receipt(self, tx_hash: bytes, timeout: float | None = None) -> Receipt:
        return run_sync(self.core.wait_receipt(tx_hash, timeout))

    def deploy(self, artifact: dict[str, Any], *args: Any, gas: int | None = None) -> Receipt:
        """Create the contract of a compiled artifact ({abi, bytecode}) with constructor `args`."""
        data = Abi(artifact["abi"]).encode_constructor(artifact["bytecode"], args)
        receipt = self.send(None, data, gas=gas)
        assert isinstance(receipt, Receipt)
        if receipt.status != 1 or not receipt.contract_address:
            raise RegistryError(f"deployment failed: 0x{receipt.tx_hash.hex()}")
        return receipt


class Registry:
    def __init__(
        self,
        w3: Web3 | str,
        address: str,
        abi: AbiList | None = None,
        sender: TxSender | LocalAccount | None = None,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.w3_or_url = w3
        if sender is not None and not isinstance(sender, TxSender):
            sender = TxSender(w3, sender)
        self.sender: TxSender | None = sender
        self.core = RegistryClient(_rpc(w3, timeout), address, abi, None if sender is None else sender.core)
        self.address = self.core.address
        self.abi = self.core.abi

    @cached_property
    def w3(self) -> Web3:
        """A sync Web3 on the same endpoint, for raw chain access by tests and benchmarks."""
        return self.w3_or_url if not isinstance(self.w3_or_url, str) else http_web3(self.w3_or_url)

    @property
    def rpc_url(self) -> str:
        return self.core.rpc.url

    @classmethod
    def from_deployment(cls, dep: Deployment, *, w3: Web3 | None = None,
                        account: LocalAccount | TxSender | None = None, rpc_url: str | None = None) -> Registry:
        return cls(w3 if w3 is not None else (rpc_url or dep.rpc_url), dep.registry, dep.abi(), account)

    def with_account(self, account: LocalAccount | TxSender) -> Registry:
        """The same registry, sending from another account."""
        r = Registry(self.w3_or_url, self.address, self.abi, account)
        r.core = self.core.with_sender(None if r.sender is None else r.sender.core)  # keeps the cached domain
        return r

    # -- errors, raw chain --------------------------------------------------------------
    def decode_error(self, data: bytes | str | None) -> tuple[str | None, tuple[Any, ...]]:
        return self.core.decode_error(data)

    def calldata(self, name: str, *args: Any) -> bytes:
        return self.core.calldata(name, *args)

    def estimate_gas(self, name: str, *args: Any) -> int:
        return run_sync(self.core.estimate_gas(name, *args))

    def chain_id(self) -> int:
        return run_sync(self.core.get_chain_id())

    def block_number(self) -> int:
        return run_sync(self.core.block_number())

    def chain_time(self) -> int:
        return run_sync(self.core.chain_time())

    def block_time(self, number: BlockId) -> int:
        if isinstance(number, int):
            return run_sync(self.core.block_time(number))
        return int(run_sync(self.core.get_block(number))["timestamp"], 16)

    def block_hash(self, block: BlockId) -> tuple[int, bytes] | None:
        """(number, hash) of a block; None if the chain has no such block (any more)."""
        return run_sync(self.core.block_hash(block))

    def code_at(self, address: str | None = None, block: BlockId = "latest") -> bytes:
        return run_sync(self.core.code_at(address, block))

    def transaction(self, tx_hash: bytes) -> Transaction:
        return run_sync(self.core.transaction(tx_hash))

    def receipt(self, tx_hash: bytes) -> Receipt:
        return run_sync(self.core.receipt(tx_hash))

    def wait_receipt_block_time(self, result: TxResult) -> int:
        return self.block_time(result.block_number)

    def rpc(self, method: str, params: list[Any]) -> Any:
        """A raw JSON-RPC request (dev-chain controls such as evm_increaseTime)."""
        return run_sync(self.core.rpc.request(method, params))

    def headers_of_tx(self, tx_hash: bytes) -> list[Header]:
        return run_sync(self.core.headers_of_tx(tx_hash))

    def commit_call(self, tx_hash: bytes) -> list[tuple[Header, list[bytes]]]:
        return run_sync(self.core.commit_call(tx_hash))

    # -- transactions ---------------------------------------------------------------------
    def transact(self, name: str, *args: Any, gas: int | None = None) -> TxResult:
        return run_sync(self.core.transact(name, *args, gas=gas))

    def commit_miniblocks(self, headers: Sequence[Header], signatures: Sequence[Sequence[bytes]], *,
                          gas: int | None = None) -> TxResult:
        return run_sync(self.core.commit_miniblocks(headers, signatures, gas=gas))

    def commit_packed(self, batch: bytes, *, gas: int | None = None, check: bool = True) -> TxResult:
        """v2: one commitMiniblocks(bytes) with a packed batch (node.protocol.v2.encode_batch)."""
        return run_sync(self.core.commit_packed(batch, gas=gas, check=check))

    def allow_operator(self, operator: str) -> TxResult:
        return run_sync(self.core.allow_operator(operator))

    def revoke_operator(self, operator: str) -> TxResult:
        return run_sync(self.core.revoke_operator(operator))

    def set_replication_factor(self, r: int) -> TxResult:
        return run_sync(self.core.set_replication_factor(r))

    def register_node(self, node: str, url: str, randao_commit: bytes | str) -> TxResult:
        return run_sync(self.core.register_node(node, url, randao_commit))

    def set_node_url(self, node: str, url: str) -> TxResult:
        return run_sync(self.core.set_node_url(node, url))

    def request_leave(self, node: str) -> TxResult:
        return run_sync(self.core.request_leave(node))

    def evict_node(self, node: str) -> TxResult:
        return run_sync(self.core.evict_node(node))

    def renew_onion(self, node: str, randao_commit: bytes | str) -> TxResult:
        return run_sync(self.core.renew_onion(node, randao_commit))

    def advance_epoch(self) -> TxResult:
        return run_sync(self.core.advance_epoch())

    def create_stream(self, stream_id: bytes | str) -> TxResult:
        return run_sync(self.core.create_stream(stream_id))

    def replace_replica(self, stream_id: bytes | str, index: int) -> TxResult:
        return run_sync(self.core.replace_replica(stream_id, index))

    def transfer_ownership(self, new_owner: str) -> TxResult:
        return run_sync(self.core.transfer_ownership(new_owner))

    def accept_ownership(self) -> TxResult:
        return run_sync(self.core.accept_ownership())

    # -- views ------------------------------------------------------------------------------
    def call(self, name: str, *args: Any, block: BlockId = "latest") -> tuple[Any, ...]:
        return run_sync(self.core.call(name, *args, block=block))

    def owner(self, block: BlockId = "latest") -> str:
        return run_sync(self.core.owner(block))

    def pending_owner(self, block: BlockId = "latest") -> str:
        return run_sync(self.core.pending_owner(block))

    def is_operator(self, addr: str, block: BlockId = "latest") -> bool:
        return run_sync(self.core.is_operator(addr, block))

    def epoch_length(self, block: BlockId = "latest") -> int:
        return run_sync(self.core.epoch_length(block))

    def leader_timeout(self, block: BlockId = "latest") -> int:
        return run_sync(self.core.leader_timeout(block))

    def genesis_time(self, block: BlockId = "latest") -> int:
        return run_sync(self.core.genesis_time(block))

    def replication_factor(self, block: BlockId = "latest") -> int:
        return run_sync(self.core.replication_factor(block))

    def params(self) -> dict[str, int]:
        return run_sync(self.core.params())

    def current_epoch(self, block: BlockId = "latest") -> int:
        return run_sync(self.core.current_epoch(block))

    def current_seed(self, block: BlockId = "latest") -> bytes:
        return run_sync(self.core.current_seed(block))

    def randao_mix(self, block: BlockId = "latest") -> bytes:
        return run_sync(self.core.randao_mix(block))

    def elected_leader(self, stream_id: bytes, number: int, attempt: int, block: BlockId = "latest") -> str:
        return run_sync(self.core.elected_leader(stream_id, number, attempt, block))

    def attempt_opens_at(self, stream_id: bytes, attempt: int, block: BlockId = "latest") -> int:
        return run_sync(self.core.attempt_opens_at(stream_id, attempt, block))

    def stream_exists(self, stream_id: bytes, block: BlockId = "latest") -> bool:
        return run_sync(self.core.stream_exists(stream_id, block))

    def stream_head(self, stream_id: bytes, block: BlockId = "latest") -> StreamHead:
        return run_sync(self.core.stream_head(stream_id, block))

    def header_hash_at(self, stream_id: bytes, number: int, block: BlockId = "latest") -> bytes:
        return run_sync(self.core.header_hash_at(stream_id, number, block))

    @property
    def version(self) -> int:
        """1 or 2: which registry this ABI speaks (node.chain.abi.abi_version)."""
        return self.core.version

    def is_head(self, stream_id: bytes, number: int, header_hash: bytes, block: BlockId = "latest") -> bool:
        return run_sync(self.core.is_head(stream_id, number, header_hash, block))

    def commit_count(self, block: BlockId = "latest") -> int:
        return run_sync(self.core.commit_count(block))

    def history_acc(self, block: BlockId = "latest") -> bytes:
        return run_sync(self.core.history_acc(block))

    def history_checkpoint(self, window: int, block: BlockId = "latest") -> bytes:
        return run_sync(self.core.history_checkpoint(window, block))

    def verify_header_committed(self, header: Header, proof: v2.HistoryProof, block: BlockId = "latest") -> bool:
        return run_sync(self.core.verify_header_committed(header, proof, block))

    def packed_batch(self, tx_hash: bytes) -> bytes:
        return run_sync(self.core.packed_batch(tx_hash))

    def replicas_of(self, stream_id: bytes, block: BlockId = "latest") -> list[str]:
        return run_sync(self.core.replicas_of(stream_id, block))

    def stream_count(self, block: BlockId = "latest") -> int:
        return run_sync(self.core.stream_count(block))

    def stream_id_at(self, i: int, block: BlockId = "latest") -> bytes:
        return run_sync(self.core.stream_id_at(i, block))

    def stream_ids(self, block: BlockId = "latest") -> list[bytes]:
        return run_sync(self.core.stream_ids(block))

    def node_count(self, block: BlockId = "latest") -> int:
        return run_sync(self.core.node_count(block))

    def get_node(self, node: str, block: BlockId = "latest") -> NodeRecord:
        return run_sync(self.core.get_node(node, block))

    def get_nodes(self, offset: int = 0, limit: int = 2**16, block: BlockId = "latest") -> list[NodeRecord]:
        return run_sync(self.core.get_nodes(offset, limit, block))

    def nodes(self, block: BlockId = "latest") -> list[NodeRecord]:
        return run_sync(self.core.nodes(block))

    def randao_commit_of(self, node: str, block: BlockId = "latest") -> bytes:
        return run_sync(self.core.randao_commit_of(node, block))

    def liveness_of(self, node: str, block: BlockId = "latest") -> tuple[int, int, bool]:
        return run_sync(self.core.liveness_of(node, block))

    def live_node_count(self, block: BlockId = "latest") -> int:
        return run_sync(self.core.live_node_count(block))

    def stream_refs_of(self, node: str, block: BlockId = "latest") -> int:
        return run_sync(self.core.stream_refs_of(node, block))

    def dead_params(self) -> tuple[int, int]:
        return run_sync(self.core.dead_params())

    def hash_event(self, event: Event) -> bytes:
        return run_sync(self.core.hash_event(event))

    def hash_header(self, header: Header) -> bytes:
        return run_sync(self.core.hash_header(header))

    def event_digest(self, event: Event) -> bytes:
        return run_sync(self.core.event_digest(event))

    def header_digest(self, header: Header) -> bytes:
        return run_sync(self.core.header_digest(header))

    def merkle_root(self, event_hashes: Sequence[bytes]) -> bytes:
        return run_sync(self.core.merkle_root(event_hashes))

    def verify_merkle_proof(self, root: bytes, count: int, index: int, event_hash: bytes,
                            proof: Sequence[bytes]) -> bool:
        return run_sync(self.core.verify_merkle_proof(root, count, index, event_hash, proof))

    def verify_inclusion(self, header: Header, proof: Sequence[bytes], index: int, event_hash: bytes,
                         block: BlockId = "latest", history: v2.HistoryProof | None = None) -> bool:
        return run_sync(self.core.verify_inclusion(header, proof, index, event_hash, block, history))

    def eip712_domain(self) -> EIP712DomainInfo:
        return run_sync(self.core.eip712_domain())

    def domain(self) -> Domain:
        return run_sync(self.core.domain())

    def constant(self, name: str) -> int:
        return run_sync(self.core.constant(name))

    # -- logs ---------------------------------------------------------------------------------
    def raw_logs(self, from_block: int, to_block: BlockId = "latest", topics: Sequence[Any] | None = None, *,
                 chunk: int = 10_000, limit: int | None = None) -> list[RawLog]:
        return run_sync(self.core.raw_logs(from_block, to_block, topics, chunk=chunk, limit=limit))

    def decode_logs(self, logs: Iterable[RawLog]) -> list[LogMeta]:
        return self.core.decoder.decode_all(logs)

    def events(self, from_block: int, to_block: BlockId = "latest", topics: Sequence[Any] | None = None, *,
               chunk: int = 10_000) -> list[LogMeta]:
        return run_sync(self.core.events(from_block, to_block, topics, chunk=chunk))

    def scan(self, from_block: int, to_block: int) -> LogBatch:
        return run_sync(self.core.scan(from_block, to_block))

    def committed_logs(self, from_block: int, to_block: BlockId = "latest", *, stream_id: bytes | None = None,
                       leader: str | None = None, chunk: int = 10_000) -> list[MiniblockCommitted]:
        return run_sync(self.core.committed_logs(from_block, to_block, stream_id=stream_id, leader=leader,
                                                 chunk=chunk))

    def rejected_logs(self, from_block: int, to_block: BlockId = "latest", *, stream_id: bytes | None = None,
                      chunk: int = 10_000) -> list[MiniblockRejected]:
        return run_sync(self.core.rejected_logs(from_block, to_block, stream_id=stream_id, chunk=chunk))

    def stream_created_logs(self, from_block: int, to_block: BlockId = "latest", *,
                            stream_id: bytes | None = None, chunk: int = 10_000) -> list[StreamCreated]:
        return run_sync(self.core.stream_created_logs(from_block, to_block, stream_id=stream_id, chunk=chunk))

    def replica_replaced_logs(self, from_block: int, to_block: BlockId = "latest", *,
                              stream_id: bytes | None = None, chunk: int = 10_000) -> list[ReplicaReplaced]:
        return run_sync(self.core.replica_replaced_logs(from_block, to_block, stream_id=stream_id, chunk=chunk))

    def node_registered_logs(self, from_block: int, to_block: BlockId = "latest", *, node: str | None = None,
                             operator: str | None = None, chunk: int = 10_000) -> list[NodeRegistered]:
        return run_sync(self.core.node_registered_logs(from_block, to_block, node=node, operator=operator,
                                                       chunk=chunk))
