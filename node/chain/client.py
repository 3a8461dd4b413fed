"""The registry client: every view, log query and transaction of the MiniblockRegistry, once (async).

The node uses `RegistryClient` directly on its event loop; the CLIs, deploy, tests, devnet and bench use
the synchronous wrapper `node.chain.registry.Registry`, which runs this same client on a private loop.
Views take an optional ``block`` (a number or "latest"); log queries are chunked (a provider's range
or size error halves the chunk); transactions go through `node.chain.tx.TxSender`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from node.protocol import v2
from node.protocol.types import Domain, Event, Header

from .abi import Abi, AbiList, abi_version, load_abi
from .access_list import AccessList
from .access_list import intrinsic as access_list_intrinsic
from .calldata import NotACommitCall, decode_commit_call, decode_packed_call
from .logs import (
    HeadersCommitted,
    LogBatch,
    LogDecoder,
    LogMeta,
    MiniblockCommitted,
    MiniblockRejected,
    NodeRegistered,
    RawLog,
    Receipt,
    ReplicaReplaced,
    StreamCreated,
    TxResult,
    expand_v2,
)
from .rpc import BlockId, RegistryError, Rpc, RpcError, block_param, hex_bytes, hex_int
from .tx import FeePolicy, TxSender, revert_error

COMMIT_GAS_BASE = 150_000
COMMIT_GAS_PER_HEADER = 160_000
COMMIT_GAS_PER_HEADER_V2 = 60_000  # about 19-70k are used (docs/protocol.md, "Version 2", Gas)
# v2 commits of fewer records never gain from an access list (node.chain.access_list: 25 keys to pay)
ACCESS_LIST_MIN_RECORDS = 12
ACCESS_LIST_MIN_LEFT_S = 0.75  # a commit with less time than this to its send_by goes without an access list
# v2's dead-replica rule is constant (MiniblockRegistryV2.DEAD_MISSES / DEAD_EPOCHS)
V2_DEAD_PARAMS = (3, 2)
NODES_PAGE = 100
DEFAULT_LOG_CHUNK = 10_000


class SendTooLate(RuntimeError):
    """A commit was not sent: the chain time passed the caller's `send_by` before the transaction left
    (the reads before it, such as the access list, took that long)."""


class NodeStatus(IntEnum):
    NONE = 0
    PENDING = 1
    ACTIVE = 2
    LEAVING = 3
    LEFT = 4


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One entry of the registry's node list (getNode / getNodes)."""

    address: str
    operator: str
    url: str
    status: NodeStatus
    join_epoch: int
    leave_epoch: int
    randao_commit: bytes

    @property
    def node(self) -> str:
        return self.address

    def active(self, epoch: int) -> bool:
        return self.join_epoch != 0 and self.join_epoch <= epoch < self.leave_epoch

    @classmethod
    def from_abi(cls, t: Sequence[Any]) -> NodeRecord:
        return cls(to_checksum_address(t[0]), to_checksum_address(t[1]), str(t[2]), NodeStatus(int(t[3])),
                   int(t[4]), int(t[5]), bytes(t[6]))


NodeInfo = NodeRecord  # the name the sync wrapper used


class StreamHead(NamedTuple):
    """`streamHead`: v1 gives the full header hash; v2 only its top 20 bytes (`hashPrefix`: the full
    hash is in the commit's log)."""

    number: int
    header_hash: bytes
    timestamp: int


@dataclass(frozen=True, slots=True)
class EIP712DomainInfo:
    fields: int
    name: str
    version: str
    chain_id: int
    verifying_contract: str
    salt: bytes
    extensions: list[int]


@dataclass(frozen=True, slots=True)
class Transaction:
    """The parts of a mined transaction the readers need."""

    tx_hash: bytes
    to: str | None
    input: bytes
    block_number: int | None


def b32(x: bytes | str) -> bytes:
    v = hex_bytes(x) if isinstance(x, str) else bytes(x)
    if len(v) != 32:
        raise ValueError("expected 32 bytes")
    return v


def header_abi(h: Header | Sequence[Any]) -> tuple[Any, ...]:
    return h.as_abi() if isinstance(h, Header) else tuple(h)


def event_abi(e: Event | Sequence[Any]) -> tuple[Any, ...]:
    return e.as_abi() if isinstance(e, Event) else tuple(e)


class RegistryClient:
    """One registry on one chain, read and (with a sender) written, from one event loop."""

    def __init__(self, rpc: Rpc | str, address: str, abi: AbiList | Abi | None = None,
                 sender: TxSender | None = None) -> None:
        self.rpc = Rpc(rpc) if isinstance(rpc, str) else rpc
        self.address = to_checksum_address(address)
        self.codec = abi if isinstance(abi, Abi) else Abi(load_abi(abi))
        self.abi: AbiList = self.codec.items
        self.decoder = LogDecoder(self.codec, self.address)
        self.version = abi_version(self.abi)  # 1 or 2: which registry this ABI speaks
        self.sender = sender
        self.chain_id: int | None = None
        self.clock_offset: float | None = None  # chain time - local time, from the freshest block seen
        self._domain: Domain | None = None
        self._block_time_cache: dict[int, int] = {}
        self._estimate_next = False

    @classmethod
    def for_node(cls, rpc_url: str | Sequence[str], address: str, abi: AbiList | None, account: LocalAccount, *,
                 rpc_timeout: float = 10.0, rpc_retries: int = 4, fees: FeePolicy | None = None) -> RegistryClient:
        """The node's client: its own key, a fixed commit gas budget, estimates at the latest block."""
        rpc = Rpc(rpc_url, timeout=rpc_timeout, retries=rpc_retries)
        sender = TxSender(rpc, account, gas_margin=1.25, gas_extra=50_000, receipt_timeout=60.0,
                          estimate_block="latest", cap_to_block_limit=False, fees=fees)
        return cls(rpc, address, abi, sender)

    def with_sender(self, sender: TxSender | None) -> RegistryClient:
        c = RegistryClient(self.rpc, self.address, self.codec, sender)
        c._domain, c.chain_id = self._domain, self.chain_id
        return c

    @property
    def me(self) -> str:
        return self._require_sender().address

    # ---- time -----------------------------------------------------------------------------
    def observe_block_time(self, ts: int, seen_at: float | None = None) -> None:
        """Raise the chain clock's offset to `ts - seen_at`. `seen_at` must be a moment after the block
        existed (default: now), so the estimate is a lower bound of the true offset: a time taken before
        the request would overestimate it by the request's duration, and a process stopped (SIGSTOP)
        during a transaction would push its clock ahead of every other node's for good (the offset
        only grows), until peer authentication and epochs disagree between nodes."""
        est = ts - (time.time() if seen_at is None else seen_at)
        if self.clock_offset is None or est > self.clock_offset:
            self.clock_offset = est

    def now(self) -> float:
        return time.time() + (self.clock_offset or 0.0)

    def cached_block_time(self, number: int) -> int | None:
        return self._block_time_cache.get(number)

    # ---- plain chain reads ----------------------------------------------------------------
    async def get_chain_id(self) -> int:
        if self.chain_id is None:
            self.chain_id = hex_int(await self.rpc.request("eth_chainId", []))
        return self.chain_id

    async def block_number(self) -> int:
        return hex_int(await self.rpc.request("eth_blockNumber", []))

    async def get_block(self, block: BlockId = "latest") -> dict[str, Any]:
        b = await self.rpc.request("eth_getBlockByNumber", [block_param(block), False])
        if b is None:
            raise RegistryError(f"no block {block}")
        out: dict[str, Any] = b
        return out

    async def latest_block(self) -> tuple[int, int]:
        """(number, timestamp) of the latest block; feeds the chain clock."""
        b = await self.get_block("latest")
        ts = hex_int(b["timestamp"])
        self.observe_block_time(ts)
        return hex_int(b["number"]), ts

    async def latest_block_hash(self) -> tuple[int, bytes]:
        """(number, hash) of the latest block; feeds the chain clock."""
        b = await self.get_block("latest")
        self.observe_block_time(hex_int(b["timestamp"]))
        return hex_int(b["number"]), hex_bytes(b["hash"])

    def forget_blocks_after(self, number: int) -> None:
        """Drop cached block times above `number` (a reorg replaced those blocks)."""
        for n in [n for n in self._block_time_cache if n > number]:
            del self._block_time_cache[n]

    async def chain_time(self) -> int:
        return hex_int((await self.get_block("latest"))["timestamp"])

    async def block_time(self, number: int) -> int:
        ts = self._block_time_cache.get(number)
        if ts is None:
            ts = hex_int((await self.get_block(number))["timestamp"])
            if len(self._block_time_cache) > 4096:
                self._block_time_cache.clear()
            self._block_time_cache[number] = ts
        return ts

    async def code_at(self, address: str | None = None, block: BlockId = "latest") -> bytes:
        return hex_bytes(await self.rpc.request("eth_getCode", [address or self.address, block_param(block)]))

    async def transaction(self, tx_hash: bytes) -> Transaction:
        tx = await self.rpc.request("eth_getTransactionByHash", ["0x" + tx_hash.hex()])
        if tx is None:
            raise RegistryError(f"no transaction 0x{tx_hash.hex()}")
        to = tx.get("to")
        bn = tx.get("blockNumber")
        return Transaction(tx_hash, to_checksum_address(to) if to else None,
                           hex_bytes(tx.get("input") or tx.get("data") or "0x"), None if bn is None else hex_int(bn))

    async def receipt(self, tx_hash: bytes) -> Receipt:
        r = await self.rpc.request("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
        if r is None:
            raise RegistryError(f"no receipt for 0x{tx_hash.hex()}")
        return Receipt.from_rpc(r)

    async def tx_result(self, tx_hash: bytes) -> TxResult:
        """A mined transaction's result, read from this client's own endpoint (its receipt, the registry's
        logs in it decoded, its block's time): how a node checks a commit someone else says they sent."""
        receipt = await self.receipt(tx_hash)
        ts: int | None = None
        try:
            ts = await self.block_time(receipt.block_number)
        except (TimeoutError, RpcError, OSError):  # timing only
            pass
        batch = None
        if self.version == 2:
            batch = (await self.packed_batches([tx_hash])).get(tx_hash)
        return TxResult.of(receipt, self.decoder, ts, batch)

    # ---- calls ----------------------------------------------------------------------------
    def calldata(self, name: str, *args: Any) -> bytes:
        return self.codec.encode_call(name, args)

    def decode_error(self, data: bytes | str | None) -> tuple[str | None, tuple[Any, ...]]:
        return self.codec.decode_error(data)

    async def call(self, name: str, *args: Any, block: BlockId = "latest") -> tuple[Any, ...]:
        """eth_call of a view; its outputs as a tuple. A revert raises RegistryError (custom error decoded)."""
        data = "0x" + self.codec.encode_call(name, args).hex()
        try:
            raw = await self.rpc.request("eth_call", [{"to": self.address, "data": data}, block_param(block)])
        except RpcError as e:
            raise revert_error(e, name, self.codec.decode_error) from e
        return self.codec.decode_output(name, hex_bytes(raw))

    async def _one(self, name: str, *args: Any, block: BlockId = "latest") -> Any:
        return (await self.call(name, *args, block=block))[0]

    # ---- views ------------------------------------------------------------------------------
    async def owner(self, block: BlockId = "latest") -> str:
        return str(await self._one("owner", block=block))

    async def pending_owner(self, block: BlockId = "latest") -> str:
        return str(await self._one("pendingOwner", block=block))

    async def is_operator(self, addr: str, block: BlockId = "latest") -> bool:
        return bool(await self._one("isOperator", to_checksum_address(addr), block=block))

    async def epoch_length(self, block: BlockId = "latest") -> int:
        return int(await self._one("epochLength", block=block))

    async def leader_timeout(self, block: BlockId = "latest") -> int:
        return int(await self._one("leaderTimeout", block=block))

    async def genesis_time(self, block: BlockId = "latest") -> int:
        return int(await self._one("genesisTime", block=block))

    async def replication_factor(self, block: BlockId = "latest") -> int:
        return int(await self._one("replicationFactor", block=block))

    async def current_epoch(self, block: BlockId = "latest") -> int:
        return int(await self._one("currentEpoch", block=block))

    async def current_seed(self, block: BlockId = "latest") -> bytes:
        return bytes(await self._one("currentSeed", block=block))

    async def randao_mix(self, block: BlockId = "latest") -> bytes:
        return bytes(await self._one("randaoMix", block=block))

    async def params(self) -> dict[str, int]:
        genesis, length, timeout, rf = await asyncio.gather(
            self.genesis_time(), self.epoch_length(), self.leader_timeout(), self.replication_factor())
        return {"genesis_time": genesis, "epoch_length": length, "leader_timeout": timeout, "replication_factor": rf}

    async def epoch_and_seed(self) -> tuple[int, bytes]:
        # Both at one block so they agree with each other.
        blk = await self.block_number()
        e, s = await asyncio.gather(self.current_epoch(blk), self.current_seed(blk))
        return e, s

    async def elected_leader(self, stream_id: bytes, number: int, attempt: int, block: BlockId = "latest") -> str:
        return str(await self._one("electedLeader", b32(stream_id), number, attempt, block=block))

    async def attempt_opens_at(self, stream_id: bytes, attempt: int, block: BlockId = "latest") -> int:
        return int(await self._one("attemptOpensAt", b32(stream_id), attempt, block=block))

    async def stream_exists(self, stream_id: bytes, block: BlockId = "latest") -> bool:
        return bool(await self._one("streamExists", b32(stream_id), block=block))

    async def stream_head(self, stream_id: bytes, block: BlockId = "latest") -> StreamHead:
        n, h, t = await self.call("streamHead", b32(stream_id), block=block)
        return StreamHead(int(n), bytes(h), int(t))

    async def header_hash_at(self, stream_id: bytes, number: int, block: BlockId = "latest") -> bytes:
        """v1 only: v2 keeps no hash per (stream, number) (its history proof says what was committed)."""
        if self.version == 2:
            raise RegistryError("registry v2 has no headerHashAt: use is_head, the logs or the history proof")
        return bytes(await self._one("headerHashAt", b32(stream_id), number, block=block))

    async def is_head(self, stream_id: bytes, number: int, header_hash: bytes, block: BlockId = "latest") -> bool:
        """v2: `header_hash` is the stream's head at `number` (its top 160 bits match)."""
        return bool(await self._one("isHead", b32(stream_id), number, b32(header_hash), block=block))

    async def commit_count(self, block: BlockId = "latest") -> int:
        """v2: commit transactions that accepted at least one header (the history's length)."""
        return int(await self._one("commitCount", block=block))

    async def history_acc(self, block: BlockId = "latest") -> bytes:
        return bytes(await self._one("historyAcc", block=block))

    async def history_checkpoint(self, window: int, block: BlockId = "latest") -> bytes:
        return bytes(await self._one("historyCheckpoint", window, block=block))

    async def verify_header_committed(self, header: Header, proof: v2.HistoryProof,
                                      block: BlockId = "latest") -> bool:
        """v2: the registry's own check that `header` was committed (its history proof)."""
        return bool(await self._one("verifyHeaderCommitted", header_abi(header), proof.as_abi(), block=block))

    async def replicas_of(self, stream_id: bytes, block: BlockId = "latest") -> list[str]:
        return list(await self._one("replicasOf", b32(stream_id), block=block))

    async def stream_count(self, block: BlockId = "latest") -> int:
        return int(await self._one("streamCount", block=block))

    async def stream_id_at(self, i: int, block: BlockId = "latest") -> bytes:
        return bytes(await self._one("streamIdAt", i, block=block))

    async def stream_ids(self, block: BlockId = "latest") -> list[bytes]:
        return [await self.stream_id_at(i, block) for i in range(await self.stream_count(block))]

    async def node_count(self, block: BlockId = "latest") -> int:
        return int(await self._one("nodeCount", block=block))

    async def get_node(self, node: str, block: BlockId = "latest") -> NodeRecord:
        return NodeRecord.from_abi(await self._one("getNode", to_checksum_address(node), block=block))

    async def get_nodes(self, offset: int = 0, limit: int = 2**16, block: BlockId = "latest") -> list[NodeRecord]:
        return [NodeRecord.from_abi(t) for t in await self._one("getNodes", offset, limit, block=block)]

    async def nodes(self, block: BlockId = "latest") -> list[NodeRecord]:
        """Every registered node, read in pages."""
        n = await self.node_count(block)
        out: list[NodeRecord] = []
        for off in range(0, n, NODES_PAGE):
            out.extend(await self.get_nodes(off, NODES_PAGE, block))
        return out

    async def randao_commit_of(self, node: str, block: BlockId = "latest") -> bytes:
        return bytes(await self._one("randaoCommitOf", to_checksum_address(node), block=block))

    randao_commit = randao_commit_of

    async def liveness_of(self, node: str, block: BlockId = "latest") -> tuple[int, int, bool]:
        """(misses, lastLedEpoch, dead): slots the node was skipped in since it last led, the last epoch it
        led (or its onion became usable), and whether its streams may replace it now (replaceReplica)."""
        m, led, dead = await self.call("livenessOf", to_checksum_address(node), block=block)
        return int(m), int(led), bool(dead)

    async def live_node_count(self, block: BlockId = "latest") -> int:
        return int(await self._one("liveNodeCount", block=block))

    async def stream_refs_of(self, node: str, block: BlockId = "latest") -> int:
        return int(await self._one("streamRefsOf", to_checksum_address(node), block=block))

    async def dead_params(self) -> tuple[int, int]:
        """(deadMisses, deadEpochs): immutable, set at deployment (v2: constants)."""
        if self.version == 2:
            return V2_DEAD_PARAMS
        return int(await self._one("deadMisses")), int(await self._one("deadEpochs"))

    async def hash_event(self, event: Event) -> bytes:
        return bytes(await self._one("hashEvent", event_abi(event)))

    async def hash_header(self, header: Header) -> bytes:
        return bytes(await self._one("hashHeader", header_abi(header)))

    async def event_digest(self, event: Event) -> bytes:
        return bytes(await self._one("eventDigest", event_abi(event)))

    async def header_digest(self, header: Header) -> bytes:
        return bytes(await self._one("headerDigest", header_abi(header)))

    async def merkle_root(self, event_hashes: Sequence[bytes]) -> bytes:
        return bytes(await self._one("merkleRoot", [b32(x) for x in event_hashes]))

    async def verify_merkle_proof(self, root: bytes, count: int, index: int, event_hash: bytes,
                                  proof: Sequence[bytes]) -> bool:
        return bool(await self._one("verifyMerkleProof", b32(root), count, index, b32(event_hash),
                                    [b32(p) for p in proof]))

    async def verify_inclusion(self, header: Header, proof: Sequence[bytes], index: int, event_hash: bytes,
                               block: BlockId = "latest", history: v2.HistoryProof | None = None) -> bool:
        """The registry's check that `event_hash` is event `index` of committed `header`; v2 also takes
        the header's history proof (`history`: its verifyInclusion proves the header committed with it)."""
        eproof = [b32(p) for p in proof]
        if self.version == 2:
            if history is None:
                raise RegistryError("registry v2's verifyInclusion needs the header's history proof")
            return bool(await self._one("verifyInclusion", header_abi(header), history.as_abi(), eproof, index,
                                        b32(event_hash), block=block))
        return bool(await self._one("verifyInclusion", header_abi(header), eproof, index, b32(event_hash),
                                    block=block))

    async def eip712_domain(self) -> EIP712DomainInfo:
        f, name, version, chain_id, vc, salt, ext = await self.call("eip712Domain")
        return EIP712DomainInfo(fields=int.from_bytes(bytes(f), "big"), name=str(name), version=str(version),
                                chain_id=int(chain_id), verifying_contract=str(vc), salt=bytes(salt),
                                extensions=[int(x) for x in ext])

    async def domain(self) -> Domain:
        """The EIP-712 domain read from the contract (EIP-5267), cached."""
        if self._domain is None:
            d = await self.eip712_domain()
            self._domain = Domain(chain_id=d.chain_id, verifying_contract=d.verifying_contract,
                                  name=d.name, version=d.version)
        return self._domain

    async def constant(self, name: str) -> int:
        """MAX_NODES, MAX_REPLICATION, MAX_BATCH, MAX_EVENTS_PER_BLOCK, MAX_REVEAL_SKIP."""
        return int(await self._one(name))

    # ---- logs -------------------------------------------------------------------------------
    def topic(self, event: str) -> bytes:
        return self.codec.event_topics[event]

    async def raw_logs(
        self, from_block: int, to_block: BlockId = "latest", topics: Sequence[Any] | None = None, *,
        chunk: int = DEFAULT_LOG_CHUNK, limit: int | None = None,
    ) -> list[RawLog]:
        """The registry's logs over [from_block, to_block] (topics as eth_getLogs: bytes, lists, None),
        in chunks; a provider's range or size error halves the chunk. At most `limit` logs."""
        end = await self.block_number() if not isinstance(to_block, int) else to_block
        tps = [_topic_param(t) for t in topics] if topics else []
        start, step = max(0, from_block), max(1, chunk)
        out: list[RawLog] = []
        while start <= end:
            stop = min(end, start + step - 1)
            flt: dict[str, Any] = {"address": self.address, "fromBlock": hex(start), "toBlock": hex(stop)}
            if tps:
                flt["topics"] = tps
            try:
                logs = await self.rpc.request("eth_getLogs", [flt])
            except RpcError:
                if step == 1:
                    raise
                step = max(1, step // 2)
                continue
            for lg in logs or ():
                out.append(RawLog.from_rpc(lg))
                if limit is not None and len(out) >= limit:
                    return out
            start = stop + 1
        return out

    async def events(
        self, from_block: int, to_block: BlockId = "latest", topics: Sequence[Any] | None = None, *,
        chunk: int = DEFAULT_LOG_CHUNK,
    ) -> list[LogMeta]:
        return await self.expand(self.decoder.decode_all(await self.raw_logs(from_block, to_block, topics,
                                                                             chunk=chunk)))

    async def expand(self, events: list[LogMeta]) -> list[LogMeta]:
        """v2: each commit log followed by its accepted headers (MiniblockCommitted, read from the
        transaction's input: one eth_getTransactionByHash per commit transaction); v1: as is."""
        txs = list(dict.fromkeys(e.tx_hash for e in events if isinstance(e, HeadersCommitted)))
        if not txs:
            return events
        return expand_v2(events, await self.packed_batches(txs))

    async def packed_batches(self, tx_hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        """v2: the packed batch of each commit transaction that is a direct call of this registry."""
        out: dict[bytes, bytes] = {}
        for tx, got in zip(tx_hashes, await asyncio.gather(*(self.transaction(t) for t in tx_hashes)), strict=True):
            if got.to == self.address:
                try:
                    out[tx] = decode_packed_call(got.input)
                except NotACommitCall:
                    pass
        return out

    async def scan(self, from_block: int, to_block: int) -> LogBatch:
        """Every registry log of the range, decoded into a LogBatch (with the commits' block times and the
        hashes of the blocks the logs are in)."""
        raw = await self.raw_logs(from_block, to_block, chunk=max(1, to_block - from_block + 1))
        evs = await self.expand(self.decoder.decode_all(raw))
        hashes = {lg.block_number: lg.block_hash for lg in raw if lg.block_hash}
        times = {}
        for bn in sorted({e.block_number for e in evs if isinstance(e, (MiniblockCommitted, StreamCreated))}):
            times[bn] = await self.block_time(bn)
        return LogBatch.of(to_block, evs, times, hashes)

    async def block_hash(self, block: BlockId) -> tuple[int, bytes] | None:
        """(number, hash) of a block, None if the chain has no such block (any more)."""
        b = await self.rpc.request("eth_getBlockByNumber", [block_param(block), False])
        if not b:
            return None
        return hex_int(b["number"]), hex_bytes(b["hash"])

    async def committed_logs(
        self, from_block: int, to_block: BlockId = "latest", *, stream_id: bytes | None = None,
        leader: str | None = None, chunk: int = DEFAULT_LOG_CHUNK,
    ) -> list[MiniblockCommitted]:
        if self.version == 2:  # one log per transaction, not by stream: every commit, filtered here
            evs = await self.events(from_block, to_block, [self.topic("MiniblocksCommitted")], chunk=chunk)
            return [e for e in evs if isinstance(e, MiniblockCommitted)
                    and (stream_id is None or e.stream_id == b32(stream_id))
                    and (leader is None or e.leader == to_checksum_address(leader))]
        topics: list[Any] = [self.topic("MiniblockCommitted"), None if stream_id is None else b32(stream_id), None,
                             None if leader is None else _address_topic(leader)]
        evs = await self.events(from_block, to_block, _trim(topics), chunk=chunk)
        return [e for e in evs if isinstance(e, MiniblockCommitted)]

    async def rejected_logs(self, from_block: int, to_block: BlockId = "latest", *,
                            stream_id: bytes | None = None, chunk: int = DEFAULT_LOG_CHUNK) -> list[MiniblockRejected]:
        topics = _trim([self.topic("MiniblockRejected"), None if stream_id is None else b32(stream_id)])
        return [e for e in await self.events(from_block, to_block, topics, chunk=chunk)
                if isinstance(e, MiniblockRejected)]

    async def stream_created_logs(self, from_block: int, to_block: BlockId = "latest", *,
                                  stream_id: bytes | None = None,
                                  chunk: int = DEFAULT_LOG_CHUNK) -> list[StreamCreated]:
        topics = _trim([self.topic("StreamCreated"), None if stream_id is None else b32(stream_id)])
        return [e for e in await self.events(from_block, to_block, topics, chunk=chunk)
                if isinstance(e, StreamCreated)]

    async def replica_replaced_logs(self, from_block: int, to_block: BlockId = "latest", *,
                                    stream_id: bytes | None = None,
                                    chunk: int = DEFAULT_LOG_CHUNK) -> list[ReplicaReplaced]:
        topics = _trim([self.topic("ReplicaReplaced"), None if stream_id is None else b32(stream_id)])
        return [e for e in await self.events(from_block, to_block, topics, chunk=chunk)
                if isinstance(e, ReplicaReplaced)]

    async def node_registered_logs(self, from_block: int, to_block: BlockId = "latest", *,
                                   node: str | None = None, operator: str | None = None,
                                   chunk: int = DEFAULT_LOG_CHUNK) -> list[NodeRegistered]:
        topics = _trim([self.topic("NodeRegistered"), None if node is None else _address_topic(node),
                        None if operator is None else _address_topic(operator)])
        return [e for e in await self.events(from_block, to_block, topics, chunk=chunk)
                if isinstance(e, NodeRegistered)]

    # ---- calldata ---------------------------------------------------------------------------
    async def commit_call(self, tx_hash: bytes) -> list[tuple[Header, list[bytes]]]:
        """The (header, signatures) pairs a commitMiniblocks transaction to this registry carried.

        Raises NotACommitCall when the transaction is not a direct, decodable call of it."""
        tx = await self.transaction(tx_hash)
        if tx.to != self.address:
            raise NotACommitCall("the commit was not a direct call to the registry")
        return decode_commit_call(tx.input)

    async def packed_batch(self, tx_hash: bytes) -> bytes:
        """v2: the packed batch a commitMiniblocks(bytes) transaction to this registry carried (its
        headers need the chain state for leader, reveal and prevHash[0:18]: node/protocol/v2.py).

        Raises NotACommitCall when the transaction is not a direct, decodable call of it."""
        tx = await self.transaction(tx_hash)
        if tx.to != self.address:
            raise NotACommitCall("the commit was not a direct call to the registry")
        return decode_packed_call(tx.input)

    async def headers_of_tx(self, tx_hash: bytes) -> list[Header]:
        """The full headers a v1 commitMiniblocks transaction carried (from its calldata; [] if it is not
        one, and on v2, whose calldata does not hold whole headers: `packed_batch`)."""
        if self.version == 2:
            return []
        tx = await self.transaction(tx_hash)
        try:
            return [h for h, _sigs in decode_commit_call(tx.input)]
        except NotACommitCall:
            return []

    # ---- transactions -----------------------------------------------------------------------
    def _require_sender(self) -> TxSender:
        if self.sender is None:
            raise RegistryError("this Registry has no account to send from")
        return self.sender

    async def estimate_gas(self, name: str, *args: Any) -> int:
        sender = self._require_sender()
        return await sender.estimate_gas(self.address, self.calldata(name, *args),
                                         decode_error=self.codec.decode_error, what=name)

    async def transact(self, name: str, *args: Any, gas: int | None = None, check: bool = True,
                       batch: bytes | None = None, access: AccessList | None = None) -> TxResult:
        """Send one registry transaction and wait for it; its decoded result.

        ``check``: a mined but failed (status 0) transaction raises RegistryError. ``batch``: a v2 commit's
        packed batch (its accepted headers are decoded from it). ``access``: an EIP-2930 access list."""
        sender = self._require_sender()
        receipt = await sender.send(self.address, self.calldata(name, *args), gas=gas,
                                    decode_error=self.codec.decode_error, what=name, access=access)
        assert isinstance(receipt, Receipt)
        ts: int | None = None
        try:
            ts = await self.block_time(receipt.block_number)
            self.observe_block_time(ts)
        except (TimeoutError, RpcError, OSError):  # timing only
            pass
        result = TxResult.of(receipt, self.decoder, ts, batch)
        if check and result.status != 1:
            raise RegistryError(f"{name}: transaction {result.tx_hash.hex()} failed (status 0)")
        return result

    async def commit_miniblocks(self, headers: Sequence[Header], signatures: Sequence[Sequence[bytes]], *,
                                gas: int | None = None, check: bool = True) -> TxResult:
        """Send one commitMiniblocks tx; ``signatures[i][0]`` is the leader's over header i.

        The mined result carries the decoded MiniblockCommitted/MiniblockRejected events (a rejected
        header does not fail the tx)."""
        if len(headers) != len(signatures):
            raise ValueError("headers and signatures differ in length")
        return await self.transact("commitMiniblocks", [header_abi(h) for h in headers],
                                   [[bytes(s) for s in sigs] for sigs in signatures], gas=gas, check=check)

    async def commit_budgeted(self, headers: Sequence[Header], signatures: Sequence[Sequence[bytes]],
                              send_by: float | None = None) -> TxResult:
        """The node's commit: a fixed generous gas budget per header (about 60-90k are used) instead of an
        estimate (on Anvil an estimate re-executes the batch several times); a batch that ran out of gas
        is estimated next time. A failed tx is returned (status 0), not raised. SendTooLate: the chain time
        is past `send_by`, nothing sent."""
        self._not_after(send_by)
        gas = None if self._estimate_next else COMMIT_GAS_BASE + COMMIT_GAS_PER_HEADER * len(headers)
        res = await self.commit_miniblocks(headers, signatures, gas=gas, check=False)
        self._estimate_next = res.status != 1 and res.gas_used >= (gas or 0) > 0
        return res

    async def commit_packed(self, batch: bytes, *, gas: int | None = None, check: bool = True,
                            access: AccessList | None = None) -> TxResult:
        """v2: send one commitMiniblocks(bytes) with a packed batch (node.protocol.v2.encode_batch); the
        result carries one MiniblockCommitted per accepted record (leader and prev_hash unresolved: see
        MiniblockCommitted.resolved) and the MiniblockRejected logs."""
        return await self.transact("commitMiniblocks", bytes(batch), gas=gas, check=check, batch=bytes(batch),
                                   access=access)

    def _not_after(self, send_by: float | None) -> None:
        if send_by is not None and self.now() > send_by:
            raise SendTooLate(f"chain time {self.now():.2f} past the send deadline {send_by:.2f}")

    async def commit_access_list(self, batch: bytes, count: int) -> AccessList:
        """The access list worth attaching to this v2 commit (node.chain.access_list): asked of the
        endpoint only for batches of ACCESS_LIST_MIN_RECORDS or more, below which none pays."""
        if count < ACCESS_LIST_MIN_RECORDS:
            return []
        sender = self._require_sender()
        return await sender.create_access_list(self.address, self.calldata("commitMiniblocks", bytes(batch)))

    async def commit_packed_budgeted(self, batch: bytes, count: int, send_by: float | None = None) -> TxResult:
        """v2's `commit_budgeted`: a fixed gas budget for `count` records, estimated after an out-of-gas;
        with the access list that saves gas at this size (its intrinsic cost added to the budget).
        SendTooLate: the chain time is past `send_by` once the access list is read, nothing sent. With less
        than ACCESS_LIST_MIN_LEFT_S to `send_by`, no access list is asked for (it only saves gas, and on a
        loaded Anvil it took the last of the window: whole ticks were given up at the send)."""
        hurry = send_by is not None and send_by - self.now() < ACCESS_LIST_MIN_LEFT_S
        access = [] if hurry else await self.commit_access_list(batch, count)
        self._not_after(send_by)
        gas = None if self._estimate_next else (
            COMMIT_GAS_BASE + COMMIT_GAS_PER_HEADER_V2 * count + access_list_intrinsic(access))
        res = await self.commit_packed(batch, gas=gas, check=False, access=access)
        self._estimate_next = res.status != 1 and res.gas_used >= (gas or 0) > 0
        return res

    async def allow_operator(self, operator: str) -> TxResult:
        return await self.transact("allowOperator", to_checksum_address(operator))

    async def revoke_operator(self, operator: str) -> TxResult:
        return await self.transact("revokeOperator", to_checksum_address(operator))

    async def set_replication_factor(self, r: int) -> TxResult:
        return await self.transact("setReplicationFactor", r)

    async def register_node(self, node: str, url: str, randao_commit: bytes | str, *, check: bool = True) -> TxResult:
        return await self.transact("registerNode", to_checksum_address(node), url, b32(randao_commit), check=check)

    async def set_node_url(self, node: str, url: str) -> TxResult:
        return await self.transact("setNodeUrl", to_checksum_address(node), url)

    async def request_leave(self, node: str) -> TxResult:
        return await self.transact("requestLeave", to_checksum_address(node))

    async def evict_node(self, node: str, *, check: bool = True) -> TxResult:
        """Owner: `node` stops being active at the next epoch boundary (NodeEvicted)."""
        return await self.transact("evictNode", to_checksum_address(node), check=check)

    async def renew_onion(self, node: str, randao_commit: bytes | str, *, check: bool = True) -> TxResult:
        """Operator: a new onion top for `node`, usable from the next epoch (OnionRenewed)."""
        return await self.transact("renewOnion", to_checksum_address(node), b32(randao_commit), check=check)

    async def advance_epoch(self) -> TxResult:
        return await self.transact("advanceEpoch")

    async def create_stream(self, stream_id: bytes | str) -> TxResult:
        return await self.transact("createStream", b32(stream_id))

    async def replace_replica(self, stream_id: bytes | str, index: int, *, check: bool = True) -> TxResult:
        return await self.transact("replaceReplica", b32(stream_id), index, check=check)

    async def transfer_ownership(self, new_owner: str) -> TxResult:
        return await self.transact("transferOwnership", to_checksum_address(new_owner))

    async def accept_ownership(self) -> TxResult:
        return await self.transact("acceptOwnership")


def _topic_param(t: Any) -> Any:
    if t is None:
        return None
    if isinstance(t, (list, tuple)):
        return [_topic_param(x) for x in t]
    if isinstance(t, bytes):
        return "0x" + t.hex()
    return t


def _address_topic(addr: str) -> bytes:
    return b"\0" * 12 + hex_bytes(to_checksum_address(addr))


def _trim(topics: list[Any]) -> list[Any]:
    while topics and topics[-1] is None:
        topics.pop()
    return topics
