"""The stored form of an event, shared by the storage and its in-memory pool (node/server/pool.py)."""

from __future__ import annotations

from dataclasses import dataclass

from node.protocol.types import Event


@dataclass(slots=True)
class StoredEvent:
    """An event as stored: pending when `block` is None. Read-only for callers (the pool hands out its own);
    `gossip_at` is the pool's next forwarding time of a pending event (0 = never forwarded)."""

    hash: bytes
    event: Event
    signature: bytes
    block: int | None
    idx: int | None
    received: float
    gossip_at: float = 0.0
