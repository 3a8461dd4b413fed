"""The one decoder of the registry's logs and receipts: frozen dataclasses, one type per event.

A raw JSON-RPC log (hex strings, as eth_getLogs and receipts give them) becomes a `RawLog`, and a
registry log becomes its event type (`MiniblockCommitted`, `StreamCreated`, ...) through
`LogDecoder.decode`. `LogBatch` is a block range's registry logs sorted by kind, as the node's
watcher applies them; `Receipt` and `TxResult` are a transaction's outcome.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum
from typing import Any, ClassVar

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address

from node.protocol import v2
from node.protocol.types import RejectReason

from .abi import Abi, normalize
from .rpc import hex_bytes, hex_int


def reason_name(code: int) -> str:
    try:
        return RejectReason(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, IntEnum):
        return int(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


class _Record:
    """JSON at the edge: bytes as 0x-hex (``to_json()``; ``model_dump(mode="json")`` for older callers)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in self.to_dict().items()}

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return self.to_json() if mode == "json" else self.to_dict()


# ---- raw logs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawLog:
    address: str
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    tx_hash: bytes
    log_index: int
    block_hash: bytes = b""  # the chain block the log is in (reorg detection compares it)

    @classmethod
    def from_rpc(cls, lg: Mapping[str, Any]) -> RawLog:
        return cls(
            address=to_checksum_address(lg["address"]),
            topics=tuple(hex_bytes(t) for t in lg.get("topics", ())),
            data=hex_bytes(lg.get("data")),
            block_number=hex_int(lg.get("blockNumber")),
            tx_hash=hex_bytes(lg.get("transactionHash")),
            log_index=hex_int(lg.get("logIndex")),
            block_hash=hex_bytes(lg.get("blockHash")),
        )


# ---- one type per event ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogMeta(_Record):
    block_number: int
    tx_hash: bytes
    log_index: int

    EVENT: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class MiniblockCommitted(LogMeta):
    """A header committed at (stream, number). v1: one log per header. v2: one accepted record of a
    `MiniblocksCommitted` transaction (stream, number, roots, counts from its input, the hash from its
    log); there `leader` and `prev_hash` are not in the chain data alone (the leader is
    `replicas[leader_pos]`, prevHash[0:18] the previous head's), so they are "" / b"" until
    `resolved(...)` fills them from the replica list and the previous head's full hash."""

    stream_id: bytes
    number: int
    header_hash: bytes
    prev_hash: bytes
    events_root: bytes
    event_count: int
    leader: str
    leader_pos: int = -1  # v2: the record's leaderPos (-1: v1, `leader` is from the log)
    prev_tail: bytes = b""  # v2: the record's prevHash[18:32]
    commit_index: int = -1  # v2: its transaction's commitIndex (the history proof's)
    position: int = -1  # v2: its place among the transaction's accepted header hashes

    EVENT: ClassVar[str] = "MiniblockCommitted"

    @property
    def resolved_ok(self) -> bool:
        return bool(self.leader) and len(self.prev_hash) == 32

    def resolved(self, replicas: list[str], prev_head_hash: bytes | None) -> MiniblockCommitted:
        """A v2 commit with `leader` (replicas[leader_pos]) and `prev_hash` (the previous head's first 18
        bytes and the record's 14) filled in where known; a v1 commit as it is."""
        if self.leader_pos < 0:
            return self
        leader = self.leader or (replicas[self.leader_pos] if self.leader_pos < len(replicas) else "")
        prev = self.prev_hash
        if len(prev) != 32 and prev_head_hash is not None and len(prev_head_hash) == 32:
            prev = v2.prev_hash_of(prev_head_hash[:20], self.prev_tail)
        return replace(self, leader=leader, prev_hash=prev)


@dataclass(frozen=True, slots=True)
class MiniblockRejected(LogMeta):
    stream_id: bytes
    number: int
    header_hash: bytes
    reason: int

    EVENT: ClassVar[str] = "MiniblockRejected"

    @property
    def reason_name(self) -> str:
        return reason_name(self.reason)


@dataclass(frozen=True, slots=True)
class HeadersCommitted(LogMeta):
    """v2's one log per commit transaction (MiniblocksCommitted): the history root and accumulator, the
    accepted records' bitmap, the RANDAO mix and the accepted header hashes. `expand_v2` turns it into
    one MiniblockCommitted per accepted record with the transaction's input."""

    commit: v2.CommitLog

    EVENT: ClassVar[str] = "MiniblocksCommitted"


@dataclass(frozen=True, slots=True)
class StreamCreated(LogMeta):
    stream_id: bytes
    creator: str
    epoch: int
    replicas: list[str]  # a list, to compare equal to replicasOf (so not hashable)
    genesis_hash: bytes

    EVENT: ClassVar[str] = "StreamCreated"


@dataclass(frozen=True, slots=True)
class ReplicaReplaced(LogMeta):
    stream_id: bytes
    index: int
    old_node: str
    new_node: str
    cause: int = 1  # 1: the old replica was not active; 2: it was dead (missed slots, no lead for epochs)

    EVENT: ClassVar[str] = "ReplicaReplaced"


@dataclass(frozen=True, slots=True)
class NodeEvicted(LogMeta):
    """The owner evicted a node: inactive from `leave_epoch`, exactly like a leave."""

    node: str
    leave_epoch: int

    EVENT: ClassVar[str] = "NodeEvicted"


@dataclass(frozen=True, slots=True)
class OnionRenewed(LogMeta):
    """The operator renewed a node's RANDAO onion; reveals against it are accepted from `usable_from`."""

    node: str
    randao_commit: bytes
    usable_from: int

    EVENT: ClassVar[str] = "OnionRenewed"


@dataclass(frozen=True, slots=True)
class SlotsMissed(LogMeta):
    """A header accepted at attempt >= 1 charged a missed slot to the replica positions set in `positions`."""

    stream_id: bytes
    number: int
    positions: int

    EVENT: ClassVar[str] = "SlotsMissed"


@dataclass(frozen=True, slots=True)
class NodeSlotReclaimed(LogMeta):
    """A node slot (left, named by no stream) was given to a new node; `old_node` is unknown from now on."""

    index: int
    old_node: str

    EVENT: ClassVar[str] = "NodeSlotReclaimed"


@dataclass(frozen=True, slots=True)
class NodeRegistered(LogMeta):
    node: str
    operator: str
    url: str
    join_epoch: int

    EVENT: ClassVar[str] = "NodeRegistered"


@dataclass(frozen=True, slots=True)
class NodeUrlChanged(LogMeta):
    node: str
    url: str

    EVENT: ClassVar[str] = "NodeUrlChanged"


@dataclass(frozen=True, slots=True)
class NodeLeaveRequested(LogMeta):
    node: str
    leave_epoch: int

    EVENT: ClassVar[str] = "NodeLeaveRequested"


@dataclass(frozen=True, slots=True)
class EpochAdvanced(LogMeta):
    epoch: int
    seed: bytes

    EVENT: ClassVar[str] = "EpochAdvanced"


@dataclass(frozen=True, slots=True)
class OperatorAllowed(LogMeta):
    operator: str

    EVENT: ClassVar[str] = "OperatorAllowed"


@dataclass(frozen=True, slots=True)
class OperatorRevoked(LogMeta):
    operator: str

    EVENT: ClassVar[str] = "OperatorRevoked"


@dataclass(frozen=True, slots=True)
class ReplicationFactorSet(LogMeta):
    replication_factor: int

    EVENT: ClassVar[str] = "ReplicationFactorSet"


@dataclass(frozen=True, slots=True)
class OwnershipTransferStarted(LogMeta):
    previous_owner: str
    new_owner: str

    EVENT: ClassVar[str] = "OwnershipTransferStarted"


@dataclass(frozen=True, slots=True)
class OwnershipTransferred(LogMeta):
    previous_owner: str
    new_owner: str

    EVENT: ClassVar[str] = "OwnershipTransferred"


@dataclass(frozen=True, slots=True)
class EIP712DomainChanged(LogMeta):
    EVENT: ClassVar[str] = "EIP712DomainChanged"


EVENT_TYPES: dict[str, type[LogMeta]] = {t.EVENT: t for t in (
    MiniblockCommitted, MiniblockRejected, HeadersCommitted, StreamCreated, ReplicaReplaced, NodeRegistered,
    NodeUrlChanged, NodeLeaveRequested, NodeEvicted, OnionRenewed, SlotsMissed, NodeSlotReclaimed, EpochAdvanced,
    OperatorAllowed,
    OperatorRevoked, ReplicationFactorSet,
    OwnershipTransferStarted, OwnershipTransferred, EIP712DomainChanged,
)}

# Events after which the node re-reads the node list.
NODE_EVENTS = (
    NodeRegistered, NodeUrlChanged, NodeLeaveRequested, NodeEvicted, OnionRenewed, NodeSlotReclaimed, EpochAdvanced,
)

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
# v2 names a few event parameters differently for the same meaning: (event, v2 name) -> field
_ALIASES = {("OnionRenewed", "commit_prefix"): "randao_commit", ("NodeSlotReclaimed", "node"): "old_node"}


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


class LogDecoder:
    """Registry logs (and only the registry's: other addresses are skipped) into their event types."""

    def __init__(self, abi: Abi, address: str) -> None:
        self.abi = abi
        self.address = to_checksum_address(address)
        self._committed_topic = abi.event_topics.get("MiniblockCommitted")
        self._v2_topic = abi.event_topics.get("MiniblocksCommitted")

    def decode(self, lg: RawLog) -> LogMeta | None:
        """The event of one log; None for another contract's log or an event this code does not know."""
        if lg.address != self.address or not lg.topics:
            return None
        topic0 = lg.topics[0]
        meta = (lg.block_number, lg.tx_hash, lg.log_index)
        if topic0 == self._committed_topic:
            # The hot path (every block of every stream): fixed layout, sliced rather than abi-decoded.
            d, t = lg.data, lg.topics
            return MiniblockCommitted(*meta, stream_id=t[1], number=int.from_bytes(t[2], "big"),
                                      header_hash=d[0:32], prev_hash=d[32:64], events_root=d[64:96],
                                      event_count=int.from_bytes(d[96:128], "big"),
                                      leader=to_checksum_address(t[3][12:]))
        if topic0 == self._v2_topic:
            return HeadersCommitted(*meta, commit=v2.decode_commit_log(int.from_bytes(lg.topics[1], "big"), lg.data))
        spec = self.abi.events.get(topic0)
        cls = EVENT_TYPES.get(spec.name) if spec is not None else None
        if spec is None or cls is None:
            return None
        args: dict[str, Any] = {}
        for p, topic in zip(spec.indexed, lg.topics[1:], strict=False):
            (v,) = abi_decode([p["type"]], topic)
            args[_ALIASES.get((spec.name, _snake(p["name"])), _snake(p["name"]))] = normalize(p, v)
        for p, v in zip(spec.data, abi_decode(list(spec.data_types), lg.data), strict=True):
            args[_ALIASES.get((spec.name, _snake(p["name"])), _snake(p["name"]))] = normalize(p, v)
        return cls(*meta, **args)

    def decode_all(self, logs: Iterable[RawLog]) -> list[LogMeta]:
        out = []
        for lg in logs:
            ev = self.decode(lg)
            if ev is not None:
                out.append(ev)
        return out


def expand_v2(events: Iterable[LogMeta], batches: Mapping[bytes, bytes]) -> list[LogMeta]:
    """Each v2 `HeadersCommitted` followed by one MiniblockCommitted per accepted record, read from its
    transaction's packed batch (`batches`: tx hash -> the `batch` argument). A commit whose batch is not
    given (not a direct call) is kept alone: its headers are then not known here."""
    out: list[LogMeta] = []
    for e in events:
        out.append(e)
        if not isinstance(e, HeadersCommitted) or e.tx_hash not in batches:
            continue
        for i, (rec, hh) in enumerate(v2.accepted_records(batches[e.tx_hash], e.commit)):
            out.append(MiniblockCommitted(
                e.block_number, e.tx_hash, e.log_index, stream_id=rec.stream_id, number=rec.number, header_hash=hh,
                prev_hash=b"", events_root=rec.events_root, event_count=rec.event_count, leader="",
                leader_pos=rec.leader_pos, prev_tail=rec.prev_tail, commit_index=e.commit.commit_index, position=i))
    return out


# ---- batches, receipts -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Registry logs of a block range, decoded, in chain order, by kind."""

    to_block: int
    committed: list[MiniblockCommitted] = field(default_factory=list)
    rejected: list[MiniblockRejected] = field(default_factory=list)
    created: list[StreamCreated] = field(default_factory=list)
    replaced: list[ReplicaReplaced] = field(default_factory=list)
    history: list[HeadersCommitted] = field(default_factory=list)  # v2: one per commit transaction
    nodes_changed: bool = False
    block_times: Mapping[int, int] = field(default_factory=dict)
    # chain block number -> its hash, for the blocks the logs came from (a reorg changes them)
    block_hashes: Mapping[int, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, to_block: int, events: Iterable[LogMeta], block_times: Mapping[int, int] | None = None,
           block_hashes: Mapping[int, bytes] | None = None) -> LogBatch:
        evs = list(events)
        return cls(
            to_block=to_block,
            committed=[e for e in evs if isinstance(e, MiniblockCommitted)],
            rejected=[e for e in evs if isinstance(e, MiniblockRejected)],
            created=[e for e in evs if isinstance(e, StreamCreated)],
            replaced=[e for e in evs if isinstance(e, ReplicaReplaced)],
            history=[e for e in evs if isinstance(e, HeadersCommitted)],
            nodes_changed=any(isinstance(e, NODE_EVENTS) for e in evs),
            block_times=dict(block_times or {}),
            block_hashes=dict(block_hashes or {}),
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_hash: bytes
    block_number: int
    status: int
    gas_used: int
    effective_gas_price: int
    contract_address: str | None
    logs: tuple[RawLog, ...]
    block_hash: bytes = b""

    @classmethod
    def from_rpc(cls, r: Mapping[str, Any]) -> Receipt:
        ca = r.get("contractAddress")
        return cls(
            tx_hash=hex_bytes(r["transactionHash"]),
            block_number=hex_int(r["blockNumber"]),
            status=hex_int(r.get("status"), 1),
            gas_used=hex_int(r.get("gasUsed")),
            effective_gas_price=hex_int(r.get("effectiveGasPrice")),
            contract_address=to_checksum_address(ca) if ca else None,
            logs=tuple(RawLog.from_rpc(lg) for lg in r.get("logs", ())),
            block_hash=hex_bytes(r.get("blockHash")),
        )


@dataclass(frozen=True, slots=True)
class TxResult(_Record):
    """A mined registry transaction with its decoded MiniblockCommitted / MiniblockRejected events."""

    tx_hash: bytes
    block_number: int
    gas_used: int
    effective_gas_price: int
    status: int
    committed: list[MiniblockCommitted] = field(default_factory=list)
    rejected: list[MiniblockRejected] = field(default_factory=list)
    events: list[LogMeta] = field(default_factory=list)
    block_timestamp: int | None = None
    block_hash: bytes = b""

    @classmethod
    def of(cls, receipt: Receipt, decoder: LogDecoder, block_timestamp: int | None = None,
           batch: bytes | None = None) -> TxResult:
        """`batch`: a v2 commit's packed batch (its accepted records become MiniblockCommitted)."""
        evs = decoder.decode_all(receipt.logs)
        if batch is not None:
            evs = expand_v2(evs, {receipt.tx_hash: batch})
        return cls(
            tx_hash=receipt.tx_hash, block_number=receipt.block_number, gas_used=receipt.gas_used,
            effective_gas_price=receipt.effective_gas_price, status=receipt.status,
            committed=[e for e in evs if isinstance(e, MiniblockCommitted)],
            rejected=[e for e in evs if isinstance(e, MiniblockRejected)],
            events=evs, block_timestamp=block_timestamp, block_hash=receipt.block_hash,
        )

    def batch(self) -> LogBatch:
        hashes = {self.block_number: self.block_hash} if self.block_hash else {}
        return LogBatch.of(self.block_number, self.events, block_hashes=hashes)
