"""Shared state of a running node: its identity, storage, chain client, chain view and the small
bookkeeping of its loops. Every field has one owner (the module that writes it); see `Node`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eth_utils.address import to_checksum_address

from node.chain.client import NodeRecord, RegistryClient
from node.protocol.commit import StreamHead
from node.protocol.eip712 import address_of
from node.protocol.election import elected_leader, open_attempt
from node.protocol.onion import HashOnion
from node.protocol.registry import RegistryParams, epoch_at, epoch_time_left, is_active, quorum
from node.protocol.state import StreamRules
from node.protocol.types import Domain

from .bounded import MAP_BOUND, BoundedDict, TTLCache
from .chainview import ChainView
from .config import NodeConfig
from .metrics import Metrics
from .models import hx
from .peers import Peers
from .storage import Storage, StreamState

if TYPE_CHECKING:
    from .aggregate import Aggregator

log = logging.getLogger("node")

BOUNDARY_GUARD_S = 1.0  # do not lead in the last second of an epoch (WrongEpoch risk)
ATTEMPT_MARGIN_S = 1.0  # lead an attempt only once its window has been open this long (clock skew)


@dataclass
class UpkeepState:
    """Replica upkeep's work lists (node.server.replicas, the only writer besides the view's hook): streams
    whose replicas changed since upkeep looked (`dirty`); the streams with a replica to replace that this
    node acts for (`stale`: stream -> replica indexes); per replica address, the oldest head timestamp of
    its streams at the last look (`oldest`, a lower bound: the stall rule's re-reads); and the registry
    inputs of the last full look (`key`: epoch, node records, dead replicas), a change of which makes the
    next round look at every stream once."""

    dirty: set[bytes] = field(default_factory=set)
    stale: dict[bytes, list[int]] = field(default_factory=dict)
    oldest: dict[str, int] = field(default_factory=dict)
    key: tuple | None = None


@dataclass
class Node:
    """A running node. Who writes what:

    - set once by `app.build_node` (read by all): cfg, key, onion, storage, chain, peers, domain, params,
      metrics; `me` and `view` are derived from them here.
    - `view` (chain heads, replicas, node records, seeds): written only by its own methods, fed by
      `watcher` (log batches, start-up heads, node records), `producer` (its commit receipt's logs,
      heads after a rejection) and `seed_for` below (seeds); see node/server/chainview.py.
    - `watcher` (with `reorg`): chain_block, final_block, heads_to_reload, nodes_stale, reorg_depths, ready.
      `sync`: diverged.  `app`: stopping.  `wake_sync`/`wake_gossip`: set by anyone, waited
      on by the watcher / the gossip loop.  `wake_produce`: set by the watcher after a round that applied
      commits, waited on by the leader loop (its tick starts when a head moves, not up to `tick_ms` later).
    - `producer`: randao_commit (the chain's commitment of this node, None = re-read), onion_alarm,
      invalid_events, send_lag_s (how long its recent ticks took from start to send: window.next_lag);
      `tried` (producer's slots and `replicas` upkeep's replaceReplica keys);
      `delegate` (the producer's hand-off): aggregator_skip (aggregators that failed, until when).
    - `aggregator`: set once by `app.build_node`; its waiting hand-offs are its own (node/server/aggregate.py),
      and it feeds `view` its transactions' logs and heads it re-read.
    - `attest`: attested_at (read by the producer: let an earlier attempt's leader finish).
    - `forward`: forwarded (events this node passed on to a replica: event -> stream, for reads here).
    - `intake`: accepted_at (note_accepted; `sync.on_applied` pops it for the latency histogram),
      gossip_queues, gossip_senders.
    - `sync`: sync_locks, pruned_at, sync_todo (streams that may be behind: fed by the view's change hook
      below, emptied by `sync.sync_all` as they catch up), sync_others (its background pass over streams
      not replicated here).  `replicas`: upkeep (its work lists, fed by the same hook).
      `snapshots`: snapshot_tried (when a stream last tried a peer
      snapshot), snapshot_stuck (sync passes in a row that applied nothing while behind).
    """

    cfg: NodeConfig
    key: bytes
    onion: HashOnion
    storage: Storage
    chain: RegistryClient
    peers: Peers
    domain: Domain
    params: RegistryParams
    metrics: Metrics = field(default_factory=Metrics)
    me: str = ""
    chain_block: int = 0
    wake_sync: asyncio.Event = field(default_factory=asyncio.Event)
    wake_gossip: asyncio.Event = field(default_factory=asyncio.Event)
    wake_produce: asyncio.Event = field(default_factory=asyncio.Event)
    randao_commit: bytes | None = None
    ready: bool = False
    stopping: bool = False
    # when an event was accepted here (for the commit latency histogram); bounded
    # Every map that grows with what peers, clients or the chain bring is bounded (node.server.bounded).
    accepted_at: dict[bytes, float] = field(default_factory=lambda: BoundedDict(MAP_BOUND["accepted_at"]))
    sync_locks: dict[bytes, asyncio.Lock] = field(default_factory=lambda: BoundedDict(MAP_BOUND["per_stream"]))
    tried: dict[tuple, float] = field(default_factory=lambda: BoundedDict(MAP_BOUND["per_slot"]))
    gossip_queues: dict[str, list[bytes]] = field(default_factory=lambda: BoundedDict(MAP_BOUND["per_peer"]))
    gossip_senders: dict[str, asyncio.Task] = field(default_factory=lambda: BoundedDict(MAP_BOUND["per_peer"]))
    pruned_at: dict[bytes, float] = field(default_factory=lambda: BoundedDict(MAP_BOUND["per_stream"]))
    snapshot_tried: dict[bytes, float] = field(default_factory=lambda: BoundedDict(MAP_BOUND["per_stream"]))
    snapshot_stuck: dict[bytes, int] = field(default_factory=lambda: BoundedDict(MAP_BOUND["per_stream"]))
    # (stream, number) -> (attempt, when)
    attested_at: dict[tuple[bytes, int], tuple[int, float]] = field(
        default_factory=lambda: BoundedDict(MAP_BOUND["per_slot"]))
    onion_alarm: float = 0.0  # last time an onion problem was logged
    send_lag_s: float = 0.0  # producer: its ticks' start -> send, recent (a slot with less window left waits)
    # reorg (node.server.reorg, the watcher): the newest chain block counted final; streams whose chain head
    # must be re-read after a rollback; node records to re-read; depths of the reorgs seen (bounded)
    final_block: int = -1
    heads_to_reload: set[bytes] = field(default_factory=set)
    nodes_stale: bool = False
    reorg_depths: list[int] = field(default_factory=list)
    # sync: streams whose computed members disagree with a block's stateRoot (number), not applied further
    diverged: dict[bytes, int] = field(default_factory=dict)
    rescan_from: int | None = None  # sync -> watcher: rescan the chain from this block (a parent mismatch)
    # dropped by the validity filter, until
    invalid_events: dict[bytes, float] = field(default_factory=lambda: BoundedDict(MAP_BOUND["invalid_events"]))
    aggregator: Aggregator | None = None
    sync_others: asyncio.Future[None] | None = None
    forwarded: TTLCache = field(default_factory=lambda: TTLCache(MAP_BOUND["forwarded"], 600.0))
    aggregator_skip: dict[str, float] = field(default_factory=lambda: BoundedDict(MAP_BOUND["per_peer"]))
    # work lists: what changed since the loops last looked (no loop scans every stream each round)
    sync_todo: set[bytes] = field(default_factory=set)
    upkeep: UpkeepState = field(default_factory=lambda: UpkeepState())
    view: ChainView = field(init=False)

    def __post_init__(self) -> None:
        self.me = address_of(self.key)
        self.view = ChainView(self.storage, self.me)
        self.view.on_change.append(self._stream_changed)

    def _stream_changed(self, sid: bytes) -> None:
        """The chain view changed a stream's head or replicas: sync and upkeep look at it next round."""
        self.sync_todo.add(sid)
        self.upkeep.dirty.add(sid)

    # ---- the chain view, read-only ----------------------------------------------------------
    @property
    def chain_heads(self) -> Mapping[bytes, StreamHead]:
        return self.view.heads

    @property
    def nodes(self) -> Mapping[str, NodeRecord]:
        return self.view.nodes

    # ---- time and epochs ------------------------------------------------------------------
    def chain_now(self) -> float:
        return self.chain.now()

    def epoch_at(self, t: float) -> int:
        return epoch_at(self.params, t)

    def current_epoch(self) -> int:
        return self.epoch_at(self.chain_now())

    def near_epoch_end(self) -> bool:
        return epoch_time_left(self.params, self.chain_now()) < BOUNDARY_GUARD_S

    async def seed_for(self, epoch: int) -> bytes | None:
        """The seed of `epoch`, if it is the chain's current epoch (cached once confirmed)."""
        s = self.view.seed(epoch)
        if s is not None:
            return s
        try:
            e_view, seed_view = await self.chain.epoch_and_seed()
            if e_view == epoch:
                self.view.load_seed(epoch, seed_view)
                return seed_view
            if e_view < epoch:
                # No block of `epoch` yet: the first call that advances will take the current mix as seed.
                return await self.chain.randao_mix()
        except Exception as exc:  # noqa: BLE001 - any RPC failure: no seed this time, the caller retries
            log.warning("seed lookup failed: %s", exc)
        return None

    # ---- membership of the registry --------------------------------------------------------
    async def refresh_nodes(self) -> None:
        self.view.load_nodes(await self.chain.nodes())

    def is_active(self, addr: str, epoch: int | None = None) -> bool:
        rec = self.view.nodes.get(addr)
        return rec is not None and is_active(rec.join_epoch, rec.leave_epoch,
                                             self.current_epoch() if epoch is None else epoch)

    def url_of(self, addr: str) -> str | None:
        rec = self.view.nodes.get(addr)
        return rec.url if rec and rec.url else None

    # ---- streams ----------------------------------------------------------------------------
    def replicas_of(self, sid: bytes) -> list[str]:
        return self.view.replicas_of(sid)

    def replicates(self, sid: bytes) -> bool:
        return self.me in self.replicas_of(sid)

    def follows(self, sid: bytes) -> bool:
        """This node stores the stream (its events and blocks): it replicates it, or it stores every stream
        (`sync_all_streams`). The one rule of what is stored here (node/server/forward.py: the others)."""
        return self.cfg.sync_all_streams or self.replicates(sid)

    def quorum(self, sid: bytes) -> int:
        return quorum(len(self.replicas_of(sid)))

    def leader_of(self, seed: bytes, sid: bytes, number: int, attempt: int) -> str:
        return elected_leader(seed, sid, number, attempt, self.replicas_of(sid))

    def current_attempt(self, head_ts: int, margin: float = ATTEMPT_MARGIN_S) -> int:
        return open_attempt(int(self.chain_now() - margin), head_ts, self.params.leader_timeout)

    def rules_of(self, state: StreamState) -> StreamRules:
        """What the block rules judge the stream's next block by besides its members (policy, creator)."""
        return StreamRules(state.creator, state.invite_only, self.domain)

    def behind(self, sid: bytes) -> bool:
        ch = self.view.head(sid)
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

    def is_final(self, chain_block: int) -> bool:
        """A commit in `chain_block` is final here (confirmations = 0 with finality "depth": every commit seen,
        as on an automining dev chain)."""
        if self.cfg.confirmations <= 0 and self.cfg.finality == "depth":
            return True
        return chain_block <= self.final_block

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
