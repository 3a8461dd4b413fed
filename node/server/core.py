"""Shared state of a running node: storage, chain view, peers, caches of election inputs."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from eth_utils import to_checksum_address

from node.protocol.eip712 import address_of
from node.protocol.election import elected_leader, open_attempt
from node.protocol.onion import HashOnion
from node.protocol.types import Domain

from .bounded import MAP_BOUND, BoundedDict
from .chainio import Chain, NodeRecord
from .config import NodeConfig
from .metrics import Metrics
from .models import hx
from .peers import Peers
from .storage import Storage

log = logging.getLogger("node")

BOUNDARY_GUARD_S = 1.0  # do not lead in the last second of an epoch (WrongEpoch risk)
ATTEMPT_MARGIN_S = 1.0  # lead an attempt only once its window has been open this long (clock skew)


@dataclass(slots=True)
class ChainHead:
    number: int
    hash: bytes
    ts: int


@dataclass
class Node:
    cfg: NodeConfig
    key: bytes
    onion: HashOnion
    storage: Storage
    chain: Chain
    peers: Peers
    domain: Domain
    params: dict[str, int]
    metrics: Metrics = field(default_factory=Metrics)
    me: str = ""
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    seeds: dict[int, bytes] = field(default_factory=lambda: BoundedDict(MAP_BOUND["seeds"]))
    chain_heads: dict[bytes, ChainHead] = field(default_factory=dict)
    replicas: dict[bytes, list[str]] = field(default_factory=dict)
    chain_block: int = 0
    wake_sync: asyncio.Event = field(default_factory=asyncio.Event)
    wake_gossip: asyncio.Event = field(default_factory=asyncio.Event)
    randao_commit: bytes | None = None
    ready: bool = False
    stopping: bool = False
    # when an event was accepted here (for the commit latency histogram); bounded
    accepted_at: dict[bytes, float] = field(default_factory=lambda: BoundedDict(MAP_BOUND["accepted_at"]))

    def __post_init__(self) -> None:
        self.me = address_of(self.key)
        # Every map that grows with what peers, clients or the chain bring is bounded (node.server.bounded).
        self.sync_locks: dict[bytes, asyncio.Lock] = BoundedDict(MAP_BOUND["per_stream"])
        self.attested: dict[tuple, bytes] = BoundedDict(MAP_BOUND["per_slot"])
        self.tried: dict[tuple, float] = BoundedDict(MAP_BOUND["per_slot"])
        self.gossip_queues: dict[str, list[dict]] = BoundedDict(MAP_BOUND["per_peer"])
        self.gossip_senders: dict[str, asyncio.Task] = BoundedDict(MAP_BOUND["per_peer"])
        self.pruned_at: dict[bytes, float] = BoundedDict(MAP_BOUND["per_stream"])
        self.attested_at: dict[tuple[bytes, int], tuple[int, float]] = BoundedDict(MAP_BOUND["per_slot"])
        self.onion_alarm = 0.0  # last time an onion problem was logged
        self.invalid_events: dict[bytes, float] = BoundedDict(MAP_BOUND["invalid_events"])

    # ---- time and epochs ------------------------------------------------------------------
    def chain_now(self) -> float:
        return self.chain.now()

    def epoch_at(self, t: float) -> int:
        return int((t - self.params["genesis_time"]) // self.params["epoch_length"])

    def current_epoch(self) -> int:
        return self.epoch_at(self.chain_now())

    def near_epoch_end(self) -> bool:
        t = self.chain_now() - self.params["genesis_time"]
        length = self.params["epoch_length"]
        return (t % length) > length - BOUNDARY_GUARD_S

    async def seed_for(self, epoch: int) -> bytes | None:
        """The seed of `epoch`, if it is the chain's current epoch (cached once confirmed)."""
        s = self.seeds.get(epoch)
        if s is not None:
            return s
        try:
            e_view, seed_view = await self.chain.epoch_and_seed()
            if e_view == epoch:
                self.seeds[epoch] = seed_view
                return seed_view
            if e_view < epoch:
                # No block of `epoch` yet: the first call that advances will take the current mix as seed.
                return bytes(await self.chain.contract.functions.randaoMix().call())
        except Exception as exc:  # noqa: BLE001
            log.warning("seed lookup failed: %s", exc)
        return None

    # ---- membership of the registry --------------------------------------------------------
    async def refresh_nodes(self) -> None:
        recs = await self.chain.nodes()
        self.nodes = {r.address: r for r in recs}

    def is_active(self, addr: str, epoch: int | None = None) -> bool:
        rec = self.nodes.get(addr)
        return rec is not None and rec.active(self.current_epoch() if epoch is None else epoch)

    def url_of(self, addr: str) -> str | None:
        rec = self.nodes.get(addr)
        return rec.url if rec and rec.url else None

    # ---- streams ----------------------------------------------------------------------------
    def replicas_of(self, sid: bytes) -> list[str]:
        r = self.replicas.get(sid)
        if r is None:
            row = self.storage.get_stream(sid)
            r = row.replicas if row else []
            self.replicas[sid] = r
        return r

    def replicates(self, sid: bytes) -> bool:
        return self.me in self.replicas_of(sid)

    def quorum(self, sid: bytes) -> int:
        return len(self.replicas_of(sid)) // 2 + 1

    def leader_of(self, seed: bytes, sid: bytes, number: int, attempt: int) -> str:
        return elected_leader(seed, sid, number, attempt, self.replicas_of(sid))

    def current_attempt(self, head_ts: int, margin: float = ATTEMPT_MARGIN_S) -> int:
        return open_attempt(int(self.chain_now() - margin), head_ts, self.params["leader_timeout"])

    def behind(self, sid: bytes) -> bool:
        ch = self.chain_heads.get(sid)
        row = self.storage.get_stream(sid)
        return ch is not None and (row is None or row.head_number < ch.number)

    def peer_urls(self, addrs: list[str]) -> list[tuple[str, str]]:
        out = []
        for a in addrs:
            if a == self.me:
                continue
            u = self.url_of(a)
            if u:
                out.append((a, u))
        return out

    def note_accepted(self, hashes: list[bytes]) -> None:
        now = time.time()
        if len(self.accepted_at) > 200_000:
            self.accepted_at.clear()
        for h in hashes:
            self.accepted_at[h] = now


def sid_hex(sid: bytes) -> str:
    return hx(sid)


def checksum(a: str) -> str:
    return to_checksum_address(a)
