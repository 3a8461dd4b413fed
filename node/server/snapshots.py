"""Snapshots of stream state: taken every `snapshot_every` blocks, served to peers, and loaded by a node
that is far behind (new replica, empty data dir, replacement) instead of replaying from genesis; and the
pruning of old events (`retain_blocks`). Format and check: node/protocol/snapshot.py; docs/node.md,
"Snapshots".

A peer's snapshot is taken only if (1) its bytes hash to the digest the peer listed, and (2)
`check_snapshot` passes against the chain: its header hashes to the registry's header hash at that number
(from the `MiniblockCommitted` logs this node scanned), and its members, policy and nonce list give that
header's stateRoot (which commits to all three). That check alone decides: one peer is enough, and peers
that all serve the same forged snapshot are refused all the same. `snapshot_agree` (default 1) is only a
first filter an operator may raise: candidates listed by fewer peers are not fetched. The blocks after it
are then applied by the normal sync path, each checked against the chain as always.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import defaultdict

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from node.protocol import snapshot as fmt
from node.protocol.snapshot import Snapshot, SnapshotError, check_snapshot
from node.protocol.types import Header

from .core import Node
from .intake import Rejected
from .models import hx, unhex

log = logging.getLogger("node.snapshots")

RETRY_S = 5.0  # a stream tries a peer snapshot at most this often
STUCK_TRIES = 2  # sync passes that applied nothing while behind before a snapshot is tried (pruned peers)
LIST_TIMEOUT_S = 3.0


# ---- taking -------------------------------------------------------------------------------------------

def build(node: Node, header: Header) -> Snapshot | None:
    """The snapshot after `header` (the stream's head here), or None if the state is not at that block."""
    sid = header.stream_id
    state = node.storage.state(sid)
    if state is None or state.number != header.number:
        return None
    used = tuple(node.storage.used_nonces_up_to(sid, header.number))
    return Snapshot(sid, header.number, header, state.creator, state.invite_only, tuple(state.members.slots),
                    used)


def take(node: Node, header: Header, header_hash: bytes) -> bool:
    """Snapshot the stream now (right after block `header` was applied). Returns whether one was stored."""
    snap = build(node, header)
    if snap is None:
        return False
    body = fmt.encode(snap)
    node.storage.save_snapshot(header.stream_id, header.number, header_hash, fmt.digest(body), len(body),
                               fmt.pack(body), node.cfg.snapshot_keep)
    node.metrics.snapshots.labels("taken").inc()
    log.info("snapshot of %s at #%d: %d slots, %d nonces, %d bytes", hx(header.stream_id), header.number,
             len(snap.slots), snap.nonce_count, len(body))
    return True


def on_applied(node: Node, header: Header, header_hash: bytes) -> None:
    """After each applied block (sync.on_applied): snapshot every `snapshot_every` blocks, then prune."""
    k = node.cfg.snapshot_every
    taken = bool(k) and header.number % k == 0 and take(node, header, header_hash)
    if node.cfg.retain_blocks > 0 and (taken or header.number % 16 == 0):
        prune(node, header.stream_id, header.number)


def prune(node: Node, sid: bytes, head: int) -> int:
    """Drop committed events (and block rows) older than `retain_blocks`, but never those after the newest
    snapshot: a fresh node must find every block after a snapshot it can start from."""
    snaps = node.storage.snapshots_of(sid)
    if not snaps:
        return 0
    horizon = min(head - node.cfg.retain_blocks, snaps[0][0])
    if horizon < node.storage.history_base(sid):
        return 0
    n = node.storage.prune_history(sid, horizon)
    node.metrics.events_pruned.inc(n)
    log.log(logging.INFO if n else logging.DEBUG, "pruned %s up to #%d (%d events)", hx(sid), horizon, n)
    return n


# ---- serving ------------------------------------------------------------------------------------------

def install_routes(app: FastAPI, node: Node) -> None:
    """`GET /peer/snapshot/{stream_id}`: the list; `?number=N&offset=O`: one page of snapshot N's bytes."""

    @app.get("/peer/snapshot/{stream_id}", tags=["peer"])
    async def peer_snapshot(request: Request, stream_id: str, number: int | None = Query(None, ge=1),
                            offset: int = Query(0, ge=0)):
        """The stream's snapshots here (newest first, with this node's history base), or, with `number`,
        bytes `offset`.. of that snapshot's zlib form, at most `snapshot_page_bytes` (base64; `next` is the
        offset to ask next, null at the end). 404 `unknown_snapshot` for one not held (or no longer)."""
        if getattr(request.state, "peer", None) is None:  # only without the middleware (never in a node)
            raise Rejected(401, "unauthenticated", "peer request without proof")
        try:
            sid = unhex(stream_id)
        except ValueError:
            sid = b""
        if len(sid) != 32:
            raise Rejected(400, "bad_stream_id", "stream_id must be 32 bytes of 0x-hex")
        snaps = node.storage.snapshots_of(sid)
        if number is None:
            row = node.storage.get_stream(sid)
            return JSONResponse({"stream_id": hx(sid), "head": row.head_number if row else None,
                                 "base": node.storage.history_base(sid),
                                 "snapshots": [{"number": n, "header_hash": hx(hh), "digest": hx(d), "size": size,
                                                "bytes": stored} for n, hh, d, size, stored in snaps]})
        meta = next((s for s in snaps if s[0] == number), None)
        if meta is None:
            raise Rejected(404, "unknown_snapshot", f"no snapshot of {stream_id} at #{number} here "
                                                    f"(held: {[s[0] for s in snaps]})")
        page = max(1, node.cfg.snapshot_page_bytes)
        data = node.storage.snapshot_data(sid, number, offset, page) or b""
        end = offset + len(data)
        return JSONResponse({"number": number, "header_hash": hx(meta[1]), "digest": hx(meta[2]), "size": meta[3],
                             "bytes": meta[4], "offset": offset, "data": base64.b64encode(data).decode(),
                             "next": end if end < meta[4] else None})


# ---- loading from peers -----------------------------------------------------------------------------

def note_pass(node: Node, sid: bytes, applied: int) -> None:
    """Count sync passes that applied nothing while the stream is behind (see `wanted`)."""
    node.snapshot_stuck[sid] = node.snapshot_stuck.get(sid, 0) + 1 if applied == 0 and node.behind(sid) else 0


def wanted(node: Node, sid: bytes) -> bool:
    """Try a peer snapshot: sync applied nothing `STUCK_TRIES` times while behind (peers pruned the blocks it
    needs), or the stream is more than `snapshot_every` blocks behind and this node does not keep the whole
    history anyway (it has no block of the stream yet, or `retain_blocks` is set; a node that keeps every
    block replays them instead, so it never holds a gap); not more often than every RETRY_S."""
    if not node.cfg.snapshot_sync or not node.cfg.snapshot_every:
        return False
    ch, row = node.view.head(sid), node.storage.get_stream(sid)
    if ch is None or row is None or row.head_number >= ch.number:
        return False
    far = ch.number - row.head_number > node.cfg.snapshot_every and (
        row.head_number == 0 or node.cfg.retain_blocks > 0)
    if not far and node.snapshot_stuck.get(sid, 0) < STUCK_TRIES:
        return False
    return time.monotonic() - node.snapshot_tried.get(sid, -RETRY_S) >= RETRY_S


async def _fetch(node: Node, url: str, sid: bytes, number: int, digest: bytes) -> bytes:
    """Snapshot `number` from one peer, page by page, within the byte cap; its bytes hash to `digest`."""
    parts: list[bytes] = []
    offset, total = 0, 0
    while True:
        page = await node.peers.snapshot_page(url, hx(sid), number, offset)
        data = base64.b64decode(page.get("data") or "")
        if not data or page.get("offset") != offset or unhex(page.get("digest", "")) != digest:
            raise SnapshotError("page out of step")
        parts.append(data)
        total += len(data)
        if total > node.cfg.snapshot_max_bytes:
            raise SnapshotError("snapshot over snapshot_max_bytes")
        nxt = page.get("next")
        if nxt is None:
            return b"".join(parts)
        if not isinstance(nxt, int) or nxt != offset + len(data):
            raise SnapshotError("bad next offset")
        offset = nxt


async def start_from_snapshot(node: Node, sid: bytes) -> bool:
    """Install the newest peer snapshot of `sid` ahead of the local head that passes the checks (module
    docstring). Returns whether one was installed; the caller's sync then applies the blocks after it."""
    from .sync import sources_for  # sync imports this module

    node.snapshot_tried[sid] = time.monotonic()
    row = node.storage.get_stream(sid)
    if row is None:
        return False
    sources = sources_for(node, sid, None)

    async def listing(url: str) -> dict | None:
        try:
            return await asyncio.wait_for(node.peers.snapshots(url, hx(sid)), LIST_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any peer failure: that peer offers nothing
            log.debug("snapshot list from %s failed: %s", url, exc)
            return None

    answers = await asyncio.gather(*(listing(u) for _a, u in sources))
    offers: dict[tuple[int, bytes], list[str]] = defaultdict(list)
    answered = 0
    for (_a, url), ans in zip(sources, answers, strict=True):
        if not isinstance(ans, dict) or not isinstance(ans.get("snapshots"), list):
            continue
        answered += 1
        for s in ans["snapshots"]:
            try:
                n, d = int(s["number"]), unhex(s["digest"])
            except (KeyError, TypeError, ValueError):
                continue
            if n > row.head_number and len(d) == 32:
                offers[(n, d)].append(url)
    need = max(1, min(node.cfg.snapshot_agree, answered))
    for (n, d), urls in sorted(offers.items(), key=lambda kv: (-kv[0][0], -len(kv[1]))):
        if len(urls) < need:  # the operator's optional first filter (module docstring)
            log.info("snapshot %s #%d digest %s offered by %d peer(s), %d needed; not used", hx(sid), n, hx(d),
                     len(urls), need)
            continue
        c = node.storage.get_commit(sid, n)
        if c is None:
            continue  # not (yet) seen committed on chain here
        state = node.storage.state(sid)
        creator = state.creator if state is not None else None
        for url in urls:
            try:
                blob = await _fetch(node, url, sid, n, d)
                body = fmt.unpack(blob, node.cfg.snapshot_max_bytes)
                if fmt.digest(body) != d:
                    raise SnapshotError("bytes do not hash to the digest offered")
                snap = fmt.decode(body)
                nonces = check_snapshot(snap, stream_id=sid, header_hash=c.header_hash, creator=creator)
            except Exception as exc:  # noqa: BLE001 - any failure of this peer's copy: refuse it, ask the next
                node.metrics.snapshots.labels("refused").inc()
                log.warning("snapshot of %s #%d from %s refused: %s", hx(sid), n, url, exc)
                continue
            cur = node.storage.get_stream(sid)
            if cur is None or cur.head_number >= n:
                return False  # the head moved past it meanwhile (another path applied blocks)
            node.storage.install_snapshot(snap, c.header_hash, d, len(body), blob, nonces)
            node.metrics.snapshots.labels("installed").inc()
            log.info("stream %s started from the snapshot at #%d of %s (%d slots, %d nonces, %d bytes; %d peers "
                     "listed it)", hx(sid), n, url, len(snap.slots), snap.nonce_count, len(body), len(urls))
            return True
    return False
