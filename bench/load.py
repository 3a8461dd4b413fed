"""The benchmark's load: the devnet's load generator (node.commands.devnet.LoadGen, Stats, Watcher),
posting through the batch intake endpoint POST /v1/events/batch instead of one event per request.

Every (author, stream) pair first JOINs (a JOIN in block n lets its author post MESSAGEs from block
n + 1 on); once every JOIN is committed the MESSAGEs, signed in advance while the JOINs commit, are
posted in batches of `batch` events, round-robin over the nodes by `posters` threads, at most `rate`
events/s (0: unthrottled) and never more than `max_inflight` posted but not yet seen committed.
Bounded: `total` MESSAGEs, and the caller's deadline (it sets `stop`).

Latency of an event = the Watcher's wall-clock time at which it saw the MiniblockCommitted log
(receipt in an automining Anvil) minus the time the batch carrying the event was posted.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from node.commands.devnet import KIND_JOIN, KIND_MESSAGE, LoadGen, Stats, Watcher

__all__ = ["BatchLoad", "BoundedWatcher", "Stats", "Watcher", "KIND_JOIN", "KIND_MESSAGE", "quantiles_ms"]


class BoundedWatcher(Watcher):
    """The devnet's Watcher with a time budget per poll for reading committed blocks back from the nodes
    (2 s timeout per request, at most `budget` s per poll; the rest waits for the next poll), so that busy
    nodes cannot hold the bench's loop past its deadline."""

    def __init__(self, *a, budget: float = 1.0, **kw) -> None:
        import httpx

        super().__init__(*a, **kw)
        self.http.close()
        self.http = httpx.Client(timeout=2.0, trust_env=False)
        self.budget = budget

    def _fetch(self) -> None:
        t0 = time.monotonic()
        todo, left = self.todo, []
        while todo and time.monotonic() - t0 < self.budget:
            self.todo = [todo.pop(0)]
            super()._fetch()  # one block; left in self.todo if that node could not answer yet
            left += self.todo
        self.todo = left + todo


class BatchLoad(LoadGen):
    def __init__(self, stats: Stats, domain, node_urls: list[str], streams: list[bytes], n_clients: int,
                 total: int, rate: float, max_inflight: int, stop: threading.Event, *, batch: int = 256,
                 posters: int = 4, payload_size: int = 64) -> None:
        super().__init__(stats, domain, node_urls, streams, n_clients, None, rate, max_inflight, stop,
                         posters=posters)
        self.total_messages, self.batch, self.payload_size = total, max(1, batch), payload_size
        self.joins = [(a, s) for a in range(len(self.authors)) for s in range(len(streams))]
        self.joined_at: float | None = None  # all JOINs committed
        self.msg_first_post: float | None = None
        self.msg_hashes: set[bytes] = set()
        self.sent = 0

    # queue items are lists of (hash, body); a poster posts one list as one batch
    def _poster(self, k: int) -> None:  # noqa: C901 - one loop
        import httpx

        from node.server.client import NodeClient

        clients = [NodeClient(u, timeout=30.0) for u in self.urls]
        n = k
        try:
            while True:
                item = self.q.get()
                if item is None:
                    return
                n += 1
                results: list[dict] | None = None
                last = ""
                for attempt in range(2 * len(clients) + 2):
                    if self.stop_ev.is_set():
                        break
                    c = clients[(n + attempt) % len(clients)]
                    try:
                        r = c.post_batch([body for _h, body in item])
                    except httpx.HTTPError as e:
                        last = f"{c.url}: {type(e).__name__}"
                    else:
                        if r.status_code == 200:
                            results = r.json()["results"]
                            break
                        last = f"{c.url}: HTTP {r.status_code} {r.text[:200]}"
                        if r.status_code < 500:
                            break
                    with self.stats.lock:
                        self.stats.post_errors += 1
                    self.stop_ev.wait(min(0.1 * (attempt + 1), 1.0))
                with self.stats.lock:
                    if results is None:
                        for h, _b in item:
                            self.stats.posted.pop(h, None)
                        if last:
                            self.stats.rejected[f"batch refused: {last}"] += len(item)
                        continue
                    for (h, _b), res in zip(item, results, strict=False):
                        if not res["ok"]:
                            self.stats.posted.pop(h, None)
                            self.stats.rejected[f"{res.get('error')}: {res.get('detail')}"] += 1
        finally:
            for c in clients:
                c.close()

    def _send_batch(self, items: list[tuple[bytes, dict, int]]) -> None:
        now = time.monotonic()
        with self.stats.lock:
            for h, _b, kind in items:
                self.stats.posted[h] = now
                self.stats.kinds[h] = kind
            if self.stats.first_post is None:
                self.stats.first_post = now
        self.q.put([(h, b) for h, b, _k in items])

    def _run(self) -> None:
        # 1. JOINs, batched, unthrottled
        join_hashes = []
        for i in range(0, len(self.joins), self.batch):
            items = []
            for a, s in self.joins[i:i + self.batch]:
                h, body = self.authors[a].event(self.streams[s], KIND_JOIN, b"")
                self.join_hash[(a, s)] = h
                join_hashes.append(h)
                items.append((h, body, KIND_JOIN))
            self._send_batch(items)
        # 2. sign every MESSAGE now, round-robin over the pairs (an author's nonces stay in order per stream)
        pad = b"x" * max(0, self.payload_size - 24)
        msgs: list[tuple[bytes, dict, int]] = []
        for i in range(self.total_messages):
            a, s = self.joins[i % len(self.joins)]
            h, body = self.authors[a].event(self.streams[s], KIND_MESSAGE, b"m%08d " % i + pad)
            msgs.append((h, body, KIND_MESSAGE))
        # 3. wait for every JOIN to be committed
        while not self.stop_ev.is_set():
            with self.stats.lock:
                done = all(h in self.stats.latency for h in join_hashes)
                lost = any(h not in self.stats.posted for h in join_hashes)
            if done:
                break
            if lost:
                raise RuntimeError("a JOIN was refused: " + "; ".join(self.stats.rejected))
            self.stop_ev.wait(0.05)
        if self.stop_ev.is_set():
            return
        self.joined_at = time.monotonic()
        # 4. MESSAGEs, batched, paced by rate and the in-flight bound
        t0 = time.monotonic()
        self.msg_hashes = {h for h, _b, _k in msgs}
        self.msg_first_post = t0
        for i in range(0, len(msgs), self.batch):
            if not self._pace(self.sent, t0, self.batch):
                return
            chunk = msgs[i:i + self.batch]
            self._send_batch(chunk)
            self.sent += len(chunk)

    def message_figures(self) -> dict[str, Any]:
        """Committed MESSAGEs per second (first MESSAGE post -> last MESSAGE seen committed) and latency."""
        with self.stats.lock:
            lat = [self.stats.latency[h] for h in self.msg_hashes if h in self.stats.latency]
            posted = {h: self.stats.posted[h] for h in self.msg_hashes if h in self.stats.posted}
            rejected = dict(self.stats.rejected)
        out: dict[str, Any] = {"posted": len(posted), "committed": len(lat), "refused": sum(rejected.values())}
        if rejected:
            out["refusals"] = dict(list(rejected.items())[:3])
        if lat and self.msg_first_post is not None:
            last = max(posted[h] + self.stats.latency[h] for h in posted if h in self.stats.latency)
            el = max(last - self.msg_first_post, 1e-9)
            out.update(elapsed_s=round(el, 3), events_per_s=round(len(lat) / el, 1),
                       post_s=round(max(posted.values()) - self.msg_first_post, 3),
                       latency_ms=quantiles_ms(lat))
        return out


def quantiles_ms(xs: list[float]) -> dict[str, float | None]:
    xs = sorted(xs)
    if not xs:
        return {"p50": None, "p99": None, "max": None}

    def q(p: float) -> float:
        return round(1000 * xs[min(len(xs) - 1, max(0, int(p * len(xs) + 0.999999) - 1))], 1)

    return {"p50": q(0.50), "p99": q(0.99), "max": round(1000 * xs[-1], 1)}
