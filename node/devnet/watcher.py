"""The load's chain watcher: MiniblockCommitted / MiniblockRejected logs -> per-stream figures and gas; each
committed block's event list read back from a node -> commit latency of our events (Stats.latency).

Latency of an event = when `poll()` saw the log of the header carrying it minus when it was posted.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx

from node.protocol.hexutil import hx, unhex

from .stats import Stats

if TYPE_CHECKING:
    from node.chain.registry import Registry


class Watcher:
    """`poll()` from the caller's loop. `budget` (seconds, None: no bound) caps how long one poll spends reading
    blocks back from the nodes (what is left waits for the next poll), so that busy nodes cannot hold the
    caller past its deadline; `http_timeout` bounds each of those requests, `parallel` of which run at once."""

    def __init__(self, stats: Stats, registry: Registry, node_urls: list[str], from_block: int, *,
                 http_timeout: float = 5.0, budget: float | None = None, parallel: int = 8) -> None:
        self.stats, self.reg, self.from_block = stats, registry, from_block
        self.http = httpx.Client(timeout=http_timeout, trust_env=False)
        self.urls = node_urls
        self.budget = budget
        self.todo: list[tuple[bytes, int, float, int]] = []  # (stream, number, seen at, tries)
        self._rr = 0
        self.parallel = parallel
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="watcher")
        self.chain_commits: list[tuple[int, float, int]] = []  # (chain block, seen at, event count) per header
        self._served: dict[bytes, str] = {}  # stream -> the node that last served one of its blocks

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.http.close()

    def poll(self) -> None:
        to = self.reg.block_number()
        if to >= self.from_block:
            seen = time.monotonic()
            committed = self.reg.committed_logs(self.from_block, to)
            rejected = self.reg.rejected_logs(self.from_block, to)
            txs = {c.tx_hash for c in committed} | {r.tx_hash for r in rejected}
            gas = sum(self.reg.receipt(t).gas_used for t in txs)
            with self.stats.lock:
                self.stats.commit_txs += len(txs)
                self.stats.commit_gas += gas
                for c in committed:
                    self.stats.blocks[c.stream_id] += 1
                    self.stats.block_events[c.stream_id] += c.event_count
                    self.stats.heads[c.stream_id] = max(self.stats.heads.get(c.stream_id, 0), c.number)
                for r in rejected:
                    self.stats.rejected_headers[r.reason_name] += 1
            self.todo += [(c.stream_id, c.number, seen, 0) for c in committed if c.event_count]
            self.chain_commits += [(c.block_number, seen, c.event_count) for c in committed]
            self.from_block = to + 1
        self._fetch()

    def _fetch(self) -> None:
        """Read the waiting blocks back, `parallel` requests at a time (one at a time, 1,000 active streams
        left most committed blocks unread at the bench's deadline: each GET waits on a busy node), each from
        the node that last served its stream (a node that stores it answers without relaying)."""
        t0 = time.monotonic()
        left: list[tuple[bytes, int, float, int]] = []
        todo = self.todo
        for k in range(0, len(todo), self.parallel):
            if self.budget is not None and time.monotonic() - t0 >= self.budget:
                left += todo[k:]
                break
            wave = todo[k:k + self.parallel]
            for item, hashes in zip(wave, self._pool.map(self._one, wave), strict=True):
                sid, n, seen, tries = item
                if hashes is None:
                    left.append((sid, n, seen, tries + 1))  # that node has not applied it yet: ask again
                    continue
                with self.stats.lock:
                    for h in hashes:
                        t = self.stats.posted.get(h)
                        if t is not None and h not in self.stats.latency:
                            self.stats.latency[h] = max(seen - t, 0.0)
                            self.stats.last_commit = seen
        self.todo = left

    def _one(self, item: tuple[bytes, int, float, int]) -> list[bytes] | None:
        sid, n, _seen, tries = item
        url = self._served.get(sid) if tries == 0 else None
        if url is None:
            url = self.urls[(self._rr + tries) % len(self.urls)]
            self._rr += 1
        try:
            r = self.http.get(f"{url}/v1/streams/{hx(sid)}/blocks/{n}", params={"events": "false"})
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            self._served.pop(sid, None)
            return None
        self._served[sid] = url
        return [unhex(h) for h in r.json()["event_hashes"]]
