"""The leader's side of aggregation: hand the tick's signed headers to the slot's aggregator
(node/server/aggregate.py) and learn, from this node's own chain endpoint, what its transaction did.

The aggregator is trusted for nothing: its answer is a transaction hash whose receipt this node reads
itself, and a leader that gets no such answer within `aggregate_wait_ms` (aggregator dead, slow,
refusing or lying) sends its headers itself (node/server/producer.py `commit`). An aggregator that
failed is skipped for the rest of the slot, so a dead one costs one bound, not one per block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from node.chain.logs import TxResult
from node.protocol.types import Header

from . import window
from .aggregate import aggregator_at
from .core import Node
from .intake import Rejected
from .models import HeaderOut, hx, unhex
from .peers import PeerError

log = logging.getLogger("node.delegate")

SKIP_REFUSED_S = 5.0  # an aggregator that says it is not one (409): ask again after this long


@dataclass(frozen=True, slots=True)
class Handoff:
    """`result`: the aggregator's mined transaction, read here (None: none for these headers); `applied`:
    its logs are already in this node's chain view (this node is the aggregator); `waited`: the bound ran
    out (the transaction may still land: look at the heads before sending); `pending`: the aggregator may
    still send them (this node's own, in the middle of its send): the leader must not send them too."""

    result: TxResult | None = None
    applied: bool = False
    waited: bool = False
    pending: bool = False


def body_of(headers: list[Header], sigs: list[list[bytes]]) -> dict:
    return {"headers": [{"header": HeaderOut.of(h).model_dump(), "signatures": [hx(s) for s in ss]}
                        for h, ss in zip(headers, sigs, strict=True)]}


async def hand_off(node: Node, headers: list[Header], sigs: list[list[bytes]], left_s: float) -> Handoff:
    """Hand the headers over and wait for the outcome, at most `aggregate_wait_ms` and at most until
    OWN_RESERVE_S before their send deadline (`left_s` from now, node/server/window.py): the leader can then
    still send them itself."""
    cfg = node.cfg
    wait = min(cfg.aggregate_wait_ms / 1000, left_s - window.OWN_RESERVE_S)
    if not headers or len(headers) > cfg.aggregate_max_batch or wait <= 0:
        return Handoff()
    now = node.chain_now()
    target = aggregator_at(node.nodes, node.epoch_at(now), now, cfg.aggregate_slot_s)
    if target is None or node.aggregator_skip.get(target, 0.0) > time.time():
        return Handoff()
    if target == node.me:
        return await _local(node, headers, sigs, wait)
    url = node.url_of(target)
    if url is None:
        return Handoff()
    try:
        resp = await node.peers.commit(url, body_of(headers, sigs), timeout=wait)
    except PeerError as exc:
        if exc.status == 409:
            node.aggregator_skip[target] = time.time() + SKIP_REFUSED_S
        elif exc.status is None or exc.status >= 500 or exc.status == 429:  # dead, hung or full: skip the slot
            node.aggregator_skip[target] = time.time() + (1.0 if exc.status == 429 else cfg.aggregate_slot_s)
        node.metrics.handoffs.labels(f"refused_{exc.status}" if exc.status else "failed").inc()
        log.info("hand-off of %d headers to %s: %s", len(headers), target, exc)
        return Handoff(waited=exc.status is None)
    tx = resp.get("tx_hash") if isinstance(resp, dict) else None
    if not isinstance(tx, str):
        node.metrics.handoffs.labels("not_sent").inc()
        return Handoff(waited=True)
    try:
        res = await node.chain.tx_result(unhex(tx))
    except Exception as exc:  # noqa: BLE001 - no such receipt here (or RPC trouble): send them ourselves
        node.metrics.handoffs.labels("bad_tx").inc()
        node.aggregator_skip[target] = time.time() + cfg.aggregate_slot_s
        log.warning("aggregator %s named tx %s, not found here: %s", target, tx, exc)
        return Handoff(waited=True)
    node.metrics.handoffs.labels("sent").inc()
    return Handoff(res)


async def _local(node: Node, headers: list[Header], sigs: list[list[bytes]], wait: float) -> Handoff:
    """This node is the aggregator: its own headers wait for its next send like everyone's."""
    agg = node.aggregator
    if agg is None or not agg.serving():
        return Handoff()
    try:
        fut = await agg.offer(node.me, headers, sigs)
    except Rejected as rej:
        node.metrics.handoffs.labels(f"refused_{rej.status}").inc()
        log.info("own aggregator refused %d headers: %s", len(headers), rej.detail)
        return Handoff()
    try:
        out = await asyncio.wait_for(asyncio.shield(fut), timeout=wait)
    except TimeoutError:
        if agg.withdraw(fut):  # still waiting there: taken back, never sent, so the leader sends them now
            return Handoff()
        try:  # in the middle of the aggregator's send: its outcome decides (the send is bounded by the tx's)
            out = await asyncio.wait_for(asyncio.shield(fut), timeout=wait)
        except TimeoutError:
            return Handoff(waited=True, pending=True)
    node.metrics.handoffs.labels("own").inc()
    return Handoff(out.result, applied=True, waited=out.result is None)
