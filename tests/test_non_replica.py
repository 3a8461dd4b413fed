"""A node stores only the streams it replicates (`sync_all_streams = false`, the default), end to end (real
Anvil, registry and 4 node processes, r = 3: each stream has one non-replica). A client that only knows the
non-replica still gets its events committed (passed on to a replica unchecked, the replica's answer
returned), reads blocks, events and the stream through it (a replica's answers), and subscribes through it
(WebSocket: close 4421 with a replica's URL, which node.client.subscribe and `python -m node watch` follow;
SSE: 307). The non-replica stores nothing of the stream (no event, block, member or snapshot row), refuses
gossip for it, and never passes on a request another node passed on. When a replica leaves and it takes its
place (replaceReplica), it starts the stream from a peer's snapshot (the existing path)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from node.chain.deploy import parse_stream_id
from node.client.subscribe import Subscription
from node.devnet.network import Network
from node.protocol.hexutil import hx
from node.protocol.types import EventKind
from node.server.client import Author

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("node_logs_on_failure")]

STREAMS = [parse_stream_id(f"elsewhere-{i}") for i in range(6)]
EVERY = 4  # snapshot_every: the later replica is more than this many blocks behind, so it starts from one
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 3.0, "log_level": "INFO", "snapshot_every": EVERY}
EPOCH = 3600


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("elsewhere"), n_nodes=4, streams=STREAMS, leader_timeout=3,
                 epoch_length=EPOCH, settings=SETTINGS) as d:
        yield d


@pytest.fixture(scope="module")
def case(net, reg):
    """S: the stream under test; x: the index of its non-replica; T: a stream x replicates."""
    addrs = [s.address for s in net.setups]
    S = STREAMS[0]
    x = next(i for i, a in enumerate(addrs) if a not in reg.replicas_of(S))
    T = next(s for s in STREAMS if addrs[x] in reg.replicas_of(s))
    return S, x, T


@pytest.fixture(scope="module")
def history(net, clients, domain, case):
    """Blocks of S made through the non-replica only: a JOIN, then MESSAGEs one block at a time (more than
    EVERY blocks), one batch mixing S and T. Returns (author, hashes of S's events)."""
    S, x, T = case
    c = clients[x]
    a = Author(domain)
    h, body = a.event(S, EventKind.JOIN)
    r = c.post_event(body)
    assert r.status_code == 202, r.text
    assert r.headers.get("x-served-by") in net.urls  # a replica's answer
    hashes = [h]
    c.wait_committed([h], timeout=30)
    for k in range(EVERY + 2):
        h, body = a.event(S, EventKind.MESSAGE, f"via the non-replica {k}".encode())
        assert c.post_event(body).status_code == 202
        c.wait_committed([h], timeout=30)
        hashes.append(h)
    # a batch: S's events go to a replica, T's are taken here; each result is its own
    ht, jt = a.event(T, EventKind.JOIN)
    hs, js = a.event(S, EventKind.MESSAGE, b"in a mixed batch")
    r = c.post_batch([jt, js])
    assert r.status_code == 200, r.text
    assert [x["ok"] for x in r.json()["results"]] == [True, True], r.text
    c.wait_committed([ht, hs], timeout=30)
    hashes.append(hs)
    return a, hashes


def rows_of(net, i: int, sid: bytes) -> dict[str, int]:
    db = sqlite3.connect(f"file:{net.setups[i].data_dir / 'node.sqlite'}?mode=ro", uri=True)
    try:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t} WHERE stream_id = ?", (sid,)).fetchone()[0]  # noqa: S608
                for t in ("events", "blocks", "members", "proposals", "snapshots")}
    finally:
        db.close()


def test_events_posted_to_the_non_replica_commit(net, clients, reg, case, history):
    S, x, _T = case
    _a, hashes = history
    got = clients[x].wait_committed(hashes, timeout=10)  # read through the node they were posted to
    for st in got.values():
        assert st["header_hash"] == hx(reg.header_hash_at(S, st["block"]))
    assert reg.stream_head(S).number >= EVERY + 2


def test_reads_through_the_non_replica_are_a_replicas(net, clients, reg, case, history):
    S, x, _T = case
    rep = next(i for i in range(4) if net.setups[i].address in reg.replicas_of(S))
    head = reg.stream_head(S).number
    st = clients[x].stream(S)
    assert st["head_number"] == head and st["replicated_here"] is True  # the replica answered
    for n in range(1, head + 1):
        assert clients[x].block(S, n) == clients[rep].block(S, n)
        assert clients[x].block(S, n)["header_hash"] == hx(reg.header_hash_at(S, n))
    r = httpx.get(f"{net.urls[x]}/v1/streams/{hx(S)}/blocks/1", trust_env=False)
    assert r.headers["x-served-by"] in [net.urls[i] for i in range(4) if i != x]


def test_the_non_replica_stores_nothing_of_the_stream(net, clients, domain, case, history):
    S, x, T = case
    assert rows_of(net, x, S) == dict.fromkeys(("events", "blocks", "members", "proposals", "snapshots"), 0)
    assert rows_of(net, x, T)["blocks"] >= 1  # it stores what it replicates
    # gossip of S's events to it (signed by a registered peer) is refused, and stores nothing
    a = Author(domain)
    _h, body = a.event(S, EventKind.JOIN)
    peer = next(i for i in range(4) if i != x)
    r = clients[x].gossip([body], key=net.setups[peer].key)
    assert r.status_code == 200 and r.json()["rejected"] == 1, r.text
    assert rows_of(net, x, S)["events"] == 0


def test_a_forwarded_request_is_never_forwarded_again(net, clients, domain, case, history):
    S, x, _T = case
    a = Author(domain)
    h, body = a.event(S, EventKind.JOIN)
    hdr = {"X-Forwarded-By": "1"}
    r = httpx.post(f"{net.urls[x]}/v1/events", json=body, headers=hdr, trust_env=False)
    assert r.status_code == 421 and r.json()["error"] == "not_replica", r.text
    assert set(r.headers["x-replicas"].split(",")) <= set(net.urls)
    r = httpx.get(f"{net.urls[x]}/v1/streams/{hx(S)}/blocks/1", headers=hdr, trust_env=False)
    assert r.status_code == 421, r.text
    r = httpx.post(f"{net.urls[x]}/v1/events/batch", json={"events": [body]}, headers=hdr, trust_env=False)
    assert r.status_code == 200 and r.json()["results"][0]["status"] == 421, r.text
    assert clients[x].event(h) is None and rows_of(net, x, S)["events"] == 0


def test_subscriptions_through_the_non_replica_move_to_a_replica(net, clients, reg, case, history):
    S, x, _T = case
    head = reg.stream_head(S).number
    sub = Subscription(net.urls[x], {S: 1})
    got = []
    for msg in sub:
        if msg["type"] == "block":
            got.append(msg["number"])
            if msg["number"] == head:
                break
    sub.close()
    assert got == list(range(1, head + 1))
    assert sub.node != net.urls[x] and sub.node in net.urls
    # SSE: a redirect to a replica, same query
    r = httpx.get(f"{net.urls[x]}/v1/subscribe", params={"stream": hx(S), "from": "1"}, trust_env=False)
    assert r.status_code == 307, r.text
    loc = r.headers["location"]
    assert any(loc.startswith(u + "/v1/subscribe?") for u in net.urls if u != net.urls[x]), loc
    # python -m node watch follows the WebSocket's redirect too
    out = subprocess.run([sys.executable, "-m", "node", "watch", "--node", net.urls[x], "--stream", hx(S),
                          "--from", "1", "--count", "2", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(s) for s in out.stdout.splitlines()]
    assert [ln["block"] for ln in lines] == [1, 2] and "moving to" not in out.stdout


def test_the_non_replica_that_becomes_a_replica_starts_from_a_snapshot(net, clients, domain, reg, case, history):
    S, x, _T = case
    me = net.setups[x].address
    leaver = reg.replicas_of(S)[0]
    li = next(i for i in range(4) if net.setups[i].address == leaver)
    reg.request_leave(leaver)
    net.anvil.increase_time(EPOCH)
    net.anvil.mine()
    deadline = time.monotonic() + 60
    while me not in reg.replicas_of(S) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert me in reg.replicas_of(S), "the non-replica did not take the leaver's place"
    head = reg.stream_head(S).number
    deadline = time.monotonic() + 60
    c = clients[x]
    while time.monotonic() < deadline and rows_of(net, x, S)["blocks"] == 0:
        time.sleep(0.3)
    r = httpx.get(f"{net.urls[x]}/v1/streams/{hx(S)}", trust_env=False)
    assert "x-served-by" not in r.headers and r.json()["head_number"] == head, r.text
    m = re.search(r'^node_snapshots_total\{result="installed"\} ([0-9.]+)$', c.metrics(), re.M)
    assert m and float(m.group(1)) >= 1, "no snapshot installed"
    assert httpx.get(f"{net.urls[x]}/v1/streams/{hx(S)}/blocks/1", trust_env=False).status_code == 410
    # and it now leads and attests: new events on S commit without the leaver
    a, _ = history
    h, body = a.event(S, EventKind.MESSAGE, b"after the replacement")
    assert c.post_event(body).status_code == 202
    st = c.wait_committed([h], timeout=40)[h]
    assert st["header"]["leader"] != leaver
    assert "x-served-by" not in httpx.get(f"{net.urls[x]}/v1/streams/{hx(S)}/blocks/{st['block']}",
                                          trust_env=False).headers  # stored here now
    assert rows_of(net, x, S)["events"] >= 1
    assert clients[li].health()["active"] is False
