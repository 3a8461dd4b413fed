"""The committed headers of a registry, read from the chain alone (logs, views, calldata).

Used by `python -m node headers`, the explorer web page, and the node daemon (which can
ask `RegistryHistory.committed_header(header_hash, ...)` for the full Header of a commit).

How a header is recovered: `MiniblockCommitted` / `MiniblockRejected` logs are read in
bounded block chunks; for each, the transaction that emitted it is fetched and its calldata
decoded with the contract ABI (`commitMiniblocks(Header[] headers, bytes[][] signatures)`).
The log's headerHash is matched against `hash_header` of each decoded header (the contract
checks the headers in order and emits exactly one of the two events per header, so ties -- the
same header twice in one batch -- are broken by order).

What is verified for a committed header (docs/protocol.md, "Commit"):
- `hash`: hash_header(header from calldata) == the log's headerHash == headerHashAt(stream, number)
  (v1); on v2 (no hash per number) the header rebuilt from its packed record hashes to the hash the
  commit log holds, and that hash is proved committed by its history proof, built from the commit logs
  and checked both off-chain (v2.verify_history against commitCount / historyAcc / historyCheckpoint)
  and by the registry's verifyHeaderCommitted, at the pinned block (node/chain/history_v2.py);
- `parent`: prevHash == the hash of block number-1 (the previous commit seen, else headerHashAt),
  so the chain of parent hashes is unbroken back to the genesis hash of StreamCreated;
- `leader_signature`: signatures[0] recovers (EIP-712 domain from eip712Domain()) to header.leader;
- `attestations`: every signature recovers, to a replica of the stream (replicasOf at the commit's
  block), no signer twice; `quorum`: distinct replica signers (leader included) >= floor(r/2)+1.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from eth_utils.address import to_checksum_address

from node.chain.abi import AbiList, load_abi
from node.chain.calldata import NotACommitCall
from node.chain.deploy import parse_stream_id
from node.chain.history_v2 import (
    HistoryIndex,
    HistoryState,
    StreamEvent,
    StreamView,
    accepted_indices,
    event_key,
    rebuild,
)
from node.chain.logs import (
    HeadersCommitted,
    MiniblockCommitted,
    MiniblockRejected,
    RawLog,
    StreamCreated,
    expand_v2,
    reason_name,
)
from node.chain.registry import Registry
from node.chain.rpc import BlockId, RegistryError, run_sync
from node.protocol import v2
from node.protocol.eip712 import SignatureError, hash_header, recover_header_signer
from node.protocol.hexutil import bytes32, hx
from node.protocol.merkle import verify_proof
from node.protocol.types import ZERO32, Domain, Header

if TYPE_CHECKING:
    from web3 import Web3

__all__ = ["HeaderRecord", "HistoryError", "NotARegistry", "PageOutOfRange", "PlotPoint", "RegistryHistory",
           "RpcUnreachable", "Signer", "StreamInfo", "StreamPage", "Verification", "load_registry_abi",
           "parse_stream_id", "reason_name"]

NODE_STATUS = ("None", "Pending", "Active", "Leaving", "Left")

DEFAULT_CHUNK = 5_000          # blocks per eth_getLogs call (halved on a provider's range error)
DEFAULT_MAX_LOGS = 200_000     # a scan stops (truncated=True) past this many logs

T = TypeVar("T")


class HistoryError(RuntimeError):
    """The chain cannot be read, or what is read is not a registry."""


class RpcUnreachable(HistoryError):
    pass


class NotARegistry(HistoryError):
    pass


class PageOutOfRange(ValueError):
    """A page number past the last page of a stream's headers (at the pinned block)."""


@dataclass
class Signer:
    """One signature of a header: whom it recovers to, and whether it counts as an attestation."""

    index: int
    address: str | None
    error: str | None = None
    is_leader: bool = False
    is_replica: bool = False
    duplicate: bool = False

    @property
    def counted(self) -> bool:
        return self.address is not None and self.is_replica and not self.duplicate

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "address": self.address, "error": self.error,
            "is_leader": self.is_leader, "is_replica": self.is_replica,
            "duplicate": self.duplicate, "counted": self.counted,
        }


@dataclass
class Verification:
    """Each check is True/False, or None where it could not be made (said why in `problems`)."""

    hash: bool | None = None
    parent: bool | None = None
    leader_signature: bool | None = None
    attestations: bool | None = None
    quorum: bool | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(v is True for v in (self.hash, self.parent, self.leader_signature, self.attestations, self.quorum))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "hash": self.hash, "parent": self.parent,
            "leader_signature": self.leader_signature, "attestations": self.attestations,
            "quorum": self.quorum, "problems": list(self.problems),
        }


@dataclass
class HeaderRecord:
    """A header as the chain shows it: one MiniblockCommitted or MiniblockRejected log."""

    status: str                      # "committed" | "rejected"
    stream_id: bytes
    number: int
    header_hash: bytes
    tx_hash: bytes
    block_number: int
    log_index: int
    header: Header | None = None     # full header from the commit's calldata (None if not decodable)
    signatures: list[bytes] = field(default_factory=list)
    signers: list[Signer] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)
    leader: str | None = None
    prev_hash: bytes | None = None
    events_root: bytes | None = None
    event_count: int | None = None
    reason: int | None = None
    batch_size: int = 0
    batch_index: int | None = None
    tx_gas_used: int = 0
    block_timestamp: int | None = None
    verification: Verification | None = None
    commit_index: int | None = None  # v2: the commit transaction's commitIndex
    history_proof: v2.HistoryProof | None = None  # v2: the proof checked (built from the commit logs)
    proved_onchain: bool | None = None  # v2: the registry's verifyHeaderCommitted at the pinned block

    @property
    def attestations(self) -> int:
        """Distinct recovered signers that are replicas of the stream (the leader included)."""
        return sum(1 for s in self.signers if s.counted)

    @property
    def quorum(self) -> int:
        return len(self.replicas) // 2 + 1 if self.replicas else 0

    @property
    def gas_share(self) -> int:
        """The commit transaction's gas divided evenly over the headers of its batch."""
        return self.tx_gas_used // self.batch_size if self.batch_size else self.tx_gas_used

    @property
    def reason_name(self) -> str | None:
        return None if self.reason is None else reason_name(self.reason)

    def to_json(self) -> dict[str, Any]:
        h = self.header
        return {
            "status": self.status,
            "stream": hx(self.stream_id),
            "number": self.number,
            "headerHash": hx(self.header_hash),
            "leader": self.leader,
            "prevHash": None if self.prev_hash is None else hx(self.prev_hash),
            "eventsRoot": None if self.events_root is None else hx(self.events_root),
            "eventCount": self.event_count,
            "epoch": h.epoch if h else None,
            "attempt": h.attempt if h else None,
            "randaoReveal": hx(h.randao_reveal) if h else None,
            "stateRoot": hx(h.state_root) if h else None,
            "signatures": len(self.signatures),
            "attestations": self.attestations,
            "quorum": self.quorum,
            "replicas": list(self.replicas),
            "signers": [s.to_json() for s in self.signers],
            "reason": self.reason,
            "reasonName": self.reason_name,
            "txHash": hx(self.tx_hash),
            "blockNumber": self.block_number,
            "blockTimestamp": self.block_timestamp,
            "logIndex": self.log_index,
            "batchSize": self.batch_size,
            "batchIndex": self.batch_index,
            "txGasUsed": self.tx_gas_used,
            "gasShare": self.gas_share,
            "verification": None if self.verification is None else self.verification.to_json(),
            "commitIndex": self.commit_index,
            "historyProof": None if self.history_proof is None else _proof_json(self.history_proof),
            "provedOnChain": self.proved_onchain,
        }


def _proof_json(p: v2.HistoryProof) -> dict[str, Any]:
    return {"commitIndex": p.commit_index, "position": p.position, "headerHashes": [hx(h) for h in p.header_hashes],
            "prevAcc": hx(p.prev_acc), "laterRoots": [hx(r) for r in p.later_roots]}


@dataclass
class StreamInfo:
    stream_id: bytes
    head_number: int
    head_hash: bytes
    head_timestamp: int
    replicas: list[str]
    genesis_hash: bytes
    created_block: int | None = None
    created_epoch: int | None = None
    creator: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": hx(self.stream_id), "headNumber": self.head_number,
            "headHash": hx(self.head_hash), "headTimestamp": self.head_timestamp,
            "replicas": self.replicas, "genesisHash": hx(self.genesis_hash),
            "createdBlock": self.created_block, "createdEpoch": self.created_epoch,
            "creator": self.creator,
        }


@dataclass
class PlotPoint:
    """One committed header for the stream page's plot: when, how many events, what it cost."""

    number: int
    block_number: int
    timestamp: int
    event_count: int
    gas_share: int

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "blockNumber": self.block_number, "timestamp": self.timestamp,
                "eventCount": self.event_count, "gasShare": self.gas_share}


@dataclass
class StreamPage:
    """One page of a stream's headers, newest first, every part read at the same chain block `at`.

    Page 0 holds the newest `size` headers (committed and rejected, in reverse chain order); page k the
    `size` before those. `summary` is the whole-chain verdict (chain_summary) at `at`, so the page and its
    verdict never disagree about where the head is.
    """

    stream_id: bytes
    at: int
    page: int
    size: int
    total: int
    records: list[HeaderRecord]
    summary: dict[str, Any]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def has_older(self) -> bool:
        return self.page + 1 < self.pages

    @property
    def has_newer(self) -> bool:
        return self.page > 0

    def to_json(self) -> dict[str, Any]:
        return {"stream": hx(self.stream_id), "at": self.at, "page": self.page, "size": self.size,
                "total": self.total, "pages": self.pages, "hasOlder": self.has_older, "hasNewer": self.has_newer,
                "summary": self.summary, "headers": [r.to_json() for r in self.records]}


def load_registry_abi() -> AbiList:
    """The registry's ABI, from the compiled artifact (compiled once, then cached)."""
    return load_abi(None)


CommitTx = tuple[list[tuple[Header, list[bytes]]] | None, int, str | None]  # (pairs, gasUsed, why not decoded)


class RegistryHistory:
    """Read-only view of one registry's committed history (its RPC, views and logs: node.chain.registry)."""

    def __init__(
        self,
        w3: Web3 | str | Registry,
        address: str,
        abi: AbiList | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        max_logs: int = DEFAULT_MAX_LOGS,
        timeout: float = 60.0,
    ) -> None:
        if isinstance(w3, Registry):
            self.reg = w3
        else:
            self.reg = Registry(w3, address, abi if abi is not None else load_registry_abi(), timeout=timeout)
        self.chunk_size = max(1, chunk_size)
        self.max_logs = max_logs
        self.truncated = False
        self._use(self.reg)
        self._tx_cache: dict[bytes, CommitTx] = {}
        # v2: each commit transaction's packed batch (None: not a direct call) and accepted bitmap, its
        # expansion into one MiniblockCommitted per accepted record; the views of one pinned block
        self._v2_batches: dict[bytes, bytes | None] = {}
        self._v2_accepted: dict[bytes, int] = {}
        self._v2_expanded: dict[tuple[bytes, int], list[MiniblockCommitted]] = {}
        self._v2_genesis: dict[bytes, bytes] = {}
        self._v2_states: dict[int, HistoryState] = {}
        self._v2_indexes: dict[int, tuple[list[HeadersCommitted], HistoryIndex]] = {}  # by pinned block
        self._v2_views: dict[tuple[bytes, int], StreamView] = {}
        self._gas: dict[bytes, int] = {}
        self._replicas_cache: dict[tuple[bytes, int | str], list[str]] = {}
        self._replaced: dict[bytes, bool] = {}
        # stream -> (last block scanned, its hash, the stream's MiniblockCommitted/Rejected logs up to there):
        # a long-lived explorer scans only the blocks mined since its last page; a reorganisation at or below
        # the last block scanned changes that block's hash and the stream is scanned again.
        self._stream_logs: dict[bytes, tuple[int, bytes, list[RawLog]]] = {}
        self._logs_lock = threading.Lock()
        self._tip = -1  # the newest chain block seen (pin, settle); views below it are settled

    def _use(self, reg: Registry) -> None:
        """Read through `reg` (its ABI says which registry version it speaks)."""
        self.reg = reg
        self.address = reg.address
        self.abi = reg.abi
        self.version = reg.version
        core = reg.core
        self.topic_committed = core.topic("MiniblocksCommitted" if self.version == 2 else "MiniblockCommitted")
        self.topic_rejected = core.topic("MiniblockRejected")
        self.topic_stream_created = core.topic("StreamCreated")
        self.topic_replica_replaced = core.topic("ReplicaReplaced")

    @property
    def w3(self) -> Web3:
        return self.reg.w3

    # ---- connecting -------------------------------------------------------------------------

    @classmethod
    def connect(
        cls, rpc_url: str, address: str, abi: AbiList | None = None, *, timeout: float = 10.0, **kw: Any
    ) -> RegistryHistory:
        """Open an RPC URL and check that `address` is a registry; raises RpcUnreachable / NotARegistry."""
        try:
            checksum = to_checksum_address(address)
        except ValueError as exc:
            probe = Registry(rpc_url, "0x" + "00" * 20, abi if abi is not None else load_registry_abi(),
                             timeout=timeout)
            _reachable(probe, rpc_url)
            raise NotARegistry(f"{address!r} is not an address") from exc
        hist = cls(rpc_url, checksum, abi, timeout=timeout, **kw)
        _reachable(hist.reg, rpc_url)
        hist.check_registry()
        return hist

    def check_registry(self) -> None:
        code = self.reg.code_at()
        if not code:
            raise NotARegistry(f"no contract at {self.address} on chain {self.chain_id}")
        try:
            dom = self.domain
            self.reg.stream_count()
        except Exception as exc:  # noqa: BLE001 -- another contract answers anything: reverts, or data eth-abi rejects
            raise NotARegistry(f"{self.address} is not a MiniblockRegistry (its views do not answer: {exc})") from exc
        if dom.name != "MiniblockRegistry":
            raise NotARegistry(f"{self.address} is not a MiniblockRegistry (EIP-712 name {dom.name!r})")
        version = int(dom.version) if dom.version in ("1", "2") else 0
        if not version:
            raise NotARegistry(f"{self.address}: unknown registry version {dom.version!r} (its eip712Domain)")
        if version != self.version:  # speak the version the chain has, as the node does
            self._use(Registry(self.reg.w3_or_url, self.address, load_abi(None, version),
                               timeout=self.reg.core.rpc.timeout))
            self.domain = dom

    # ---- views ------------------------------------------------------------------------------

    @cached_property
    def chain_id(self) -> int:
        return self.reg.chain_id()

    @cached_property
    def domain(self) -> Domain:
        """The EIP-712 domain exactly as the contract reports it (EIP-5267)."""
        return self.reg.domain()

    def pin(self) -> int:
        """The chain block every read of one page or command run is made at (the latest, now).

        Logs are read up to it and views at it, so a chain that grows meanwhile cannot make the
        logs seen and the head read disagree (a false "commits do not reach the head"). Every view at
        a block goes through `settled`."""
        self._tip = self.reg.block_number()
        return self._tip

    def settled(self, block: BlockId, read: Callable[[BlockId], T]) -> T:
        """`read(block)` (a view), as the state of that block, even while it is the chain's newest.

        A node may answer a view at its newest block from its live state, and while the next block is
        being mined that state already holds it: Anvil's eth_call at the tip number waits for the miner's
        database lock, then reads the database the new block was just written to (so a head read "at" the
        pin was once one commit past the logs up to it). A block below the tip is answered from the state
        stored for it. So a view read while `block` was the tip is read again if the chain has moved past
        it meanwhile; a block below a tip already seen costs no check."""
        if not isinstance(block, int) or block < self._tip:
            return read(block)
        out = read(block)
        self._tip = max(self._tip, self.reg.block_number())
        return read(block) if block < self._tip else out

    def stream_exists(self, stream_id: bytes, block: BlockId = "latest") -> bool:
        return self.settled(block, lambda b: self.reg.stream_exists(stream_id, b))

    def head_of(self, stream_id: bytes, block: BlockId = "latest") -> tuple[int, bytes, int]:
        number, h, ts = self.settled(block, lambda b: self.reg.stream_head(stream_id, b))
        return number, h, ts

    def header_hash_at(self, stream_id: bytes, number: int, block: BlockId = "latest") -> bytes:
        return self.settled(block, lambda b: self.reg.header_hash_at(stream_id, number, b))

    def _forget_latest(self) -> None:
        """Drop what may have changed since the last query (a long-lived explorer sees new replacements)."""
        self._replaced.clear()
        self._replicas_cache = {k: v for k, v in self._replicas_cache.items() if isinstance(k[1], int)}

    def _never_replaced(self, stream_id: bytes) -> bool:
        """No ReplicaReplaced log for the stream (so far): its replica list is the one it was created with."""
        if stream_id not in self._replaced:
            self._replaced[stream_id] = bool(self.iter_logs([self.topic_replica_replaced, stream_id], limit=1))
        return not self._replaced[stream_id]

    def replicas_of(self, stream_id: bytes, block: BlockId = "latest") -> list[str]:
        """The stream's replica list as of `block` (the end of it); one view call per stream when it never changed
        (read at `block` all the same: "latest" may already hold a replacement being mined)."""
        key: tuple[bytes, int | str] = (stream_id, block)
        if isinstance(block, int) and self._never_replaced(stream_id):
            key = (stream_id, "latest")
        if key in self._replicas_cache:
            return self._replicas_cache[key]
        try:
            out = self.settled(block, lambda b: self.reg.replicas_of(stream_id, b))
        except RegistryError:
            if block == "latest":
                raise
            # A node that keeps no history: the replica set as of now is the best answer.
            out = self.reg.replicas_of(stream_id)
        self._replicas_cache[key] = out
        return out

    def stream_ids(self, block: BlockId = "latest") -> list[bytes]:
        return self.settled(block, self.reg.stream_ids)

    def nodes(self, block: BlockId = "latest") -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for n in self.settled(block, self.reg.nodes):
            status = int(n.status)
            out.append({
                "node": n.address, "operator": n.operator, "url": n.url,
                "status": NODE_STATUS[status] if 0 <= status < len(NODE_STATUS) else str(status),
                "joinEpoch": n.join_epoch, "leaveEpoch": n.leave_epoch, "randaoCommit": hx(n.randao_commit),
            })
        return out

    def overview(self, at: int | None = None) -> dict[str, Any]:
        """Chain, epoch, seed, parameters and nodes, every view read at block `at` (default: pinned now)."""
        r = self.reg
        at = self.pin() if at is None else at
        p = r.params()
        return {
            "chainId": self.chain_id,
            "registry": self.address,
            "blockNumber": at,
            "epoch": self.settled(at, r.current_epoch),
            "seed": hx(self.settled(at, r.current_seed)),
            "randaoMix": hx(self.settled(at, r.randao_mix)),
            "epochLength": p["epoch_length"],
            "leaderTimeout": p["leader_timeout"],
            "replicationFactor": p["replication_factor"],
            "genesisTime": p["genesis_time"],
            "domain": {"name": self.domain.name, "version": self.domain.version,
                       "chainId": self.domain.chain_id, "verifyingContract": self.domain.verifying_contract},
            "nodes": self.nodes(at),
            "streamCount": self.settled(at, r.stream_count),
        }

    def streams(self, at: int | None = None) -> list[StreamInfo]:
        """Every stream with its head, read at block `at` (default: pinned now)."""
        self._forget_latest()
        at = self.pin() if at is None else at
        created = {c["stream_id"]: c for c in self.stream_created(to_block=at)}
        out = []
        for sid in self.stream_ids(at):
            number, h, ts = self.head_of(sid, at)
            c = created.get(sid, {})
            out.append(StreamInfo(
                stream_id=sid, head_number=number, head_hash=h, head_timestamp=ts,
                replicas=self.replicas_of(sid, at),
                genesis_hash=c.get("genesis_hash", ZERO32) if self.version == 2 else self.header_hash_at(sid, 0, at),
                created_block=c.get("block_number"), created_epoch=c.get("epoch"), creator=c.get("creator"),
            ))
        return out

    def verify_inclusion(
        self, header: Header, proof: Sequence[bytes], index: int, event_hash: bytes, block: BlockId = "latest",
    ) -> dict[str, Any]:
        """An event's inclusion in a committed header, checked twice: the contract's verifyInclusion
        (eth_call) and node/protocol/merkle.verify_proof against the header's eventsRoot (plus the
        header hash the contract stores at its number), both at chain block `block`.

        On v2 the header's committed-ness is its history proof (built from the commit logs up to `block`):
        verifyInclusion takes it, and off-chain it is checked against the history views at `block`."""
        proof = [bytes(p) for p in proof]
        onchain: bool | None
        error = None
        history: v2.HistoryProof | None = None
        if self.version == 2:
            at = self.pin() if not isinstance(block, int) else block
            history, committed = self._v2_proof(header, at)
            block = at
        else:
            committed = self.header_hash_at(header.stream_id, header.number, block) == hash_header(header)
        try:
            if self.version == 2 and history is None:
                onchain, error = False, "the header is not in the commit logs: no history proof"
            else:
                onchain = self.settled(block, lambda b: self.reg.verify_inclusion(header, proof, index, event_hash, b,
                                                                                  history))
        except Exception as exc:  # noqa: BLE001 -- any input the page passes: an index that does not fit uint256, ...
            onchain, error = None, str(exc)
        offchain = verify_proof(header.events_root, header.event_count, index, event_hash, proof)
        return {"onchain": onchain, "offchain": offchain, "offchainCommitted": committed,
                "offchainValid": offchain and committed, "error": error,
                "committedBy": "historyProof" if self.version == 2 else "headerHashAt"}

    # ---- logs -------------------------------------------------------------------------------

    @cached_property
    def deploy_block(self) -> int:
        """The first block where the registry has code (binary search; 0 on a node without history)."""
        latest = self.reg.block_number()
        try:
            if not self.reg.code_at(block=0):
                lo, hi = 0, latest  # no code at lo, code at hi
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self.reg.code_at(block=mid):
                        hi = mid
                    else:
                        lo = mid
                return hi
            return 0
        except RegistryError:
            return 0

    def iter_logs(
        self, topics: list[Any], from_block: int | None = None, to_block: int | None = None, *,
        limit: int | None = None,
    ) -> list[RawLog]:
        """The registry's logs over [from_block, to_block] (chunked by the client; a provider's range or size
        error halves the chunk); past max_logs the scan stops and `truncated` is set."""
        start = self.deploy_block if from_block is None else max(0, from_block)
        cap = self.max_logs + 1 if limit is None else min(limit, self.max_logs + 1)
        logs = self.reg.raw_logs(start, "latest" if to_block is None else to_block, topics,
                                 chunk=self.chunk_size, limit=cap)
        if len(logs) > self.max_logs:
            self.truncated = True
            logs = logs[: self.max_logs]
        return logs

    def stream_created(self, stream_id: bytes | None = None, to_block: int | None = None) -> list[dict[str, Any]]:
        topics: list[Any] = [self.topic_stream_created]
        if stream_id is not None:
            topics.append(stream_id)
        out = []
        for c in self.reg.decode_logs(self.iter_logs(topics, to_block=to_block)):
            if not isinstance(c, StreamCreated):
                continue
            out.append({
                "stream_id": c.stream_id, "creator": c.creator, "epoch": c.epoch, "replicas": list(c.replicas),
                "genesis_hash": c.genesis_hash, "block_number": c.block_number, "tx_hash": c.tx_hash,
            })
        return out

    def _decode_commit_tx(self, tx_hash: bytes) -> CommitTx:
        """The (header, signatures) pairs of a commit transaction, its gas used, and why decoding failed."""
        if tx_hash in self._tx_cache:
            return self._tx_cache[tx_hash]
        gas_used = self.reg.receipt(tx_hash).gas_used
        pairs: list[tuple[Header, list[bytes]]] | None = None
        err: str | None = None
        try:
            pairs = self.reg.commit_call(tx_hash)
        except NotACommitCall as exc:
            err = f"{exc}: calldata not decoded"
        if len(self._tx_cache) >= 50_000:   # bounded: a long-lived explorer on a long chain
            self._tx_cache.clear()
        self._tx_cache[tx_hash] = (pairs, gas_used, err)
        return pairs, gas_used, err

    def _timestamp(self, block_number: int) -> int:
        return self.reg.block_time(block_number)

    def _records_from_logs(self, logs: list[RawLog]) -> list[HeaderRecord]:
        """v1: the records of MiniblockCommitted/MiniblockRejected logs, their headers from the calldata."""
        events = sorted(self.reg.decode_logs(logs), key=lambda e: (e.block_number, e.log_index))
        return self._records_from_events([e for e in events if isinstance(e, (MiniblockCommitted, MiniblockRejected))])

    def _records_from_events(self, events: Sequence[StreamEvent], at: int | None = None) -> list[HeaderRecord]:
        """The records of commits and rejections in chain order (v2: `at` is the block they were read at)."""
        if self.version == 2:
            assert at is not None
            return self._records_v2(events, at)
        records: list[HeaderRecord] = []
        # The contract emits one event per header, in batch order: consume the calldata
        # entries in order, matched by headerHash.
        consumed: dict[bytes, set[int]] = {}
        for ev in events:
            if not isinstance(ev, (MiniblockCommitted, MiniblockRejected)):
                continue
            committed = isinstance(ev, MiniblockCommitted)
            rec = HeaderRecord(
                status="committed" if committed else "rejected",
                stream_id=ev.stream_id, number=ev.number, header_hash=ev.header_hash,
                tx_hash=ev.tx_hash, block_number=ev.block_number, log_index=ev.log_index,
                reason=ev.reason if isinstance(ev, MiniblockRejected) else None,
            )
            if isinstance(ev, MiniblockCommitted):
                rec.leader = ev.leader
                rec.prev_hash, rec.events_root = ev.prev_hash, ev.events_root
                rec.event_count = ev.event_count
            rec.verification = Verification()
            pairs, gas_used, err = self._decode_commit_tx(ev.tx_hash)
            rec.tx_gas_used = gas_used
            rec.block_timestamp = self._timestamp(rec.block_number)
            if pairs is None:
                rec.batch_size = 1
                rec.verification.problems.append(err or "calldata not decoded")
            else:
                rec.batch_size = len(pairs)
                used = consumed.setdefault(ev.tx_hash, set())
                idx = next((i for i, (h, _) in enumerate(pairs)
                            if i not in used and hash_header(h) == rec.header_hash), None)
                if idx is None:
                    rec.verification.problems.append(
                        "no header in the commit's calldata hashes to the log's headerHash")
                else:
                    used.add(idx)
                    rec.batch_index = idx
                    rec.header, rec.signatures = pairs[idx]
                    h = rec.header
                    rec.leader, rec.prev_hash, rec.events_root, rec.event_count = (
                        h.leader, h.prev_hash, h.events_root, h.event_count)
            records.append(rec)
        return records

    def _records_v2(self, events: Sequence[StreamEvent], at: int) -> list[HeaderRecord]:
        """v2: each commit or rejection with its header rebuilt from its transaction's packed record (the
        leader from the replica list at the commit's block, the reveal from the table, prevHash[0:18] from
        the head it was checked against) and kept only if it hashes to the logged hash."""
        self._v2_fetch([e.tx_hash for e in events])
        consumed: dict[bytes, set[int]] = {}
        records: list[HeaderRecord] = []
        for ev in events:
            committed = isinstance(ev, MiniblockCommitted)
            rec = HeaderRecord(
                status="committed" if committed else "rejected", stream_id=ev.stream_id, number=ev.number,
                header_hash=ev.header_hash, tx_hash=ev.tx_hash, block_number=ev.block_number,
                log_index=ev.log_index, reason=ev.reason if isinstance(ev, MiniblockRejected) else None,
                verification=Verification(),
            )
            assert rec.verification is not None
            rec.tx_gas_used = self._gas_used(ev.tx_hash)
            rec.block_timestamp = self._timestamp(rec.block_number)
            batch = self._v2_batch(ev.tx_hash)
            if batch is None:
                rec.batch_size = 1
                rec.verification.problems.append("the commit was not a direct call to the registry: input not decoded")
                records.append(rec)
                continue
            reveals, recs = v2.decode_batch(batch)
            rec.batch_size = len(recs)
            accepted = accepted_indices(self._v2_accepted.get(ev.tx_hash, 0), len(recs))
            if isinstance(ev, MiniblockCommitted):
                rec.commit_index = ev.commit_index
                rec.event_count, rec.events_root = ev.event_count, ev.events_root
                cands = [accepted[ev.position]] if ev.position < len(accepted) else []
            else:
                cands = [i for i, r in enumerate(recs) if i not in accepted
                         and r.stream_id == ev.stream_id and r.number == ev.number]
            used = consumed.setdefault(ev.tx_hash, set())
            try:
                replicas = self.replicas_of(ev.stream_id, ev.block_number)
            except RegistryError:
                replicas = []
            heads = self._v2_view(ev.stream_id, at).heads_for(ev)
            for i in cands:
                if i in used:
                    continue
                h = rebuild(recs[i], replicas, reveals, heads, ev.header_hash, rejected=not committed)
                if h is not None:
                    used.add(i)
                    rec.batch_index = i
                    rec.header, rec.signatures = h, v2.record_signatures(recs[i])
                    rec.leader, rec.prev_hash, rec.events_root, rec.event_count = (
                        h.leader, h.prev_hash, h.events_root, h.event_count)
                    break
            else:
                rec.verification.problems.append(
                    "no record of the commit's input rebuilds to a header with the logged headerHash")
            records.append(rec)
        return records

    def _gas_used(self, tx_hash: bytes) -> int:
        if tx_hash not in self._gas:
            if len(self._gas) >= 50_000:
                self._gas.clear()
            self._gas[tx_hash] = self.reg.receipt(tx_hash).gas_used
        return self._gas[tx_hash]

    def _check_signatures(self, rec: HeaderRecord) -> None:
        """Recover every signature under the registry's domain; fill signers and the signature checks."""
        v = rec.verification
        assert v is not None
        try:
            rec.replicas = self.replicas_of(rec.stream_id, rec.block_number)
        except RegistryError as exc:
            v.problems.append(f"replicas not readable: {exc}")
            rec.replicas = []
        if rec.header is None:
            return
        replicas = set(rec.replicas)
        seen: set[str] = set()
        rec.signers = []
        for i, sig in enumerate(rec.signatures):
            try:
                addr: str | None = recover_header_signer(self.domain, rec.header, sig)
                error = None
            except SignatureError as exc:
                addr, error = None, str(exc)
            s = Signer(index=i, address=addr, error=error)
            if addr is not None:
                s.is_leader = addr == rec.header.leader
                s.is_replica = addr in replicas
                s.duplicate = addr in seen
                seen.add(addr)
            rec.signers.append(s)
        if not rec.signers:
            v.leader_signature = False
            v.problems.append("no signatures")
        else:
            first = rec.signers[0]
            v.leader_signature = first.address is not None and first.is_leader
            if not v.leader_signature:
                v.problems.append(f"signature 0 recovers to {first.address or first.error}, "
                                  f"not the leader {rec.header.leader}")
        bad = [s for s in rec.signers if s.address is None or not s.is_replica or s.duplicate]
        v.attestations = bool(rec.signers) and not bad
        for s in bad:
            why = s.error if s.address is None else (
                "a duplicate signer" if s.duplicate else f"{s.address} is not a replica")
            v.problems.append(f"signature {s.index}: {why}")
        v.quorum = bool(rec.replicas) and rec.attestations >= rec.quorum
        if not v.quorum:
            v.problems.append(f"{rec.attestations} distinct replica signers, quorum is {rec.quorum}")

    def headers(
        self,
        stream_id: bytes | None = None,
        from_number: int = 0,
        *,
        from_block: int | None = None,
        to_block: int | None = None,
        include_rejected: bool = True,
        verify: bool = True,
    ) -> list[HeaderRecord]:
        """Every committed (and rejected) header in the block range, oldest first, verified.

        Logs are read up to `to_block` and the views of the checks at `to_block` (default: the block
        pinned now), so pass the same block to chain_summary(at=) for a verdict that agrees."""
        self._forget_latest()
        at = self.pin() if to_block is None else to_block
        if self.version == 2:
            sids = [stream_id] if stream_id is not None else self.stream_ids(at)
            evs = sorted((e for sid in sids for e in self.stream_events(sid, at)
                          if (include_rejected or isinstance(e, MiniblockCommitted))
                          and (from_block is None or e.block_number >= from_block)), key=event_key)
            records = self._records_from_events(evs, at)
        else:
            topic0 = [self.topic_committed, self.topic_rejected] if include_rejected else self.topic_committed
            topics: list[Any] = [topic0]
            if stream_id is not None:
                topics.append(stream_id)
            records = self._records_from_logs(self.iter_logs(topics, from_block, at))
        records = [r for r in records if r.number >= from_number]
        if verify:
            self._verify(records, at)
        return records

    def _verify(self, records: list[HeaderRecord], block: BlockId = "latest") -> None:
        if self.version == 2:
            assert isinstance(block, int)
            self._verify_v2(records, block)
            return
        last_hash: dict[bytes, tuple[int, bytes]] = {}  # stream -> (number, hash) of the last commit seen
        for rec in records:
            v = rec.verification
            assert v is not None
            self._check_signatures(rec)
            if rec.status != "committed":
                continue
            # hash: the calldata header, the log and the contract's storage agree
            onchain = self.header_hash_at(rec.stream_id, rec.number, block)
            v.hash = onchain == rec.header_hash and rec.header is not None
            if onchain != rec.header_hash:
                v.problems.append(f"headerHashAt({rec.number}) is {hx(onchain)}, "
                                  f"the log says {hx(rec.header_hash)}")
            # parent: the previous commit seen of this stream, else what the chain stores at number-1
            prev = last_hash.get(rec.stream_id)
            if prev is not None and prev[0] == rec.number - 1:
                expected = prev[1]
            elif rec.number >= 1:
                expected = self.header_hash_at(rec.stream_id, rec.number - 1, block)
                if expected == ZERO32:
                    v.problems.append(f"no header stored at number {rec.number - 1}")
            else:
                expected = None
            v.parent = expected is not None and rec.prev_hash == expected and expected != ZERO32
            if expected is not None and rec.prev_hash != expected:
                v.problems.append(f"prevHash {hx(rec.prev_hash or ZERO32)} != hash of block {rec.number - 1} "
                                  f"{hx(expected)}")
            last_hash[rec.stream_id] = (rec.number, rec.header_hash)

    def _verify_v2(self, records: list[HeaderRecord], at: int) -> None:
        """v2's checks of each record shown: its signatures (as v1), and for a commit `hash` (the rebuilt
        header hashes to the logged hash, whose history proof holds off-chain and by the registry's
        verifyHeaderCommitted at `at`: one eth_call per commit shown) and `parent` (prevHash is the
        committed hash at number - 1, the genesis hash for 1, from the logs)."""
        for rec in records:
            v = rec.verification
            assert v is not None
            self._check_signatures(rec)
            if rec.status != "committed":
                continue
            view = self._v2_view(rec.stream_id, at)
            proof = offchain = None
            if rec.header is not None and rec.commit_index is not None:
                proof, offchain = self._v2_proof(rec.header, at)
            rec.history_proof = proof
            if proof is None:
                v.problems.append("no history proof can be built from the commit logs")
            else:
                header = rec.header
                assert header is not None
                rec.proved_onchain = self._verify_committed(header, proof, at)
                if not offchain:
                    v.problems.append(f"the history proof of commit {proof.commit_index} does not hold against "
                                      f"historyAcc / historyCheckpoint at block {at}")
                if not rec.proved_onchain:
                    v.problems.append("the registry's verifyHeaderCommitted rejects the header with its proof")
            v.hash = bool(rec.header is not None and offchain and rec.proved_onchain)
            expected = view.hash_at.get(rec.number - 1) if rec.number >= 1 else None
            if expected is None or expected == ZERO32:
                v.problems.append(f"no header committed at number {rec.number - 1} in the logs")
            v.parent = expected is not None and expected != ZERO32 and rec.prev_hash == expected
            if expected is not None and rec.prev_hash != expected:
                v.problems.append(f"prevHash {hx(rec.prev_hash or ZERO32)} != hash of block {rec.number - 1} "
                                  f"{hx(expected)}")

    def _verify_committed(self, header: Header, proof: v2.HistoryProof, at: int) -> bool:
        """v2: the registry's verifyHeaderCommitted(header, proof) at block `at`."""
        return self.settled(at, lambda b: self.reg.verify_header_committed(header, proof, b))

    def chain_summary(
        self, stream_id: bytes, records: list[HeaderRecord] | None = None, *, at: int | None = None,
    ) -> dict[str, Any]:
        """Whether a stream's committed headers form one unbroken parent chain from genesis to its head.

        Everything is read at chain block `at` (default: pinned now): the MiniblockCommitted logs up to
        it (their headerHash and prevHash), the head and the genesis hash at it. `records` (verified
        headers, e.g. one page) only feed `headersOk`; None when no records were given.

        On v2 the genesis hash is StreamCreated's (hash_header(genesis) must match), each commit's
        prevHash is the previous head's first 18 bytes and its record's 14 (they must be that head's),
        and the head is checked with the head slot's 20-byte prefix and `isHead` at `at`."""
        at = self.pin() if at is None else at
        v2_reg = self.version == 2
        commits = [c for c in self.stream_events(stream_id, at) if isinstance(c, MiniblockCommitted)]
        created = self.stream_created(stream_id, to_block=at)
        genesis = created[0]["genesis_hash"] if v2_reg and created else (
            ZERO32 if v2_reg else self.header_hash_at(stream_id, 0, at))
        stored = "" if v2_reg else ", headerHashAt(0)"
        problems = []
        genesis_ok = True
        if created:
            c = created[0]
            expect = hash_header(Header.genesis(stream_id, c["epoch"]))
            if not (c["genesis_hash"] == genesis == expect):
                genesis_ok = False
                problems.append(f"genesis hash differs between StreamCreated{stored} and hash_header(genesis)")
        else:
            problems.append("no StreamCreated log found")
            genesis_ok = genesis != ZERO32
        head_number, head_hash, _ = self.head_of(stream_id, at)
        prev = genesis
        contiguous = True
        for expected_n, cm in enumerate(commits, start=1):
            if cm.number != expected_n:
                contiguous = False
                problems.append(f"missing commit of number {expected_n}")
                break
            if cm.resolved([], prev).prev_hash != prev:
                contiguous = False
                problems.append(f"block {cm.number}: prevHash does not match block {cm.number - 1}")
                break
            prev = cm.header_hash
        at_head = contiguous and (commits[-1].number if commits else 0) == head_number
        if v2_reg:
            at_head = at_head and v2.head_prefix(prev) == head_hash[:20] and (
                head_number == 0 or self.settled(at, lambda b: self.reg.is_head(stream_id, head_number, prev, b)))
            if at_head:
                head_hash = prev   # the full hash: the head slot keeps its first 20 bytes
        else:
            at_head = at_head and prev == head_hash
        if contiguous and not at_head:
            problems.append("the commits seen do not reach the stream head")
        headers_ok: bool | None = None
        if records is not None:
            headers_ok = all(r.verification is not None and r.verification.ok
                             for r in records if r.stream_id == stream_id and r.status == "committed")
            if not headers_ok:
                problems.append("a header fails its checks")
        chain_ok = genesis_ok and contiguous and at_head
        return {
            "stream": hx(stream_id), "at": at, "genesisHash": hx(genesis), "genesisOk": genesis_ok,
            "headNumber": head_number, "headHash": hx(head_hash), "commits": len(commits),
            "chainOk": chain_ok, "headersOk": headers_ok,
            "ok": chain_ok and headers_ok is not False, "problems": problems,
        }

    # ---- pages, newest first (the explorer and `headers`) -----------------------------------

    def stream_header_logs(self, stream_id: bytes, at: int) -> list[RawLog]:
        """The stream's MiniblockCommitted and MiniblockRejected logs up to block `at`, in chain order (v1;
        on v2 the stream's MiniblockRejected logs: its commits are in the per-transaction commit logs,
        `commit_logs`)."""
        if self.version == 2:
            return self._cached_logs(stream_id, [self.topic_rejected, stream_id], at)
        return self._cached_logs(stream_id, [[self.topic_committed, self.topic_rejected], stream_id], at)

    def commit_logs(self, at: int) -> list[RawLog]:
        """v2: every MiniblocksCommitted log up to block `at` (one per commit transaction, of every stream)."""
        return self._cached_logs(b"", [self.topic_committed], at)

    def _cached_logs(self, key: bytes, topics: list[Any], at: int) -> list[RawLog]:
        """The logs matching `topics` up to block `at`, in chain order.

        Cached per key: a later call scans only the blocks after the last one scanned, once the hash of
        that block shows that the chain up to it is still the one scanned (else it is scanned again)."""
        with self._logs_lock:
            upto, upto_hash, logs = self._stream_logs.get(key, (self.deploy_block - 1, b"", []))
            if upto_hash and self._hash_of(upto) != upto_hash:
                upto, logs = self.deploy_block - 1, []      # reorganised at or below `upto`: scan again
                self._v2_views.clear()
                self._v2_indexes.clear()
            if at > upto:
                for _ in range(3):
                    at_hash = self._hash_of(at)
                    new = self.iter_logs(topics, upto + 1, at)
                    if self._hash_of(at) == at_hash:       # no reorganisation during the scan
                        break
                else:
                    raise HistoryError(f"block {at} kept changing while its logs were read (reorganisations)")
                logs = logs + new
                if len(logs) <= self.max_logs and at_hash:
                    self._stream_logs[key] = (at, at_hash, logs)
                upto = at
        if at < upto:
            logs = [lg for lg in logs if lg.block_number <= at]
        return logs

    def stream_events(self, stream_id: bytes, at: int) -> list[StreamEvent]:
        """The stream's commits and rejections up to block `at`, in chain order (on v2 one
        MiniblockCommitted per accepted record of each commit transaction, its leader and prevHash unset)."""
        if self.version == 2:
            return self._v2_view(stream_id, at).events
        return sorted((e for e in self.reg.decode_logs(self.stream_header_logs(stream_id, at))
                       if isinstance(e, (MiniblockCommitted, MiniblockRejected))),
                      key=lambda e: (e.block_number, e.log_index))

    def header_count(self, stream_id: bytes, at: int) -> int:
        """How many headers (committed and rejected) the stream has up to block `at` (the live poll)."""
        return len(self.stream_events(stream_id, at))

    # ---- v2: commits from the per-transaction logs and the inputs ----------------------------

    def _v2_commits(self, at: int) -> list[HeadersCommitted]:
        return self._v2_history(at)[0]

    def _v2_history(self, at: int) -> tuple[list[HeadersCommitted], HistoryIndex]:
        """The commit logs up to `at`, decoded, and their index by commit (once per pinned block)."""
        logs = self.commit_logs(at)
        got = self._v2_indexes.get(at)
        if got is None or len(got[0]) != len(logs):   # a reorganisation rescanned: decode again
            commits = [e for e in self.reg.decode_logs(logs) if isinstance(e, HeadersCommitted)]
            if len(self._v2_indexes) >= 16:
                self._v2_indexes.clear()
            got = self._v2_indexes[at] = (commits, HistoryIndex.of(commits))
        return got

    def _v2_batch(self, tx_hash: bytes) -> bytes | None:
        """A v2 commit transaction's packed batch (None if it is not a direct call), fetched once."""
        if tx_hash not in self._v2_batches:
            self._v2_fetch([tx_hash])
        return self._v2_batches[tx_hash]

    def _v2_fetch(self, tx_hashes: Sequence[bytes]) -> None:
        missing = list(dict.fromkeys(t for t in tx_hashes if t not in self._v2_batches))
        if not missing:
            return
        if len(self._v2_batches) >= 50_000:   # bounded: a long-lived explorer on a long chain
            self._v2_batches.clear()
            self._v2_expanded.clear()
        got = run_sync(self.reg.core.packed_batches(missing))   # concurrently: one request per transaction
        for t in missing:
            self._v2_batches[t] = got.get(t)

    def _v2_expand(self, commits: Sequence[HeadersCommitted]) -> list[MiniblockCommitted]:
        """Each commit log's accepted headers (stream, number, roots from the input; hash from the log)."""
        self._v2_fetch([c.tx_hash for c in commits if (c.tx_hash, c.log_index) not in self._v2_expanded])
        out: list[MiniblockCommitted] = []
        for c in commits:
            key = (c.tx_hash, c.log_index)
            if key not in self._v2_expanded:
                batch = self._v2_batch(c.tx_hash)
                self._v2_accepted[c.tx_hash] = c.commit.accepted
                try:
                    evs = expand_v2([c], {} if batch is None else {c.tx_hash: batch})[1:]
                except (ValueError, v2.BatchError):
                    evs = []   # an input that does not match its log: its headers are not known here
                self._v2_expanded[key] = [e for e in evs if isinstance(e, MiniblockCommitted)]
            out += self._v2_expanded[key]
        return out

    def _v2_genesis_hash(self, stream_id: bytes, at: int) -> bytes:
        """The stream's genesis hash from its StreamCreated log (ZERO32 if none up to `at`)."""
        if stream_id not in self._v2_genesis:
            created = self.stream_created(stream_id, to_block=at)
            if not created:
                return ZERO32
            self._v2_genesis[stream_id] = created[0]["genesis_hash"]
        return self._v2_genesis[stream_id]

    def _v2_view(self, stream_id: bytes, at: int) -> StreamView:
        """The stream's commits and rejections up to `at`, with the head each was checked against."""
        key = (stream_id, at)
        if key not in self._v2_views:
            commits = [c for c in self._v2_expand(self._v2_commits(at)) if c.stream_id == stream_id]
            rejected = [e for e in self.reg.decode_logs(self.stream_header_logs(stream_id, at))
                        if isinstance(e, MiniblockRejected)]
            if len(self._v2_views) >= 64:
                self._v2_views.clear()
            self._v2_views[key] = StreamView.of(stream_id, self._v2_genesis_hash(stream_id, at), [*commits, *rejected])
        return self._v2_views[key]

    def _v2_index(self, at: int) -> HistoryIndex:
        return self._v2_history(at)[1]

    def _v2_state(self, at: int) -> HistoryState:
        """commitCount and historyAcc at block `at` (two eth_calls per pinned block; checkpoints as needed)."""
        if at not in self._v2_states:
            if len(self._v2_states) >= 64:
                self._v2_states.clear()
            self._v2_states[at] = HistoryState(
                commit_count=self.settled(at, self.reg.commit_count), acc=self.settled(at, self.reg.history_acc),
                read_checkpoint=lambda w: self.settled(at, lambda b: self.reg.history_checkpoint(w, b)))
        return self._v2_states[at]

    def _v2_proof(self, header: Header, at: int) -> tuple[v2.HistoryProof | None, bool]:
        """The history proof of `header` built from the commit logs up to `at`, and whether it holds
        off-chain against the registry's history views at `at`."""
        hh = hash_header(header)
        c = next((c for c in self._v2_view(header.stream_id, at).commits
                  if c.number == header.number and c.header_hash == hh), None)
        if c is None:
            return None, False
        proof = self._v2_index(at).proof(c.commit_index, c.position)
        return proof, proof is not None and self._v2_state(at).verify(hh, proof)

    def _hash_of(self, block: int) -> bytes:
        got = self.reg.block_hash(block)
        return got[1] if got is not None else b""

    def last_headers(
        self, stream_id: bytes, at: int, *, offset: int = 0, count: int | None = None,
        include_rejected: bool = True, from_number: int = 0, from_block: int | None = None,
    ) -> tuple[list[HeaderRecord], int]:
        """The stream's headers newest first, skipping `offset`, at most `count` (None: all), verified at
        block `at`; and how many headers pass the filters in all."""
        self._forget_latest()
        events = [e for e in self.stream_events(stream_id, at)
                  if e.number >= from_number and (include_rejected or isinstance(e, MiniblockCommitted))
                  and (from_block is None or e.block_number >= from_block)]
        events.reverse()
        total = len(events)
        chosen = events[offset:] if count is None else events[offset:offset + count]
        records = self._records_from_events(chosen[::-1], at)          # oldest first, for the parent checks
        self._verify(records, at)
        records.reverse()
        return records, total

    def stream_page(self, stream_id: bytes, page: int = 0, size: int = 20, at: int | None = None) -> StreamPage:
        """Page `page` (0 = newest) of `size` headers, with the chain verdict, all read at block `at`.

        Raises PageOutOfRange past the last page (page 0 always exists, if empty)."""
        at = self.pin() if at is None else at
        size = max(1, size)
        if page < 0:
            raise PageOutOfRange("the page number is 0 (newest) or more")
        records, total = self.last_headers(stream_id, at, offset=page * size, count=size)
        pages = max(1, -(-total // size))
        if page >= pages:
            plural = "s" if pages != 1 else ""
            raise PageOutOfRange(f"page {page} is past the last page: {total} headers, {pages} page{plural} "
                                 f"of {size} at block {at}")
        summary = self.chain_summary(stream_id, records, at=at)
        return StreamPage(stream_id=stream_id, at=at, page=page, size=size, total=total, records=records,
                          summary=summary)

    def plot_points(self, stream_id: bytes, at: int, window: int = 150) -> list[PlotPoint]:
        """The last `window` committed headers up to block `at`, oldest first: time, events, gas share.

        Event counts come from the logs; gas from each commit's receipt shared over its batch (cached,
        so a page that refreshes fetches only the new commits)."""
        commits = [c for c in self.stream_events(stream_id, at) if isinstance(c, MiniblockCommitted)][-max(1, window):]
        out = []
        for c in commits:
            if self.version == 2:
                batch = self._v2_batch(c.tx_hash)
                gas_used, n = self._gas_used(c.tx_hash), len(v2.decode_batch(batch)[1]) if batch else 1
            else:
                pairs, gas_used, _ = self._decode_commit_tx(c.tx_hash)
                n = len(pairs) if pairs else 1
            out.append(PlotPoint(number=c.number, block_number=c.block_number,
                                 timestamp=self._timestamp(c.block_number), event_count=c.event_count,
                                 gas_share=gas_used // n))
        return out

    # ---- for the daemon ---------------------------------------------------------------------

    def committed_header(
        self, header_hash: bytes, stream_id: bytes | None = None, number: int | None = None,
        *, from_block: int | None = None, verify: bool = True, at: int | None = None,
    ) -> HeaderRecord | None:
        """The commit of `header_hash` (full Header, signatures, tx), or None if it was never committed.

        Give stream_id and number when known: the log query is then filtered by both indexed topics.
        """
        return self.find_header(header_hash, stream_id, number, from_block=from_block, verify=verify,
                                include_rejected=False, at=at)

    def find_header(
        self, header_hash: bytes, stream_id: bytes | None = None, number: int | None = None,
        *, from_block: int | None = None, verify: bool = True, include_rejected: bool = True,
        at: int | None = None,
    ) -> HeaderRecord | None:
        """The first MiniblockCommitted (or, if none, MiniblockRejected) log of `header_hash`, decoded;
        logs read up to block `at` and checked with the views at it (default: pinned now)."""
        self._forget_latest()
        at = self.pin() if at is None else at
        header_hash = bytes32(header_hash)
        if self.version == 2:
            return self._find_header_v2(header_hash, stream_id, number, from_block, verify, include_rejected, at)
        topic0 = [self.topic_committed, self.topic_rejected] if include_rejected else self.topic_committed
        topics: list[Any] = [topic0, stream_id]
        if number is not None:
            topics.append(int(number).to_bytes(32, "big"))
        while topics and topics[-1] is None:
            topics.pop()
        # Non-indexed data of both events starts with headerHash
        # (Committed: headerHash, prevHash, eventsRoot, eventCount; Rejected: headerHash, reason).
        logs = [lg for lg in self.iter_logs(topics, from_block, at) if lg.data[:32] == header_hash]
        if not logs:
            return None
        committed = [lg for lg in logs if lg.topics[0] == self.topic_committed]
        recs = self._records_from_logs((committed or logs)[:1])
        if verify:
            self._verify(recs, at)
        return recs[0]

    def _find_header_v2(self, header_hash: bytes, stream_id: bytes | None, number: int | None,
                        from_block: int | None, verify: bool, include_rejected: bool, at: int) -> HeaderRecord | None:
        """v2's find_header: the commits of the stream (of every stream without one) from the commit logs,
        then the MiniblockRejected logs, matched by headerHash."""
        if stream_id is None:
            sids = list(dict.fromkeys(c.stream_id for c in self._v2_expand(self._v2_commits(at))
                                      if c.header_hash == header_hash))
            if not sids and include_rejected:
                sids = list(dict.fromkeys(lg.topics[1] for lg in self.iter_logs([self.topic_rejected], from_block, at)
                                          if lg.data[:32] == header_hash and len(lg.topics) > 1))
        else:
            sids = [stream_id]
        found = [e for sid in sids for e in self.stream_events(sid, at)
                 if e.header_hash == header_hash and (number is None or e.number == number)
                 and (from_block is None or e.block_number >= from_block)
                 and (include_rejected or isinstance(e, MiniblockCommitted))]
        if not found:
            return None
        committed = [e for e in found if isinstance(e, MiniblockCommitted)]
        recs = self._records_from_events((committed or found)[:1], at)
        if verify:
            self._verify(recs, at)
        return recs[0]

    def header_at(self, stream_id: bytes, number: int, *, verify: bool = True,
                  at: int | None = None) -> HeaderRecord | None:
        """The committed header at (stream, number), found through the hash the contract stores there (v2:
        the commit of that number in the logs)."""
        at = self.pin() if at is None else at
        if self.version == 2:
            h = self._v2_view(stream_id, at).hash_at.get(number, ZERO32) if number >= 1 else ZERO32
        else:
            h = self.header_hash_at(stream_id, number, at)
        if h == ZERO32:
            return None
        return self.committed_header(h, stream_id, number, verify=verify, at=at)


def _reachable(reg: Registry, rpc_url: str) -> None:
    try:
        reg.chain_id()  # a real request
    except Exception as exc:  # noqa: BLE001 -- any transport failure (refused, DNS, timeout, HTTP error) means unreachable
        raise RpcUnreachable(f"cannot reach the JSON-RPC endpoint {rpc_url}: {exc}") from exc
