"""The load generator of the devnet and the bench: signed events posted through the nodes' HTTP API.

Every (client, stream) pair first JOINs (a JOIN in block n lets its author post MESSAGEs from block n + 1
on, docs/protocol.md), then posts MESSAGEs. One thread signs and paces (`rate` events/s, 0: unthrottled;
never more than `max_inflight` posted but not yet seen committed, which the Watcher records in Stats);
`posters` threads post round-robin over the nodes, each with its own HTTP connections.

Two schedules, one loop:
- rolling (`total=E` or None; the devnet): E events in all, JOINs included (None: until stopped); a pair
  posts MESSAGEs as soon as its JOIN is seen committed; events are signed as they are posted.
- after the JOINs (`messages=N`; the bench): every pair JOINs; the N MESSAGEs are signed while the JOINs
  commit and posted once all of them are committed (`joined_at`), so that the MESSAGE phase measures
  the network alone (`message_figures()`).

Requests: `batch=None` posts one event per request (POST /v1/events, 202); `batch=B` posts up to B events
per request (POST /v1/events/batch, per-event results). Transport errors and 5xx are retried on the next
nodes (2 x nodes + 2 attempts, growing pauses); a 4xx answer is final.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import httpx

from node.protocol.types import Domain, EventKind
from node.server.client import Author, NodeClient

from .stats import Stats, quantiles_ms

KIND_MESSAGE, KIND_JOIN = int(EventKind.MESSAGE), int(EventKind.JOIN)

Body = dict[str, Any]
Signed = tuple[bytes, Body, int]  # (event hash, signed event JSON, kind)


class LoadGen(threading.Thread):
    def __init__(self, stats: Stats, domain: Domain, node_urls: list[str], streams: list[bytes], *, clients: int,
                 stop: threading.Event, rate: float = 0.0, max_inflight: int = 500, total: int | None = None,
                 messages: int | None = None, batch: int | None = None, posters: int = 4,
                 payload_size: int | None = None, request_timeout: float | None = None) -> None:
        super().__init__(name="loadgen", daemon=True)
        if total is not None and messages is not None:
            raise ValueError("give total (rolling) or messages (after the JOINs), not both")
        self.stats, self.streams, self.rate = stats, streams, rate
        self.max_inflight, self.stop_ev = max_inflight, stop
        self.total, self.messages = total, messages
        self.batch = max(1, batch) if batch is not None else None
        self.payload_size = payload_size
        self.request_timeout = request_timeout if request_timeout is not None else (10.0 if batch is None else 30.0)
        self.urls = node_urls
        self.authors = [Author(domain) for _ in range(max(1, clients))]
        self.error: BaseException | None = None
        self.q: queue.Queue[list[tuple[bytes, Body]] | None] = queue.Queue(maxsize=2 * posters)
        self.posters = [threading.Thread(target=self._poster, args=(k,), name=f"poster{k}", daemon=True)
                        for k in range(posters)]
        pairs = [(a, s) for a in range(len(self.authors)) for s in range(len(streams))]
        self.joins = pairs[:total] if total is not None else pairs  # JOINs first, capped by `total`
        self.join_hash: dict[tuple[int, int], bytes] = {}
        self.sent = 0  # MESSAGEs handed to the posters
        self.joined_at: float | None = None  # messages=N: when every JOIN was seen committed
        self.msg_first_post: float | None = None
        self.msg_hashes: set[bytes] = set()

    # -- posting ------------------------------------------------------------------------------------

    def _answer(self, c: NodeClient, r: httpx.Response) -> list[str | None] | str | None:
        """A final answer (per-event refusal reasons, None = accepted; or one reason for the whole request),
        or None: retry elsewhere."""
        if self.batch is None:
            if r.status_code == 202:
                return [None]
            if 400 <= r.status_code < 500:
                try:
                    j = r.json()
                    return [f"{j.get('error')}: {j.get('detail')}"]
                except ValueError:
                    return [f"HTTP {r.status_code}"]
            return None
        if r.status_code == 200:
            return [None if res["ok"] else f"{res.get('error')}: {res.get('detail')}" for res in r.json()["results"]]
        if r.status_code < 500:
            return f"batch refused: {c.url}: HTTP {r.status_code} {r.text[:200]}"
        return None

    def _post(self, clients: list[NodeClient], k: int, bodies: list[Body]) -> list[str | None] | str:
        """POST, retrying transport errors and 5xx on the next nodes. Per-event refusal reasons (None =
        accepted), or one reason for the whole request ("" if stopped before any attempt)."""
        last = ""
        for attempt in range(2 * len(clients) + 2):
            if self.stop_ev.is_set():
                break
            c = clients[(k + attempt) % len(clients)]
            try:
                r = c.post_event(bodies[0]) if self.batch is None else c.post_batch(bodies)
            except httpx.HTTPError as e:
                last = f"{c.url}: {type(e).__name__}"
            else:
                final = self._answer(c, r)
                if final is not None:
                    return final
                last = f"{c.url}: HTTP {r.status_code}" + ("" if self.batch is None else f" {r.text[:200]}")
            with self.stats.lock:
                self.stats.post_errors += 1
            if self.stop_ev.wait(min(0.1 * (attempt + 1), 1.0)):
                break
        if not last:
            return ""
        return f"unreachable ({last})" if self.batch is None else f"batch refused: {last}"

    def _poster(self, k: int) -> None:
        clients = [NodeClient(u, timeout=self.request_timeout) for u in self.urls]
        n = k
        try:
            while True:
                item = self.q.get()
                if item is None:
                    return
                n += 1
                outcome = self._post(clients, n, [body for _h, body in item])
                with self.stats.lock:
                    if isinstance(outcome, str):
                        for h, _b in item:
                            self.stats.posted.pop(h, None)
                        if outcome:
                            self.stats.rejected[outcome] += len(item)
                        continue
                    for (h, _b), why in zip(item, outcome, strict=False):
                        if why is not None:
                            self.stats.posted.pop(h, None)
                            self.stats.rejected[why] += 1
        finally:
            for c in clients:
                c.close()

    def _send(self, items: list[Signed]) -> None:
        now = time.monotonic()
        with self.stats.lock:
            for h, _b, kind in items:
                self.stats.posted[h] = now
                self.stats.kinds[h] = kind
            if self.stats.first_post is None:
                self.stats.first_post = now
        self.q.put([(h, b) for h, b, _k in items])

    # -- the schedule -------------------------------------------------------------------------------

    def run(self) -> None:
        for t in self.posters:
            t.start()
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread (self.error)
            self.error = e
        finally:
            for _ in self.posters:
                self.q.put(None)
            for t in self.posters:
                t.join(15)

    def _pace(self, sent: int, t0: float, n: int = 1) -> bool:
        """Wait for the rate and the in-flight bound (counting the `n` events about to be posted, which may
        alone exceed the bound); False once stopped."""
        while not self.stop_ev.is_set():
            if self.rate > 0 and sent > 0:
                due = t0 + sent / self.rate
                if time.monotonic() < due:
                    self.stop_ev.wait(min(due - time.monotonic(), 0.2))
                    continue
            if self.stats.pending() + n <= max(self.max_inflight, n):
                return True
            self.stop_ev.wait(0.01 if n > 1 else 0.02)
        return False

    def _join(self, a: int, s: int) -> Signed:
        h, body = self.authors[a].event(self.streams[s], KIND_JOIN, b"")
        self.join_hash[(a, s)] = h
        return h, body, KIND_JOIN

    def _message(self, i: int, a: int, s: int) -> Signed:
        if self.payload_size is None:
            payload = f"hello #{i} from client {a}".encode()
        else:
            payload = b"m%08d " % i + b"x" * max(0, self.payload_size - 24)
        h, body = self.authors[a].event(self.streams[s], KIND_MESSAGE, payload)
        return h, body, KIND_MESSAGE

    def _ready(self) -> list[tuple[int, int]] | None:
        """The pairs whose JOIN is committed; None if every JOIN was refused (nothing can follow)."""
        ready = [p for p, h in self.join_hash.items() if h in self.stats.latency]
        if not ready and self.join_hash and all(h not in self.stats.posted for h in self.join_hash.values()):
            return None
        return ready

    def _all_joined(self) -> bool:
        """Wait until every JOIN is seen committed; False once stopped. A refused JOIN is an error."""
        hashes = list(self.join_hash.values())
        while not self.stop_ev.is_set():
            with self.stats.lock:
                done = all(h in self.stats.latency for h in hashes)
                lost = any(h not in self.stats.posted for h in hashes)
            if done:
                return True
            if lost:
                raise RuntimeError("a JOIN was refused: " + "; ".join(self.stats.rejected))
            self.stop_ev.wait(0.05)
        return False

    def _run(self) -> None:
        per_request = self.batch or 1
        t0, sent = time.monotonic(), 0
        for i in range(0, len(self.joins), per_request):
            pairs = self.joins[i:i + per_request]
            if not self._pace(sent, t0, len(pairs)):
                return
            self._send([self._join(a, s) for a, s in pairs])
            sent += len(pairs)
        signed: list[Signed] | None = None
        budget = None if self.total is None else self.total - sent
        if self.messages is not None:
            # sign every MESSAGE now, round-robin over the pairs (an author's nonces stay in order per stream)
            signed = [self._message(i, *self.joins[i % len(self.joins)]) for i in range(self.messages)]
            self.msg_hashes = {h for h, _b, _k in signed}
            budget = len(signed)
            if not self._all_joined():
                return
            self.joined_at = t0 = self.msg_first_post = time.monotonic()
            sent = 0  # the rate applies to the MESSAGE phase
        i = 0
        while budget is None or i < budget:
            n = per_request if budget is None else min(per_request, budget - i)
            if signed is not None:
                chunk = signed[i:i + n]
            else:  # MESSAGEs only from authors whose JOIN of that stream is committed
                ready = self._ready()
                if ready is None:
                    return
                if not ready:
                    if self.stop_ev.wait(0.05):
                        return
                    continue
                chunk = [self._message(i + j, *ready[(i + j) % len(ready)]) for j in range(n)]
            if not self._pace(sent, t0, n):
                return
            self._send(chunk)
            sent += n
            i += n
            self.sent = i

    # -- figures ------------------------------------------------------------------------------------

    def message_figures(self) -> dict[str, Any]:
        """messages=N: committed MESSAGEs per second (first MESSAGE post -> last MESSAGE seen committed),
        their latency, and what was refused."""
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
