"""Follow streams through a node's subscription WebSocket (`/v1/subscribe`, docs/node.md "Subscriptions"),
with automatic resume from the last cursor after a disconnect.

    from node.client.subscribe import Subscription
    for msg in Subscription("http://127.0.0.1:8600", {"0x…": 1}):     # or ["0x…"] for "now"
        if msg["type"] == "block":
            ...                                                        # each committed block once, in order

    async for msg in asubscribe(url, ["0x…"], pending=True): ...

Messages are the node's JSON messages (dicts). `pong` and `keepalive` are not yielded; a block already
yielded is never yielded again (the cursor is kept here: block number + 1 per stream, `.cursor`); with
`pending=True`, a pending event is yielded once (a reconnect's mini-pool, `"pool": true`, is filtered by the
hashes already yielded and not yet seen in a block). After a
reconnect a new `subscribed` (and `caught_up`) message is yielded. Fatal errors (bad frame, unknown stream,
too many streams, cursor past the head, subscribe timeout) raise SubscriptionError; the others (the node
went away, slow_consumer, too_many_subscribers, chain_unavailable) are retried with back-off, unless
`reconnect=False`. A node that does not store the streams asked closes with 4421 `not_replica` and the URL
of one that does (`location`): the subscription moves there at once (at most MAX_REDIRECTS times in a row;
without a `location`, or past that, it is a SubscriptionError). `.node` is the node it is connected to.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

FATAL = {4400: "bad_frame", 4404: "unknown_stream", 4408: "subscribe_timeout", 4413: "too_many_streams",
         4416: "cursor_past_head", 4421: "not_replica"}
NOT_REPLICA = 4421
MAX_ANNOUNCED = 100_000  # pending hashes remembered to skip a reconnect's repeats (oldest forgotten first)
MAX_REDIRECTS = 3  # not_replica hops in a row (nodes whose views of the replicas disagree cannot loop a client)


class SubscriptionError(Exception):
    def __init__(self, code: int | None, error: str, detail: str = "") -> None:
        super().__init__(f"{error} ({code}): {detail}" if detail else f"{error} ({code})")
        self.code, self.error, self.detail = code, error, detail


def ws_url(node: str) -> str:
    u = node.rstrip("/")
    if u.startswith("https://"):
        u = "wss://" + u[len("https://"):]
    elif u.startswith("http://"):
        u = "ws://" + u[len("http://"):]
    return u + "/v1/subscribe"


def _sid(s: str | bytes) -> str:
    return "0x" + s.hex() if isinstance(s, bytes) else s.lower()


class _State:
    """Cursors and dedup shared by the sync and async iterators."""

    def __init__(self, streams: Sequence[str | bytes] | Mapping[str | bytes, int | str | None], pending: bool,
                 reconnect: bool, retry_s: float, max_retry_s: float) -> None:
        items = streams.items() if isinstance(streams, Mapping) else ((s, None) for s in streams)
        self.cursor: dict[str, int | None] = {}
        for s, c in items:
            self.cursor[_sid(s)] = None if c in (None, "now") else int(c)
        self.pending, self.reconnect = pending, reconnect
        self.retry_s, self.max_retry_s, self.delay = retry_s, max_retry_s, retry_s
        self.last_error: dict[str, Any] | None = None
        self.connects = 0
        self.redirects = 0
        self.moved_to: str | None = None  # set by closed(): reconnect to this node
        # pending events yielded and not yet seen in a block: a reconnect's mini-pool repeats them
        self.announced: OrderedDict[str, None] = OrderedDict()

    def frame(self) -> str:
        return json.dumps({"op": "subscribe", "pending": self.pending, "streams": [
            {"stream_id": s, "from": "now" if c is None else c} for s, c in self.cursor.items()]})

    def take(self, raw: str | bytes) -> dict[str, Any] | None:
        """The message to yield, or None (skipped)."""
        msg: dict[str, Any] = json.loads(raw)
        t = msg.get("type")
        if t == "subscribed":
            self.delay = self.retry_s
            self.redirects = 0
            for s in msg.get("streams", []):
                self.cursor[s["stream_id"].lower()] = s["from"]
        elif t == "block":
            sid, n = msg["stream_id"].lower(), msg["number"]
            c = self.cursor.get(sid)
            if c is not None and n < c:
                return None
            self.cursor[sid] = n + 1
            for e in msg.get("events", ()):
                self.announced.pop(e.get("hash"), None)
        elif t == "pending":
            fresh = [e for e in msg.get("events", ()) if e.get("hash") not in self.announced]
            if not fresh:
                return None
            msg["events"] = fresh
            for e in fresh:
                self.announced[e.get("hash")] = None
            while len(self.announced) > MAX_ANNOUNCED:
                self.announced.popitem(last=False)
        elif t in ("pong", "keepalive"):
            return None
        elif t == "error":
            self.last_error = msg
        return msg

    def closed(self, code: int | None, reason: str) -> float:
        """After a disconnect: raise if fatal (or no reconnect), else the seconds to wait before retrying."""
        err = self.last_error or {}
        self.last_error = None
        loc = err.get("location")
        if code == NOT_REPLICA and isinstance(loc, str) and loc and self.redirects < MAX_REDIRECTS:
            self.redirects += 1
            self.moved_to = loc
            return 0.0
        if code in FATAL or not self.reconnect:
            raise SubscriptionError(code, err.get("error") or FATAL.get(code or 0) or reason or "closed",
                                    err.get("detail", ""))
        d = self.delay
        self.delay = min(self.max_retry_s, self.delay * 2)
        return d


class Subscription:
    """A blocking iterator over a subscription's messages (websockets' sync client), resuming by itself."""

    def __init__(self, node: str, streams: Sequence[str | bytes] | Mapping[str | bytes, int | str | None],
                 pending: bool = False, reconnect: bool = True, retry_s: float = 0.5, max_retry_s: float = 10.0,
                 open_timeout: float = 10.0, max_size: int = 1 << 28) -> None:
        self.node, self.url = node, ws_url(node)
        self.state = _State(streams, pending, reconnect, retry_s, max_retry_s)
        self.open_timeout, self.max_size = open_timeout, max_size
        self._ws: Any = None

    @property
    def cursor(self) -> dict[str, int | None]:
        return self.state.cursor

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake
        from websockets.sync.client import connect

        st = self.state
        while True:
            code: int | None = None
            reason = ""
            try:
                with connect(self.url, open_timeout=self.open_timeout, max_size=self.max_size,
                             compression=None) as ws:
                    self._ws = ws
                    st.connects += 1
                    ws.send(st.frame())
                    for raw in ws:
                        msg = st.take(raw)
                        if msg is not None:
                            yield msg
                    code = ws.close_code
                    reason = ws.close_reason or ""
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else 1006
                reason = exc.rcvd.reason if exc.rcvd else "connection lost"
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                code, reason = None, str(exc)
            finally:
                self._ws = None
            time.sleep(st.closed(code, reason))
            if st.moved_to:
                self.node, self.url, st.moved_to = st.moved_to, ws_url(st.moved_to), None


async def asubscribe(node: str, streams: Sequence[str | bytes] | Mapping[str | bytes, int | str | None],
                     pending: bool = False, reconnect: bool = True, retry_s: float = 0.5, max_retry_s: float = 10.0,
                     open_timeout: float = 10.0, max_size: int = 1 << 28) -> AsyncIterator[dict[str, Any]]:
    """The same as Subscription, as an async iterator (websockets' asyncio client)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    st = _State(streams, pending, reconnect, retry_s, max_retry_s)
    url = ws_url(node)
    while True:
        code: int | None = None
        reason = ""
        try:
            async with connect(url, open_timeout=open_timeout, max_size=max_size, compression=None) as ws:
                st.connects += 1
                await ws.send(st.frame())
                async for raw in ws:
                    msg = st.take(raw)
                    if msg is not None:
                        yield msg
                code, reason = ws.close_code, ws.close_reason or ""
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            reason = exc.rcvd.reason if exc.rcvd else "connection lost"
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            code, reason = None, str(exc)
        await asyncio.sleep(st.closed(code, reason))
        if st.moved_to:
            url, st.moved_to = ws_url(st.moved_to), None
