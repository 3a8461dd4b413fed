"""The node's asynchronous view of the registry: calls, log scanning, the commit transaction.

Thin on purpose: one AsyncWeb3 contract object, manual decoding of the hot logs
(MiniblockCommitted) and of the commit calldata (to recover full headers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_account import Account
from eth_utils import event_abi_to_log_topic, to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3

from node.chain.calldata import NotACommitCall, decode_commit_call
from node.protocol.types import Header

log = logging.getLogger("node.chain")

COMMIT_GAS_BASE = 150_000
COMMIT_GAS_PER_HEADER = 160_000


def load_abi(deployment: Path | None) -> list[dict[str, Any]]:
    if deployment is not None:
        try:
            blob = json.loads(Path(deployment).read_text())
            if isinstance(blob.get("abi"), list):
                return blob["abi"]
        except (OSError, ValueError):
            pass
    from node.build import load_artifact

    return load_artifact("MiniblockRegistry")["abi"]


@dataclass(slots=True)
class NodeRecord:
    address: str
    operator: str
    url: str
    status: int
    join_epoch: int
    leave_epoch: int
    randao_commit: bytes

    def active(self, epoch: int) -> bool:
        return self.join_epoch != 0 and self.join_epoch <= epoch < self.leave_epoch


@dataclass(slots=True)
class LogBatch:
    """Registry logs of a block range, decoded, in chain order."""

    to_block: int
    committed: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    created: list[dict] = field(default_factory=list)
    replaced: list[dict] = field(default_factory=list)
    nodes_changed: bool = False
    block_times: dict[int, int] = field(default_factory=dict)


class Chain:
    def __init__(self, rpc_url: str, registry: str, abi: list[dict[str, Any]], private_key: bytes) -> None:
        self.w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.address = to_checksum_address(registry)
        self.contract = self.w3.eth.contract(address=self.address, abi=abi)
        self.abi = abi
        self.account = Account.from_key(private_key)
        self.me = self.account.address
        self._topics: dict[bytes, str] = {}
        for item in abi:
            if item.get("type") == "event":
                self._topics[event_abi_to_log_topic(item)] = item["name"]
        self._nonce: int | None = None
        self._tx_lock = asyncio.Lock()
        self.clock_offset: float | None = None  # chain time - local time, from the freshest block seen
        self._block_time_cache: dict[int, int] = {}
        self.chain_id: int | None = None
        self._estimate_next = False

    # ---- time -----------------------------------------------------------------------------
    def observe_block_time(self, ts: int, seen_at: float | None = None) -> None:
        est = ts - (time.time() if seen_at is None else seen_at)
        if self.clock_offset is None or est > self.clock_offset:
            self.clock_offset = est

    def now(self) -> float:
        return time.time() + (self.clock_offset or 0.0)

    # ---- views ----------------------------------------------------------------------------
    async def get_chain_id(self) -> int:
        if self.chain_id is None:
            self.chain_id = await self.w3.eth.chain_id
        return self.chain_id

    async def params(self) -> dict[str, int]:
        f = self.contract.functions
        genesis, length, timeout, rf = await asyncio.gather(
            f.genesisTime().call(), f.epochLength().call(), f.leaderTimeout().call(), f.replicationFactor().call())
        return {"genesis_time": genesis, "epoch_length": length, "leader_timeout": timeout, "replication_factor": rf}

    async def epoch_and_seed(self) -> tuple[int, bytes]:
        # Both at one block so they agree with each other.
        blk = await self.w3.eth.block_number
        f = self.contract.functions
        e, s = await asyncio.gather(f.currentEpoch().call(block_identifier=blk),
                                    f.currentSeed().call(block_identifier=blk))
        return int(e), bytes(s)

    async def stream_head(self, sid: bytes) -> tuple[int, bytes, int]:
        n, h, ts = await self.contract.functions.streamHead(sid).call()
        return int(n), bytes(h), int(ts)

    async def replicas_of(self, sid: bytes) -> list[str]:
        return [to_checksum_address(a) for a in await self.contract.functions.replicasOf(sid).call()]

    async def stream_exists(self, sid: bytes) -> bool:
        return bool(await self.contract.functions.streamExists(sid).call())

    async def randao_commit(self, node: str) -> bytes:
        return bytes(await self.contract.functions.randaoCommitOf(node).call())

    async def nodes(self) -> list[NodeRecord]:
        n = await self.contract.functions.nodeCount().call()
        out: list[NodeRecord] = []
        for off in range(0, n, 100):
            for t in await self.contract.functions.getNodes(off, 100).call():
                out.append(NodeRecord(to_checksum_address(t[0]), to_checksum_address(t[1]), t[2], int(t[3]),
                                      int(t[4]), int(t[5]), bytes(t[6])))
        return out

    async def latest_block(self) -> tuple[int, int]:
        seen = time.time()
        b = await self.w3.eth.get_block("latest")
        self.observe_block_time(int(b["timestamp"]), seen)
        return int(b["number"]), int(b["timestamp"])

    async def block_time(self, number: int) -> int:
        ts = self._block_time_cache.get(number)
        if ts is None:
            b = await self.w3.eth.get_block(number)
            ts = int(b["timestamp"])
            if len(self._block_time_cache) > 4096:
                self._block_time_cache.clear()
            self._block_time_cache[number] = ts
        return ts

    # ---- logs -----------------------------------------------------------------------------
    async def scan(self, from_block: int, to_block: int) -> LogBatch:
        batch = LogBatch(to_block=to_block)
        logs = await self.w3.eth.get_logs({"address": self.address, "fromBlock": from_block, "toBlock": to_block})
        for lg in logs:
            topics = [bytes(t) for t in lg["topics"]]
            name = self._topics.get(topics[0]) if topics else None
            data = bytes(lg["data"])
            bn = int(lg["blockNumber"])
            if name == "MiniblockCommitted":
                hh, prev, root, count = data[0:32], data[32:64], data[64:96], int.from_bytes(data[96:128], "big")
                batch.committed.append({
                    "stream_id": topics[1], "number": int.from_bytes(topics[2], "big"), "header_hash": hh,
                    "prev_hash": prev, "events_root": root, "event_count": count,
                    "leader": to_checksum_address(topics[3][12:]), "tx_hash": bytes(lg["transactionHash"]),
                    "block": bn})
            elif name == "MiniblockRejected":
                hh, reason = abi_decode(["bytes32", "uint8"], data)
                batch.rejected.append({"stream_id": topics[1], "number": int.from_bytes(topics[2], "big"),
                                       "header_hash": bytes(hh), "reason": int(reason), "block": bn})
            elif name == "StreamCreated":
                creator, epoch, reps, gh = abi_decode(["address", "uint64", "address[]", "bytes32"], data)
                batch.created.append({"stream_id": topics[1], "epoch": int(epoch),
                                      "replicas": [to_checksum_address(a) for a in reps], "genesis_hash": bytes(gh),
                                      "block": bn})
            elif name == "ReplicaReplaced":
                index, old, new = abi_decode(["uint256", "address", "address"], data)
                batch.replaced.append({"stream_id": topics[1], "index": int(index), "old": to_checksum_address(old),
                                       "new": to_checksum_address(new), "block": bn})
            elif name in ("NodeRegistered", "NodeUrlChanged", "NodeLeaveRequested", "EpochAdvanced"):
                batch.nodes_changed = True
        for bn in sorted({c["block"] for c in batch.committed} | {c["block"] for c in batch.created}):
            batch.block_times[bn] = await self.block_time(bn)
        return batch

    async def headers_of_tx(self, tx_hash: bytes) -> list[Header]:
        """The full headers a commitMiniblocks transaction carried (from its calldata)."""
        tx = await self.w3.eth.get_transaction(tx_hash)
        try:
            return [h for h, _sigs in decode_commit_call(bytes(tx["input"]))]
        except NotACommitCall:
            return []

    # ---- transactions ---------------------------------------------------------------------
    async def _send(self, fn, gas: int | None = None) -> dict:
        async with self._tx_lock:
            if self._nonce is None:
                self._nonce = await self.w3.eth.get_transaction_count(self.me, "pending")
            chain_id = await self.get_chain_id()
            params: dict[str, Any] = {"from": self.me, "nonce": self._nonce, "chainId": chain_id}
            try:
                if gas is None:
                    est = await fn.estimate_gas({"from": self.me})
                    gas = int(est * 1.25) + 50_000
                params["gas"] = gas
                tx = await fn.build_transaction(params)
                signed = self.account.sign_transaction(tx)
                txh = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception:
                self._nonce = None  # re-read on the next send
                raise
            self._nonce += 1
        seen = time.time()
        receipt = await self.w3.eth.wait_for_transaction_receipt(txh, timeout=60, poll_latency=0.05)
        try:
            blk = await self.w3.eth.get_block(receipt["blockNumber"])
            self.observe_block_time(int(blk["timestamp"]), seen)
            self._block_time_cache[int(receipt["blockNumber"])] = int(blk["timestamp"])
        except Exception:  # timing only
            pass
        return dict(receipt)

    async def commit_miniblocks(self, headers: list[Header], signatures: list[list[bytes]]) -> dict:
        fn = self.contract.functions.commitMiniblocks([h.as_abi() for h in headers], signatures)
        # Gas: a fixed generous budget per header (about 60-90k are used) instead of an estimate (on Anvil an
        # estimate re-executes the batch several times). A batch that ran out of gas is estimated next time.
        gas = None if self._estimate_next else COMMIT_GAS_BASE + COMMIT_GAS_PER_HEADER * len(headers)
        receipt = await self._send(fn, gas=gas)
        self._estimate_next = int(receipt.get("status", 0)) != 1 and int(receipt.get("gasUsed", 0)) >= (gas or 0) > 0
        return receipt

    async def register_node(self, node: str, url: str, randao_commit: bytes) -> dict:
        return await self._send(self.contract.functions.registerNode(node, url, randao_commit))

    async def replace_replica(self, sid: bytes, index: int) -> dict:
        return await self._send(self.contract.functions.replaceReplica(sid, index))

    def decode_receipt(self, receipt: dict) -> LogBatch:
        batch = LogBatch(to_block=int(receipt["blockNumber"]))
        for lg in receipt["logs"]:
            topics = [bytes(t) for t in lg["topics"]]
            name = self._topics.get(topics[0]) if topics else None
            data = bytes(lg["data"])
            if name == "MiniblockCommitted":
                batch.committed.append({
                    "stream_id": topics[1], "number": int.from_bytes(topics[2], "big"), "header_hash": data[0:32],
                    "prev_hash": data[32:64], "events_root": data[64:96],
                    "event_count": int.from_bytes(data[96:128], "big"),
                    "leader": to_checksum_address(topics[3][12:]), "tx_hash": bytes(lg["transactionHash"]),
                    "block": int(lg["blockNumber"])})
            elif name == "MiniblockRejected":
                hh, reason = abi_decode(["bytes32", "uint8"], data)
                batch.rejected.append({"stream_id": topics[1], "number": int.from_bytes(topics[2], "big"),
                                       "header_hash": bytes(hh), "reason": int(reason)})
        return batch
