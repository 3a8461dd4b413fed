"""Subscriptions: `/v1/subscribe` as a WebSocket (one subscribe frame, then messages) or as Server-Sent
Events (`GET /v1/subscribe?stream=0x…[:from]`). Protocol, close codes and limits: docs/node.md
"Subscriptions".

A session: resolve the cursors, register with the feed (not live), send `subscribed`, read the stored
blocks from each cursor up to the head in pages (`catch_up`), turn live in the same synchronous step as
the last head check (taking the mini-pool in that step for `pending` subscribers), send `caught_up` and the pool,
then forward what the feed queues, skipping a block already sent
and filling a gap from SQLite, so every committed block goes out once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import forward
from .core import Node
from .feed import Dropped, Feed, FeedFull, Subscriber, block_json, pending_json
from .intake import Rejected
from .models import ErrorOut, hx, unhex

log = logging.getLogger("node.subscribe")

# error -> (WebSocket close code, HTTP status for SSE)
ERRORS: dict[str, tuple[int, int]] = {
    "bad_frame": (4400, 400),
    "unknown_stream": (4404, 404),
    "subscribe_timeout": (4408, 408),
    "too_many_streams": (4413, 413),
    "cursor_past_head": (4416, 416),
    "not_replica": (4421, 421),
    "cursor_pruned": (4410, 410),
    "too_many_subscribers": (4429, 429),
    "chain_unavailable": (4503, 503),
    "slow_consumer": (4001, 0),
    "node_stopping": (1001, 0),
    "internal": (1011, 500),
}


class SubError(Exception):
    def __init__(self, error: str, detail: str, location: str | None = None) -> None:
        super().__init__(detail)
        self.error, self.detail, self.location = error, detail, location
        self.code, self.status = ERRORS[error]


Want = list[tuple[bytes, int | None]]  # (stream, first block wanted; None = "now")


def _stream_id(s: Any) -> bytes:
    if not isinstance(s, str):
        raise SubError("bad_frame", "stream_id must be a string: 0x + 64 hex")
    try:
        b = unhex(s)
    except ValueError:
        raise SubError("bad_frame", f"stream_id {s[:80]!r} is not 0x-hex") from None
    if len(b) != 32:
        raise SubError("bad_frame", f"stream_id {s[:80]!r} is not 32 bytes")
    return b


def _cursor(v: Any) -> int | None:
    if v is None or v == "now":
        return None
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 2**63:
        raise SubError("bad_frame", f"from must be a block number >= 0 or \"now\", not {str(v)[:40]!r}")
    return max(v, 1)


def _check_count(want: Want, max_streams: int) -> Want:
    if not want:
        raise SubError("bad_frame", "no stream to subscribe to")
    if len(want) > max_streams:
        raise SubError("too_many_streams", f"at most {max_streams} streams per subscription, not {len(want)}")
    if len({s for s, _ in want}) != len(want):
        raise SubError("bad_frame", "a stream is listed twice")
    return want


def parse_frame(text: str, max_streams: int) -> tuple[Want, bool]:
    """The subscribe frame: {"op": "subscribe", "streams": [{"stream_id": "0x…", "from": 12 | "now"}, …],
    "pending": false}. A stream may also be given as a bare "0x…" string (from "now")."""
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise SubError("bad_frame", f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or msg.get("op") != "subscribe":
        raise SubError("bad_frame", 'the first frame must be {"op": "subscribe", "streams": [...]}')
    streams = msg.get("streams")
    if not isinstance(streams, list):
        raise SubError("bad_frame", "streams must be a list")
    if len(streams) > max_streams:
        raise SubError("too_many_streams", f"at most {max_streams} streams per subscription, not {len(streams)}")
    want: Want = []
    for s in streams:
        if isinstance(s, str):
            want.append((_stream_id(s), None))
        elif isinstance(s, dict) and set(s) <= {"stream_id", "from"}:
            want.append((_stream_id(s.get("stream_id")), _cursor(s.get("from", "now"))))
        else:
            raise SubError("bad_frame", 'each stream: "0x…" or {"stream_id": "0x…", "from": N | "now"}')
    pending = msg.get("pending", False)
    if not isinstance(pending, bool) or set(msg) - {"op", "streams", "pending"}:
        raise SubError("bad_frame", "pending must be true or false; known keys: op, streams, pending")
    return _check_count(want, max_streams), pending


def parse_query(streams: list[str], default_from: str, last_event_id: str | None, max_streams: int) -> Want:
    """SSE: stream=0x…[:N|:now] (repeated), from=N|now for streams without their own; Last-Event-ID (the
    `id:` of the last message received, the next block number per stream in request order) wins."""
    if len(streams) > max_streams:
        raise SubError("too_many_streams", f"at most {max_streams} streams per subscription, not {len(streams)}")
    want: Want = []
    for s in streams:
        sid, _, cur = s.partition(":")
        want.append((_stream_id(sid), _cursor(cur or default_from)))
    if last_event_id:
        parts = last_event_id.split(",")
        if len(parts) != len(want):
            raise SubError("bad_frame", f"Last-Event-ID has {len(parts)} cursors for {len(want)} streams")
        want = [(sid, _cursor(p)) for (sid, _), p in zip(want, parts, strict=True)]
    return _check_count(want, max_streams)


def _head(node: Node, sid: bytes) -> int:
    row = node.storage.get_stream(sid)
    return row.head_number if row else 0


def served_here(node: Node, want: Want) -> None:
    """A subscription to streams this node does not store goes to a node that replicates all of them
    (`not_replica` with its URL as `location`: the client reconnects there; node/client/subscribe.py), or,
    when no one node does, `not_replica` naming each stream's replicas (subscribe to them separately)."""
    away = [sid for sid, _ in want if forward.elsewhere(node, sid)]
    if not away:
        return
    common: list[str] | None = None
    for sid, _ in want:
        urls = forward.replica_urls(node, sid)
        common = urls if common is None else [u for u in common if u in urls]
    if common:
        raise SubError("not_replica", f"this node does not store {hx(away[0])}"
                       f"{f' and {len(away) - 1} more' if len(away) > 1 else ''}; {common[0]} replicates "
                       f"every stream asked", common[0])
    lists = "; ".join(f"{hx(sid)}: {', '.join(forward.replica_urls(node, sid)) or 'none reachable'}"
                      for sid in away[:8])
    raise SubError("not_replica", f"no one node replicates all the streams asked; subscribe to these "
                   f"separately at their replicas: {lists}")


async def resolve(node: Node, want: Want) -> dict[bytes, int]:
    """The next block number to send per stream (request order). Unknown streams and cursors past the
    chain's head are errors; a cursor past this node's head but not the chain's waits for the sync."""
    out: dict[bytes, int] = {}
    for sid, frm in want:
        if node.storage.get_stream(sid) is None:
            try:
                exists = await node.chain.stream_exists(sid)
            except Exception as exc:  # noqa: BLE001
                raise SubError("chain_unavailable", f"cannot check the stream on-chain: {exc}") from None
            if not exists:
                raise SubError("unknown_stream", f"stream {hx(sid)} does not exist in the registry")
            node.wake_sync.set()
        head = _head(node, sid)
        if frm is None:
            out[sid] = head + 1
            continue
        ch = node.chain_heads.get(sid)
        known = max(head, ch.number if ch else 0)
        if frm > known + 1:  # this node's view may lag: ask the chain before refusing
            try:
                known = max(known, (await node.chain.stream_head(sid))[0])
            except Exception as exc:  # noqa: BLE001
                raise SubError("chain_unavailable", f"cannot read the stream head on-chain: {exc}") from None
            if frm > known + 1:
                raise SubError("cursor_past_head", f"from {frm} is past the head of {hx(sid)} (#{known}): "
                                                   f"at most {known + 1}")
        base = node.storage.history_base(sid)
        if max(frm, 1) < base:  # older blocks were pruned here (retain_blocks) or predate its snapshot start
            raise SubError("cursor_pruned", f"from {frm}: blocks of {hx(sid)} before #{base} are not kept on "
                                            f"this node; subscribe from {base} or later, or ask a node that keeps them")
        out[sid] = frm
    return out


Emit = Callable[[str, str], Awaitable[None]]  # (message type, JSON text)
POOL_PAGE = 500  # mini-pool events per `pending` message sent on subscribe


class Session:
    """One subscription's delivery loop (transport-neutral: `emit` sends one message)."""

    def __init__(self, node: Node, sub: Subscriber, cursors: dict[bytes, int], emit: Emit) -> None:
        self.node, self.sub, self.cursors, self._emit = node, sub, cursors, emit
        cfg = node.cfg
        self.page, self.keepalive, self.send_timeout = cfg.sub_page_blocks, cfg.sub_keepalive_s, cfg.sub_send_timeout_s
        self.pool_limit = cfg.sub_pool_events
        self.pool: list[tuple[bytes, list[bytes]]] = []  # (stream, pending hashes) as of going live

    async def emit(self, kind: str, text: str) -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                await self._emit(kind, text)
        except TimeoutError:
            raise Dropped("slow_consumer", f"a message could not be sent within {self.send_timeout} s") from None

    def subscribed(self) -> str:
        d = self.node.domain
        return json.dumps({"type": "subscribed", "chain_id": d.chain_id, "registry": d.verifying_contract,
                           "node": self.node.me, "pending": self.sub.pending,
                           "streams": [{"stream_id": hx(s), "from": c, "head": _head(self.node, s)}
                                       for s, c in self.cursors.items()],
                           "cursor": self.cursor_json()})

    def cursor_json(self) -> dict[str, int]:
        return {hx(s): c for s, c in self.cursors.items()}

    async def send_stored(self, sid: bytes, last: int) -> None:
        """Blocks cursor..last of `sid` from SQLite, in pages of `page` blocks."""
        st = self.node.storage
        while self.cursors[sid] <= last:
            first = self.cursors[sid]
            rows = st.get_blocks(sid, first, min(last, first + self.page - 1))
            if first < st.history_base(sid):  # pruned while this subscriber was catching up
                raise SubError("cursor_pruned", f"block {first} of {hx(sid)} was pruned here meanwhile")
            if not rows or rows[0].header.number != first:
                raise SubError("internal", f"block {first} of {hx(sid)} is not stored here")
            for row in rows:
                n = row.header.number
                if n != self.cursors[sid]:
                    raise SubError("internal", f"block {self.cursors[sid]} of {hx(sid)} is not stored here")
                got = st.get_events(row.event_hashes)
                evs = [(h, got[h].event, got[h].signature) for h in row.event_hashes if h in got]
                c = st.get_commit(sid, n)
                text = block_json(row.header, row.header_hash, evs, row.tx_hash, c.chain_block if c else None)
                self.cursors[sid] = n + 1
                await self.emit("block", text)

    async def catch_up(self) -> None:
        """Send stored blocks until every cursor is past its stream's head, then go live. The last pass
        checks every head with no await in between and sets `live` in that same step: a block applied
        before it is at most that head (sent here), one applied after it is queued by the feed."""
        while True:
            behind = [(s, h) for s, h in ((s, _head(self.node, s)) for s in self.cursors) if self.cursors[s] <= h]
            if not behind:
                self.sub.live = True
                if self.sub.pending:
                    self.pool = self.take_pool()
                return
            for s, h in behind:
                await self.send_stored(s, h)

    def take_pool(self) -> list[tuple[bytes, list[bytes]]]:
        """The mini-pool of each stream asked (oldest first, at most `sub_pool_events` in all), read in the
        same synchronous step that turns the subscriber live: an event stored before it is in this list, one
        stored after it is queued by the feed, so each is announced once on this connection."""
        left, out = self.pool_limit, []
        for sid in self.cursors:
            hashes = self.node.storage.pool_oldest(sid, left) if left > 0 else []
            left -= len(hashes)
            if hashes:
                out.append((sid, hashes))
        return out

    async def send_pool(self) -> None:
        """The pool taken on going live, as `pending` messages marked `pool` (pages of POOL_PAGE events)."""
        st = self.node.storage
        pool, self.pool = self.pool, []
        for sid, hashes in pool:
            for i in range(0, len(hashes), POOL_PAGE):
                page = hashes[i:i + POOL_PAGE]
                got = st.get_events(page)
                evs = [(h, got[h].event, got[h].signature) for h in page if h in got]
                if evs:
                    await self.emit("pending", pending_json(sid, evs, pool=True))

    async def run(self) -> None:
        await self.emit("subscribed", self.subscribed())
        await self.catch_up()
        await self.emit("caught_up", json.dumps({"type": "caught_up", "cursor": self.cursor_json()}))
        await self.send_pool()
        while True:
            item = await self.sub.next(self.keepalive)
            if item is None:
                if self.node.stopping:
                    raise Dropped("node_stopping", "the node is stopping")
                await self.emit("keepalive", '{"type":"keepalive"}')
                continue
            if item.kind == "block":
                assert item.number is not None
                c = self.cursors[item.stream_id]
                if item.number < c:
                    continue  # already sent (catch-up read it)
                if item.number > c:
                    await self.send_stored(item.stream_id, item.number - 1)  # defensive: a gap is filled
                self.cursors[item.stream_id] = item.number + 1
            await self.emit(item.kind, item.text)


def _err_json(e: SubError | Dropped) -> str:
    error = e.error if isinstance(e, SubError) else e.reason
    msg = {"type": "error", "error": error, "detail": e.detail}
    if isinstance(e, SubError) and e.location:
        msg["location"] = e.location
    return json.dumps(msg)


# ---- WebSocket ----------------------------------------------------------------------------------
async def _close(ws: WebSocket, e: SubError | Dropped, timeout: float) -> None:
    error = e.error if isinstance(e, SubError) else e.reason
    code = ERRORS.get(error, (1011, 0))[0]
    try:
        async with asyncio.timeout(timeout):
            await ws.send_text(_err_json(e))
            await ws.close(code, error)
    except Exception as exc:  # noqa: BLE001
        log.info("could not close a subscription with %s (%s): %r", code, error, exc)


async def _reader(ws: WebSocket, sub: Subscriber) -> None:
    """Frames after the subscribe frame: {"op": "ping"} (answered by {"type": "pong"}); anything else is
    a bad frame. Returns when the client goes away."""
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        text = msg.get("text")
        try:
            op = json.loads(text).get("op") if text is not None else None
        except (ValueError, AttributeError):
            op = None
        if op != "ping":
            raise SubError("bad_frame", 'after the subscribe frame only {"op": "ping"} is accepted')
        sub.control('{"type":"pong"}')


async def serve_ws(ws: WebSocket, node: Node, feed: Feed) -> None:
    cfg = node.cfg
    await ws.accept()
    sub: Subscriber | None = None
    try:
        if feed.full():
            raise SubError("too_many_subscribers", f"this node serves at most {feed.max_subscribers} subscriptions")
        try:
            async with asyncio.timeout(cfg.sub_hello_timeout_s):
                msg = await ws.receive()
        except TimeoutError:
            raise SubError("subscribe_timeout", f"no subscribe frame within {cfg.sub_hello_timeout_s} s") from None
        if msg["type"] == "websocket.disconnect":
            return
        if msg.get("text") is None:
            raise SubError("bad_frame", "the subscribe frame must be a text frame (JSON)")
        want, pending = parse_frame(msg["text"], cfg.sub_max_streams)
        served_here(node, want)
        cursors = await resolve(node, want)
        try:
            sub = feed.add(frozenset(cursors), pending)
        except FeedFull as exc:
            raise SubError("too_many_subscribers", str(exc)) from None

        async def emit(_kind: str, text: str) -> None:
            await ws.send_text(text)

        session = Session(node, sub, cursors, emit)
        tasks = [asyncio.create_task(session.run()), asyncio.create_task(_reader(ws, sub)),
                 asyncio.create_task(sub.gone.wait())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if sub.dropped is not None:
            raise sub.dropped
        for t in done:
            failure = None if t.cancelled() else t.exception()
            if isinstance(failure, (SubError, Dropped)):
                raise failure
            if failure is not None and not isinstance(failure, (WebSocketDisconnect, OSError, RuntimeError)):
                log.error("subscription failed", exc_info=failure)
                raise SubError("internal", "internal error")
    except (SubError, Dropped) as e:
        if isinstance(e, SubError) and e.error == "internal":
            log.error("subscription: %s", e.detail)
        await _close(ws, e, cfg.sub_close_timeout_s)
    except WebSocketDisconnect:
        pass
    finally:
        if sub is not None:
            feed.remove(sub)


# ---- Server-Sent Events -------------------------------------------------------------------------
class SSEResponse(StreamingResponse):
    """A StreamingResponse that also ends (and frees its subscription) when the client disconnects, even
    while nothing is being sent."""

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self.stream_response(send))
        listen = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait({stream, listen}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (stream, listen):
                t.cancel()
            await asyncio.gather(stream, listen, return_exceptions=True)


async def _sse_events(node: Node, feed: Feed, sub: Subscriber, cursors: dict[bytes, int]) -> AsyncIterator[str]:
    out: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)

    async def emit(kind: str, text: str) -> None:
        if kind == "keepalive":
            await out.put(": keepalive\n\n")
            return
        ident = ",".join(str(c) for c in cursors.values())
        await out.put(f"id: {ident}\nevent: {kind}\ndata: {text}\n\n")

    session = Session(node, sub, cursors, emit)

    async def run() -> None:
        try:
            await session.run()
        except (SubError, Dropped) as e:
            await out.put(f"event: error\ndata: {_err_json(e)}\n\n")
        finally:  # never wait here: when cancelled (client gone), nobody reads `out` any more
            with contextlib.suppress(asyncio.QueueFull):
                out.put_nowait(None)

    task = asyncio.create_task(run())
    gone = asyncio.create_task(sub.gone.wait())
    try:
        while True:
            get = asyncio.create_task(out.get())
            await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                break  # dropped by the feed
            chunk = get.result()
            if chunk is None:
                return
            yield chunk
        if sub.dropped is not None:
            yield f"event: error\ndata: {_err_json(sub.dropped)}\n\n"
    finally:
        feed.remove(sub)
        task.cancel()
        gone.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)


WS_DOC = """

**Subscriptions** (docs/node.md, "Subscriptions"). `ws://HOST/v1/subscribe` (WebSocket): send one text frame `{"op":
"subscribe", "streams": [{"stream_id": "0x…", "from": 12}, {"stream_id": "0x…", "from": "now"}], "pending": false}`;
receive JSON messages `subscribed`, then every committed block from each cursor (`block`: header fields,
`header_hash`, `tx_hash`, `chain_block`, `events` in block order), each once and in order per stream, `caught_up`
once the stored blocks are sent, then live `block`s (and, with `"pending": true`, the mini-pool as `pending`
messages marked `"pool": true`, then `pending` event batches as stored), `keepalive` when idle. Send `{"op":
"ping"}` for a `pong`. Resume with `from` = last block number + 1. Errors end with an `error` message and a close
code: 4400 bad_frame, 4404 unknown_stream, 4408 subscribe_timeout, 4410 cursor_pruned, 4413 too_many_streams, 4416
cursor_past_head, 4421 not_replica (the `error` message's `location`, if any, is a node that replicates every stream
asked: subscribe there), 4429 too_many_subscribers, 4503 chain_unavailable, 4001 slow_consumer, 1001 node_stopping.
The same messages as Server-Sent Events: `GET /v1/subscribe` below."""


def install(app: FastAPI, node: Node) -> Feed:
    """The feed (hooked to the node's storage) and the /v1/subscribe routes (WebSocket and SSE)."""
    cfg = node.cfg
    try:
        feed = Feed(cfg.sub_max_subscribers, cfg.sub_queue_messages, cfg.sub_queue_bytes, node.metrics.registry)
    except ValueError:  # metrics already registered (a second API on the same node): private registry
        feed = Feed(cfg.sub_max_subscribers, cfg.sub_queue_messages, cfg.sub_queue_bytes)

    def chain_block_of(sid: bytes, n: int) -> int | None:
        c = node.storage.get_commit(sid, n)
        return c.chain_block if c else None

    feed.chain_block_of = chain_block_of
    node.storage.listeners.append(feed)
    app.description = (app.description or "") + WS_DOC

    @app.websocket("/v1/subscribe")
    async def ws_subscribe(ws: WebSocket) -> None:
        await serve_ws(ws, node, feed)

    errs: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut, "description": e} for e, (_c, s) in ERRORS.items()
                                             if 400 <= s < 600 and s not in (408, 500)}
    @app.get("/v1/subscribe", tags=["client"], response_class=SSEResponse, responses={
        200: {"content": {"text/event-stream": {}}, "description": "a stream of Server-Sent Events"},
        **errs})
    async def sse_subscribe(
        request: Request,
        stream: list[str] = Query([], description="0x stream id, optionally with its own cursor: 0x…:12 or "
                                  "0x…:now; repeat for several streams"),
        frm: str = Query("now", alias="from", description="first block number wanted, or now (only new blocks)"),
        pending: bool = Query(False, description="also send pending events as they are accepted"),
        last_event_id: str | None = Header(None, description="the id of the last message received: resume there"),
    ) -> SSEResponse:
        """Subscribe to streams as Server-Sent Events (`event:` = message type, `data:` = the JSON message,
        `id:` = the next block number per stream in request order, which EventSource sends back as
        Last-Event-ID to resume). The same messages as the WebSocket at `ws://HOST/v1/subscribe`
        (docs/node.md "Subscriptions"). Errors before the stream starts: 400 bad_frame, 404 unknown_stream,
        307 to a node that replicates every stream asked (this one does not store them all), 410
        cursor_pruned, 413 too_many_streams, 416 cursor_past_head, 421 not_replica (no one node replicates all
        the streams asked), 429 too_many_subscribers, 503 chain_unavailable; a slow client gets `event: error`
        (slow_consumer) and the response ends."""
        try:
            if feed.full():
                raise SubError("too_many_subscribers",
                               f"this node serves at most {feed.max_subscribers} subscriptions")
            want = parse_query(stream, frm, last_event_id, cfg.sub_max_streams)
            served_here(node, want)
            cursors = await resolve(node, want)
            try:
                sub = feed.add(frozenset(cursors), pending)
            except FeedFull as exc:
                raise SubError("too_many_subscribers", str(exc)) from None
        except SubError as e:
            if e.location:  # the same request at a node that replicates every stream asked
                query = f"?{request.url.query}" if request.url.query else ""
                raise Rejected(307, e.error, e.detail,
                               {"Location": e.location.rstrip("/") + request.url.path + query}) from None
            raise Rejected(e.status, e.error, e.detail) from None
        return SSEResponse(_sse_events(node, feed, sub, cursors),
                           headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return feed
