"""Pub/sub of what this node stores: committed blocks (as applied, in order) and accepted events.

One publish call per applied block (`block_applied`) and per batch of newly stored events
(`events_added`), both called synchronously by Storage right after its transaction commits; each
live subscriber has a bounded queue (messages and bytes). A subscriber whose queue would overflow is
removed at once (its queue freed) and marked dropped: the node's memory never grows with a slow
client. Messages are serialized lazily, once, and the same text is shared by every subscriber.

A `pending` batch joins the stream's `pending` message still waiting in the queue (when no block of that
stream was queued after it): events accepted one request at a time while the session waits for the event
loop are one message, not one each, so a burst of intake does not pass the message bound and drop a client
that reads as fast as it is sent to (a dropped client resumes its blocks, but the events stored while it
was away are never announced to it).

Subscribers start not live: the feed queues nothing for them until the session (node/server/subscribe.py)
has read the stored blocks up to the head and sets `live` in the same synchronous step as its last
head check, so no block can fall between catch-up and live (see `subscribe.catch_up`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from node.protocol.types import Event, Header

from .models import HeaderOut, hx

log = logging.getLogger("node.feed")

Item3 = tuple[bytes, Event, bytes]  # (event hash, event, signature)


def event_json(h: bytes, ev: Event, sig: bytes) -> dict[str, Any]:
    return {"hash": hx(h), "event": {"stream_id": hx(ev.stream_id), "author": ev.author, "nonce": ev.nonce,
                                     "kind": ev.kind, "payload": hx(ev.payload)}, "signature": hx(sig)}


def block_json(header: Header, header_hash: bytes, events: Sequence[Item3], tx_hash: bytes | None,
               chain_block: int | None) -> str:
    """The `block` message: header fields, headerHash, on-chain commit data where known, events in order."""
    return json.dumps({"type": "block", "stream_id": hx(header.stream_id), "number": header.number,
                       "header": HeaderOut.of(header).model_dump(), "header_hash": hx(header_hash),
                       "tx_hash": hx(tx_hash) if tx_hash else None, "chain_block": chain_block,
                       "events": [event_json(h, ev, sig) for h, ev, sig in events]}, separators=(",", ":"))


def _estimate(events: Sequence[Item3]) -> int:
    return 1200 + sum(2 * len(ev.payload) + 420 for _h, ev, _s in events)


def pending_json(stream_id: bytes, events: Sequence[Item3], pool: bool = False) -> str:
    """The `pending` message; `pool` marks the mini-pool sent once on subscribe (events stored before it)."""
    msg: dict[str, Any] = {"type": "pending", "stream_id": hx(stream_id),
                           "events": [event_json(h, ev, s) for h, ev, s in events]}
    if pool:
        msg["pool"] = True
    return json.dumps(msg, separators=(",", ":"))


class Item:
    """One message of the feed: a committed block or a batch of pending events of one stream."""

    __slots__ = ("kind", "stream_id", "number", "size", "events", "_make", "_text")

    def __init__(self, kind: str, stream_id: bytes, number: int | None, size: int, make: Callable[[], str],
                 events: tuple[Item3, ...] = ()) -> None:
        self.kind, self.stream_id, self.number, self.size = kind, stream_id, number, size
        self.events = events  # of a `pending` item (what `joined` merges)
        self._make: Callable[[], str] | None = make
        self._text: str | None = None

    @classmethod
    def pending(cls, stream_id: bytes, events: Sequence[Item3]) -> Item:
        evs = tuple(events)
        return cls("pending", stream_id, None, _estimate(evs), lambda: pending_json(stream_id, evs), evs)

    def joined(self, later: Item) -> Item:
        """This `pending` item and a later one of its stream as one message (a new item: both may be shared)."""
        return Item.pending(self.stream_id, self.events + later.events)

    @property
    def text(self) -> str:
        if self._text is None:
            assert self._make is not None
            self._text = self._make()
            self._make = None
        return self._text


class Dropped(Exception):
    """The subscriber was dropped by the feed (reason: slow_consumer, node_stopping)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class Subscriber:
    def __init__(self, sid: int, streams: frozenset[bytes], pending: bool, max_items: int, max_bytes: int) -> None:
        self.id, self.streams, self.pending = sid, streams, pending
        self.max_items, self.max_bytes = max_items, max_bytes
        self.live = False
        self.queue: deque[Item] = deque()
        self.qbytes = 0
        self.dropped: Dropped | None = None
        self.gone = asyncio.Event()  # set when dropped
        self._open: dict[bytes, Item] = {}  # stream -> its queued `pending` item that later batches join
        self._control: deque[Item] = deque(maxlen=8)  # answers to the client's frames (pong); sent first
        self._wake = asyncio.Event()

    def control(self, text: str) -> None:
        self._control.append(Item("control", b"", None, len(text), lambda: text))
        self._wake.set()

    def offer(self, item: Item) -> bool:
        """Queue `item`; False if that would pass the bounds (the caller drops this subscriber). One item is
        always taken into an empty queue, however large (a block may be bigger than the byte bound). A
        `pending` item joins the stream's open one (still queued, no block of the stream after it)."""
        sid = item.stream_id
        open_ = self._open.get(sid) if item.kind == "pending" else None
        if open_ is not None:
            merged = open_.joined(item)
            grown = self.qbytes - open_.size + merged.size
            if grown > self.max_bytes:
                return False
            self.queue[self.queue.index(open_)] = merged
            self._open[sid] = merged
            self.qbytes = grown
            return True
        if self.queue and (len(self.queue) >= self.max_items or self.qbytes + item.size > self.max_bytes):
            return False
        self.queue.append(item)
        self.qbytes += item.size
        if item.kind == "pending":
            self._open[sid] = item
        else:
            self._open.pop(sid, None)  # later pending events come after this block
        self._wake.set()
        return True

    def drop(self, reason: str, detail: str) -> None:
        self.dropped = Dropped(reason, detail)
        self.queue.clear()
        self._open.clear()
        self.qbytes = 0
        self._wake.set()
        self.gone.set()

    async def next(self, timeout: float | None = None) -> Item | None:
        """The next queued item; None after `timeout` seconds without one. Raises Dropped."""
        while True:
            if self.dropped is not None:
                raise self.dropped
            if self._control:
                return self._control.popleft()
            if self.queue:
                item = self.queue.popleft()
                self.qbytes -= item.size
                if self._open.get(item.stream_id) is item:
                    del self._open[item.stream_id]
                return item
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return None


class FeedFull(Exception):
    pass


class Feed:
    def __init__(self, max_subscribers: int = 256, queue_items: int = 256, queue_bytes: int = 16 << 20,
                 registry: CollectorRegistry | None = None) -> None:
        self.max_subscribers, self.queue_items, self.queue_bytes = max_subscribers, queue_items, queue_bytes
        self.subs: dict[int, Subscriber] = {}
        self.by_stream: dict[bytes, set[Subscriber]] = {}
        self._ids = itertools.count(1)
        self.chain_block_of: Callable[[bytes, int], int | None] = lambda _sid, _n: None
        r = registry if registry is not None else CollectorRegistry()
        self.m_subs = Gauge("node_subscribers", "Open subscriptions (WebSocket + SSE)", registry=r)
        self.m_dropped = Counter("node_subscribers_dropped", "Subscriptions ended by the node", ["reason"],
                                 registry=r)
        self.m_sent = Counter("node_subscription_messages",
                              "Messages queued to subscribers (a pending batch joined to a queued one counts)",
                              ["type"], registry=r)
        self.m_qbytes = Gauge("node_subscriber_queue_bytes", "Bytes (estimated) queued to subscribers", registry=r)
        self.m_qbytes.set_function(lambda: sum(s.qbytes for s in self.subs.values()))

    # ---- subscribers --------------------------------------------------------------------------
    def full(self) -> bool:
        return len(self.subs) >= self.max_subscribers

    def add(self, streams: frozenset[bytes], pending: bool) -> Subscriber:
        if self.full():
            raise FeedFull(f"this node serves at most {self.max_subscribers} subscriptions")
        sub = Subscriber(next(self._ids), streams, pending, self.queue_items, self.queue_bytes)
        self.subs[sub.id] = sub
        for s in streams:
            self.by_stream.setdefault(s, set()).add(sub)
        self.m_subs.set(len(self.subs))
        return sub

    def remove(self, sub: Subscriber) -> None:
        if self.subs.pop(sub.id, None) is None:
            return
        for s in sub.streams:
            group = self.by_stream.get(s)
            if group is not None:
                group.discard(sub)
                if not group:
                    del self.by_stream[s]
        self.m_subs.set(len(self.subs))

    def drop(self, sub: Subscriber, reason: str, detail: str) -> None:
        self.remove(sub)
        sub.drop(reason, detail)
        self.m_dropped.labels(reason).inc()

    def close_all(self, reason: str = "node_stopping", detail: str = "the node is stopping") -> None:
        for sub in list(self.subs.values()):
            self.drop(sub, reason, detail)

    def _deliver(self, item: Item, want_pending: bool) -> None:
        for sub in list(self.by_stream.get(item.stream_id, ())):
            if not sub.live or (want_pending and not sub.pending):
                continue
            if sub.offer(item):
                self.m_sent.labels(item.kind).inc()
            else:
                self.drop(sub, "slow_consumer", f"more than {sub.max_items} messages or {sub.max_bytes} bytes "
                                                "waiting to be sent: the client reads too slowly")

    # ---- publish (called by Storage after its transaction commits) ----------------------------
    def block_applied(self, header: Header, header_hash: bytes, events: Sequence[Item3], tx_hash: bytes | None) -> None:
        if header.stream_id not in self.by_stream:
            return
        evs = tuple(events)

        def make() -> str:
            return block_json(header, header_hash, evs, tx_hash, self.chain_block_of(header.stream_id, header.number))

        self._deliver(Item("block", header.stream_id, header.number, _estimate(evs), make), False)

    def events_added(self, items: Sequence[Item3]) -> None:
        if not self.by_stream:
            return
        per: dict[bytes, list[Item3]] = {}
        for it in items:
            if it[1].stream_id in self.by_stream:
                per.setdefault(it[1].stream_id, []).append(it)
        for sid, evs in per.items():
            self._deliver(Item.pending(sid, evs), True)
