"""What a node knows of the registry's state: stream heads, replica lists, node records, epoch seeds.

One writer, this class; everyone else reads. Its inputs:

- `apply_logs(batch)`: the registry's logs of a block range, in chain order: streams created, replicas
  replaced, mini-blocks committed. Fed by the watcher's scan and by the leader's own commit receipt
  (the same decoded `LogBatch`, the same apply). It also records them in storage (streams, replica
  lists, commits), where sync finds them.
- `load_head(...)`: a stream's head and replicas read from the registry's views (at start-up, and after
  a commit failed or was rejected, when the logs may not tell the whole story yet).
- `load_nodes(...)`: the registry's node records (at start-up, on node events, at each new epoch).
- `load_seed(...)`: an epoch's seed once a view confirmed it (seeds never change once set).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from node.protocol.commit import StreamHead

from .chainio import LogBatch, NodeRecord
from .models import hx
from .storage import CommitRow, Storage

log = logging.getLogger("node.chainview")


class ChainView:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._heads: dict[bytes, StreamHead] = {}
        self._replicas: dict[bytes, list[str]] = {}
        self._nodes: dict[str, NodeRecord] = {}
        self._seeds: dict[int, bytes] = {}

    # ---- reads --------------------------------------------------------------------------------
    @property
    def heads(self) -> Mapping[bytes, StreamHead]:
        """The chain's head of every stream seen (read-only)."""
        return MappingProxyType(self._heads)

    def head(self, sid: bytes) -> StreamHead | None:
        return self._heads.get(sid)

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
            self._replicas[sid] = r
        return r

    # ---- writes -------------------------------------------------------------------------------
    def apply_logs(self, batch: LogBatch) -> None:
        """Record what the chain says (streams, replica changes, commits); blocks are applied by sync."""
        st = self._storage
        for c in batch.created:
            sid = c["stream_id"]
            st.upsert_stream(sid, c["genesis_hash"], c["replicas"], c["block"])
            self._replicas[sid] = c["replicas"]
            if sid not in self._heads:
                self._heads[sid] = StreamHead(0, c["genesis_hash"], batch.block_times.get(c["block"], 0))
        for r in batch.replaced:
            sid = r["stream_id"]
            reps = list(self.replicas_of(sid))
            if r["index"] < len(reps):
                reps[r["index"]] = r["new"]
                st.set_replicas(sid, reps)
                self._replicas[sid] = reps
                log.info("stream %s: replica %d %s -> %s", hx(sid), r["index"], r["old"], r["new"])
        if batch.committed:
            st.add_commits([CommitRow(c["stream_id"], c["number"], c["header_hash"], c["prev_hash"],
                                      c["events_root"], c["event_count"], c["leader"], c["tx_hash"], c["block"])
                            for c in batch.committed])
            for c in batch.committed:
                cur = self._heads.get(c["stream_id"])
                if cur is None or c["number"] > cur.number:
                    self._heads[c["stream_id"]] = StreamHead(c["number"], c["header_hash"],
                                                             batch.block_times.get(c["block"], 0))

    def load_head(self, sid: bytes, head: StreamHead, replicas: list[str]) -> None:
        """A head and replica list read from the registry's views (not older than what is known)."""
        if replicas != self.replicas_of(sid):
            self._replicas[sid] = replicas
            self._storage.set_replicas(sid, replicas)
        cur = self._heads.get(sid)
        if cur is None or head.number >= cur.number:
            self._heads[sid] = head

    def load_nodes(self, records: Iterable[NodeRecord]) -> None:
        self._nodes = {r.address: r for r in records}

    def load_seed(self, epoch: int, seed: bytes) -> None:
        self._seeds[epoch] = seed
