"""A small synchronous helper around a deployed MiniblockRegistryV2 on Anvil, for the v2 gas bench
(bench/gas_v2.py) and the v2 equivalence tests (tests/test_v2_equivalence.py).

node/chain speaks v1 (the node's switch to v2 is a later step), so this talks to the contract with
plain web3 from Anvil's unlocked dev account 0 and builds batches with node/protocol/v2.py only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address

from node.build import load_artifact
from node.chain import access_list as access
from node.chain.anvil import DEV_KEYS, Anvil
from node.protocol import eip712, v2
from node.protocol.hashing import keccak
from node.protocol.onion import HashOnion
from node.protocol.types import ZERO32, Domain, Header

__all__ = ["NodeKey", "V2Chain", "Signed"]


@dataclass
class NodeKey:
    private_key: bytes
    onion: HashOnion

    @property
    def address(self) -> str:
        return eip712.address_of(self.private_key)


@dataclass
class Signed:
    """A header ready for a batch: the record fields and its full (65-byte) signatures."""

    header: Header
    leader_pos: int
    attesters: int
    signatures: list[bytes] = field(default_factory=list)  # 65-byte, leader first


class V2Chain:
    """A fresh v2 registry on `anvil` with `nodes` registered and active (epoch 1)."""

    def __init__(
        self, anvil: Anvil, *, nodes: int, replication: int, epoch_length: int = 86_400,
        leader_timeout: int = 30, tag: bytes = b"v2", onion_depth: int = 2048,
    ) -> None:
        self.anvil = anvil
        self.w3: Any = anvil.w3()
        self.sender = to_checksum_address(eip712.address_of(bytes.fromhex(DEV_KEYS[0][2:])))
        art = load_artifact("MiniblockRegistryV2")
        self.abi = art["abi"]
        factory = self.w3.eth.contract(abi=self.abi, bytecode=art["bytecode"])
        rc = self._wait(factory.constructor(epoch_length, leader_timeout, replication).transact({"from": self.sender}))
        self.address = to_checksum_address(rc["contractAddress"])
        self.c = self.w3.eth.contract(address=self.address, abi=self.abi)
        self.domain = v2.domain_v2(self.w3.eth.chain_id, self.address)
        self.keys: dict[str, NodeKey] = {}
        self.transact("allowOperator", self.sender)
        for i in range(nodes):
            pk = bytes.fromhex(DEV_KEYS[i + 1][2:]) if i + 1 < len(DEV_KEYS) else keccak(tag + b" node %d" % i)
            k = NodeKey(pk, HashOnion(keccak(tag + b" onion %d" % i), onion_depth))
            self.keys[k.address] = k
            self.transact("registerNode", k.address, f"http://127.0.0.1:{41000 + i}", k.onion.commitment)
        # registered in epoch 0, active from epoch 1
        self.anvil.increase_time(epoch_length)
        self.anvil.mine()
        self.full_head: dict[bytes, bytes] = {}
        # the history as the logs tell it: every commit's root and accepted header hashes
        self.roots: list[bytes] = []
        self.hashes: list[tuple[bytes, ...]] = []
        self.topic_committed = _topic(self.abi, "MiniblocksCommitted")
        self.topic_rejected = _topic(self.abi, "MiniblockRejected")

    # -- plumbing ---------------------------------------------------------------------------------
    def _wait(self, tx_hash: Any) -> Any:
        rc = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        if rc["status"] != 1:
            raise RuntimeError(f"transaction reverted: {rc}")
        return rc

    def transact(self, fn: str, *args: Any, access_list: bool = False) -> Any:
        """Sends fn(*args); ``access_list``: with the part of Anvil's eth_createAccessList that saves gas
        (node.chain.access_list.worthwhile, the rule the nodes' sender uses)."""
        tx: dict[str, Any] = {"from": self.sender, "gas": 29_000_000}
        self.last_access_list: list[dict[str, Any]] = []
        if access_list:
            call = {"from": self.sender, "to": self.address, "data": self.c.encode_abi(fn, list(args))}
            res = self.w3.provider.make_request("eth_createAccessList", [call, "latest"])
            entries = access.worthwhile(res["result"]["accessList"])
            if entries:
                tx["accessList"] = self.last_access_list = entries
        return self._wait(getattr(self.c.functions, fn)(*args).transact(tx))

    def call(self, fn: str, *args: Any) -> Any:
        return getattr(self.c.functions, fn)(*args).call()

    def raw_call(self, data: bytes) -> bytes:
        return bytes(self.w3.eth.call({"from": self.sender, "to": self.address, "data": data}))

    # -- streams ----------------------------------------------------------------------------------
    def create_streams(self, sids: Sequence[bytes]) -> None:
        epoch = self.call("currentEpoch")
        for sid in sids:
            self.transact("createStream", sid)
            self.full_head[sid] = eip712.hash_header(Header.genesis(sid, epoch))

    def replicas(self, sid: bytes) -> list[str]:
        return [to_checksum_address(a) for a in self.call("replicasOf", sid)]

    # -- batches ----------------------------------------------------------------------------------
    def next_signed(
        self, sid: bytes, *, signers: int, events_root: bytes | None = None, event_count: int = 16,
        attempt: int = 0, state_root: bytes = ZERO32,
    ) -> Signed:
        """The next header of `sid` by its elected leader, signed by the leader and `signers - 1`
        other replicas by position; the reveal is filled in by `batch`."""
        number = self.call("streamHead", sid)[0] + 1
        pos, leader = self.call("electedPosition", sid, number, attempt)
        h = Header(
            stream_id=sid, number=number, prev_hash=self.full_head[sid],
            events_root=events_root if events_root is not None else keccak(b"events" + sid),
            event_count=event_count, epoch=self.call("currentEpoch"), attempt=attempt,
            leader=leader, randao_reveal=ZERO32, state_root=state_root,
        )
        reps = self.replicas(sid)
        bits = 0
        for k, _a in enumerate(reps):
            if k != pos and bin(bits).count("1") < signers - 1:
                bits |= 1 << k
        return Signed(h, pos, bits)

    def _next_reveal(self, node: str) -> bytes:
        """The next layer of `node`'s onion after the registry's commitment (v2 keeps its top 192 bits)."""
        on = self.keys[node].onion
        pos = v2.onion_position([on.layer(i) for i in range(on.depth + 1)], bytes(self.call("randaoCommitOf", node)))
        return on.layer(pos - 1)

    def batch(self, items: Sequence[Signed], domain: Domain | None = None) -> tuple[bytes, list[Signed]]:
        """Assigns one reveal per distinct leader (its next onion layer), signs and packs."""
        dom = domain or self.domain
        leaders: list[str] = []
        for it in items:
            if it.header.leader not in leaders:
                leaders.append(it.header.leader)
        reveals = [self._next_reveal(a) for a in leaders]
        out: list[Signed] = []
        records: list[v2.Record] = []
        for it in items:
            j = leaders.index(it.header.leader)
            h = Header(**{**_fields(it.header), "randao_reveal": reveals[j]})
            reps = self.replicas(h.stream_id)
            signers = [h.leader] + [reps[k] for k in range(len(reps)) if it.attesters >> k & 1]
            sigs = [eip712.sign_header(dom, h, self.keys[a].private_key) for a in signers]
            s = Signed(h, it.leader_pos, it.attesters, sigs)
            out.append(s)
            records.append(v2.Record(h, it.leader_pos, j, it.attesters, tuple(v2.to_compact(x) for x in sigs)))
        return v2.encode_batch(records, reveals), out

    def commit(
        self, batch: bytes, *, access_list: bool = False,
    ) -> tuple[Any, v2.CommitLog | None, list[tuple[bytes, int, int]]]:
        """Sends commitMiniblocks(batch); returns the receipt, its commit log (None if nothing was
        accepted) and its rejections (streamId, number, reason); notes the history."""
        rc = self.transact("commitMiniblocks", batch, access_list=access_list)
        log: v2.CommitLog | None = None
        rejected: list[tuple[bytes, int, int]] = []
        for lg in rc["logs"]:
            t0 = bytes(lg["topics"][0])
            if t0 == self.topic_committed:
                log = v2.decode_commit_log(int.from_bytes(bytes(lg["topics"][1]), "big"), bytes(lg["data"]))
                if log.commit_index != len(self.roots):
                    raise RuntimeError("commit index out of order")
                self.roots.append(log.history_root)
                self.hashes.append(log.header_hashes)
            elif t0 == self.topic_rejected:
                d = bytes(lg["data"])
                rejected.append((bytes(lg["topics"][1]), int.from_bytes(bytes(lg["topics"][2]), "big"), d[63]))
        return rc, log, rejected

    def proof(self, commit_index: int, position: int) -> v2.HistoryProof:
        return v2.history_proof(self.roots, self.hashes[commit_index], commit_index, position)

    def note_accepted(self, items: Sequence[Signed]) -> None:
        for it in items:
            self.full_head[it.header.stream_id] = eip712.hash_header(it.header)

    def calldata(self, batch: bytes) -> bytes:
        return bytes.fromhex(self.c.encode_abi("commitMiniblocks", args=[batch])[2:])


def _topic(abi: list[dict[str, Any]], name: str) -> bytes:
    ev = next(e for e in abi if e.get("type") == "event" and e["name"] == name)
    return keccak(f"{name}({','.join(_abi_type(i) for i in ev['inputs'])})".encode())


def _abi_type(i: dict[str, Any]) -> str:
    return str(i["type"])


def _fields(h: Header) -> dict[str, Any]:
    return {f: getattr(h, f) for f in Header.__slots__}
