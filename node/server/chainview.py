"""What a node knows of the registry's state: stream heads, replica lists, node records, epoch seeds.

One writer, this class; everyone else reads. Its inputs:

- `apply_logs(batch)`: the registry's logs of a block range, in chain order: streams created, replicas
  replaced, mini-blocks committed. Fed by the watcher's scan and by the leader's own commit receipt
  (the same decoded `LogBatch`, the same apply). It also records them in storage (streams, replica
  lists, commits), where sync finds them.
- `load_stored(...)`: at start-up, every stream's head and replicas as the store recorded them from the
  logs up to its cursor (the watcher's next scan brings what came after; no chain read per stream).
- `load_head(...)`: a stream's head and replicas read from the registry's views (a start from a store
  without recorded timestamps, and after a commit failed or was rejected, when the logs may not tell the
  whole story yet). Registry v2's `streamHead` gives a 20-byte hash prefix: the full hash is the one
  of the commit recorded here from the logs at that number (or the genesis); a head whose full hash is
  not known here yet is left to the logs.

Registry v2's commits (one log per transaction, decoded per accepted record by node/chain) carry
neither the leader's address nor prevHash[0:18]: `apply_logs` fills them from the replica list and
the previous head's full hash, in chain order, before anything is recorded.
- `reset_head(...)`: the head read from the registry after a reorg rolled the stream back (may go down).
- `forget_stream(...)`: a stream the registry no longer has after a reorg (its creation orphaned).
- `load_nodes(...)`: the registry's node records (at start-up, on node events, at each new epoch).
- `load_seed(...)`: an epoch's seed once a view confirmed it (seeds never change once set).

Every change of a stream's head or replica list is told to `on_change` hooks (the node's work lists for
sync and replica upkeep: they then look at that stream only, never scan every stream). The streams whose
replica list names `me` are kept as a set (`replicated`), so counting or listing them costs no scan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from types import MappingProxyType

from node.chain.client import NodeRecord
from node.chain.logs import LogBatch, MiniblockCommitted
from node.protocol.commit import StreamHead

from .bounded import MAP_BOUND, BoundedDict
from .models import hx
from .storage import CommitRow, Rollback, Storage, StoredHead

log = logging.getLogger("node.chainview")


class ChainView:
    def __init__(self, storage: Storage, me: str = "") -> None:
        self._storage = storage
        self._me = me
        self._heads: dict[bytes, StreamHead] = {}
        self._replicas: dict[bytes, list[str]] = {}
        self._mine: set[bytes] = set()
        self.on_change: list[Callable[[bytes], None]] = []
        self._nodes: dict[str, NodeRecord] = {}
        self._seeds: dict[int, bytes] = BoundedDict(MAP_BOUND["seeds"])  # one per epoch: keep the recent ones

    # ---- reads --------------------------------------------------------------------------------
    @property
    def heads(self) -> Mapping[bytes, StreamHead]:
        """The chain's head of every stream seen (read-only)."""
        return MappingProxyType(self._heads)

    def head(self, sid: bytes) -> StreamHead | None:
        return self._heads.get(sid)

    @property
    def replicated(self) -> AbstractSet[bytes]:
        """The streams whose replica list names this node (read-only)."""
        return self._mine

    @property
    def nodes(self) -> Mapping[str, NodeRecord]:
        """The registry's node records by address (read-only)."""
        return MappingProxyType(self._nodes)

    def seed(self, epoch: int) -> bytes | None:
        return self._seeds.get(epoch)

    def replicas_of(self, sid: bytes) -> list[str]:
        """The stream's replica list, in election order (from storage until the chain told otherwise)."""
        r = self._replicas.get(sid)
        if r is None:
            row = self._storage.get_stream(sid)
            r = row.replicas if row else []
            self._put_replicas(sid, r)
        return r

    # ---- the one place replicas and heads change in memory ------------------------------------
    def _put_replicas(self, sid: bytes, reps: list[str]) -> None:
        reps = [_intern(a) for a in reps]  # 100,000 streams share a few addresses: one string each
        self._replicas[sid] = reps
        if self._me and self._me in reps:
            self._mine.add(sid)
        else:
            self._mine.discard(sid)

    def _changed(self, sid: bytes) -> None:
        for hook in self.on_change:
            hook(sid)

    # ---- writes -------------------------------------------------------------------------------
    def apply_logs(self, batch: LogBatch, block_time: Callable[[int], int | None] | None = None) -> list[Rollback]:
        """Record what the chain says (streams, replica changes, commits); blocks are applied by sync.

        A head's timestamp is its chain block's: from the batch, else `block_time` (a cache lookup), else 0.
        Returns the streams storage rolled back because a commit replaced another at the same number."""
        st = self._storage

        def ts(block: int) -> int:
            t = batch.block_times.get(block)
            if t is None and block_time is not None:
                t = block_time(block)
            return t or 0

        if batch.created:
            st.upsert_streams([(sc.stream_id, sc.genesis_hash, list(sc.replicas), sc.block_number, sc.creator,
                                ts(sc.block_number)) for sc in batch.created])
        for sc in batch.created:
            self._put_replicas(sc.stream_id, list(sc.replicas))
            if sc.stream_id not in self._heads:
                self._heads[sc.stream_id] = StreamHead(0, sc.genesis_hash, ts(sc.block_number))
            self._changed(sc.stream_id)
        for r in batch.replaced:
            reps = list(self.replicas_of(r.stream_id))
            if r.index < len(reps):
                reps[r.index] = r.new_node
                st.set_replicas(r.stream_id, reps)
                self._put_replicas(r.stream_id, reps)
                self._changed(r.stream_id)
                log.info("stream %s: replica %d %s -> %s", hx(r.stream_id), r.index, r.old_node, r.new_node)
        rollbacks: list[Rollback] = []
        if batch.committed:
            committed = self._resolve(batch.committed)
            hashes = batch.block_hashes
            rollbacks = st.add_commits([CommitRow(c.stream_id, c.number, c.header_hash, c.prev_hash, c.events_root,
                                                  c.event_count, c.leader, c.tx_hash, c.block_number,
                                                  hashes.get(c.block_number, b""), ts(c.block_number))
                                        for c in committed])
            for c in committed:
                cur = self._heads.get(c.stream_id)
                if cur is None or c.number >= cur.number:  # >=: a replacement header at the same number
                    self._heads[c.stream_id] = StreamHead(c.number, c.header_hash, ts(c.block_number))
                    self._changed(c.stream_id)
        return rollbacks

    def _resolve(self, commits: list[MiniblockCommitted]) -> list[MiniblockCommitted]:
        """v2 commits with their leader and prevHash (from the replicas and the previous head, in order)."""
        if all(c.leader_pos < 0 for c in commits):
            return commits
        prev: dict[bytes, StreamHead] = {}
        out = []
        for c in commits:
            before = prev.get(c.stream_id) or self._heads.get(c.stream_id)
            full = before.hash if before is not None and before.number == c.number - 1 else None
            if full is None:
                row = self._storage.get_commit(c.stream_id, c.number - 1)
                full = row.header_hash if row is not None else None
            r = c.resolved(self.replicas_of(c.stream_id), full)
            out.append(r)
            prev[c.stream_id] = StreamHead(c.number, c.header_hash, 0)
        return out

    def full_hash(self, sid: bytes, number: int, prefix: bytes) -> bytes | None:
        """The full header hash of (stream, number) whose first bytes are `prefix` (v2's streamHead), as the
        logs recorded here told it; None if not known here."""
        cur = self._heads.get(sid)
        if cur is not None and cur.number == number and cur.hash.startswith(prefix):
            return cur.hash
        if number == 0:
            row = self._storage.get_stream(sid)
            genesis = row.genesis_hash if row is not None else None
            return genesis if genesis is not None and genesis.startswith(prefix) else None
        c = self._storage.get_commit(sid, number)
        return c.header_hash if c is not None and c.header_hash.startswith(prefix) else None

    def load_stored(self, rows: Iterable[StoredHead]) -> list[StoredHead]:
        """At start-up: the heads and replica lists the store recorded. Returns the rows whose timestamp
        the store lacks (an older data dir): their heads are read from the registry (`load_head`)."""
        unknown = []
        for r in rows:
            self._put_replicas(r.stream_id, r.replicas)
            if r.timestamp:
                cur = self._heads.get(r.stream_id)
                if cur is None or r.number >= cur.number:
                    self._heads[r.stream_id] = StreamHead(r.number, r.header_hash, r.timestamp)
            else:
                unknown.append(r)
        return unknown

    def load_head(self, sid: bytes, head: StreamHead, replicas: list[str]) -> None:
        """A head and replica list read from the registry's views (not older than what is known; a v2 hash
        prefix is replaced by the full hash known here, else the head is left to the logs)."""
        if replicas != self.replicas_of(sid):
            self._put_replicas(sid, replicas)
            self._storage.set_replicas(sid, replicas)
        if len(head.hash) != 32:
            full = self.full_hash(sid, head.number, head.hash)
            if full is None:
                log.debug("stream %s: head #%d not in the logs seen here yet", hx(sid), head.number)
                self._changed(sid)
                return
            head = StreamHead(head.number, full, head.timestamp)
        cur = self._heads.get(sid)
        if cur is None or head.number >= cur.number:
            self._heads[sid] = head
        self._changed(sid)

    def reset_head(self, sid: bytes, head: StreamHead) -> None:
        """After a reorg: the chain's head as read now, even if lower than the one known (it was orphaned)."""
        if len(head.hash) != 32:  # v2: a prefix; the rolled-back store knows the full hash at that number
            full = self.full_hash(sid, head.number, head.hash)
            if full is None:
                self._heads.pop(sid, None)  # unknown until the rescan brings its log
                self._changed(sid)
                return
            head = StreamHead(head.number, full, head.timestamp)
        self._heads[sid] = head
        self._changed(sid)

    def forget_stream(self, sid: bytes) -> bool:
        """After a reorg: the registry has no such stream any more (its creation was orphaned). Gone from the
        view and the store, so that no node serves it; the rescan records it again if the creation is re-mined."""
        if not self._storage.forget_stream(sid):
            return False
        self._heads.pop(sid, None)
        self._replicas.pop(sid, None)
        self._mine.discard(sid)
        self._changed(sid)
        return True

    def load_nodes(self, records: Iterable[NodeRecord]) -> None:
        self._nodes = {r.address: r for r in records}

    def load_seed(self, epoch: int, seed: bytes) -> None:
        self._seeds[epoch] = seed


_interned: dict[str, str] = {}


def _intern(a: str) -> str:
    """One string object per address (a replica list of 100,000 streams repeats a few node addresses)."""
    return _interned.setdefault(a, a)
