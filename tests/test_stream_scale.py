"""A node restarted on its data dir starts from what it stored and catches up from the logs (real Anvil,
registry and 4 node processes): 500 streams created while it was down (StreamBatch helper, many per
transaction), blocks committed on some of them and on an old stream meanwhile; after the restart it
knows every stream with the chain's replicas and heads, serves the committed events with the chain's
header hashes, and MESSAGEs posted to it on the new streams commit. Its start reads no view per stream: the JSON-RPC
requests it made up to ready are far fewer than the streams. Not timed (the bench times it:
bench/stream_scale.py)."""

from __future__ import annotations

import re
import time

import pytest

from bench.scenarios import Net
from bench.stream_scale import TAG, StreamMaker, batch_stream_id
from node.chain.deploy import parse_stream_id
from node.devnet.network import Network
from node.protocol.hexutil import hx
from node.protocol.types import EventKind
from node.server.client import Author, NodeClient

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("node_logs_on_failure")]

OLD = parse_stream_id("scale-old")
N_NEW = 500
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 3.0, "log_level": "INFO"}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("scale"), n_nodes=4, streams=[OLD], leader_timeout=3,
                 settings=SETTINGS) as d:
        yield d


def rpc_requests(c: NodeClient) -> int:
    m = re.search(r"^node_rpc_requests(?:_total)? ([0-9.e+]+)$", c.metrics(), re.M)
    assert m, "node_rpc_requests metric"
    return int(float(m.group(1)))


def join(a: Author, sid: bytes, c: NodeClient) -> bytes:
    h, body = a.event(sid, EventKind.JOIN)
    deadline = time.monotonic() + 30
    r = c.post_event(body)
    while r.status_code == 503 and r.json().get("error") == "stream_not_seen" and time.monotonic() < deadline:
        time.sleep(0.5)  # created on chain, not yet in this node's view: "retry shortly"
        r = c.post_event(body)
    assert r.status_code == 202, r.text
    return h


def test_restart_catches_up_on_streams_created_while_down(net, clients, domain, reg):
    down = 0
    me = net.setups[down].address
    net.cluster.stop(down)
    maker = StreamMaker(Net(net, reg), lambda _s: None)
    maker.make_up_to(N_NEW)
    new = [batch_stream_id(TAG, i) for i in range(N_NEW)]
    reps = {sid: reg.replicas_of(sid) for sid in new[:60]}
    mine = [s for s in new[:60] if me in reps[s]][:3]
    theirs = [s for s in new[:60] if me not in reps[s]][:1]
    assert len(mine) == 3 and theirs, "r = 3 of 4 nodes: most streams name node 0, some do not"
    # blocks committed while node 0 is down: JOINs on new streams (its own and another's) and on an old one
    a = Author(domain)
    up = clients[1]
    hashes = [join(a, s, up) for s in [*mine, *theirs, OLD]]
    up.wait_committed(hashes, timeout=60)

    net.cluster.start(down)
    c = clients[down]
    deadline = time.monotonic() + 120
    h: dict = {}
    while time.monotonic() < deadline:
        h = net.cluster.health(down) or {}
        if h.get("ok") and h.get("behind") == 0 and h.get("streams") == N_NEW + 1:
            break
        time.sleep(0.2)
    assert h.get("ok") and h.get("behind") == 0 and h.get("streams") == N_NEW + 1, h
    assert h["replicated"] == sum(1 for s in [OLD, *new] if me in reg.replicas_of(s))
    # one query of the store, then the logs since the cursor: no view read per stream
    assert rpc_requests(c) < N_NEW // 2, rpc_requests(c)

    for sid in [*mine, *theirs, OLD]:
        st = c.stream(sid)
        head = reg.stream_head(sid)
        assert st["chain_head_number"] == head.number >= 1, (hx(sid), st)
        assert st["head_number"] == head.number  # its own streams stored here; `theirs`: a replica's answer, relayed
        assert st["replicas"] == reg.replicas_of(sid)
        assert a.address in st["members"]
    for eh in hashes:
        ev = c.event(eh, a.stream_of[eh])  # `theirs`: not stored here, a replica's answer
        assert ev is not None and ev["status"] == "committed", ev
        sid = bytes.fromhex(ev["stream_id"][2:])
        assert ev["header_hash"] == hx(reg.header_hash_at(sid, ev["block"]))

    # the heads it loaded are the chain's: MESSAGEs posted to it on its new streams commit
    msgs = []
    for sid in mine:
        eh, body = a.event(sid, EventKind.MESSAGE, b"after restart")
        assert c.post_event(body).status_code == 202
        msgs.append(eh)
    got = c.wait_committed(msgs, timeout=60)
    for st in got.values():
        sid = bytes.fromhex(st["stream_id"][2:])
        assert st["header_hash"] == hx(reg.header_hash_at(sid, st["block"]))
