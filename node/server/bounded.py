"""Bounded in-memory maps: every map of a node that grows with what peers or clients send is one of
these (docs/node.md, "Limits"). A `BoundedDict` drops its oldest entry (insertion order) past `maxsize`;
a `TTLCache` also forgets entries after `ttl` seconds."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)

# Sizes of the node's bounded maps (node.server.core.Node); docs/node.md, "Limits".
MAP_BOUND = {
    "accepted_at": 200_000,  # event -> when accepted (latency metric only)
    "per_slot": 50_000,  # (stream, number[, attempt]) -> tried / attested at
    "per_stream": 100_000,  # sync locks, last prune time
    "per_peer": 1_024,  # gossip queues and senders, by peer URL (the registry holds at most 256 nodes)
    "invalid_events": 100_000,  # events the leader's filter dropped, until when
    "seeds": 64,  # epoch -> seed
    "forwarded": 50_000,  # event a non-replica passed on -> its stream (reads of it are asked of a replica)
}
V = TypeVar("V")


class BoundedDict(OrderedDict[K, V]):
    """A dict that keeps at most `maxsize` entries, dropping the oldest inserted first."""

    def __init__(self, maxsize: int, *args: Any, **kwargs: Any) -> None:
        self.maxsize = maxsize
        super().__init__(*args, **kwargs)

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        while len(self) > self.maxsize:
            self.popitem(last=False)

    def setdefault(self, key: K, default: V = None) -> V:  # type: ignore[assignment]
        if key in self:
            return self[key]
        self[key] = default
        return default

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v


class TTLCache:
    """key -> value for `ttl` seconds, at most `maxsize` entries (oldest dropped first)."""

    def __init__(self, maxsize: int, ttl: float) -> None:
        self.ttl = ttl
        self._d: BoundedDict[Hashable, tuple[float, Any]] = BoundedDict(maxsize)

    def get(self, key: Hashable, now: float | None = None) -> Any:
        e = self._d.get(key)
        if e is None:
            return None
        if (time.monotonic() if now is None else now) >= e[0]:
            self._d.pop(key, None)
            return None
        return e[1]

    def put(self, key: Hashable, value: Any, now: float | None = None) -> None:
        self._d.pop(key, None)
        self._d[key] = ((time.monotonic() if now is None else now) + self.ttl, value)

    def __len__(self) -> int:
        return len(self._d)
