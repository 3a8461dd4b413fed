"""Batches that fill (docs/node.md, "Transactions"): the slot's aggregator commits headers of several
leaders in one transaction; bad hand-offs get a 4xx and change nothing; a hung, then dead, aggregator
delays a commit by at most the leader's bound. A real Anvil, the registry and 4 node processes on
loopback; tests run in file order on one devnet (the last one stops the aggregator).
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from node.chain.deploy import parse_stream_id
from node.devnet.network import Network
from node.protocol.eip712 import hash_header, sign_header
from node.protocol.types import Header, RejectReason
from node.server.aggregate import aggregator_at
from node.server.client import Author
from node.server.delegate import body_of
from node.server.models import hx

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("node_logs_on_failure")]

STREAMS = [parse_stream_id(f"agg-{i}") for i in range(8)]
WAIT_MS = 2000
SLOT_S = 1e9  # one aggregator for the whole module (no slot boundary during the test)
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 6.0, "log_level": "INFO", "aggregate": True,
            "aggregate_ms": 300, "aggregate_wait_ms": WAIT_MS, "aggregate_slot_s": SLOT_S}
OUTSIDER = bytes.fromhex("aa" * 32)
START: dict[str, int] = {}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("agg"), n_nodes=4, streams=STREAMS, leader_timeout=3,
                 settings=SETTINGS) as d:
        START["block"] = d.registry().block_number()
        yield d


@pytest.fixture(scope="module")
def agg(net, reg) -> int:
    """The index of the aggregator, as every node derives it."""
    nodes = {r.address: r for r in reg.get_nodes()}
    addr = aggregator_at(nodes, reg.current_epoch(), reg.chain_time(), SLOT_S)
    return next(s.index for s in net.setups if s.address == addr)


@pytest.fixture(scope="module")
def author(domain, clients) -> Author:
    a = Author(domain)
    hs = []
    for sid in STREAMS:
        h, body = a.event(sid, 1)  # JOIN
        assert clients[0].post_event(body).status_code == 202
        hs.append(h)
    clients[0].wait_committed(hs, timeout=60, stream_of=a.stream_of)
    return a


def txs_by_hash(reg, from_block: int) -> dict[bytes, list]:
    out: dict[bytes, list] = defaultdict(list)
    for c in reg.committed_logs(from_block):
        out[c.tx_hash].append(c)
    return out


def sender_of(net, tx_hash: bytes) -> str:
    return net.w3.eth.get_transaction(tx_hash)["from"]


def test_headers_of_different_leaders_go_in_one_transaction(net, reg, clients, author, agg):
    hashes = []
    for k in range(6):  # bursts over every stream: several leaders have a header ready at once
        for i, sid in enumerate(STREAMS):
            h, body = author.event(sid, 0, f"burst {k} {i}".encode())
            assert clients[(i + k) % 4].post_event(body).status_code == 202
            hashes.append(h)
        time.sleep(0.3)
    for c in clients:
        c.wait_committed(hashes, timeout=60, stream_of=author.stream_of)
    txs = txs_by_hash(reg, START["block"])
    mixed = {tx: logs for tx, logs in txs.items() if len({c.leader for c in logs}) >= 2}
    sizes = sorted(len(v) for v in txs.values())
    print(f"commit txs {len(txs)}, headers per tx {sizes}, with >= 2 leaders: {len(mixed)}")
    assert mixed, f"no transaction carried headers of two leaders: {sizes}"
    aggregator = net.setups[agg].address
    for tx, logs in mixed.items():  # sent by the aggregator, for leaders that are not it
        assert sender_of(net, tx) == aggregator
        assert any(c.leader != aggregator for c in logs)
    # every node applied every block, whoever sent its header
    for sid in STREAMS:
        head = reg.stream_head(sid)
        deadline = time.monotonic() + 30
        while any(c.stream(sid)["head_number"] < head.number for c in clients) and time.monotonic() < deadline:
            time.sleep(0.2)
        for c in clients:
            assert c.block(sid, head.number)["header_hash"] == hx(head.header_hash)


def next_header(reg, sid: bytes) -> Header:
    head = reg.stream_head(sid)
    return Header(sid, head.number + 1, head.header_hash, b"\0" * 32, 0, reg.current_epoch(), 0,
                  reg.elected_leader(sid, head.number + 1, 0), b"\1" * 32, b"\0" * 32)


def test_bad_hand_offs_get_4xx_and_change_nothing(net, reg, clients, domain, agg):
    c = clients[agg]
    sid = STREAMS[0]
    header = next_header(reg, sid)
    leader = next(s for s in net.setups if s.address == header.leader)
    other = next(s for s in net.setups if s.address != header.leader)
    good_sig = sign_header(domain, header, leader.key)
    before = {s: reg.stream_head(s) for s in STREAMS}
    from_block = reg.block_number() + 1

    def post(body, key, node=c):
        return node.peer("POST", "/peer/commit", key=key, json=body)

    def refused(r, status: int, error: str | None = None) -> None:
        assert r.status_code == status, (r.status_code, r.text[:300])
        if error:
            assert r.json()["error"] == error, r.text[:300]

    ok_body = body_of([header], [[good_sig, good_sig]])
    refused(post(ok_body, None), 401, "unauthenticated")  # no proof
    refused(post(ok_body, OUTSIDER), 403, "not_a_node")  # not a registered node
    refused(post({"headers": "nope"}, leader.key), 422, "invalid_request")  # bad bodies
    refused(post({"headers": []}, leader.key), 422, "invalid_request")
    refused(post({"headers": [{"header": {"stream_id": "0x12"}, "signatures": ["0x00"]}]}, leader.key), 422)
    bad = body_of([header], [[good_sig]])
    bad["headers"][0]["header"]["stream_id"] = "0xzz"
    refused(post(bad, leader.key), 422, "malformed")
    refused(post(ok_body, other.key), 403, "not_leader")  # someone else's header
    # bad signatures: a forged leader signature; an attestation by a non-replica
    forged = sign_header(domain, header, OUTSIDER)
    r = post(body_of([header], [[forged, good_sig]]), leader.key)
    refused(r, 422, "invalid_header")
    assert RejectReason.BAD_LEADER_SIGNATURE.name in r.json()["detail"]
    r = post(body_of([header], [[good_sig, sign_header(domain, header, OUTSIDER)]]), leader.key)
    refused(r, 422, "invalid_header")
    assert RejectReason.NOT_REPLICA.name in r.json()["detail"]
    # a valid-looking header whose RANDAO reveal is made up
    reps = reg.replicas_of(sid)
    att = next(s for s in net.setups if s.address in reps and s.address != header.leader)
    r = post(body_of([header], [[good_sig, sign_header(domain, header, att.key)]]), leader.key)
    refused(r, 422, "invalid_header")
    assert RejectReason.BAD_RANDAO_REVEAL.name in r.json()["detail"]
    # a node that is not the aggregator refuses at once
    refused(post(ok_body, leader.key, node=clients[(agg + 1) % 4]), 409, "not_aggregator")
    time.sleep(1.0)  # a cadence tick or three: nothing may have been sent
    assert {s: reg.stream_head(s) for s in STREAMS} == before
    assert not [x for x in reg.rejected_logs(from_block) if x.header_hash == hash_header(header)]
    assert not reg.committed_logs(from_block)


def test_hung_then_dead_aggregator_delays_commits_by_at_most_the_bound(net, reg, clients, author, agg):
    aggregator = net.setups[agg].address
    live = [i for i in range(4) if i != agg]
    away = [sid for sid in STREAMS if aggregator not in reg.replicas_of(sid)]
    for k in range(40):  # (3/4)^8: one run in ten has the aggregator on every stream; add streams until not
        if away:
            break
        sid = parse_stream_id(f"agg-extra-{k}")
        reg.create_stream(sid)
        if aggregator not in reg.replicas_of(sid):
            h, body = author.event(sid, 1)  # JOIN, once the node has seen the new stream
            deadline = time.monotonic() + 30
            while (code := clients[live[0]].post_event(body).status_code) != 202 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert code == 202
            clients[live[0]].wait_committed([h], timeout=60, stream_of=author.stream_of)
            away = [sid]
    assert away, "every stream has the aggregator as a replica"

    def commit_time(sid: bytes, text: bytes) -> tuple[float, bytes]:
        h, body = author.event(sid, 0, text)
        t = time.monotonic()
        assert clients[live[0]].post_event(body).status_code == 202
        got = clients[live[0]].wait_committed([h], timeout=30, stream_of=author.stream_of)[h]
        return time.monotonic() - t, got["header_hash"]

    base, _ = commit_time(away[0], b"before")
    net.cluster.pause(agg)  # hung: it accepts connections and answers nothing
    try:
        hung, hh = commit_time(away[0], b"while hung")
        later, _ = commit_time(away[-1], b"hung, later")
    finally:
        net.cluster.kill(agg)
    dead, _ = commit_time(away[0], b"dead")
    print(f"commit latency: before {base:.2f}s, aggregator hung {hung:.2f}s then {later:.2f}s, dead {dead:.2f}s "
          f"(bound {WAIT_MS / 1000:.1f}s)")
    slack = 4.0  # the commit itself, the other replicas' sync, the client's poll, a busy box
    assert hung <= WAIT_MS / 1000 + base + slack
    assert later <= WAIT_MS / 1000 + base + slack and dead <= WAIT_MS / 1000 + base + slack
    # the hung aggregator's share: the leader sent its header itself
    c = next(x for x in reg.committed_logs(START["block"], stream_id=away[0]) if hx(x.header_hash) == hh)
    assert sender_of(net, c.tx_hash) == c.leader != aggregator
