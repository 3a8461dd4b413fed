"""Reorgs of a real Anvil under running nodes (anvil_reorg / anvil_rollback): nothing accepted is lost or
doubled, every node ends on the chain's canonical headers, the stream keeps committing, and client reads
say whether a block is final (confirmations = 2 here)."""

from __future__ import annotations

import re
import time

import pytest

from node.chain.deploy import parse_stream_id
from node.chaos.check import check_network
from node.devnet.network import Network
from node.protocol.types import EventKind
from node.server.client import Author

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("node_logs_on_failure")]

S1, S2 = parse_stream_id("reorg-a"), parse_stream_id("reorg-b")
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 3.0, "confirmations": 2, "tx_replace_s": 1.5}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("reorg"), n_nodes=3, streams=[S1, S2], leader_timeout=3,
                 settings=SETTINGS) as d:
        yield d


def post(clients, author: Author, sid: bytes, k: int, tag: str) -> list[bytes]:
    out = []
    for i in range(k):
        h, body = author.event(sid, EventKind.MESSAGE, f"{tag} {i}".encode())
        r = clients[i % len(clients)].post_event(body)
        assert r.status_code == 202, r.text
        out.append(h)
    return out


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_reorgs_under_running_nodes_lose_nothing_and_nodes_follow_the_canonical_chain(net, clients, domain, reg):
    authors = [Author(domain) for _ in range(2)]
    accepted: list[bytes] = []
    for a in authors:
        for sid in (S1, S2):
            h, body = a.event(sid, EventKind.JOIN)
            assert clients[0].post_event(body).status_code == 202
            accepted.append(h)
    for c in clients:
        c.wait_committed(accepted, timeout=60)
    net.anvil.mine(4)  # the JOINs deeper than any reorg below

    faults = [("reorg", 1), ("reorg", 2), ("rollback", 1), ("reorg", 3), ("reorg", 2)]
    for k, (kind, depth) in enumerate(faults):
        hs = post(clients, authors[k % 2], S1, 6, f"r{k}") + post(clients, authors[(k + 1) % 2], S2, 6, f"s{k}")
        accepted += hs
        clients[0].wait_committed(hs[:1], timeout=60)  # some of them are in blocks now: the reorg takes those
        if kind == "reorg":
            net.anvil.reorg(depth)
        else:
            net.anvil.rollback(depth)
        time.sleep(0.3)
    # After the faults the streams keep committing.
    accepted += post(clients, authors[0], S1, 10, "after") + post(clients, authors[1], S2, 10, "after")
    for c in clients:
        c.wait_committed(accepted, timeout=120)

    res = check_network(reg, net.urls, [S1, S2], accepted, settle_s=60)
    assert res.ok, res
    assert res.committed == len(accepted)
    reorgs = [metric(c.metrics(), "node_reorgs") for c in clients]
    assert all(r >= 1 for r in reorgs), reorgs
    assert sum(metric(c.metrics(), "node_rolled_back_events") for c in clients) > 0


def test_reads_say_whether_a_block_is_final(net, clients, domain, reg):
    a = Author(domain)
    h, body = a.event(S1, EventKind.JOIN)
    assert clients[1].post_event(body).status_code == 202
    st = clients[1].wait_committed([h], timeout=60)[h]
    assert st["status"] == "committed" and st["chain_block"] is not None
    blk = clients[1].block(S1, st["block"])
    assert blk is not None and blk["chain_block"] == st["chain_block"]
    # Two more chain blocks and a poll later it is final (confirmations = 2).
    net.anvil.mine(3)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = clients[1].event(h)
        if st["final"]:
            break
        time.sleep(0.2)
    assert st["final"] is True


def test_a_stream_whose_creation_a_reorg_dropped_is_forgotten_by_every_node(net, clients, reg):
    """A reorg that drops the `createStream` transaction leaves no stream on chain: no node may keep serving
    it (found by `python -m node chaos --kinds join_leave,reorg --seed 7`: nodes answered it with head 0)."""
    gone = parse_stream_id("reorg-gone")
    res = reg.create_stream(gone)
    assert res.status == 1
    deadline = time.monotonic() + 30
    while any(c.http.get(f"/v1/streams/0x{gone.hex()}").status_code != 200 for c in clients):
        assert time.monotonic() < deadline, "the nodes never recorded the new stream"
        time.sleep(0.2)
    depth = reg.block_number() - res.block_number + 1  # the creation's block and any mined after it
    assert 1 <= depth <= 8, depth
    net.anvil.reorg(depth)
    assert reg.replicas_of(gone) == []  # the registry has no such stream now
    deadline = time.monotonic() + 30
    while (codes := [c.http.get(f"/v1/streams/0x{gone.hex()}").status_code for c in clients]) != [404] * len(clients):
        assert time.monotonic() < deadline, f"a node still serves the orphaned stream: {codes}"
        time.sleep(0.2)
    for c in clients:  # the other streams are still served
        assert all(c.http.get(f"/v1/streams/0x{s.hex()}").status_code == 200 for s in (S1, S2))
