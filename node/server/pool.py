"""The mini-pool in memory: every pending event of this node with the indexes its readers need.

SQLite stays the journal (node/server/storage.py): an event is inserted there before its 2xx, and every
change of the pool is made in a transaction first. This class holds the same set so that votes, gossip,
the producer's tick, pool counts, replay checks of pending events and `get_events` of pending events read
memory instead of re-reading rows many times per event. One writer: the `Storage`, which changes it only
after the transaction making the same change has committed (so memory and disk never disagree on which
events are pending). The forwarding times are a hint kept only here (a restart may forward again).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from .fastpath import share_names
from .records import StoredEvent


class PendingPool:
    """Pending events by hash; per stream in received order (votes, oldest first); per (stream, author) their
    nonces (quota counts and replay checks); a heap of forwarding times. About 0.7 KB per event of 100 B."""

    def __init__(self) -> None:
        self._by_hash: dict[bytes, StoredEvent] = {}
        # per stream, its hashes in received order (ties: in the order added) unless marked unsorted
        self._streams: dict[bytes, dict[bytes, None]] = {}
        self._last: dict[bytes, float] = {}  # the last received time appended per stream
        self._unsorted: set[bytes] = set()  # streams to re-sort before an ordered read (an older event came back)
        self._nonces: dict[tuple[bytes, str], dict[int, bytes]] = {}  # (stream, author) -> nonce -> hash
        self._heap: list[tuple[float, float, bytes]] = []  # (gossip_at, received, hash); stale entries skipped
        # one object per author and per stream id, shared by their events (rebuilt by _compact when stale)
        self._names: dict[str, str] = {}
        self._sids: dict[bytes, bytes] = {}

    # ---- reads ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, h: object) -> bool:
        return h in self._by_hash

    def get(self, h: bytes) -> StoredEvent | None:
        return self._by_hash.get(h)

    def key_hash(self, stream_id: bytes, author: str, nonce: int) -> bytes | None:
        """The pending event holding this (stream, author, nonce), if any."""
        ns = self._nonces.get((stream_id, author))
        return None if ns is None else ns.get(nonce)

    def streams(self) -> set[bytes]:
        return set(self._streams)

    def count(self, stream_id: bytes, author: str | None = None) -> int:
        if author is None:
            s = self._streams.get(stream_id)
            return 0 if s is None else len(s)
        ns = self._nonces.get((stream_id, author))
        return 0 if ns is None else len(ns)

    def hashes(self, stream_id: bytes, limit: int | None = None) -> list[bytes]:
        """The stream's pending hashes, oldest received first (ties: in the order added); at most `limit`."""
        s = self._ordered(stream_id)
        if s is None:
            return []
        if limit is None or limit >= len(s):
            return list(s)
        out: list[bytes] = []
        if limit <= 0:
            return out
        for h in s:
            out.append(h)
            if len(out) >= limit:
                break
        return out

    def of_stream(self, stream_id: bytes) -> list[StoredEvent]:
        s = self._streams.get(stream_id)
        return [] if s is None else [self._by_hash[h] for h in s]

    def due(self, older_than: float, limit: int) -> list[StoredEvent]:
        """Entries whose forwarding time is before `older_than`, oldest received first (no change made)."""
        got = sorted((e for e in self._by_hash.values() if e.gossip_at < older_than),
                     key=lambda e: (e.received, e.hash))
        return got[:max(0, limit)]

    # ---- writes (the Storage only, after its transaction committed) ------------------------------
    def add(self, entries: Iterable[StoredEvent]) -> None:
        """Add new pending events (block None, `gossip_at` set; their keys are not in the pool: the unique
        index said so). The authors' and streams' names are shared with the pool's own copies."""
        names, sids, streams, by_hash, last = self._names, self._sids, self._streams, self._by_hash, self._last
        heap, nonces = self._heap, self._nonces
        for e in entries:
            h = e.hash
            if h in by_hash:
                continue
            ev = e.event
            author = names.setdefault(ev.author, ev.author)
            sid = sids.setdefault(ev.stream_id, ev.stream_id)
            s = streams.get(sid)
            if s is None:
                s = streams[sid] = {}
            if sid is not ev.stream_id or author is not ev.author:
                share_names(ev, sid, author)
            by_hash[h] = e
            s[h] = None
            if e.received < last.get(sid, 0.0):
                self._unsorted.add(sid)
            else:
                last[sid] = e.received
            ak = (sid, author)
            ns = nonces.get(ak)
            if ns is None:
                ns = nonces[ak] = {}
            ns[ev.nonce] = h
            heapq.heappush(heap, (e.gossip_at, e.received, h))

    def remove(self, hashes: Iterable[bytes]) -> int:
        """Remove these events (absent ones are skipped); returns how many were pending."""
        n = 0
        for h in hashes:
            e = self._by_hash.pop(h, None)
            if e is None:
                continue
            n += 1
            ev = e.event
            sid = ev.stream_id
            s = self._streams[sid]
            del s[h]
            if not s:
                del self._streams[sid]
                self._last.pop(sid, None)
                self._unsorted.discard(sid)
            ak = (sid, ev.author)
            ns = self._nonces[ak]
            del ns[ev.nonce]
            if not ns:
                del self._nonces[ak]
        self._compact()
        return n

    def take_due(self, now: float, regossip_s: float, limit: int) -> list[StoredEvent]:
        """Entries due for forwarding (forwarding time before `now - regossip_s`), at most `limit`, smallest
        forwarding time first (never-forwarded ones first), returned oldest received first; each gets its
        next time `now + max(0, now - received - regossip_s)` (back-off: as long again as it has been pending)."""
        cutoff = now - regossip_s
        heap = self._heap
        out: list[StoredEvent] = []
        while heap and heap[0][0] < cutoff and len(out) < limit:
            at, _r, h = heapq.heappop(heap)
            e = self._by_hash.get(h)
            if e is None or e.gossip_at != at:
                continue  # removed, or re-timed since (a newer heap entry stands for it)
            out.append(e)
        for e in out:
            e.gossip_at = now + max(0.0, now - e.received - regossip_s)
            heapq.heappush(heap, (e.gossip_at, e.received, e.hash))
        out.sort(key=lambda e: (e.received, e.hash))
        return out

    def set_gossip_at(self, hashes: Iterable[bytes], whens: Iterable[float]) -> None:
        for h, at in zip(hashes, whens, strict=False):
            e = self._by_hash.get(h)
            if e is not None and e.gossip_at != at:
                e.gossip_at = at
                heapq.heappush(self._heap, (at, e.received, h))
        self._compact()

    # ---- internals -------------------------------------------------------------------------------
    def _ordered(self, stream_id: bytes) -> dict[bytes, None] | None:
        s = self._streams.get(stream_id)
        if s is not None and stream_id in self._unsorted:
            by = self._by_hash
            s = self._streams[stream_id] = dict.fromkeys(sorted(s, key=lambda h: by[h].received))  # stable
            self._last[stream_id] = by[next(reversed(s))].received
            self._unsorted.discard(stream_id)
        return s

    def _compact(self) -> None:
        """Rebuild the heap once stale entries outnumber live ones (bounds it to ~2x the pool), and the shared
        names once most are of authors or streams with nothing pending."""
        if len(self._heap) > 2 * len(self._by_hash) + 1024:
            self._heap = [(e.gossip_at, e.received, e.hash) for e in self._by_hash.values()]
            heapq.heapify(self._heap)
        if len(self._names) + len(self._sids) > 2 * len(self._nonces) + 1024:
            self._names = {a: a for _s, a in self._nonces}
            self._sids = {s: s for s in self._streams}
