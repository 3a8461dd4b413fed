"""Subscriptions (/v1/subscribe, WebSocket + SSE): unit tests of the feed and the catch-up/live hand-over,
then end to end on a real Anvil with 3 node processes over loopback HTTP (one devnet for the module, tests
in file order)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from node.chain.deploy import parse_stream_id
from node.client.subscribe import Subscription, SubscriptionError, ws_url
from node.protocol.eip712 import hash_event, hash_header
from node.protocol.merkle import merkle_root
from node.protocol.state import NO_CHANGE
from node.protocol.types import Event, EventKind, Header
from node.server.client import Author
from node.server.config import NodeConfig
from node.server.feed import Feed
from node.server.models import hx, unhex
from node.server.storage import Storage
from node.server.subscribe import Session, parse_frame

ROOT = Path(__file__).resolve().parent.parent


# ---- units: the feed ----------------------------------------------------------------------------
SID = b"\x11" * 32


def _ev(n: int, payload: bytes = b"x") -> tuple[bytes, Event, bytes]:
    ev = Event(SID, "0x" + "ab" * 20, n, 0, payload)
    return hash_event(ev), ev, b"\x00" * 65


def _header(n: int, prev: bytes, evs: list) -> Header:
    return Header(SID, n, prev, merkle_root([h for h, _, _ in evs]), len(evs), 0, 0, "0x" + "cd" * 20, b"\x00" * 32,
                  b"\x00" * 32)


def test_feed_queues_only_live_subscribers_of_the_stream_and_serializes_once():
    f = Feed(max_subscribers=3, queue_items=4, queue_bytes=1 << 20)
    a, b, other = f.add(frozenset({SID}), False), f.add(frozenset({SID}), True), f.add(frozenset({b"\x22" * 32}), True)
    evs = [_ev(1)]
    f.block_applied(_header(1, b"\x00" * 32, evs), b"\x01" * 32, evs, None)
    assert not a.queue and not b.queue  # not live yet: catch-up reads SQLite
    a.live = b.live = other.live = True
    f.block_applied(_header(2, b"\x01" * 32, evs), b"\x02" * 32, evs, b"\x03" * 32)
    f.events_added([_ev(7)])
    assert [i.kind for i in a.queue] == ["block"] and [i.kind for i in b.queue] == ["block", "pending"]
    assert a.queue[0] is b.queue[0] and a.queue[0].text is b.queue[0].text  # one message object, one text
    assert not other.queue
    msg = json.loads(a.queue[0].text)
    assert msg["type"] == "block" and msg["number"] == 2 and msg["tx_hash"] == hx(b"\x03" * 32)
    assert msg["events"][0]["hash"] == hx(evs[0][0])
    with pytest.raises(Exception, match="at most 3"):
        f.add(frozenset({SID}), False)


def test_feed_drops_a_slow_subscriber_and_frees_its_queue():
    f = Feed(max_subscribers=4, queue_items=3, queue_bytes=10_000)
    slow, fast = f.add(frozenset({SID}), False), f.add(frozenset({SID}), False)
    slow.live = fast.live = True
    prev = b"\x00" * 32
    for n in range(1, 5):
        evs = [_ev(n)]
        f.block_applied(_header(n, prev, evs), bytes([n]) * 32, evs, None)
        prev = bytes([n]) * 32
        if n < 4:
            asyncio.run(fast.next(0.1))  # the fast one keeps up
    assert slow.dropped is not None and slow.dropped.reason == "slow_consumer" and slow.gone.is_set()
    assert not slow.queue and slow.qbytes == 0 and slow.id not in f.subs
    assert fast.dropped is None and len(fast.queue) == 1
    # the byte bound: a big block is taken into an empty queue, a second one drops
    big = f.add(frozenset({SID}), False)
    big.live = True
    evs = [_ev(9, b"y" * 20_000)]
    f.block_applied(_header(5, prev, evs), b"\x05" * 32, evs, None)
    assert big.dropped is None and len(big.queue) == 1
    f.block_applied(_header(6, b"\x05" * 32, evs), b"\x06" * 32, evs, None)
    assert big.dropped is not None and big.dropped.reason == "slow_consumer"


def test_pending_batches_of_a_stream_join_while_queued():
    """Events accepted one request at a time while the session waits are one queued message per stream (a
    burst of intake must not pass the message bound); a block queued after it starts a new one; in order."""
    f = Feed(queue_items=4, queue_bytes=1 << 20)
    sub = f.add(frozenset({SID, b"\x22" * 32}), True)
    sub.live = True
    other = Event(b"\x22" * 32, "0x" + "ab" * 20, 99, 0, b"o")
    for n in range(1, 11):
        f.events_added([_ev(n)])
    f.events_added([(hash_event(other), other, b"\x00" * 65)])
    evs = [_ev(50)]
    f.block_applied(_header(1, b"\x00" * 32, evs), b"\x01" * 32, evs, None)
    f.events_added([_ev(11), _ev(12)])
    assert sub.dropped is None and [i.kind for i in sub.queue] == ["pending", "pending", "block", "pending"]
    f.events_added([_ev(13)])
    assert sub.dropped is None and len(sub.queue) == 4  # joined the open one (a 5th message would drop)
    msgs = [json.loads(asyncio.run(sub.next(0.1)).text) for _ in range(4)]
    assert [e["event"]["nonce"] for e in msgs[0]["events"]] == list(range(1, 11))
    assert msgs[1]["stream_id"] == hx(b"\x22" * 32) and msgs[2]["type"] == "block"
    assert [e["event"]["nonce"] for e in msgs[3]["events"]] == [11, 12, 13]
    assert sub.qbytes == 0 and not sub.queue
    f.events_added([_ev(14)])  # taken items are closed: a new message
    assert len(sub.queue) == 1 and [e["event"]["nonce"] for e in json.loads(sub.queue[0].text)["events"]] == [14]
    # the byte bound still holds for a joined message
    big = Feed(queue_items=3, queue_bytes=50_000)
    s2 = big.add(frozenset({SID}), True)
    s2.live = True
    big.events_added([_ev(1, b"z" * 20_000)])
    big.events_added([_ev(2, b"z" * 20_000)])
    assert s2.dropped is not None and s2.dropped.reason == "slow_consumer"


def test_parse_frame_errors():
    ok, pending = parse_frame(json.dumps({"op": "subscribe", "streams": [{"stream_id": hx(SID), "from": 0},
                                                                          hx(b"\x22" * 32)], "pending": True}), 4)
    assert ok == [(SID, 1), (b"\x22" * 32, None)] and pending
    for bad, err in [("{nope", "bad_frame"), ('{"op": "sub"}', "bad_frame"), ('{"op": "subscribe", "streams": 1}',
                     "bad_frame"), ('{"op": "subscribe", "streams": ["0x12"]}', "bad_frame"),
                     ('{"op": "subscribe", "streams": []}', "bad_frame"),
                     (json.dumps({"op": "subscribe", "streams": [{"stream_id": hx(SID), "from": -1}]}), "bad_frame"),
                     (json.dumps({"op": "subscribe", "streams": [hx(SID), hx(SID)]}), "bad_frame"),
                     (json.dumps({"op": "subscribe", "streams": [hx(bytes([i]) * 32) for i in range(5)]}),
                      "too_many_streams")]:
        with pytest.raises(Exception) as ei:
            parse_frame(bad, 4)
        assert getattr(ei.value, "error", None) == err, bad


def test_catch_up_hands_over_to_live_with_no_gap_or_duplicate(tmp_path):
    """Blocks are applied while the session sends stored ones (in its awaits) and right after it turns live:
    each is sent exactly once, in order."""
    st = Storage(tmp_path / "n.sqlite")
    st.upsert_stream(SID, b"\x00" * 32, [], 0)
    feed = Feed(queue_items=1000)
    st.listeners.append(feed)
    prev = [b"\x00" * 32]

    def apply(n: int) -> None:
        evs = [_ev(n)]
        h = _header(n, prev[0], evs)
        st.apply_block(h, hash_header(h), evs, NO_CHANGE, None)
        prev[0] = hash_header(h)

    for n in range(1, 8):
        apply(n)
    cfg = NodeConfig(sub_page_blocks=3)
    node = SimpleNamespace(storage=st, cfg=cfg, domain=SimpleNamespace(chain_id=1, verifying_contract="0x0"),
                           me="0x0", stopping=False)
    sent: list[int] = []

    async def emit(kind: str, text: str) -> None:
        await asyncio.sleep(0)
        if kind == "block":
            n = json.loads(text)["number"]
            sent.append(n)
            if n in (2, 6, 9):  # a block commits while one is being sent (catch-up, then live)
                apply(prev_n[0] + 1)
                prev_n[0] += 1
        if kind == "caught_up":
            apply(prev_n[0] + 1)  # right after the hand-over
            prev_n[0] += 1

    prev_n = [7]
    sub = feed.add(frozenset({SID}), False)

    async def go() -> None:
        s = Session(node, sub, {SID: 1}, emit)  # type: ignore[arg-type]
        t = asyncio.create_task(s.run())
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(sent) >= prev_n[0]:
                break
        t.cancel()

    asyncio.run(go())
    assert sent == list(range(1, prev_n[0] + 1)), sent
    assert prev_n[0] >= 11
    st.close()


def test_pending_subscriber_gets_the_mini_pool_then_live_events_each_once(tmp_path):
    """With pending=true the session sends the events already waiting in the mini-pool (marked `pool`,
    oldest first, bounded by sub_pool_events), taken in the same step that turns it live: an event stored
    while the pool is being sent comes after it through the feed, and none is sent twice."""
    st = Storage(tmp_path / "n.sqlite")
    st.upsert_stream(SID, b"\x00" * 32, [], 0)
    feed = Feed(queue_items=1000)
    st.listeners.append(feed)
    st.add_events([_ev(n) for n in range(1, 8)], now=100.0)
    st.add_events([_ev(n) for n in range(8, 12)], now=50.0)  # received earlier: sent first
    node = SimpleNamespace(storage=st, cfg=NodeConfig(sub_pool_events=9),
                           domain=SimpleNamespace(chain_id=1, verifying_contract="0x0"), me="0x0", stopping=False)
    msgs: list[dict] = []

    async def emit(kind: str, text: str) -> None:
        await asyncio.sleep(0)
        m = json.loads(text)
        msgs.append(m)
        if m["type"] == "pending" and m.get("pool"):
            st.add_events([_ev(20)])  # stored while the pool is going out

    sub = feed.add(frozenset({SID}), True)

    async def go() -> None:
        t = asyncio.create_task(Session(node, sub, {SID: 1}, emit).run())  # type: ignore[arg-type]
        for _ in range(200):
            await asyncio.sleep(0.005)
            if any(m["type"] == "pending" and not m.get("pool") for m in msgs):
                break
        t.cancel()

    asyncio.run(go())
    kinds = [(m["type"], bool(m.get("pool"))) for m in msgs]
    assert kinds == [("subscribed", False), ("caught_up", False), ("pending", True), ("pending", False)], kinds
    nonces = [e["event"]["nonce"] for e in msgs[2]["events"]]
    assert len(nonces) == 9 and set(nonces[:4]) == {8, 9, 10, 11} and set(nonces[4:]) < set(range(1, 8))  # bound 9
    assert [e["event"]["nonce"] for e in msgs[3]["events"]] == [20]
    # without pending nothing of the pool is sent
    msgs.clear()
    plain = feed.add(frozenset({SID}), False)

    async def go_plain() -> None:
        t = asyncio.create_task(Session(node, plain, {SID: 1}, emit).run())  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        t.cancel()

    asyncio.run(go_plain())
    assert [m["type"] for m in msgs] == ["subscribed", "caught_up"]
    st.close()


def test_client_yields_a_pending_event_once_across_reconnects():
    """A reconnect's mini-pool repeats events already yielded: the client helper skips them, and forgets a
    hash once its block is yielded."""
    from node.client.subscribe import _State

    s = _State([hx(SID)], True, True, 0.1, 1.0)
    ev = [{"hash": hx(bytes([i]) * 32)} for i in range(3)]
    first = s.take(json.dumps({"type": "pending", "stream_id": hx(SID), "events": ev[:2]}))
    assert first is not None and len(first["events"]) == 2
    again = s.take(json.dumps({"type": "pending", "pool": True, "stream_id": hx(SID), "events": ev}))
    assert again is not None and again["events"] == [ev[2]]
    assert s.take(json.dumps({"type": "pending", "pool": True, "stream_id": hx(SID), "events": ev})) is None
    s.take(json.dumps({"type": "block", "stream_id": hx(SID), "number": 1, "events": ev[:1]}))
    assert ev[0]["hash"] not in s.announced and ev[1]["hash"] in s.announced


# ---- end to end ---------------------------------------------------------------------------------
S1, S2 = parse_stream_id("subs-general"), parse_stream_id("subs-random")
LIMITS = {"sub_max_subscribers": 3, "sub_max_streams": 4, "sub_queue_messages": 4, "sub_queue_bytes": 512 * 1024,
          "sub_send_timeout_s": 60.0, "sub_close_timeout_s": 60.0, "sub_hello_timeout_s": 3.0, "sub_keepalive_s": 2.0}
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 6.0, "log_level": "INFO", **LIMITS}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from node.devnet.network import Network

    with Network(tmp_path_factory.mktemp("subs"), n_nodes=3, streams=[S1, S2], leader_timeout=3,
                 settings=SETTINGS) as d:
        yield d


def joined(author: Author, sid: bytes, clients, via: int = 0) -> None:
    h, body = author.event(sid, EventKind.JOIN)
    assert clients[via].post_event(body).status_code == 202
    clients[via].wait_committed([h], timeout=30)


class Collector:
    """A Subscription iterated in a thread; messages land in a queue."""

    def __init__(self, url: str, streams, pending: bool = False) -> None:
        self.sub = Subscription(url, streams, pending=pending, retry_s=0.2)
        self.q: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        try:
            for m in self.sub:
                self.q.put(m)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
            self.q.put(None)

    def take_until(self, pred, timeout: float = 40.0) -> list[dict]:
        out, end = [], time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                m = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            if m is None:
                raise AssertionError(f"subscription ended: {self.error}")
            out.append(m)
            if pred(m, out):
                return out
        raise AssertionError(f"timed out; got {[(m['type'], m.get('number')) for m in out][-10:]}")

    def close(self) -> None:
        self.sub.state.reconnect = False
        self.sub.close()
        self.t.join(5)


def blocks_of(msgs, sid: bytes) -> list[dict]:
    return [m for m in msgs if m["type"] == "block" and m["stream_id"] == hx(sid)]


def check_against_node_and_chain(b: dict, client, reg) -> None:
    sid = unhex(b["stream_id"])
    stored = client.block(sid, b["number"])
    assert stored is not None
    assert b["header"] == stored["header"] and b["header_hash"] == stored["header_hash"]
    assert [e["hash"] for e in b["events"]] == stored["event_hashes"]
    assert [{"event": e["event"], "signature": e["signature"]} for e in b["events"]] == stored["events"]
    header = Header(**{k: (unhex(v) if isinstance(v, str) and k != "leader" else v) for k, v in b["header"].items()})
    assert hx(hash_header(header)) == b["header_hash"]
    assert reg.header_hash_at(sid, b["number"]) == unhex(b["header_hash"]), "not the chain's header"
    assert b["tx_hash"] is not None and b["chain_block"] is not None


def wait_head(clients, sid: bytes, n: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(c.stream(sid)["head_number"] >= n for c in clients):
            return
        time.sleep(0.2)
    raise AssertionError("nodes did not reach the head")


def metric(client, name: str) -> float:
    total = 0.0
    for line in client.metrics().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("node_logs_on_failure")
def test_every_committed_block_arrives_once_in_order_with_chain_proof(net, clients, domain, reg):
    col = Collector(net.urls[0], [S1, S2], pending=True)
    first = col.take_until(lambda m, _o: m["type"] == "caught_up")
    sub0 = first[0]
    assert sub0["type"] == "subscribed" and sub0["chain_id"] == domain.chain_id and sub0["pending"] is True
    authors = [Author(domain) for _ in range(2)]
    for i, a in enumerate(authors):
        for sid in (S1, S2):
            joined(a, sid, clients, via=i)
    hashes = []
    for k in range(16):
        h, body = authors[k % 2].event((S1, S2)[k % 2], EventKind.MESSAGE, f"m{k}".encode())
        assert clients[k % 3].post_event(body).status_code == 202
        hashes.append(hx(h))
    clients[0].wait_committed([unhex(h) for h in hashes], timeout=40)
    heads = {sid: reg.stream_head(sid).number for sid in (S1, S2)}
    wait_head(clients[:1], S1, heads[S1])
    wait_head(clients[:1], S2, heads[S2])
    msgs = first + col.take_until(lambda _m, out: all(
        any(b["number"] == heads[s] for b in blocks_of(out, s)) for s in (S1, S2)))
    col.close()
    for sid in (S1, S2):
        bs = blocks_of(msgs, sid)
        nums = [b["number"] for b in bs]
        start = next(s["from"] for s in sub0["streams"] if s["stream_id"] == hx(sid))
        assert nums == list(range(start, heads[sid] + 1)), nums
        for b in bs:
            check_against_node_and_chain(b, clients[0], reg)
    in_blocks = {e["hash"] for b in blocks_of(msgs, S1) + blocks_of(msgs, S2) for e in b["events"]}
    assert set(hashes) <= in_blocks
    announced = [e["hash"] for m in msgs if m["type"] == "pending" for e in m["events"]]
    pending = set(announced)
    assert len(announced) == len(pending), "an event announced twice"
    # one connection all along: a burst of pending batches is one queued message, not a slow_consumer drop
    assert [m["type"] for m in msgs].count("subscribed") == 1 and col.sub.state.connects == 1
    # events posted to node 0 itself are announced pending there (one posted elsewhere may reach node 0 only
    # inside its committed block, never as pending): also those of the author that joined through node 1,
    # which node 0 stores only after its read-your-writes catch-up has applied that JOIN's block
    own = [h for k, h in enumerate(hashes) if k % 3 == 0]
    assert set(own) <= pending, ([h for h in own if h not in pending], [m["type"] for m in msgs])
    assert pending <= set(hashes) | {e["hash"] for b in blocks_of(msgs, S1) + blocks_of(msgs, S2) for e in b["events"]}
    # the commit tx and chain block are the chain's
    logs = {(lg.stream_id, lg.number): lg for lg in reg.committed_logs(0, stream_id=S1)}
    for b in blocks_of(msgs, S1):
        lg = logs[(S1, b["number"])]
        assert b["tx_hash"] == hx(lg.tx_hash) and b["chain_block"] == lg.block_number


def _poster(author: Author, clients, stop: threading.Event, sid: bytes, out: list) -> None:
    k = 0
    while not stop.is_set():
        h, body = author.event(sid, EventKind.MESSAGE, f"bg{k}".encode())
        if clients[k % 3].post_event(body).status_code == 202:
            out.append(h)
        k += 1
        time.sleep(0.05)


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("node_logs_on_failure")
def test_resume_from_cursor_after_disconnects_misses_and_repeats_nothing(net, clients, domain, reg):
    a = Author(domain)
    joined(a, S1, clients)
    stop, posted = threading.Event(), []
    t = threading.Thread(target=_poster, args=(a, clients, stop, S1, posted), daemon=True)
    t.start()  # blocks keep committing during catch-up, the hand-over and the reconnects
    try:
        time.sleep(1.0)
        col = Collector(net.urls[1], {S1: 1})
        got = col.take_until(lambda m, _o: m["type"] == "block" and m["number"] >= 3)
        # 1) the connection breaks under the client: it resumes by itself from its cursor
        col.sub._ws.socket.shutdown(socket.SHUT_RDWR)
        got += col.take_until(lambda m, _o: m["type"] == "subscribed")  # the second one: a new connection
        got += col.take_until(lambda m, _o: m["type"] == "caught_up")
        assert col.sub.state.connects == 2
        got += col.take_until(lambda m, _o: m["type"] == "block" and m["number"] >= 6)
        cursor = col.sub.cursor[hx(S1)]
        col.close()
        # 2) a new client resumes explicitly from the last cursor, on another node
        col2 = Collector(net.urls[2], {S1: cursor})
        time.sleep(1.5)
    finally:
        stop.set()
        t.join(5)
    clients[0].wait_committed(posted, timeout=40)
    head = reg.stream_head(S1).number
    wait_head(clients, S1, head)
    got2 = col2.take_until(lambda m, _o: m["type"] == "block" and m["number"] >= head)
    col2.close()
    nums = [b["number"] for b in blocks_of(got, S1)] + [b["number"] for b in blocks_of(got2, S1)]
    assert nums == list(range(1, head + 1)), nums
    in_blocks = {e["hash"] for b in blocks_of(got + got2, S1) for e in b["events"]}
    assert {hx(h) for h in posted} <= in_blocks
    for b in blocks_of(got + got2, S1)[-5:]:
        check_against_node_and_chain(b, clients[0], reg)


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("node_logs_on_failure")
def test_slow_client_is_dropped_with_4001_and_others_are_unaffected(net, clients, domain, reg):
    url = net.urls[0]
    a = Author(domain)
    joined(a, S2, clients)
    fast = Collector(url, [S2])
    fast.take_until(lambda m, _o: m["type"] == "caught_up")
    s = socket.create_connection(("127.0.0.1", net.cluster.setups[0].port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow = connect(ws_url(url), sock=s, compression=None, max_queue=1, max_size=1 << 28, open_timeout=10,
                   ping_interval=None)  # a client that does not read cannot see pongs either
    slow.send(json.dumps({"op": "subscribe", "streams": [hx(S2)]}))
    dropped_before = metric(clients[0], 'node_subscribers_dropped_total{reason="slow_consumer"}')
    posted, end = [], time.monotonic() + 90
    while metric(clients[0], 'node_subscribers_dropped_total{reason="slow_consumer"}') <= dropped_before:
        assert time.monotonic() < end, "the slow client was never dropped"
        batch = [a.event(S2, EventKind.MESSAGE, bytes([k % 256]) * 60_000) for k in range(5)]
        r = clients[0].post_batch([b for _, b in batch])
        assert r.status_code == 200 and r.json()["accepted"] == 5, r.text
        posted += [h for h, _ in batch]
        time.sleep(0.3)
    print(f"slow client dropped after {len(posted)} events of 60 kB")
    qbytes = metric(clients[0], "node_subscriber_queue_bytes")
    assert qbytes <= LIMITS["sub_queue_bytes"] + 2_000_000  # only the fast client's (bounded) queue remains
    # the slow client now reads (with a normal window): what was in flight, then the close frame
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    code = reason = None
    last = None
    try:
        while True:
            last = json.loads(slow.recv(timeout=20))
    except ConnectionClosed as exc:
        code, reason = exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else None
        why = (repr(exc), repr(exc.sent), repr(exc.__cause__))
    assert (code, reason) == (4001, "slow_consumer"), (code, reason, why, last and last["type"])
    # (the `error` message sent just before the close frame is best effort for a client this far behind)
    assert last is not None and (last["type"] == "block" or last["error"] == "slow_consumer")
    # the fast client got every block, once, in order
    clients[0].wait_committed(posted, timeout=60)
    head = reg.stream_head(S2).number
    got = fast.take_until(lambda m, _o: m["type"] == "block" and m["number"] >= head, timeout=60)
    nums = [b["number"] for b in blocks_of(got, S2)]
    assert nums == list(range(nums[0], head + 1)) and fast.sub.state.connects == 1
    fast.close()
    assert clients[0].health()["ok"]


def ws_error(url: str, frame: str | None, timeout: float = 10) -> tuple[int | None, str | None, dict | None]:
    last = None
    with connect(ws_url(url), compression=None, open_timeout=10) as ws:
        try:
            if frame is not None:
                ws.send(frame)  # (refused at once when the node is full: the close may come first)
            while True:
                last = json.loads(ws.recv(timeout=timeout))
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd else None), (exc.rcvd.reason if exc.rcvd else None), last
    return None, None, last


def sub_frame(*streams, **kw) -> str:
    return json.dumps({"op": "subscribe", "streams": list(streams), **kw})


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("node_logs_on_failure")
def test_bad_input_gets_documented_close_codes_and_changes_nothing(net, clients, domain, reg):
    url = net.urls[2]
    head = reg.stream_head(S1).number
    cases = [
        (sub_frame(hx(parse_stream_id("no-such-stream"))), 4404, "unknown_stream"),
        ("{not json", 4400, "bad_frame"),
        ('{"op": "unsubscribe"}', 4400, "bad_frame"),
        (sub_frame("0x1234"), 4400, "bad_frame"),
        (sub_frame({"stream_id": hx(S1), "from": "yesterday"}), 4400, "bad_frame"),
        (sub_frame(*[hx(parse_stream_id(f"s{i}")) for i in range(5)]), 4413, "too_many_streams"),
        (sub_frame({"stream_id": hx(S1), "from": head + 50}), 4416, "cursor_past_head"),
        (None, 4408, "subscribe_timeout"),
    ]
    for frame, code, error in cases:
        c, reason, last = ws_error(url, frame)
        assert (c, reason) == (code, error), (frame, c, reason, last)
        assert last is not None and last["type"] == "error" and last["error"] == error and last["detail"]
    # a cursor one past the head is fine (it waits for the next block); a bad frame later ends the session
    with connect(ws_url(url), compression=None) as ws:
        ws.send(sub_frame({"stream_id": hx(S1), "from": head + 1}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        assert json.loads(ws.recv(timeout=10))["type"] == "caught_up"
        ws.send('{"op": "ping"}')
        m = json.loads(ws.recv(timeout=10))
        while m["type"] == "keepalive":
            m = json.loads(ws.recv(timeout=10))
        assert m["type"] == "pong"
        ws.send("garbage")
        with pytest.raises(ConnectionClosed) as ei:
            while True:
                ws.recv(timeout=10)
        assert ei.value.rcvd is not None and ei.value.rcvd.code == 4400
    # too many subscribers (3 on this node): the 4th is refused on WS (4429) and SSE (429)
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(ws_url(url), compression=None)) for _ in range(3)]
        for w in held:
            w.send(sub_frame(hx(S1)))
            assert json.loads(w.recv(timeout=10))["type"] == "subscribed"
        c, reason, _ = ws_error(url, sub_frame(hx(S1)))
        assert (c, reason) == (4429, "too_many_subscribers")
        r = clients[2].http.get("/v1/subscribe", params={"stream": hx(S1)})
        assert r.status_code == 429 and r.json()["error"] == "too_many_subscribers"
        # the node goes on: events still commit, the held subscriptions get them
        a = Author(domain)
        joined(a, S1, clients, via=2)
        for w in held:
            m = json.loads(w.recv(timeout=30))
            while m["type"] != "block":
                m = json.loads(w.recv(timeout=30))
            assert m["events"][0]["event"]["author"] == a.address
    end = time.monotonic() + 10
    while metric(clients[2], "node_subscribers ") != 0 and time.monotonic() < end:
        time.sleep(0.2)
    assert metric(clients[2], "node_subscribers ") == 0
    assert clients[2].health()["ok"]
    # a slot is free again once they closed
    c, reason, last = ws_error(url, sub_frame(hx(parse_stream_id("no-such-stream"))))
    assert c == 4404


def sse_read(resp, until, timeout: float = 30) -> list[tuple[str | None, str, dict]]:
    """(id, event, data) of the SSE messages until until(list) is true."""
    out: list[tuple[str | None, str, dict]] = []
    ident, event, data = None, "message", []
    end = time.monotonic() + timeout
    for line in resp.iter_lines():
        assert time.monotonic() < end, "SSE timed out"
        if line.startswith(":"):
            continue
        if line == "":
            if data:
                out.append((ident, event, json.loads("\n".join(data))))
                if until(out):
                    return out
            ident, event, data = None, "message", []
            continue
        k, _, v = line.partition(": ")
        if k == "id":
            ident = v
        elif k == "event":
            event = v
        elif k == "data":
            data.append(v)
    return out


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("node_logs_on_failure")
def test_sse_subscription_resume_and_errors(net, clients, reg):
    c = clients[1]
    print("subscribers on node 1 before SSE:", metric(c, "node_subscribers "))
    head1, real2 = reg.stream_head(S1).number, reg.stream_head(S2).number
    head2 = max(1, real2)
    wait_head([c], S1, head1)
    wait_head([c], S2, real2)
    with httpx.Client(base_url=net.urls[1], timeout=30, trust_env=False) as h:
        with h.stream("GET", "/v1/subscribe", params={"stream": [f"{hx(S1)}:1", f"{hx(S2)}:{head2}"]}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            msgs = sse_read(r, lambda out: any(e == "block" and d["number"] >= 3 and d["stream_id"] == hx(S1)
                                               for _i, e, d in out))
        assert msgs[0][1] == "subscribed" and msgs[0][0] == f"1,{head2}"
        blocks = [(i, d) for i, e, d in msgs if e == "block"]
        last_id = blocks[-1][0]
        assert last_id is not None
        # resume with Last-Event-ID: nothing repeated, nothing missed
        with h.stream("GET", "/v1/subscribe", params={"stream": [f"{hx(S1)}:1", f"{hx(S2)}:{head2}"]},
                      headers={"Last-Event-ID": last_id}) as r:
            more = sse_read(r, lambda out: out[-1][1] == "caught_up")
        print("subscribers on node 1 after SSE:", metric(c, "node_subscribers "))
        allb = [d for _i, d in blocks] + [d for _i, e, d in more if e == "block"]
        for sid, start, hd in ((S1, 1, head1), (S2, head2, real2)):
            nums = [d["number"] for d in allb if d["stream_id"] == hx(sid)]
            assert nums[:hd - start + 1] == list(range(start, hd + 1)), (sid, nums)
        for d in allb[:3]:
            check_against_node_and_chain(d, c, reg)
        # errors are plain 4xx before the stream starts
        for params, status, error in [
            ({"stream": hx(parse_stream_id("nope"))}, 404, "unknown_stream"),
            ({"stream": "0x12"}, 400, "bad_frame"),
            ({}, 400, "bad_frame"),
            ({"stream": f"{hx(S1)}:{head1 + 99}"}, 416, "cursor_past_head"),
            ({"stream": [hx(parse_stream_id(f"s{i}")) for i in range(5)]}, 413, "too_many_streams"),
        ]:
            r = h.get("/v1/subscribe", params=params)
            assert r.status_code == status and r.json()["error"] == error, (params, r.text)
        spec = h.get("/openapi.json").json()
        assert "get" in spec["paths"]["/v1/subscribe"] and "ws://HOST/v1/subscribe" in spec["info"]["description"]
    end = time.monotonic() + 10  # the node frees an SSE subscription when it sees the disconnect
    while metric(c, "node_subscribers ") != 0 and time.monotonic() < end:
        time.sleep(0.2)
    assert metric(c, "node_subscribers ") == 0


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("node_logs_on_failure")
def test_watch_json_prints_committed_events(net, clients, domain, reg):
    head = reg.stream_head(S1).number
    wait_head(clients[:1], S1, head)
    expect = []
    for n in range(1, head + 1):
        b = clients[0].block(S1, n)
        expect += [(n, i, h) for i, h in enumerate(b["event_hashes"])]
    p = subprocess.run([sys.executable, "-m", "node", "watch", "--node", net.urls[0], "--stream",
                        "subs-general", "--from", "1", "--json", "--count", str(len(expect))],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert [(x["block"], x["index"], x["hash"]) for x in lines] == expect
    assert all(x["type"] == "event" and x["stream_id"] == hx(S1) and re.match(r"^0x[0-9a-f]{64}$", x["header_hash"])
               for x in lines)
    assert any(x["kind"] == "JOIN" for x in lines) and any(x["text"] == "m0" for x in lines)
    bad = subprocess.run([sys.executable, "-m", "node", "watch", "--node", net.urls[0], "--stream",
                          "no-such-stream", "--json"], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and json.loads(bad.stdout.splitlines()[-1])["error"] == "unknown_stream"


@pytest.mark.usefixtures("node_logs_on_failure")
def test_client_raises_on_fatal_errors(net):
    with pytest.raises(SubscriptionError) as ei:
        for _m in Subscription(net.urls[0], [parse_stream_id("nothing-here")]):
            pass
    assert ei.value.code == 4404 and ei.value.error == "unknown_stream"
