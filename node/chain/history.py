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
- `hash`: hash_header(header from calldata) == the log's headerHash == headerHashAt(stream, number);
- `parent`: prevHash == the hash of block number-1 (the previous commit seen, else headerHashAt),
  so the chain of parent hashes is unbroken back to the genesis hash of StreamCreated;
- `leader_signature`: signatures[0] recovers (EIP-712 domain from eip712Domain()) to header.leader;
- `attestations`: every signature recovers, to a replica of the stream (replicasOf at the commit's
  block), no signer twice; `quorum`: distinct replica signers (leader included) >= floor(r/2)+1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3

from node.chain.calldata import NotACommitCall, decode_commit_call
from node.chain.deploy import parse_stream_id  # noqa: F401  (re-exported: one rule for stream ids)
from node.protocol.eip712 import SignatureError, hash_header, recover_header_signer
from node.protocol.hexutil import bytes32, hx
from node.protocol.merkle import verify_proof
from node.protocol.registry import quorum
from node.protocol.types import ZERO32, Domain, Header, RejectReason

NODE_STATUS = ("None", "Pending", "Active", "Leaving", "Left")

DEFAULT_CHUNK = 5_000          # blocks per eth_getLogs call (halved on a provider's range error)
DEFAULT_MAX_LOGS = 200_000     # a scan stops (truncated=True) past this many logs


class HistoryError(RuntimeError):
    """The chain cannot be read, or what is read is not a registry."""


class RpcUnreachable(HistoryError):
    pass


class NotARegistry(HistoryError):
    pass


def reason_name(code: int) -> str:
    try:
        return RejectReason(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


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

    @property
    def attestations(self) -> int:
        """Distinct recovered signers that are replicas of the stream (the leader included)."""
        return sum(1 for s in self.signers if s.counted)

    @property
    def quorum(self) -> int:
        return quorum(len(self.replicas)) if self.replicas else 0

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
        }


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


def load_registry_abi() -> list[dict[str, Any]]:
    """The registry's ABI, from the compiled artifact (compiled once, then cached)."""
    from node.build import load_artifact

    return load_artifact("MiniblockRegistry")["abi"]


class RegistryHistory:
    """Read-only view of one registry's committed history."""

    def __init__(
        self,
        w3: Web3,
        address: str,
        abi: list[dict[str, Any]] | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        max_logs: int = DEFAULT_MAX_LOGS,
    ) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.abi = abi if abi is not None else load_registry_abi()
        self.contract = w3.eth.contract(address=self.address, abi=self.abi)
        self.chunk_size = max(1, chunk_size)
        self.max_logs = max_logs
        self.truncated = False
        ev = self.contract.events
        self.topic_committed = HexBytes(ev.MiniblockCommitted().topic)
        self.topic_rejected = HexBytes(ev.MiniblockRejected().topic)
        self.topic_stream_created = HexBytes(ev.StreamCreated().topic)
        self._tx_cache: dict[bytes, tuple[list[tuple[Header, list[bytes]]] | None, dict, str | None]] = {}
        self._replicas_cache: dict[tuple[bytes, int | str], list[str]] = {}
        self._replaced: dict[bytes, bool] = {}
        self._ts_cache: dict[int, int] = {}

    # ---- connecting -------------------------------------------------------------------------

    @classmethod
    def connect(
        cls, rpc_url: str, address: str, abi: list[dict[str, Any]] | None = None, *, timeout: float = 10.0, **kw: Any
    ) -> RegistryHistory:
        """Open an RPC URL and check that `address` is a registry; raises RpcUnreachable / NotARegistry."""
        # eth_chainId cached: web3's validation asks it before every eth_call otherwise.
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}, cache_allowed_requests=True,
                                    cacheable_requests={"eth_chainId"}))
        try:
            w3.eth.chain_id  # noqa: B018 -- a real request, unlike is_connected's swallowed errors
        except Exception as exc:
            raise RpcUnreachable(f"cannot reach the JSON-RPC endpoint {rpc_url}: {exc}") from exc
        try:
            checksum = to_checksum_address(address)
        except ValueError as exc:
            raise NotARegistry(f"{address!r} is not an address") from exc
        hist = cls(w3, checksum, abi, **kw)
        hist.check_registry()
        return hist

    def check_registry(self) -> None:
        code = self.w3.eth.get_code(self.address)
        if not code:
            raise NotARegistry(f"no contract at {self.address} on chain {self.chain_id}")
        try:
            dom = self.domain
            self.contract.functions.streamCount().call()
        except Exception as exc:
            raise NotARegistry(f"{self.address} is not a MiniblockRegistry (its views do not answer: {exc})") from exc
        if dom.name != "MiniblockRegistry":
            raise NotARegistry(f"{self.address} is not a MiniblockRegistry (EIP-712 name {dom.name!r})")

    # ---- raw JSON-RPC (the hot paths: web3's contract-call machinery costs ~10x the request) ----

    def _rpc(self, method: str, params: list[Any]) -> Any:
        resp = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if resp.get("error"):
            raise HistoryError(f"{method} failed: {resp['error']}")
        return resp.get("result")

    def _block_param(self, block: int | str) -> str:
        return hex(block) if isinstance(block, int) else block

    @cached_property
    def _abi_fns(self) -> dict[str, tuple[bytes, list[str], list[str]]]:
        """name -> (selector, input types, output types) from the ABI (for the raw views and calldata)."""
        out = {}
        for item in self.abi:
            if item.get("type") == "function":
                ins = [_abi_type(i) for i in item.get("inputs", [])]
                sel = keccak(text=f"{item['name']}({','.join(ins)})")[:4]
                out[item["name"]] = (sel, ins, [_abi_type(o) for o in item.get("outputs", [])])
        return out

    def _view(self, name: str, args: list[Any], block: int | str = "latest") -> tuple:
        sel, ins, outs = self._abi_fns[name]
        data = "0x" + (sel + abi_encode(ins, args)).hex()
        raw = self._rpc("eth_call", [{"to": self.address, "data": data}, self._block_param(block)])
        return abi_decode(outs, bytes(HexBytes(raw)))

    # ---- views ------------------------------------------------------------------------------

    @cached_property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    @cached_property
    def domain(self) -> Domain:
        """The EIP-712 domain exactly as the contract reports it (EIP-5267)."""
        _fields, name, version, chain_id, verifying, _salt, _ext = self.contract.functions.eip712Domain().call()
        return Domain(chain_id=int(chain_id), verifying_contract=verifying, name=name, version=version)

    def stream_exists(self, stream_id: bytes) -> bool:
        return bool(self._view("streamExists", [stream_id])[0])

    def head_of(self, stream_id: bytes, block: int | str = "latest") -> tuple[int, bytes, int]:
        number, h, ts = self.contract.functions.streamHead(stream_id).call(block_identifier=block)
        return int(number), bytes(h), int(ts)

    def header_hash_at(self, stream_id: bytes, number: int, block: int | str = "latest") -> bytes:
        return bytes(self._view("headerHashAt", [stream_id, number], block)[0])

    def _forget_latest(self) -> None:
        """Drop what may have changed since the last query (a long-lived explorer sees new replacements)."""
        self._replaced.clear()
        self._replicas_cache = {k: v for k, v in self._replicas_cache.items() if isinstance(k[1], int)}

    def _never_replaced(self, stream_id: bytes) -> bool:
        """No ReplicaReplaced log for the stream (so far): its replica list is the one it was created with."""
        if stream_id not in self._replaced:
            topics = [HexBytes(self.contract.events.ReplicaReplaced().topic), HexBytes(stream_id)]
            self._replaced[stream_id] = next(iter(self.iter_logs(topics)), None) is not None
        return not self._replaced[stream_id]

    def replicas_of(self, stream_id: bytes, block: int | str = "latest") -> list[str]:
        """The stream's replica list as of `block` (the end of it); one view call per stream when it never changed."""
        if isinstance(block, int) and self._never_replaced(stream_id):
            block = "latest"
        key = (stream_id, block)
        if key in self._replicas_cache:
            return self._replicas_cache[key]
        try:
            reps = self.contract.functions.replicasOf(stream_id).call(block_identifier=block)
        except Exception:
            if block == "latest":
                raise
            # A node that keeps no history: the replica set as of now is the best answer.
            reps = self.contract.functions.replicasOf(stream_id).call()
        out = [to_checksum_address(r) for r in reps]
        self._replicas_cache[key] = out
        return out

    def stream_ids(self) -> list[bytes]:
        n = int(self.contract.functions.streamCount().call())
        return [bytes(self.contract.functions.streamIdAt(i).call()) for i in range(n)]

    def nodes(self) -> list[dict[str, Any]]:
        n = int(self.contract.functions.nodeCount().call())
        out: list[dict[str, Any]] = []
        page = 100
        for off in range(0, n, page):
            for info in self.contract.functions.getNodes(off, page).call():
                node, operator, url, status, join_epoch, leave_epoch, commit = info
                out.append({
                    "node": to_checksum_address(node), "operator": to_checksum_address(operator), "url": url,
                    "status": NODE_STATUS[status] if 0 <= status < len(NODE_STATUS) else str(status),
                    "joinEpoch": int(join_epoch), "leaveEpoch": int(leave_epoch),
                    "randaoCommit": hx(bytes(commit)),
                })
        return out

    def overview(self) -> dict[str, Any]:
        f = self.contract.functions
        return {
            "chainId": self.chain_id,
            "registry": self.address,
            "blockNumber": int(self.w3.eth.block_number),
            "epoch": int(f.currentEpoch().call()),
            "seed": hx(bytes(f.currentSeed().call())),
            "randaoMix": hx(bytes(f.randaoMix().call())),
            "epochLength": int(f.epochLength().call()),
            "leaderTimeout": int(f.leaderTimeout().call()),
            "replicationFactor": int(f.replicationFactor().call()),
            "genesisTime": int(f.genesisTime().call()),
            "domain": {"name": self.domain.name, "version": self.domain.version,
                       "chainId": self.domain.chain_id, "verifyingContract": self.domain.verifying_contract},
            "nodes": self.nodes(),
            "streamCount": int(f.streamCount().call()),
        }

    def streams(self) -> list[StreamInfo]:
        self._forget_latest()
        created = {c["stream_id"]: c for c in self.stream_created()}
        out = []
        for sid in self.stream_ids():
            number, h, ts = self.head_of(sid)
            c = created.get(sid, {})
            out.append(StreamInfo(
                stream_id=sid, head_number=number, head_hash=h, head_timestamp=ts,
                replicas=self.replicas_of(sid), genesis_hash=self.header_hash_at(sid, 0),
                created_block=c.get("block_number"), created_epoch=c.get("epoch"), creator=c.get("creator"),
            ))
        return out

    def verify_inclusion(
        self, header: Header, proof: Sequence[bytes], index: int, event_hash: bytes
    ) -> dict[str, Any]:
        """An event's inclusion in a committed header, checked twice: the contract's verifyInclusion
        (eth_call) and node/protocol/merkle.verify_proof against the header's eventsRoot."""
        proof = [bytes(p) for p in proof]
        onchain: bool | None
        error = None
        try:
            onchain = bool(self.contract.functions.verifyInclusion(header.as_abi(), proof, index, event_hash).call())
        except Exception as exc:  # e.g. an index that does not fit uint256
            onchain, error = None, str(exc)
        offchain = verify_proof(header.events_root, header.event_count, index, event_hash, proof)
        committed = self.header_hash_at(header.stream_id, header.number) == hash_header(header)
        return {"onchain": onchain, "offchain": offchain, "offchainCommitted": committed,
                "offchainValid": offchain and committed, "error": error}

    # ---- logs -------------------------------------------------------------------------------

    @cached_property
    def deploy_block(self) -> int:
        """The first block where the registry has code (binary search; 0 on a node without history)."""
        latest = int(self.w3.eth.block_number)
        try:
            if not self.w3.eth.get_code(self.address, block_identifier=0):
                lo, hi = 0, latest  # no code at lo, code at hi
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self.w3.eth.get_code(self.address, block_identifier=mid):
                        hi = mid
                    else:
                        lo = mid
                return hi
            return 0
        except Exception:
            return 0

    def iter_logs(
        self, topics: list[Any], from_block: int | None = None, to_block: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """eth_getLogs over [from_block, to_block] in chunks; a provider's range or size error halves the chunk."""
        start = self.deploy_block if from_block is None else max(0, from_block)
        end = int(self.w3.eth.block_number) if to_block is None else to_block
        step = self.chunk_size
        seen = 0
        while start <= end:
            stop = min(end, start + step - 1)
            try:
                logs = self.w3.eth.get_logs({
                    "address": self.address, "fromBlock": start, "toBlock": stop, "topics": topics,
                })
            except Exception:
                if step == 1:
                    raise
                step = max(1, step // 2)
                continue
            for log in logs:
                seen += 1
                if seen > self.max_logs:
                    self.truncated = True
                    return
                yield log
            start = stop + 1

    def stream_created(self, stream_id: bytes | None = None) -> list[dict[str, Any]]:
        topics: list[Any] = [self.topic_stream_created]
        if stream_id is not None:
            topics.append(HexBytes(stream_id))
        out = []
        for log in self.iter_logs(topics):
            a = self.contract.events.StreamCreated().process_log(log)["args"]
            out.append({
                "stream_id": bytes(a["streamId"]), "creator": a.get("creator"), "epoch": int(a["epoch"]),
                "replicas": [to_checksum_address(r) for r in a.get("replicas", [])],
                "genesis_hash": bytes(a["genesisHash"]), "block_number": int(log["blockNumber"]),
                "tx_hash": bytes(log["transactionHash"]),
            })
        return out

    def _decode_commit_tx(self, tx_hash: bytes) -> tuple[list[tuple[Header, list[bytes]]] | None, dict, str | None]:
        """The (header, signatures) pairs of a commit transaction, its receipt, and why decoding failed."""
        if tx_hash in self._tx_cache:
            return self._tx_cache[tx_hash]
        tx = self._rpc("eth_getTransactionByHash", ["0x" + tx_hash.hex()])
        receipt = self._rpc("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
        receipt = {"gasUsed": int(receipt["gasUsed"], 16), "status": int(receipt.get("status") or "0x1", 16)}
        pairs: list[tuple[Header, list[bytes]]] | None = None
        err: str | None = None
        data = bytes(HexBytes(tx.get("input") or tx.get("data") or "0x"))
        if not tx.get("to") or to_checksum_address(tx["to"]) != self.address:
            err = "the commit was not a direct call to the registry: calldata not decoded"
        else:
            try:
                pairs = decode_commit_call(data)
            except NotACommitCall as exc:
                err = f"{exc}: calldata not decoded"
        self._tx_cache[tx_hash] = (pairs, receipt, err)
        return pairs, receipt, err

    def _timestamp(self, block_number: int) -> int:
        if block_number not in self._ts_cache:
            blk = self._rpc("eth_getBlockByNumber", [hex(block_number), False])
            self._ts_cache[block_number] = int(blk["timestamp"], 16)
        return self._ts_cache[block_number]

    def _records_from_logs(self, logs: list[dict[str, Any]]) -> list[HeaderRecord]:
        logs = sorted(logs, key=lambda lg: (int(lg["blockNumber"]), int(lg["logIndex"])))
        records: list[HeaderRecord] = []
        # The contract emits one event per header, in batch order: consume the calldata
        # entries in order, matched by headerHash.
        consumed: dict[bytes, set[int]] = {}
        for log in logs:
            topic0 = HexBytes(log["topics"][0])
            committed = topic0 == self.topic_committed
            event = self.contract.events.MiniblockCommitted() if committed else self.contract.events.MiniblockRejected()
            a = event.process_log(log)["args"]
            tx_hash = bytes(log["transactionHash"])
            rec = HeaderRecord(
                status="committed" if committed else "rejected",
                stream_id=bytes(a["streamId"]), number=int(a["number"]), header_hash=bytes(a["headerHash"]),
                tx_hash=tx_hash, block_number=int(log["blockNumber"]), log_index=int(log["logIndex"]),
                reason=None if committed else int(a["reason"]),
            )
            if committed:
                rec.leader = to_checksum_address(a["leader"])
                rec.prev_hash, rec.events_root = bytes(a["prevHash"]), bytes(a["eventsRoot"])
                rec.event_count = int(a["eventCount"])
            rec.verification = Verification()
            pairs, receipt, err = self._decode_commit_tx(tx_hash)
            rec.tx_gas_used = int(receipt["gasUsed"])
            rec.block_timestamp = self._timestamp(rec.block_number)
            if pairs is None:
                rec.batch_size = 1
                rec.verification.problems.append(err or "calldata not decoded")
            else:
                rec.batch_size = len(pairs)
                used = consumed.setdefault(tx_hash, set())
                idx = next((i for i, (h, _) in enumerate(pairs) if i not in used and hash_header(h) == rec.header_hash), None)
                if idx is None:
                    rec.verification.problems.append("no header in the commit's calldata hashes to the log's headerHash")
                else:
                    used.add(idx)
                    rec.batch_index = idx
                    rec.header, rec.signatures = pairs[idx]
                    h = rec.header
                    rec.leader, rec.prev_hash, rec.events_root, rec.event_count = (
                        h.leader, h.prev_hash, h.events_root, h.event_count)
            records.append(rec)
        return records

    def _check_signatures(self, rec: HeaderRecord) -> None:
        """Recover every signature under the registry's domain; fill signers and the signature checks."""
        v = rec.verification
        assert v is not None
        try:
            rec.replicas = self.replicas_of(rec.stream_id, rec.block_number)
        except Exception as exc:
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
                v.problems.append(f"signature 0 recovers to {first.address or first.error}, not the leader {rec.header.leader}")
        bad = [s for s in rec.signers if s.address is None or not s.is_replica or s.duplicate]
        v.attestations = bool(rec.signers) and not bad
        for s in bad:
            why = s.error if s.address is None else ("a duplicate signer" if s.duplicate else f"{s.address} is not a replica")
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
        """Every committed (and rejected) header in the block range, oldest first, verified."""
        self._forget_latest()
        topic0 = [self.topic_committed, self.topic_rejected] if include_rejected else self.topic_committed
        topics: list[Any] = [topic0]
        if stream_id is not None:
            topics.append(HexBytes(stream_id))
        logs = list(self.iter_logs(topics, from_block, to_block))
        records = self._records_from_logs(logs)
        records = [r for r in records if r.number >= from_number]
        if verify:
            self._verify(records)
        return records

    def _verify(self, records: list[HeaderRecord]) -> None:
        last_hash: dict[bytes, tuple[int, bytes]] = {}  # stream -> (number, hash) of the last commit seen
        for rec in records:
            v = rec.verification
            assert v is not None
            self._check_signatures(rec)
            if rec.status != "committed":
                continue
            # hash: the calldata header, the log and the contract's storage agree
            onchain = self.header_hash_at(rec.stream_id, rec.number)
            v.hash = onchain == rec.header_hash and rec.header is not None
            if onchain != rec.header_hash:
                v.problems.append(f"headerHashAt({rec.number}) is {hx(onchain)}, the log says {hx(rec.header_hash)}")
            # parent: the previous commit seen of this stream, else what the chain stores at number-1
            prev = last_hash.get(rec.stream_id)
            if prev is not None and prev[0] == rec.number - 1:
                expected = prev[1]
            elif rec.number >= 1:
                expected = self.header_hash_at(rec.stream_id, rec.number - 1)
                if expected == ZERO32:
                    v.problems.append(f"no header stored at number {rec.number - 1}")
            else:
                expected = None
            v.parent = expected is not None and rec.prev_hash == expected and expected != ZERO32
            if expected is not None and rec.prev_hash != expected:
                v.problems.append(f"prevHash {hx(rec.prev_hash or ZERO32)} != hash of block {rec.number - 1} {hx(expected)}")
            last_hash[rec.stream_id] = (rec.number, rec.header_hash)

    def chain_summary(self, stream_id: bytes, records: list[HeaderRecord] | None = None) -> dict[str, Any]:
        """Whether a stream's committed headers form one unbroken parent chain from genesis to its head."""
        if records is None:
            records = self.headers(stream_id)
        committed = sorted((r for r in records if r.stream_id == stream_id and r.status == "committed"),
                           key=lambda r: r.number)
        genesis = self.header_hash_at(stream_id, 0)
        created = self.stream_created(stream_id)
        problems = []
        genesis_ok = True
        if created:
            c = created[0]
            expect = hash_header(Header.genesis(stream_id, c["epoch"]))
            if not (c["genesis_hash"] == genesis == expect):
                genesis_ok = False
                problems.append("genesis hash differs between StreamCreated, headerHashAt(0) and hash_header(genesis)")
        else:
            problems.append("no StreamCreated log found")
            genesis_ok = genesis != ZERO32
        head_number, head_hash, _ = self.head_of(stream_id)
        prev = genesis
        contiguous = True
        for expected_n, r in enumerate(committed, start=1):
            if r.number != expected_n:
                contiguous = False
                problems.append(f"missing commit of number {expected_n}")
                break
            if r.prev_hash != prev:
                contiguous = False
                problems.append(f"block {r.number}: prevHash does not match block {r.number - 1}")
                break
            prev = r.header_hash
        at_head = contiguous and (committed[-1].number if committed else 0) == head_number and prev == head_hash
        if contiguous and not at_head:
            problems.append("the commits seen do not reach the stream head")
        all_ok = all(r.verification is not None and r.verification.ok for r in committed)
        return {
            "stream": hx(stream_id), "genesisHash": hx(genesis), "genesisOk": genesis_ok,
            "headNumber": head_number, "headHash": hx(head_hash), "commits": len(committed),
            "chainOk": genesis_ok and contiguous and at_head, "headersOk": all_ok,
            "ok": genesis_ok and contiguous and at_head and all_ok, "problems": problems,
        }

    # ---- for the daemon ---------------------------------------------------------------------

    def committed_header(
        self, header_hash: bytes, stream_id: bytes | None = None, number: int | None = None,
        *, from_block: int | None = None, verify: bool = True,
    ) -> HeaderRecord | None:
        """The commit of `header_hash` (full Header, signatures, tx), or None if it was never committed.

        Give stream_id and number when known: the log query is then filtered by both indexed topics.
        """
        return self.find_header(header_hash, stream_id, number, from_block=from_block, verify=verify,
                                include_rejected=False)

    def find_header(
        self, header_hash: bytes, stream_id: bytes | None = None, number: int | None = None,
        *, from_block: int | None = None, verify: bool = True, include_rejected: bool = True,
    ) -> HeaderRecord | None:
        """The first MiniblockCommitted (or, if none, MiniblockRejected) log of `header_hash`, decoded."""
        self._forget_latest()
        header_hash = bytes32(header_hash)
        topic0 = [self.topic_committed, self.topic_rejected] if include_rejected else self.topic_committed
        topics: list[Any] = [topic0, HexBytes(stream_id) if stream_id is not None else None]
        if number is not None:
            topics.append(HexBytes(int(number).to_bytes(32, "big")))
        while topics and topics[-1] is None:
            topics.pop()
        logs = [lg for lg in self.iter_logs(topics, from_block) if _log_header_hash(lg) == header_hash]
        if not logs:
            return None
        committed = [lg for lg in logs if HexBytes(lg["topics"][0]) == self.topic_committed]
        recs = self._records_from_logs((committed or logs)[:1])
        if verify:
            self._verify(recs)
        return recs[0]

    def header_at(self, stream_id: bytes, number: int, *, verify: bool = True) -> HeaderRecord | None:
        """The committed header at (stream, number), found through the hash the contract stores there."""
        h = self.header_hash_at(stream_id, number)
        if h == ZERO32:
            return None
        return self.committed_header(h, stream_id, number, verify=verify)


def _log_header_hash(log: dict[str, Any]) -> bytes:
    # Non-indexed data of both events starts with headerHash
    # (Committed: headerHash, prevHash, eventsRoot, eventCount; Rejected: headerHash, reason).
    return bytes(HexBytes(log["data"]))[:32]


def _abi_type(param: dict[str, Any]) -> str:
    """The canonical type string of an ABI parameter (tuples spelled out)."""
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + t[len("tuple"):]
    return t


def wait_for_rpc(rpc_url: str, timeout: float = 10.0) -> Web3:
    """A Web3 on rpc_url once it answers (used by tests and the explorer's start-up)."""
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 5}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            w3.eth.chain_id  # noqa: B018
            return w3
        except Exception:
            if time.monotonic() > deadline:
                raise RpcUnreachable(f"cannot reach the JSON-RPC endpoint {rpc_url}") from None
            time.sleep(0.1)
