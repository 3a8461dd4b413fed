"""A thin typed wrapper over the MiniblockRegistry contract (docs/protocol.md).

Views return plain Python / node.protocol types; transactions are signed locally by
an eth-account LocalAccount (TxSender: one nonce counter per sender, gas estimated
with a margin, EIP-1559 fees) and return a TxResult with the decoded
MiniblockCommitted / MiniblockRejected events.  Log queries return pydantic models.

Synchronous (web3 HTTPProvider); async code should call it through
``asyncio.to_thread``.  A Registry is safe to share between threads: sends are
serialised per sender.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import Annotated, Any

from eth_account.signers.local import LocalAccount
from eth_utils import function_abi_to_4byte_selector, keccak, to_checksum_address
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError
from web3.logs import DISCARD

from node.protocol.hexutil import bytes32, hx
from node.protocol.types import Domain, Event, Header, RejectReason

from .deployment import Deployment

# ---------------------------------------------------------------------------
# pydantic types for chain data


def _to_address(v: Any) -> str:
    return to_checksum_address(v)


Bytes32 = Annotated[
    bytes,
    BeforeValidator(bytes32),
    PlainSerializer(hx, return_type=str, when_used="json"),
]
Address = Annotated[str, BeforeValidator(_to_address)]


class NodeStatus(IntEnum):
    NONE = 0
    PENDING = 1
    ACTIVE = 2
    LEAVING = 3
    LEFT = 4


class _M(BaseModel):
    model_config = ConfigDict(frozen=True)


class NodeInfo(_M):
    node: Address
    operator: Address
    url: str
    status: NodeStatus
    join_epoch: int
    leave_epoch: int
    randao_commit: Bytes32


class StreamHead(_M):
    number: int
    header_hash: Bytes32
    timestamp: int


class LogMeta(_M):
    block_number: int
    tx_hash: Bytes32
    log_index: int


class MiniblockCommitted(LogMeta):
    stream_id: Bytes32
    number: int
    header_hash: Bytes32
    prev_hash: Bytes32
    events_root: Bytes32
    event_count: int
    leader: Address


class MiniblockRejected(LogMeta):
    stream_id: Bytes32
    number: int
    header_hash: Bytes32
    reason: int

    @property
    def reason_name(self) -> str:
        try:
            return RejectReason(self.reason).name
        except ValueError:
            return f"UNKNOWN_{self.reason}"


class StreamCreated(LogMeta):
    stream_id: Bytes32
    creator: Address
    epoch: int
    replicas: list[Address]
    genesis_hash: Bytes32


class ReplicaReplaced(LogMeta):
    stream_id: Bytes32
    index: int
    old_node: Address
    new_node: Address


class NodeRegistered(LogMeta):
    node: Address
    operator: Address
    url: str
    join_epoch: int


class TxResult(_M):
    tx_hash: Bytes32
    block_number: int
    block_timestamp: int | None = None
    gas_used: int
    effective_gas_price: int
    status: int
    committed: list[MiniblockCommitted] = []
    rejected: list[MiniblockRejected] = []


class EIP712DomainInfo(_M):
    fields: int
    name: str
    version: str
    chain_id: int
    verifying_contract: Address
    salt: Bytes32
    extensions: list[int]


# ---------------------------------------------------------------------------
# errors


class RegistryError(RuntimeError):
    """A call or transaction failed; ``error`` is the contract's custom error name if known."""

    def __init__(self, message: str, error: str | None = None, args: tuple = ()) -> None:
        super().__init__(message)
        self.error = error
        self.error_args = args


def _error_table(abi: list[dict[str, Any]]) -> dict[bytes, dict[str, Any]]:
    out = {}
    for item in abi:
        if item.get("type") == "error":
            out[function_abi_to_4byte_selector(item)] = item
    # Solidity's built-ins
    out[keccak(text="Error(string)")[:4]] = {"name": "Error", "inputs": [{"type": "string"}]}
    out[keccak(text="Panic(uint256)")[:4]] = {"name": "Panic", "inputs": [{"type": "uint256"}]}
    return out


# ---------------------------------------------------------------------------
# sending


class TxSender:
    """Signs and sends transactions for one LocalAccount, keeping its nonce locally.

    The nonce starts at the chain's pending count and is re-read after any failure,
    so a restarted process or a tx sent elsewhere is picked up.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        *,
        gas_margin: float = 1.25,
        gas_extra: int = 20_000,
        receipt_timeout: float = 120.0,
        poll_latency: float = 0.05,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.gas_margin = gas_margin
        self.gas_extra = gas_extra
        self.receipt_timeout = receipt_timeout
        self.poll_latency = poll_latency
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self._chain_id: int | None = None

    @property
    def address(self) -> str:
        return self.account.address

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.w3.eth.chain_id
        return self._chain_id

    def reset_nonce(self) -> None:
        with self._lock:
            self._nonce = None

    def _fees(self) -> dict[str, int]:
        latest = self.w3.eth.get_block("latest")
        base = latest.get("baseFeePerGas")
        if base is None:
            return {"gasPrice": self.w3.eth.gas_price}
        try:
            tip = self.w3.eth.max_priority_fee
        except Exception:
            tip = 10**9
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def send(self, fn, *, gas: int | None = None, value: int = 0, wait: bool = True):
        """Build, sign and send the contract call ``fn`` (a bound ContractFunction).

        Returns the receipt (``wait=True``) or the tx hash.  Raises RegistryError on
        revert (at estimation, or a failed receipt).
        """
        with self._lock:
            if self._nonce is None:
                self._nonce = self.w3.eth.get_transaction_count(self.address, "pending")
            tx: dict[str, Any] = {
                "from": self.address,
                "nonce": self._nonce,
                "chainId": self.chain_id(),
                "value": value,
                **self._fees(),
            }
            if gas is None:
                est = fn.estimate_gas({"from": self.address, "value": value}, block_identifier="pending")
                gas = int(est * self.gas_margin) + self.gas_extra
                block_limit = self.w3.eth.get_block("latest")["gasLimit"]
                gas = min(gas, block_limit)
            tx["gas"] = gas
            tx = fn.build_transaction(tx)
            for retry in (True, False):
                signed = self.account.sign_transaction(tx)
                try:
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                    break
                except Web3RPCError as e:
                    self._nonce = None  # resync from the chain next time
                    if retry and "nonce" in str(e).lower():
                        # Someone else used this account: take the chain's count, once.
                        self._nonce = self.w3.eth.get_transaction_count(self.address, "pending")
                        tx["nonce"] = self._nonce
                        continue
                    raise
                except Exception:
                    self._nonce = None
                    raise
            self._nonce = tx["nonce"] + 1
        if not wait:
            return tx_hash
        return self.w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=self.receipt_timeout, poll_latency=self.poll_latency
        )


# ---------------------------------------------------------------------------
# the registry


def _header_abi(h: Header | tuple) -> tuple:
    return h.as_abi() if isinstance(h, Header) else tuple(h)


def _event_abi(e: Event | tuple) -> tuple:
    return e.as_abi() if isinstance(e, Event) else tuple(e)


class Registry:
    def __init__(
        self,
        w3: Web3,
        address: str,
        abi: list[dict[str, Any]],
        sender: TxSender | LocalAccount | None = None,
    ) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.abi = abi
        self.contract = w3.eth.contract(address=self.address, abi=abi)
        if sender is not None and not isinstance(sender, TxSender):
            sender = TxSender(w3, sender)
        self.sender: TxSender | None = sender
        self._errors = _error_table(abi)
        self._domain: Domain | None = None

    @classmethod
    def from_deployment(
        cls,
        dep: Deployment,
        *,
        w3: Web3 | None = None,
        account: LocalAccount | TxSender | None = None,
        rpc_url: str | None = None,
    ) -> Registry:
        if w3 is None:
            w3 = Web3(Web3.HTTPProvider(rpc_url or dep.rpc_url, request_kwargs={"timeout": 60}))
        return cls(w3, dep.registry, dep.abi(), account)

    def with_account(self, account: LocalAccount | TxSender) -> Registry:
        """The same registry, sending from another account."""
        r = Registry(self.w3, self.address, self.abi, account)
        r._domain = self._domain
        return r

    # -- error decoding -----------------------------------------------------
    def decode_error(self, data: bytes | str | None) -> tuple[str | None, tuple]:
        if data is None:
            return None, ()
        if isinstance(data, str):
            data = bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if len(data) < 4 or data[:4] not in self._errors:
            return None, ()
        item = self._errors[data[:4]]
        types = [i["type"] if not i["type"].startswith("tuple") else i["type"] for i in item["inputs"]]
        try:
            args = tuple(self.w3.codec.decode(types, data[4:]))
        except Exception:
            args = ()
        return item["name"], args

    def _wrap(self, e: Exception, what: str) -> RegistryError:
        data = getattr(e, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        name, args = self.decode_error(data if isinstance(data, (bytes, str)) else None)
        if name:
            return RegistryError(f"{what}: reverted {name}{args}", name, args)
        return RegistryError(f"{what}: {e}")

    def _call(self, name: str, *args: Any, block: Any = "latest") -> Any:
        try:
            return getattr(self.contract.functions, name)(*args).call(block_identifier=block)
        except (ContractCustomError, ContractLogicError) as e:
            raise self._wrap(e, name) from e

    # -- transactions ---------------------------------------------------------
    def _require_sender(self) -> TxSender:
        if self.sender is None:
            raise RegistryError("this Registry has no account to send from")
        return self.sender

    def transact(self, name: str, *args: Any, gas: int | None = None) -> TxResult:
        sender = self._require_sender()
        fn = getattr(self.contract.functions, name)(*args)
        try:
            receipt = sender.send(fn, gas=gas)
        except (ContractCustomError, ContractLogicError) as e:
            sender.reset_nonce()
            raise self._wrap(e, name) from e
        except Web3RPCError as e:
            sender.reset_nonce()
            raise RegistryError(f"{name}: {e}") from e
        result = self._result(receipt)
        if result.status != 1:
            raise RegistryError(f"{name}: transaction {result.tx_hash.hex()} failed (status 0)")
        return result

    def _result(self, receipt) -> TxResult:
        committed = [
            self._committed(ev) for ev in self._events_in(receipt, "MiniblockCommitted")
        ]
        rejected = [self._rejected(ev) for ev in self._events_in(receipt, "MiniblockRejected")]
        return TxResult(
            tx_hash=bytes(receipt["transactionHash"]),
            block_number=receipt["blockNumber"],
            gas_used=receipt["gasUsed"],
            effective_gas_price=receipt.get("effectiveGasPrice", 0),
            status=receipt["status"],
            committed=committed,
            rejected=rejected,
        )

    def _events_in(self, receipt, event: str):
        ev = getattr(self.contract.events, event)
        own = {**receipt, "logs": [l for l in receipt["logs"] if l["address"] == self.address]}
        return ev.process_receipt(own, errors=DISCARD)

    def commit_miniblocks(
        self,
        headers: Sequence[Header],
        signatures: Sequence[Sequence[bytes]],
        *,
        gas: int | None = None,
    ) -> TxResult:
        """Send one commitMiniblocks tx; ``signatures[i][0]`` is the leader's over header i.

        Returns the mined result with the decoded MiniblockCommitted/MiniblockRejected
        events (a rejected header does not fail the tx).
        """
        if len(headers) != len(signatures):
            raise ValueError("headers and signatures differ in length")
        return self.transact(
            "commitMiniblocks",
            [_header_abi(h) for h in headers],
            [[bytes(s) for s in sigs] for sigs in signatures],
            gas=gas,
        )

    def allow_operator(self, operator: str) -> TxResult:
        return self.transact("allowOperator", to_checksum_address(operator))

    def revoke_operator(self, operator: str) -> TxResult:
        return self.transact("revokeOperator", to_checksum_address(operator))

    def set_replication_factor(self, r: int) -> TxResult:
        return self.transact("setReplicationFactor", r)

    def register_node(self, node: str, url: str, randao_commit: bytes | str) -> TxResult:
        return self.transact("registerNode", to_checksum_address(node), url, bytes32(randao_commit))

    def set_node_url(self, node: str, url: str) -> TxResult:
        return self.transact("setNodeUrl", to_checksum_address(node), url)

    def request_leave(self, node: str) -> TxResult:
        return self.transact("requestLeave", to_checksum_address(node))

    def advance_epoch(self) -> TxResult:
        return self.transact("advanceEpoch")

    def create_stream(self, stream_id: bytes | str) -> TxResult:
        return self.transact("createStream", bytes32(stream_id))

    def replace_replica(self, stream_id: bytes | str, index: int) -> TxResult:
        return self.transact("replaceReplica", bytes32(stream_id), index)

    def transfer_ownership(self, new_owner: str) -> TxResult:
        return self.transact("transferOwnership", to_checksum_address(new_owner))

    def accept_ownership(self) -> TxResult:
        return self.transact("acceptOwnership")

    # -- views ------------------------------------------------------------------
    def owner(self, block: Any = "latest") -> str:
        return self._call("owner", block=block)

    def pending_owner(self, block: Any = "latest") -> str:
        return self._call("pendingOwner", block=block)

    def is_operator(self, addr: str, block: Any = "latest") -> bool:
        return self._call("isOperator", to_checksum_address(addr), block=block)

    def epoch_length(self, block: Any = "latest") -> int:
        return self._call("epochLength", block=block)

    def leader_timeout(self, block: Any = "latest") -> int:
        return self._call("leaderTimeout", block=block)

    def genesis_time(self, block: Any = "latest") -> int:
        return self._call("genesisTime", block=block)

    def replication_factor(self, block: Any = "latest") -> int:
        return self._call("replicationFactor", block=block)

    def current_epoch(self, block: Any = "latest") -> int:
        return self._call("currentEpoch", block=block)

    def current_seed(self, block: Any = "latest") -> bytes:
        return bytes(self._call("currentSeed", block=block))

    def randao_mix(self, block: Any = "latest") -> bytes:
        return bytes(self._call("randaoMix", block=block))

    def elected_leader(self, stream_id: bytes, number: int, attempt: int, block: Any = "latest") -> str:
        return self._call("electedLeader", bytes32(stream_id), number, attempt, block=block)

    def attempt_opens_at(self, stream_id: bytes, attempt: int, block: Any = "latest") -> int:
        return self._call("attemptOpensAt", bytes32(stream_id), attempt, block=block)

    def stream_exists(self, stream_id: bytes, block: Any = "latest") -> bool:
        return self._call("streamExists", bytes32(stream_id), block=block)

    def stream_head(self, stream_id: bytes, block: Any = "latest") -> StreamHead:
        n, h, t = self._call("streamHead", bytes32(stream_id), block=block)
        return StreamHead(number=n, header_hash=bytes(h), timestamp=t)

    def header_hash_at(self, stream_id: bytes, number: int, block: Any = "latest") -> bytes:
        return bytes(self._call("headerHashAt", bytes32(stream_id), number, block=block))

    def replicas_of(self, stream_id: bytes, block: Any = "latest") -> list[str]:
        return list(self._call("replicasOf", bytes32(stream_id), block=block))

    def stream_count(self, block: Any = "latest") -> int:
        return self._call("streamCount", block=block)

    def stream_id_at(self, i: int, block: Any = "latest") -> bytes:
        return bytes(self._call("streamIdAt", i, block=block))

    def stream_ids(self, block: Any = "latest") -> list[bytes]:
        return [self.stream_id_at(i, block) for i in range(self.stream_count(block))]

    def node_count(self, block: Any = "latest") -> int:
        return self._call("nodeCount", block=block)

    @staticmethod
    def _node(t) -> NodeInfo:
        return NodeInfo(
            node=t[0], operator=t[1], url=t[2], status=NodeStatus(t[3]),
            join_epoch=t[4], leave_epoch=t[5], randao_commit=bytes(t[6]),
        )

    def get_node(self, node: str, block: Any = "latest") -> NodeInfo:
        return self._node(self._call("getNode", to_checksum_address(node), block=block))

    def get_nodes(self, offset: int = 0, limit: int = 2**16, block: Any = "latest") -> list[NodeInfo]:
        return [self._node(t) for t in self._call("getNodes", offset, limit, block=block)]

    def randao_commit_of(self, node: str, block: Any = "latest") -> bytes:
        return bytes(self._call("randaoCommitOf", to_checksum_address(node), block=block))

    def hash_event(self, event: Event) -> bytes:
        return bytes(self._call("hashEvent", _event_abi(event)))

    def hash_header(self, header: Header) -> bytes:
        return bytes(self._call("hashHeader", _header_abi(header)))

    def event_digest(self, event: Event) -> bytes:
        return bytes(self._call("eventDigest", _event_abi(event)))

    def header_digest(self, header: Header) -> bytes:
        return bytes(self._call("headerDigest", _header_abi(header)))

    def merkle_root(self, event_hashes: Sequence[bytes]) -> bytes:
        return bytes(self._call("merkleRoot", [bytes32(x) for x in event_hashes]))

    def verify_merkle_proof(
        self, root: bytes, count: int, index: int, event_hash: bytes, proof: Sequence[bytes]
    ) -> bool:
        return self._call(
            "verifyMerkleProof", bytes32(root), count, index, bytes32(event_hash), [bytes32(p) for p in proof]
        )

    def verify_inclusion(
        self, header: Header, proof: Sequence[bytes], index: int, event_hash: bytes,
        block: Any = "latest",
    ) -> bool:
        return self._call(
            "verifyInclusion", _header_abi(header), [bytes32(p) for p in proof], index,
            bytes32(event_hash), block=block,
        )

    def eip712_domain(self) -> EIP712DomainInfo:
        f, name, version, chain_id, vc, salt, ext = self._call("eip712Domain")
        return EIP712DomainInfo(
            fields=int.from_bytes(bytes(f), "big"), name=name, version=version, chain_id=chain_id,
            verifying_contract=vc, salt=bytes(salt), extensions=list(ext),
        )

    def domain(self) -> Domain:
        """The EIP-712 domain read from the contract (EIP-5267), cached."""
        if self._domain is None:
            d = self.eip712_domain()
            self._domain = Domain(
                chain_id=d.chain_id, verifying_contract=d.verifying_contract,
                name=d.name, version=d.version,
            )
        return self._domain

    def constant(self, name: str) -> int:
        """MAX_NODES, MAX_REPLICATION, MAX_BATCH, MAX_EVENTS_PER_BLOCK, MAX_REVEAL_SKIP."""
        return self._call(name)

    # -- logs ---------------------------------------------------------------------
    def _logs(
        self, event: str, from_block: int, to_block: int | str, filters: dict | None,
        chunk: int,
    ) -> Iterable[Any]:
        ev = getattr(self.contract.events, event)
        if to_block == "latest":
            to_block = self.w3.eth.block_number
        start = from_block
        while start <= to_block:
            end = min(to_block, start + chunk - 1)
            yield from ev.get_logs(argument_filters=filters, from_block=start, to_block=end)
            start = end + 1

    @staticmethod
    def _meta(ev) -> dict[str, Any]:
        return {
            "block_number": ev["blockNumber"],
            "tx_hash": bytes(ev["transactionHash"]),
            "log_index": ev["logIndex"],
        }

    def _committed(self, ev) -> MiniblockCommitted:
        a = ev["args"]
        return MiniblockCommitted(
            **self._meta(ev), stream_id=bytes(a["streamId"]), number=a["number"],
            header_hash=bytes(a["headerHash"]), prev_hash=bytes(a["prevHash"]),
            events_root=bytes(a["eventsRoot"]), event_count=a["eventCount"], leader=a["leader"],
        )

    def _rejected(self, ev) -> MiniblockRejected:
        a = ev["args"]
        return MiniblockRejected(
            **self._meta(ev), stream_id=bytes(a["streamId"]), number=a["number"],
            header_hash=bytes(a["headerHash"]), reason=a["reason"],
        )

    def committed_logs(
        self, from_block: int, to_block: int | str = "latest", *,
        stream_id: bytes | None = None, leader: str | None = None, chunk: int = 10_000,
    ) -> list[MiniblockCommitted]:
        f: dict[str, Any] = {}
        if stream_id is not None:
            f["streamId"] = bytes32(stream_id)
        if leader is not None:
            f["leader"] = to_checksum_address(leader)
        return [
            self._committed(ev)
            for ev in self._logs("MiniblockCommitted", from_block, to_block, f or None, chunk)
        ]

    def rejected_logs(
        self, from_block: int, to_block: int | str = "latest", *,
        stream_id: bytes | None = None, chunk: int = 10_000,
    ) -> list[MiniblockRejected]:
        f = {"streamId": bytes32(stream_id)} if stream_id is not None else None
        return [self._rejected(ev) for ev in self._logs("MiniblockRejected", from_block, to_block, f, chunk)]

    def stream_created_logs(
        self, from_block: int, to_block: int | str = "latest", *,
        stream_id: bytes | None = None, chunk: int = 10_000,
    ) -> list[StreamCreated]:
        f = {"streamId": bytes32(stream_id)} if stream_id is not None else None
        out = []
        for ev in self._logs("StreamCreated", from_block, to_block, f, chunk):
            a = ev["args"]
            out.append(StreamCreated(
                **self._meta(ev), stream_id=bytes(a["streamId"]), creator=a["creator"],
                epoch=a["epoch"], replicas=list(a["replicas"]), genesis_hash=bytes(a["genesisHash"]),
            ))
        return out

    def replica_replaced_logs(
        self, from_block: int, to_block: int | str = "latest", *,
        stream_id: bytes | None = None, chunk: int = 10_000,
    ) -> list[ReplicaReplaced]:
        f = {"streamId": bytes32(stream_id)} if stream_id is not None else None
        out = []
        for ev in self._logs("ReplicaReplaced", from_block, to_block, f, chunk):
            a = ev["args"]
            out.append(ReplicaReplaced(
                **self._meta(ev), stream_id=bytes(a["streamId"]), index=a["index"],
                old_node=a["oldNode"], new_node=a["newNode"],
            ))
        return out

    def node_registered_logs(
        self, from_block: int, to_block: int | str = "latest", *,
        node: str | None = None, operator: str | None = None, chunk: int = 10_000,
    ) -> list[NodeRegistered]:
        f: dict[str, Any] = {}
        if node is not None:
            f["node"] = to_checksum_address(node)
        if operator is not None:
            f["operator"] = to_checksum_address(operator)
        out = []
        for ev in self._logs("NodeRegistered", from_block, to_block, f or None, chunk):
            a = ev["args"]
            out.append(NodeRegistered(
                **self._meta(ev), node=a["node"], operator=a["operator"], url=a["url"],
                join_epoch=a["joinEpoch"],
            ))
        return out

    # -- chain time helpers -----------------------------------------------------------
    def chain_time(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def wait_receipt_block_time(self, result: TxResult) -> int:
        return self.w3.eth.get_block(result.block_number)["timestamp"]
