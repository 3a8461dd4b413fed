"""Event intake: validation, durable insertion into the mini-pool, and batched forwarding to replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence

from node.protocol.eip712 import SignatureError, hash_event
from node.protocol.state import MembershipError, check_membership
from node.protocol.types import Event

from .bounded import TTLCache
from .core import Node
from .fastpath import check_event_signature, make_event
from .models import EventIn, hx, unhex
from .wire import SignedEventLike, event_bytes

log = logging.getLogger("node.intake")


class Rejected(Exception):
    """An event refused with an HTTP status, a short error code and a clear message."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


RETRY_AFTER_S = 2  # Retry-After of a 429 (mini-pool quota): about a block time
# "no such stream on chain" (and "exists on chain") answers, so a flood of events for made-up streams costs
# no chain call per event: (registry, stream) -> bool, for unknown_stream_ttl_s.
_STREAM_ANSWERS = TTLCache(maxsize=10_000, ttl=10.0)
# stream -> when its last catch-up started (monotonic): gossip catches a stream up at most once a second; a
# client request only skips a catch-up that started after it arrived (read-your-writes)
_CATCH_UP = TTLCache(maxsize=10_000, ttl=1.0)


def decode(se: SignedEventLike, max_payload: int) -> tuple[bytes, Event, bytes]:
    payload_hex_len = len(se.event.payload) - 2
    if payload_hex_len // 2 > max_payload:
        raise Rejected(413, "payload_too_large", f"payload is {payload_hex_len // 2} bytes, the limit is {max_payload}")
    try:
        e = se.event
        ev = make_event(unhex(e.stream_id), e.author, e.nonce, e.kind, unhex(e.payload))
    except ValueError as exc:
        raise Rejected(422, "malformed_event", str(exc)) from exc
    return hash_event(ev), ev, unhex(se.signature)


def check_signature(node: Node, h: bytes, ev: Event, sig: bytes) -> None:
    try:
        signer = check_event_signature(node.domain, h, ev.author, sig)
    except SignatureError as exc:
        raise Rejected(400, "bad_signature", str(exc)) from exc
    if signer is not None:
        raise Rejected(400, "bad_signature",
                       f"signature recovers to {signer}, not the author {ev.author}, under the EIP-712 domain "
                       f"(chainId {node.domain.chain_id}, registry {node.domain.verifying_contract})")


async def check_stream(node: Node, sid: bytes) -> None:
    if node.storage.get_stream(sid) is not None:
        return
    # The watcher may lag the chain by a poll: ask the chain before refusing (answers cached a while).
    key = (node.domain.verifying_contract, sid)
    exists = _STREAM_ANSWERS.get(key)
    if exists is None:
        try:
            exists = await node.chain.stream_exists(sid)
        except Exception as exc:  # noqa: BLE001
            raise Rejected(503, "chain_unavailable", f"cannot check the stream on-chain: {exc}") from exc
        _STREAM_ANSWERS.ttl = node.cfg.unknown_stream_ttl_s
        _STREAM_ANSWERS.put(key, exists)
    if not exists:
        raise Rejected(404, "unknown_stream", f"stream {hx(sid)} does not exist in the registry")
    node.wake_sync.set()


async def stored_here(node: Node, sid: bytes) -> None:
    """Refuse an event of a stream this node does not store (`Node.follows`): nothing of it is checked or
    stored here. 421 with its replicas (node/server/forward.py passes client events on before this)."""
    if node.follows(sid):
        return
    if node.view.head(sid) is not None:
        from .forward import not_replica

        raise not_replica(node, sid)
    await check_stream(node, sid)  # 404 if the chain does not know it either
    raise Rejected(503, "stream_not_seen", f"stream {hx(sid)} is on chain but not yet seen here; retry shortly",
                   {"Retry-After": "1"})


class Quotas:
    """Mini-pool quotas of one intake call: pending events per stream and per (stream, author), counted
    from storage once per key, then kept up to date over the call; and the node-wide bound on the pool
    (`pool_max_events`: the pool is held in memory)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.per_stream: dict[bytes, int] = {}
        self.per_author: dict[tuple[bytes, str], int] = {}
        self.total = node.storage.pool_total()

    def take(self, ev: Event) -> Rejected | None:
        cfg, st = self.node.cfg, self.node.storage
        sid = ev.stream_id
        n_s = self.per_stream.get(sid)
        if n_s is None:
            n_s = self.per_stream[sid] = st.pool_count(sid)
        key = (sid, ev.author)
        n_a = self.per_author.get(key)
        if n_a is None:
            n_a = self.per_author[key] = st.pool_count(sid, ev.author)
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if n_a >= cfg.pool_quota_author:
            self.node.metrics.quota_refused.labels("author").inc()
            return Rejected(429, "author_quota", f"{ev.author} has {n_a} events pending in stream {hx(sid)}; the "
                            f"quota is {cfg.pool_quota_author}: retry once some are committed", retry)
        if n_s >= cfg.pool_quota_stream:
            self.node.metrics.quota_refused.labels("stream").inc()
            return Rejected(429, "stream_quota", f"stream {hx(sid)} has {n_s} events pending; the quota is "
                            f"{cfg.pool_quota_stream}: retry once some are committed", retry)
        if self.total >= cfg.pool_max_events:
            self.node.metrics.quota_refused.labels("node").inc()
            return Rejected(429, "pool_full", f"this node holds {self.total} pending events; the bound is "
                            f"{cfg.pool_max_events}: retry once some are committed", retry)
        self.per_stream[sid] = n_s + 1
        self.per_author[key] = n_a + 1
        self.total += 1
        return None


async def catch_up(node: Node, sids: set[bytes], timeout: float = 2.0, asked_at: float | None = None) -> None:
    """Poll the chain and apply what it committed for `sids` (bounded in time and to 8 streams).

    Without `asked_at` (gossip) a stream is caught up at most once a second; with it (a client request that
    arrived at `asked_at`, monotonic) only a catch-up that started after the request counts as done, so a
    commit the client saw before sending is found (the watcher's poll lock coalesces concurrent ones)."""
    from .sync import sync_stream
    from .watcher import poll_once

    def done(s: bytes) -> bool:
        started = _CATCH_UP.get(s)
        return started is not None and (asked_at is None or started >= asked_at)

    todo = [s for s in sids if not done(s)][:8]
    if not todo:
        return
    t = time.monotonic()
    for s in todo:
        _CATCH_UP.put(s, t)

    async def run() -> None:
        await poll_once(node)
        for s in todo:
            await sync_stream(node, s)

    try:
        await asyncio.wait_for(run(), timeout)
    except Exception as exc:  # noqa: BLE001
        log.debug("catch-up before judging gossip failed: %s", exc)


async def validate(node: Node, items: list[tuple[bytes, Event, bytes]], client: bool,
                   membership: bool | None = None) -> list[Rejected | None]:
    """Per item: None if acceptable, else the rejection. Membership is checked for client intake, and for
    gossip when `membership` (then only for streams known here: the leader and attesters re-check at block
    time). New events count against the mini-pool quotas (429)."""
    members_check = client if membership is None else membership
    quotas = Quotas(node)
    out: list[Rejected | None] = []
    seen: dict[tuple, bytes] = {}
    # one lookup for the batch; an insert racing in after it is caught by add_events inside its transaction
    statuses = node.storage.replay_statuses(items)
    for i, (h, ev, sig) in enumerate(items):
        if i % 256 == 255:
            await asyncio.sleep(0)  # let peer requests in during a big batch
        try:
            await stored_here(node, ev.stream_id)
            status = statuses[i]
            if status == "known":  # this exact event is stored: it was checked when it came in
                out.append(None)
                continue
            check_signature(node, h, ev, sig)
            await check_stream(node, ev.stream_id)
            key = (ev.stream_id, ev.author, ev.nonce)
            if status == "replay" or (key in seen and seen[key] != h):
                raise Rejected(409, "replayed_nonce",
                               f"nonce {ev.nonce} of {ev.author} is already used in this stream by another event")
            if members_check and status is None:
                state = node.storage.state(ev.stream_id)
                if state is not None or client:
                    try:
                        if state is None:
                            check_membership(frozenset(), ev)
                        else:
                            check_membership(state.members, ev, node.rules_of(state))
                    except MembershipError as exc:
                        raise Rejected(422, "membership",
                                       f"{exc} (as of block {state.number if state else 0})") from exc
            if status is None and key not in seen:
                q = quotas.take(ev)
                if q is not None:
                    raise q
            seen[key] = h
            out.append(None)
        except Rejected as rej:
            out.append(rej)
    return out


async def accept(node: Node, items: list[tuple[bytes, Event, bytes]], source: str,
                 client: bool, membership: bool | None = None) -> list[tuple[str, Rejected | None]]:
    """Validate and store; returns per item ('new'|'known'|'', rejection). Stored before returning."""
    asked_at = time.monotonic()
    verdicts = await validate(node, items, client, membership)
    verdicts = await read_your_writes(node, items, verdicts, client, membership, asked_at)
    good = [it for it, v in zip(items, verdicts, strict=False) if v is None]
    statuses = iter(node.storage.add_events(good, gossiped=not client) if good else [])
    out: list[tuple[str, Rejected | None]] = []
    new_hashes = []
    for it, v in zip(items, verdicts, strict=False):
        if v is not None:
            node.metrics.events_rejected.labels(v.error).inc()
            out.append(("", v))
            continue
        st = next(statuses)
        if st == "replay":  # raced with another insert
            rej = Rejected(409, "replayed_nonce", f"nonce {it[1].nonce} of {it[1].author} is already used")
            node.metrics.events_rejected.labels(rej.error).inc()
            out.append(("", rej))
            continue
        if st == "new":
            new_hashes.append(it[0])
        out.append((st, None))
    if new_hashes:
        node.metrics.events_accepted.labels(source).inc(len(new_hashes))
        node.note_accepted(new_hashes)
        if client:
            node.wake_gossip.set()
    return out


async def read_your_writes(node: Node, items: list[tuple[bytes, Event, bytes]], verdicts: list[Rejected | None],
                           client: bool, membership: bool | None, asked_at: float) -> list[Rejected | None]:
    """Events refused only by the membership check here may be valid on chain (this node has not applied
    the block with their author's JOIN yet): catch up (bounded by catch_up_s) and judge them again; those
    still refused while this node is still behind the chain for their stream are accepted pending, and the
    block rules decide (a leader drops them if invalid; the pool is not pruned while behind)."""
    again = [i for i, v in enumerate(verdicts) if v is not None and v.error == "membership"]
    if not again:
        return verdicts
    sids = {items[i][1].stream_id for i in again}
    await catch_up(node, sids, node.cfg.catch_up_s, asked_at if client else None)
    out = list(verdicts)
    for i, v in zip(again, await validate(node, [items[i] for i in again], client, membership), strict=True):
        out[i] = v
    pending = [i for i in again if (r := out[i]) is not None and r.error == "membership"
               and node.behind(items[i][1].stream_id)]
    if pending:
        for i, v in zip(pending, await validate(node, [items[i] for i in pending], client, False), strict=True):
            out[i] = v
    return out


def to_wire(h: bytes, ev: Event, sig: bytes) -> dict:
    return {"event": {"stream_id": hx(ev.stream_id), "author": ev.author, "nonce": ev.nonce, "kind": ev.kind,
                      "payload": hx(ev.payload)}, "signature": hx(sig)}


async def gossip_loop(node: Node) -> None:
    """Forward pending events not yet forwarded (or forwarded long ago and still pending) to the
    stream's replicas, batched per peer."""
    interval = node.cfg.gossip_ms / 1000
    while not node.stopping:
        try:
            await asyncio.wait_for(node.wake_gossip.wait(), timeout=max(interval, 0.5))
        except TimeoutError:
            pass
        node.wake_gossip.clear()
        await asyncio.sleep(interval)  # let a burst gather
        try:
            await gossip_once(node)
        except Exception:  # noqa: BLE001
            log.exception("gossip round failed")


async def gossip_once(node: Node) -> int:
    now = time.time()
    # read and marked forwarded in one statement (see the back-off below)
    due = node.storage.take_due_for_gossip(now, node.cfg.regossip_s)
    if not due:
        return 0
    per_peer: dict[str, list[bytes]] = defaultdict(list)
    targets: dict[bytes, list[str]] = {}
    for se in due:
        sid = se.event.stream_id
        urls = targets.get(sid)
        if urls is None:
            urls = targets[sid] = [u for _a, u in node.peer_urls(node.replicas_of(sid))]
        if urls:
            w = event_bytes(se.event, se.signature)  # encoded once, the same bytes in every peer's body
            for url in urls:
                per_peer[url].append(w)

    # One queue and one sender task per peer: a slow or hung peer delays only its own queue, never the
    # forwarding to the others nor the next round.
    for url, evs in per_peer.items():
        q = node.gossip_queues.setdefault(url, [])
        q.extend(evs)
        if len(q) > GOSSIP_QUEUE_MAX:  # a peer that long unreachable gets the rest by re-forwarding or sync
            del q[:len(q) - GOSSIP_QUEUE_MAX]
        t = node.gossip_senders.get(url)
        if t is None or t.done():
            node.gossip_senders[url] = asyncio.create_task(_sender(node, url, q), name=f"gossip->{url}")
    # Marked forwarded (by take_due_for_gossip) even if a peer was down: re-forwarded after regossip_s while
    # still pending, then with back-off: next after as long again as the event has been pending (regossip_s,
    # ~2x, ~4x ...).
    # Without it, under load (commit latency of many regossip_s) every replica re-sent its whole pool
    # every regossip_s and the peers spent their CPU on re-parsing events they already held.
    return len(due)


GOSSIP_QUEUE_MAX = 50_000


async def _sender(node: Node, url: str, q: list[bytes]) -> None:
    """Drain one peer's gossip queue in chunks of at most 2000 events and about 4 MiB of JSON."""
    while q:
        n, size = 0, 0
        while n < len(q) and n < 2000 and size < 4 * 1024 * 1024:
            size += len(q[n])
            n += 1
        chunk = q[:n]
        del q[:n]
        try:
            await node.peers.gossip(url, chunk)
        except Exception as exc:  # noqa: BLE001
            log.debug("gossip to %s failed: %s; dropping its queue (re-forwarded later)", url, exc)
            q.clear()
            return


def parse_batch(node: Node, batch: Sequence[SignedEventLike]
                ) -> tuple[list[tuple[bytes, Event, bytes]], list[Rejected | None]]:
    items: list[tuple[bytes, Event, bytes]] = []
    errs: list[Rejected | None] = []
    for se in batch:
        try:
            items.append(decode(se, node.cfg.max_payload))
            errs.append(None)
        except Rejected as rej:
            items.append(None)  # type: ignore[arg-type]
            errs.append(rej)
    return items, errs


__all__ = ["Rejected", "accept", "decode", "gossip_loop", "gossip_once", "to_wire", "parse_batch", "EventIn"]
