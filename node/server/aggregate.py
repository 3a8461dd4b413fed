"""The aggregator: one `commitMiniblocks` per tick for the signed headers of every leader.

The contract checks each header's signatures, not the sender, so any node may send headers others
signed. The role is deterministic (`aggregator_at`: the active nodes sorted by address, round robin
by chain-time slot), so every leader knows where to hand its headers (`POST /peer/commit`, the
leader's side is node/server/delegate.py). The aggregator checks each header as the contract will
(`protocol.commit.validate_batch`, or `validate_batch_v2` on registry v2, signatures included:
node/server/commitbatch.py) before it takes it, and again just before
each send, so an invalid or stale header never costs it gas; it sends one transaction with every header
waiting (bounded by `aggregate_max_batch` and `aggregate_max_bytes`) when the batch is due
(node/server/sendpolicy.py: full, or every recently sent stream back, or the oldest has waited the hold;
at most one per `aggregate_ms`) and answers each hand-off with that transaction's hash once mined. It can
only delay a header: its leader sends the header itself after `aggregate_wait_ms` (a duplicate is rejected `BadNumber`).

Bounds: headers waiting per sender (`aggregate_max_batch`) and in all (`aggregate_max_pending`), one
hand-off at most `aggregate_max_batch` headers, a header is sent at most `aggregate_wait_ms` minus
HANDOFF_GUARD_S after it came and only within its `window.handoff_room` (node/server/window.py: 422
`window_over` when that is less than the hold).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from node.chain.client import NodeRecord, SendTooLate
from node.chain.logs import TxResult
from node.protocol.commit import CommitView, StreamHead
from node.protocol.eip712 import hash_header
from node.protocol.types import MAX_BATCH, MAX_REPLICATION, Header, RejectReason

from . import commitbatch, window
from .core import Node
from .intake import Rejected
from .models import HeaderOut, hx, unhex
from .sendpolicy import SendPolicy
from .watcher import apply_log_batch

log = logging.getLogger("node.aggregate")

SLOT_TOLERANCE_S = 2.0  # a hand-off is taken by the aggregator of the slot at chain time, or 2 s either side
STALE = (RejectReason.BAD_NUMBER, RejectReason.BAD_PARENT)  # the view here may be behind: re-read heads once
HANDOFF_GUARD_S = 1.0
"""A hand-off is sent by `aggregate_wait_ms` minus this after it arrived, or not at all: the leader, whose
bound started earlier, then finds the transaction mined when it looks at the heads before sending itself
(a send here after that raced the leader's own: one of the two came back BAD_NUMBER)."""


def aggregator_at(nodes: Mapping[str, NodeRecord], epoch: int, t: float, slot_s: float) -> str | None:
    """The aggregator at chain time `t`: the registry's active nodes with a URL, sorted, round robin by
    `t // slot_s`. Every node derives the same answer from the registry's node list."""
    active = sorted(a for a, r in nodes.items() if r.url and r.active(epoch))
    if not active or slot_s <= 0:
        return None
    return active[int(t // slot_s) % len(active)]


# ---- the HTTP edge ---------------------------------------------------------------------------------

SIG65 = r"^0x[0-9a-fA-F]{130}$"


class SignedHeaderIn(BaseModel):
    header: HeaderOut
    signatures: list[str] = Field(min_length=1, max_length=MAX_REPLICATION,
                                  description="the leader's signature first, then the attestations (65 bytes each)")


class CommitIn(BaseModel):
    headers: list[SignedHeaderIn] = Field(min_length=1, max_length=MAX_BATCH)


class CommitOut(BaseModel):
    tx_hash: str | None = Field(description="the mined commitMiniblocks carrying the headers; null: not sent")
    block_number: int | None = None
    dropped: dict[str, str] = Field(default_factory=dict,
                                    description="header hash -> why it was left out (a stale header, a reason)")


# ---- the aggregator ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What became of a hand-off: the mined transaction (None: nothing was sent for it) and the headers of
    the hand-off left out of it, with the reason."""

    result: TxResult | None
    dropped: dict[bytes, str] = field(default_factory=dict)


@dataclass
class Offer:
    sender: str
    headers: list[Header]
    sigs: list[list[bytes]]
    hashes: list[bytes]
    arrived: float  # monotonic
    deadline: float
    done: asyncio.Future[Outcome]

    def resolve(self, outcome: Outcome) -> None:
        if not self.done.done():
            self.done.set_result(outcome)


class Aggregator:
    """The waiting hand-offs and the send loop. One writer: this class (`offer` from the endpoint and
    from this node's own producer, `flush_once` from `loop`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._offers: list[Offer] = []
        self._sending: list[Offer] = []  # taken by the send under way (flush_once)
        cfg = node.cfg
        self.policy = SendPolicy(min_gap_s=cfg.aggregate_ms / 1000, hold_s=cfg.aggregate_hold_ms / 1000,
                                 fill=cfg.aggregate_fill, recent_s=cfg.aggregate_recent_ms / 1000)
        self._arrived = asyncio.Event()  # an offer came in: the loop looks whether a send is due

    # ---- reads --------------------------------------------------------------------------------
    def pending(self, sender: str | None = None) -> int:
        return sum(len(o.headers) for o in self._offers if sender is None or o.sender == sender)

    def serving(self) -> bool:
        """This node takes hand-offs: it aggregates, it commits, and the slot at chain time is (about) its."""
        n, cfg = self.node, self.node.cfg
        if not (cfg.aggregate and cfg.produce) or not n.is_active(n.me):
            return False
        now = n.chain_now()
        epoch = n.epoch_at(now)
        return any(aggregator_at(n.nodes, epoch, t, cfg.aggregate_slot_s) == n.me
                   for t in (now, now - SLOT_TOLERANCE_S, now + SLOT_TOLERANCE_S))

    async def view(self, headers: Sequence[Header]) -> CommitView | None:
        """The registry as the next transaction will see it, for these headers' streams and leaders (the
        leaders' RANDAO commitments and onion epochs read from the chain now). None: no seed yet."""
        n = self.node
        now = n.chain_now()
        epoch = n.epoch_at(now)
        seed = await n.seed_for(epoch)
        if seed is None:
            return None
        leaders = sorted({h.leader for h in headers})
        # every leader's two reads at once: they are on the path of every send (the batch's latency)
        reveals, lives = await asyncio.gather(asyncio.gather(*(n.chain.randao_commit_of(a) for a in leaders)),
                                              asyncio.gather(*(n.chain.liveness_of(a) for a in leaders)))
        commits = dict(zip(leaders, reveals, strict=True))
        usable = {a: led for a, (_misses, led, _dead) in zip(leaders, lives, strict=True) if led > epoch}
        return CommitView(now=int(now), epoch=epoch, seed=seed, heads=n.view.heads,
                          replicas={h.stream_id: list(n.replicas_of(h.stream_id)) for h in headers},
                          nodes=n.nodes, randao_commits=commits, onion_usable_from=usable)

    async def check(self, headers: list[Header], sigs: list[list[bytes]]) -> list[RejectReason | None]:
        """The contract's verdict on these headers sent in this order now; a stale head is re-read once."""
        n = self.node
        view = await self.view(headers)
        if view is None:
            return [RejectReason.WRONG_EPOCH] * len(headers)
        verdicts = commitbatch.verdicts(n, view, headers, sigs)
        stale = {h.stream_id for h, v in zip(headers, verdicts, strict=True) if v in STALE}
        if stale:
            for sid in stale:  # the chain view may be behind the chain: the registry's views decide
                num, hh, ts = await n.chain.stream_head(sid)
                n.view.load_head(sid, StreamHead(num, hh, ts), await n.chain.replicas_of(sid))
            verdicts = commitbatch.verdicts(n, replace(view, heads=n.view.heads), headers, sigs)
        return verdicts

    async def offer(self, sender: str, headers: list[Header], sigs: list[list[bytes]]) -> asyncio.Future[Outcome]:
        """Take a hand-off (checked first: a Rejected with a 4xx says why it was not taken)."""
        cfg = self.node.cfg
        if len(headers) > cfg.aggregate_max_batch:
            raise Rejected(413, "too_many_headers", f"at most {cfg.aggregate_max_batch} headers per hand-off")
        if any(h.leader != sender for h in headers):
            raise Rejected(403, "not_leader", f"{sender} may hand over only headers it leads")
        if self.pending(sender) + len(headers) > cfg.aggregate_max_batch or \
                self.pending() + len(headers) > cfg.aggregate_max_pending:
            raise Rejected(429, "aggregator_full", "too many headers waiting here; send them yourself",
                           {"Retry-After": "1"})
        hashes = [hash_header(h) for h in headers]
        waiting = {hh for o in self._offers for hh in o.hashes}
        if len(set(hashes)) != len(hashes) or waiting.intersection(hashes):
            raise Rejected(409, "duplicate_header", "a header of this hand-off is already waiting here")
        verdicts = await self.check(headers, sigs)
        bad = [(i, v) for i, v in enumerate(verdicts) if v is not None]
        if bad:
            i, v = bad[0]
            raise Rejected(422, "invalid_header", f"header {i} ({hx(headers[i].stream_id)[:10]} #{headers[i].number}) "
                                                  f"would be rejected: {v.name}")
        room = window.handoff_room(self.window_left(headers))
        if room <= cfg.aggregate_hold_ms / 1000:  # not sendable here in time: the leader may still send it
            raise Rejected(422, "window_over", "too little of a header's send window is left to send it from "
                                               "here: send it yourself (or not at all)")
        # re-checked: the awaits above may have let another hand-off in
        if self.pending() + len(headers) > cfg.aggregate_max_pending:
            raise Rejected(429, "aggregator_full", "too many headers waiting here; send them yourself",
                           {"Retry-After": "1"})
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        wait = cfg.aggregate_wait_ms / 1000
        deadline = now + min(max(wait / 2, wait - HANDOFF_GUARD_S), room)
        self._offers.append(Offer(sender, headers, sigs, hashes, now, deadline, fut))
        self._arrived.set()
        return fut

    def window_left(self, headers: Sequence[Header]) -> float:
        """Seconds left to send all of these headers within their attempts' windows (heads of the view here;
        a header not on the view's head was refused by `check` before)."""
        n = self.node
        now, timeout = n.chain_now(), n.params.leader_timeout
        left = float("inf")
        for h in headers:
            head = n.view.head(h.stream_id)
            if head is not None and head.number == h.number - 1:
                left = min(left, window.time_left(now, head.timestamp, h.attempt, timeout))
        return left

    def withdraw(self, fut: asyncio.Future[Outcome]) -> bool:
        """Take back the waiting hand-off answered through `fut` (this node's own producer, whose bound ran out).
        False: it is in the send under way (its outcome will come through `fut`)."""
        if any(o.done is fut for o in self._sending):
            return False
        for o in self._offers:
            if o.done is fut:
                self._offers.remove(o)
                o.resolve(Outcome(None, {hh: "withdrawn" for hh in o.hashes}))
                break
        return True

    def due_in(self, last_sent: float) -> float | None:
        """Seconds until the waiting hand-offs are due to be sent (node/server/sendpolicy.py); None: none wait."""
        if not self._offers:
            return None
        return self.policy.wait_s(time.monotonic(), min(o.arrived for o in self._offers),
                                  {h.stream_id for o in self._offers for h in o.headers}, self.pending(), last_sent)

    def _take(self) -> list[Offer]:
        """The waiting hand-offs that fit one transaction, oldest first, whole (a leader's headers stay in its
        order: their RANDAO reveals follow one another); expired ones are answered and dropped."""
        cfg, now = self.node.cfg, time.monotonic()
        keep: list[Offer] = []
        taken: list[Offer] = []
        count = size = 0
        for o in self._offers:
            if o.deadline <= now:
                o.resolve(Outcome(None, {hh: "expired" for hh in o.hashes}))
                continue
            osize = sum(commitbatch.calldata_bytes(self.node, s) for s in o.sigs)
            fits = count + len(o.headers) <= cfg.aggregate_max_batch
            if fits and (not taken or size + osize <= cfg.aggregate_max_bytes):
                taken.append(o)
                count += len(o.headers)
                size += osize
            else:
                keep.append(o)
        self._offers = keep
        return taken

    async def flush_once(self) -> int:
        """One transaction for what is waiting. Returns the number of headers sent."""
        t0 = time.monotonic()
        taken = self._take()
        if not taken:
            return 0
        self._sending = taken
        try:
            return await self._send(t0, taken)
        finally:
            self._sending = []

    async def _send(self, t0: float, taken: list[Offer]) -> int:
        self.policy.sent(t0, {h.stream_id for o in taken for h in o.headers})
        node = self.node
        headers = [h for o in taken for h in o.headers]
        sigs = [s for o in taken for s in o.sigs]
        try:
            verdicts = await self.check(headers, sigs)
        except Exception as exc:  # noqa: BLE001 - RPC failure: nothing sent, the leaders send themselves
            log.warning("aggregate: cannot check %d headers: %s", len(headers), exc)
            for o in taken:
                o.resolve(Outcome(None, {hh: "unchecked" for hh in o.hashes}))
            return 0
        dropped: dict[bytes, str] = {}
        send_h, send_s = [], []
        i = 0
        now = time.monotonic()  # the check's reads took time: a hand-off past its bound is not sent now
        for o in taken:
            for h, s, hh in zip(o.headers, o.sigs, o.hashes, strict=True):
                v = verdicts[i]
                i += 1
                if o.deadline <= now:
                    dropped[hh] = "expired"
                elif v is None:
                    send_h.append(h)
                    send_s.append(s)
                else:
                    dropped[hh] = v.name
        if dropped:
            node.metrics.aggregate_dropped.inc(len(dropped))
        if not send_h:
            for o in taken:
                o.resolve(Outcome(None, {hh: dropped.get(hh, "") for hh in o.hashes}))
            return 0
        last = min(o.deadline for o in taken if o.deadline > now) if send_h else now
        try:
            res = await commitbatch.send(node, send_h, send_s, node.chain_now() + (last - time.monotonic()))
        except SendTooLate as exc:  # the reads before the send took the hand-offs past their bound
            log.info("aggregate: %d headers not sent: %s", len(send_h), exc)
            for o in taken:
                o.resolve(Outcome(None, {hh: "expired" for hh in o.hashes}))
            return 0
        except Exception as exc:  # noqa: BLE001 - any send failure: the leaders send themselves
            log.warning("aggregate: commitMiniblocks of %d headers failed: %s", len(send_h), exc)
            node.metrics.commit_txs.labels("error").inc()
            for o in taken:
                o.resolve(Outcome(None, {hh: "send failed" for hh in o.hashes}))
            return 0
        node.metrics.gas_spent.inc(res.gas_used)
        node.metrics.commit_txs.labels("ok" if res.status == 1 else "reverted").inc()
        node.metrics.aggregate_txs.inc()
        node.metrics.aggregate_headers.inc(len(send_h))
        if res.status == 1:
            logs = res.batch()
            ts = res.block_timestamp if res.block_timestamp is not None else int(node.chain_now())
            apply_log_batch(node, replace(logs, block_times={**logs.block_times, res.block_number: ts}))
            node.wake_sync.set()
        senders = len({o.sender for o in taken})
        waited = [t0 - o.arrived for o in taken]
        node.metrics.aggregate_batch.observe(len(send_h))
        for w in waited:
            node.metrics.aggregate_wait.observe(w)
        log.info("aggregate: %d headers of %d leaders in tx %s (%d committed, %d rejected, %d dropped, gas %d; "
                 "waited %d-%d ms, sent in %d ms)", len(send_h), senders, hx(res.tx_hash)[:12], len(res.committed),
                 len(res.rejected), len(dropped), res.gas_used, min(waited) * 1000, max(waited) * 1000,
                 (time.monotonic() - t0) * 1000)
        for o in taken:
            o.resolve(Outcome(res, {hh: dropped[hh] for hh in o.hashes if hh in dropped}))
        return len(send_h)

    async def loop(self) -> None:
        cfg = self.node.cfg
        if not (cfg.aggregate and cfg.produce):
            return
        idle = max(cfg.aggregate_ms, 10) / 1000  # nothing waits: look again this often (an offer wakes it)
        last_sent = float("-inf")
        while not self.node.stopping:
            wait = self.due_in(last_sent)
            if wait is not None and wait <= 0:
                last_sent = time.monotonic()
                try:
                    await self.flush_once()
                except Exception:  # noqa: BLE001 - the loop must outlive any failure of one send
                    log.exception("aggregate send failed")
                continue
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=idle if wait is None else min(wait, idle))
            except TimeoutError:
                pass
        for o in self._offers:
            o.resolve(Outcome(None, {hh: "stopping" for hh in o.hashes}))
        self._offers = []


def parse(body: CommitIn) -> tuple[list[Header], list[list[bytes]]]:
    headers, sigs = [], []
    for i, item in enumerate(body.headers):
        try:
            h = item.header.to_header()
            ss = [unhex(s) for s in item.signatures]
        except ValueError as exc:
            raise Rejected(422, "malformed", f"header {i}: {exc}") from None
        if any(len(s) != 65 for s in ss):
            raise Rejected(422, "malformed", f"header {i}: signatures are 65 bytes (r, s, v)")
        headers.append(h)
        sigs.append(ss)
    return headers, sigs


def install_routes(app: FastAPI, node: Node) -> None:
    """`POST /peer/commit`: a leader hands over its signed headers (authenticated by PeerAuth)."""

    @app.post("/peer/commit", response_model=CommitOut, tags=["peer"])
    async def peer_commit(body: CommitIn, request: Request):
        """Take signed headers of the sender's own leading for this aggregator's next transaction; answer once
        it is mined (its hash: check its receipt on your own endpoint) or the headers were left out. 409
        `not_aggregator` when this node is not the slot's aggregator (send them yourself), 422
        `invalid_header` with the contract's reason for a header it would reject, 429 when full."""
        peer = getattr(request.state, "peer", None)
        if peer is None:  # only without the middleware (never in a node)
            raise Rejected(401, "unauthenticated", "peer request without proof")
        agg = node.aggregator
        if agg is None or not agg.serving():
            raise Rejected(409, "not_aggregator", f"{node.me} is not the aggregator now")
        headers, sigs = parse(body)
        fut = await agg.offer(str(peer), headers, sigs)
        try:
            out = await asyncio.wait_for(asyncio.shield(fut), timeout=node.cfg.aggregate_wait_ms / 1000 + 1)
        except TimeoutError:
            out = Outcome(None)
        res = out.result
        return JSONResponse(CommitOut(tx_hash=hx(res.tx_hash) if res else None,
                                      block_number=res.block_number if res else None,
                                      dropped={hx(k): v for k, v in out.dropped.items()}).model_dump())
