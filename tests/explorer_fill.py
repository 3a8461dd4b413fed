"""Fill a fresh chain with real committed headers, for the header explorer's tests.

Deploys a registry (node.chain.deploy) with 4 nodes of Anvil's dev keys, creates two streams,
then builds and signs real headers with node/protocol (events, Merkle root, member-set root,
election, RANDAO onion) and commits them with commitMiniblocks: full attestation sets, a
minimal (exactly quorum) one, a batch of two streams in one tx, and a batch that also carries
a header the contract rejects. Returns what was sent, so the tests can compare every field.

`fill(..., version=2)` does the same on MiniblockRegistryV2: the same headers in packed batches (one
reveal per leader per transaction, attestations in replica order), the parents tracked here (the head
slot keeps a 20-byte prefix), the bad parent differing in the bytes the record sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_account import Account

from node.chain.anvil import DEV_KEYS
from node.chain.deploy import NodeSpec, deploy
from node.chain.registry import Registry
from node.protocol import v2
from node.protocol.eip712 import address_of, hash_event, hash_header, sign_event, sign_header
from node.protocol.election import elected_leader
from node.protocol.merkle import merkle_proof, merkle_root
from node.protocol.onion import HashOnion
from node.protocol.state import state_delta
from node.protocol.state_root import state_root_of
from node.protocol.types import Event, EventKind, Header, RejectReason

NODE_KEYS = [bytes.fromhex(k[2:]) for k in DEV_KEYS[1:5]]
AUTHOR_KEYS = [bytes.fromhex(k[2:]) for k in DEV_KEYS[6:9]]
STREAMS = [bytes.fromhex("aa" * 32), bytes.fromhex("bb" * 31 + "01")]


@dataclass
class Sent:
    """One header as the test sent it, and what the chain should show for it."""

    header: Header
    signers: list[str]          # in signature order (leader first)
    status: str                 # committed | rejected
    tx_hash: bytes = b""
    block_number: int = 0
    gas_used: int = 0
    batch_size: int = 1
    reason: RejectReason | None = None
    event_hashes: list[bytes] = field(default_factory=list)

    @property
    def header_hash(self) -> bytes:
        return hash_header(self.header)


@dataclass
class Filled:
    rpc_url: str
    registry: str
    chain_id: int
    replicas: dict[bytes, list[str]]
    sent: list[Sent]
    node_addresses: list[str]
    version: int = 1


class _Builder:
    def __init__(self, reg: Registry, onions: dict[str, HashOnion], keys: dict[str, bytes]) -> None:
        self.reg = reg
        self.version = reg.version
        self.heads: dict[bytes, bytes] = {}  # v2: each stream's full head hash (the chain keeps 20 bytes)
        self.onions = onions
        self.keys = keys
        self.domain = reg.domain()
        # per stream: member slots, policy and used nonces (what stateRoot commits to)
        self.state: dict[bytes, tuple[list[str | None], bool, list[tuple[str, int]]]] = {}
        self.nonce: dict[tuple[bytes, str], int] = {}
        self.commit: dict[str, bytes] = {}  # leader -> its on-chain commitment as the batch goes

    def events(self, sid: bytes, spec: list[tuple[int, int]]) -> list[Event]:
        """spec: (author index, kind) pairs."""
        out = []
        for ai, kind in spec:
            author = address_of(AUTHOR_KEYS[ai])
            n = self.nonce.get((sid, author), 0)
            self.nonce[(sid, author)] = n + 1
            ev = Event(sid, author, n, kind, f"payload {ai} {n}".encode())
            sign_event(self.domain, ev, AUTHOR_KEYS[ai])  # a real author signature (not committed on-chain)
            out.append(ev)
        return out

    def header(self, sid: bytes, events: list[Event], *, parent: bytes | None = None, number: int | None = None,
               apply: bool = True) -> tuple[Header, list[bytes]]:
        head = self.reg.stream_head(sid)
        replicas = self.reg.replicas_of(sid)
        seed = self.reg.current_seed()
        num = head.number + 1 if number is None else number
        leader = elected_leader(seed, sid, num, 0, replicas)
        head_hash = head.header_hash
        if self.version == 2:
            if sid not in self.heads:
                self.heads[sid] = self.reg.stream_created_logs(0, stream_id=sid)[0].genesis_hash
            head_hash = self.heads[sid]
            # one reveal per leader per transaction: its headers of one batch share it
            reveal = self.commit.get(leader) or self.onions[leader].reveals(
                self.reg.randao_commit_of(leader), 1, match=v2.COMMIT_PREFIX_BYTES)[0]
            if parent is not None:   # v2 takes prevHash[0:18] from the head: only the sent bytes can differ
                parent = head_hash[:v2.PREV_SENT_FROM] + parent[v2.PREV_SENT_FROM:]
        else:
            commit = self.commit.get(leader) or self.reg.randao_commit_of(leader)
            reveal = self.onions[leader].next_reveal(commit)
        slots, policy, used = self.state.get(sid, ([], False, []))
        delta = state_delta({s for s in slots if s is not None}, events, strict=False)
        after = ([None if s in delta.members.left else s for s in slots] + list(delta.members.joined),
                 policy if delta.invite_only is None else delta.invite_only,
                 used + [(e.author, e.nonce) for e in events])
        hashes = [hash_event(e) for e in events]
        h = Header(
            stream_id=sid, number=num, prev_hash=head_hash if parent is None else parent,
            events_root=merkle_root(hashes), event_count=len(hashes), epoch=self.reg.current_epoch(),
            attempt=0, leader=leader, randao_reveal=reveal, state_root=state_root_of(*after),
        )
        if apply:
            self.state[sid] = after
            self.commit[leader] = reveal
            self.heads[sid] = hash_header(h)
        return h, hashes

    def sign(self, h: Header, signers: list[str]) -> list[bytes]:
        return [sign_header(self.domain, h, self.keys[s]) for s in signers]


def fill(rpc_url: str, w3, version: int = 1) -> Filled:
    deployer = Account.from_key(DEV_KEYS[0])
    onions = {address_of(k): HashOnion(bytes([i + 1]) * 32, 64) for i, k in enumerate(NODE_KEYS)}
    keys = {address_of(k): k for k in NODE_KEYS}
    specs = [NodeSpec(addr, f"http://127.0.0.1:{9100 + i}", onions[addr].commitment) for i, addr in enumerate(keys)]
    dep = deploy(w3, deployer, epoch_length=3600, leader_timeout=60, replication_factor=3,
                 nodes=specs, streams=STREAMS, warp=True, rpc_url=rpc_url, registry_version=version)
    reg = Registry(w3, dep.registry, dep.abi(), deployer)
    b = _Builder(reg, onions, keys)
    replicas = {s: reg.replicas_of(s) for s in STREAMS}
    sent: list[Sent] = []

    def others(sid: bytes, leader: str) -> list[str]:
        return [r for r in replicas[sid] if r != leader]

    def commit(batch: list[Sent]) -> None:
        if version == 2:   # v2 carries the attestations in replica order
            for s in batch:
                reps = replicas[s.header.stream_id]
                s.signers = [s.signers[0], *sorted(s.signers[1:], key=reps.index)]
        sigs = [b.sign(s.header, s.signers) for s in batch]
        if version == 2:
            records = v2.records_of(b.domain, [s.header for s in batch], sigs, replicas)
            res = reg.commit_packed(v2.encode_batch(records, v2.reveal_order(records)))
        else:
            res = reg.commit_miniblocks([s.header for s in batch], sigs)
        assert res.status == 1
        for s in batch:
            s.tx_hash, s.block_number, s.gas_used, s.batch_size = (
                bytes(res.tx_hash), res.block_number, res.gas_used, len(batch))
        want = [s.header_hash for s in batch if s.status == "committed"]
        assert [bytes(c.header_hash) for c in res.committed] == want, res
        assert [(bytes(r.header_hash), r.reason) for r in res.rejected] == [
            (s.header_hash, int(s.reason)) for s in batch if s.status == "rejected"], res
        b.commit.clear()
        sent.extend(batch)

    s0, s1 = STREAMS
    # stream 0, block 1: two JOINs, every replica attests.
    h, hs = b.header(s0, b.events(s0, [(0, EventKind.JOIN), (1, EventKind.JOIN)]))
    commit([Sent(h, [h.leader, *others(s0, h.leader)], "committed", event_hashes=hs)])
    # stream 0, block 2: messages, a minimal attestation set (leader + one replica = quorum 2 of 3).
    h, hs = b.header(s0, b.events(s0, [(0, EventKind.MESSAGE), (1, EventKind.MESSAGE), (0, EventKind.MESSAGE)]))
    commit([Sent(h, [h.leader, others(s0, h.leader)[0]], "committed", event_hashes=hs)])
    # one tx for two streams: stream 0 block 3 (empty) and stream 1 block 1 (five events).
    h0, hs0 = b.header(s0, [])
    h1, hs1 = b.header(s1, b.events(s1, [(2, EventKind.JOIN), (0, EventKind.JOIN), (1, EventKind.JOIN),
                                         (0, EventKind.MESSAGE), (2, EventKind.MESSAGE)][:3]))
    commit([Sent(h0, [h0.leader, *others(s0, h0.leader)], "committed", event_hashes=hs0),
            Sent(h1, [h1.leader, *others(s1, h1.leader)], "committed", event_hashes=hs1)])
    # a batch with a header the contract rejects (only the leader signed: NoQuorum), then a good one
    # (the good one's prevHash is the same head: the rejected header changed nothing).
    bad, bad_hs = b.header(s1, b.events(s1, [(0, EventKind.MESSAGE)]), apply=False)
    b.commit.clear()
    good, good_hs = b.header(s1, b.events(s1, [(2, EventKind.MESSAGE), (1, EventKind.MESSAGE)]))
    commit([Sent(bad, [bad.leader], "rejected", reason=RejectReason.NO_QUORUM, event_hashes=bad_hs),
            Sent(good, [good.leader, *others(s1, good.leader)[::-1]], "committed", event_hashes=good_hs)])
    # stream 0 block 4: a bad parent hash (rejected, reason BadParent) alone in its tx.
    h, hs = b.header(s0, b.events(s0, [(1, EventKind.MESSAGE)]), parent=b"\x11" * 32, apply=False)
    commit([Sent(h, [h.leader, *others(s0, h.leader)], "rejected", reason=RejectReason.BAD_PARENT, event_hashes=hs)])
    return Filled(rpc_url=rpc_url, registry=dep.registry, chain_id=w3.eth.chain_id, replicas=replicas,
                  sent=sent, node_addresses=list(keys), version=version)


def proof_for(s: Sent, index: int) -> list[bytes]:
    return merkle_proof(s.event_hashes, index)


def commit_next(f: Filled, sid: bytes, reg: Registry | None = None, attesters: int | None = None):
    """Commit one more (empty) header of stream `sid`, led by its elected leader and attested by
    `attesters` other replicas (default: to the quorum), on either registry version (v2: a packed batch
    whose parent is the full hash from the logs)."""
    from node.chain.devtools import NodeKeys, next_header
    from node.chain.devtools import sign_header as sign_all

    if reg is None:
        reg = Registry(f.rpc_url, f.registry, None, Account.from_key(DEV_KEYS[0]))
        if reg.domain().version == "2":
            from node.chain.abi import load_abi

            reg = Registry(f.rpc_url, f.registry, load_abi(None, 2), Account.from_key(DEV_KEYS[0]))
    keys = {address_of(k): NodeKeys(k, HashOnion(bytes([i + 1]) * 32, 64)) for i, k in enumerate(NODE_KEYS)}
    if reg.version == 1:
        h = next_header(reg, sid, keys)
        return reg.commit_miniblocks([h], [sign_all(reg, h, keys, attesters=attesters)])
    head = reg.stream_head(sid)
    commits = reg.committed_logs(0, stream_id=sid)
    parent = commits[-1].header_hash if commits else reg.stream_created_logs(0, stream_id=sid)[0].genesis_hash
    replicas = reg.replicas_of(sid)
    leader = reg.elected_leader(sid, head.number + 1, 0)
    reveal = keys[leader].onion.reveals(reg.randao_commit_of(leader), 1, match=v2.COMMIT_PREFIX_BYTES)[0]
    h = Header(stream_id=sid, number=head.number + 1, prev_hash=parent, events_root=merkle_root([]), event_count=0,
               epoch=reg.current_epoch(), attempt=0, leader=leader, randao_reveal=reveal, state_root=b"\0" * 32)
    dom = reg.domain()
    signers = [leader, *[r for r in replicas if r != leader][: len(replicas) // 2 if attesters is None else attesters]]
    sigs = [sign_header(dom, h, keys[a].private_key) for a in signers]
    records = v2.records_of(dom, [h], [sigs], {sid: replicas})
    return reg.commit_packed(v2.encode_batch(records, v2.reveal_order(records)))
