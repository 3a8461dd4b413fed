"""The node on registry v2 (MiniblockRegistryV2, docs/protocol.md "Version 2"): a real Anvil, the v2
contract and 4 node processes. Nodes produce blocks, every node applies every block, the aggregator puts
several leaders' headers in one packed transaction, a restarted node catches up, and every header the
nodes serve is the chain's: its hash is in a commit log and the registry's own `verifyHeaderCommitted`
accepts its history proof. Tests run in file order on one devnet.
"""

from __future__ import annotations

import time

import pytest

from node.chain.deploy import parse_stream_id
from node.chain.logs import HeadersCommitted
from node.devnet.network import Network
from node.protocol import v2
from node.protocol.eip712 import hash_header
from node.protocol.types import EventKind
from node.server.client import Author
from node.server.models import HeaderOut, hx

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("node_logs_on_failure")]

STREAMS = [parse_stream_id(f"v2-{i}") for i in range(6)]
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 6.0, "log_level": "INFO", "aggregate": True,
            "aggregate_ms": 300, "aggregate_wait_ms": 2000, "aggregate_slot_s": 1e9}
START: dict[str, int] = {}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("v2node"), n_nodes=4, streams=STREAMS, leader_timeout=3,
                 settings=SETTINGS, registry_version=2) as d:
        START["block"] = d.deployment.deploy_block if d.deployment else 0
        yield d


@pytest.fixture(scope="module")
def author(domain, clients) -> Author:
    a = Author(domain)
    hs = []
    for i, sid in enumerate(STREAMS):
        h, body = a.event(sid, EventKind.JOIN)
        assert clients[i % 4].post_event(body).status_code == 202
        hs.append(h)
    clients[0].wait_committed(hs, timeout=60, stream_of=a.stream_of)
    return a


def burst(author: Author, clients, rounds: int, tag: str) -> list[bytes]:
    hashes = []
    for k in range(rounds):  # every stream at once: several leaders have a header ready in the same tick
        for i, sid in enumerate(STREAMS):
            h, body = author.event(sid, EventKind.MESSAGE, f"{tag} {k} {i}".encode())
            assert clients[(i + k) % len(clients)].post_event(body).status_code == 202
            hashes.append(h)
        time.sleep(0.3)
    return hashes


def wait_heads(reg, clients, timeout: float = 30.0) -> None:
    """Until every client's node has applied every stream's chain head."""
    deadline = time.monotonic() + timeout
    for sid in STREAMS:
        head = reg.stream_head(sid).number
        while any(c.stream(sid)["head_number"] < head for c in clients):
            assert time.monotonic() < deadline, f"{hx(sid)}: not every node reached #{head}"
            time.sleep(0.2)


def test_the_node_runs_on_v2(net, reg, domain):
    assert reg.version == 2 and net.deployment.registry_version == 2
    assert domain.version == v2.DOMAIN_VERSION_V2 and reg.domain() == domain


def test_blocks_commit_in_packed_batches_of_several_leaders(net, reg, clients, author):
    hashes = burst(author, clients, 6, "burst")
    for c in clients:
        c.wait_committed(hashes, timeout=60, stream_of=author.stream_of)
    commits = reg.committed_logs(START["block"])
    by_tx: dict[bytes, set[str]] = {}
    for c in commits:
        leader = reg.replicas_of(c.stream_id)[c.leader_pos]  # the replicas do not change in this test
        by_tx.setdefault(c.tx_hash, set()).add(leader)
    mixed = [tx for tx, leaders in by_tx.items() if len(leaders) >= 2]
    sizes = sorted(sum(1 for c in commits if c.tx_hash == tx) for tx in by_tx)
    print(f"commit txs {len(by_tx)}, headers per tx {sizes}, with >= 2 leaders {len(mixed)}")
    assert mixed, f"no packed transaction carried headers of two leaders: {sizes}"
    for tx in mixed:  # really v2's packed call: its input decodes to the records the logs name
        batch = reg.packed_batch(tx)
        _reveals, recs = v2.decode_batch(batch)
        assert {r.stream_id for r in recs} >= {c.stream_id for c in commits if c.tx_hash == tx}
    assert not reg.rejected_logs(START["block"]), "an honest network had a header rejected"
    wait_heads(reg, clients)
    for sid in STREAMS:  # every node applied every block, with the chain's hash
        head = reg.stream_head(sid)
        for c in clients:
            hh = c.block(sid, head.number)["header_hash"]
            assert hh.startswith(hx(head.header_hash)) and reg.is_head(sid, head.number, bytes.fromhex(hh[2:]))


def test_a_restarted_node_catches_up(net, reg, clients, author):
    down = 3
    net.cluster.kill(down)
    live = clients[:down]
    hashes = burst(author, live, 4, "while down")
    for c in live:
        c.wait_committed(hashes, timeout=60, stream_of=author.stream_of)
    net.cluster.start(down)
    net.cluster.wait_healthy([down], timeout=60)
    wait_heads(reg, clients, timeout=60)
    clients[down].wait_committed(hashes, timeout=30, stream_of=author.stream_of)


def test_every_served_header_is_the_chains_and_proves_committed(net, reg, clients):
    hist = [e for e in reg.events(START["block"]) if isinstance(e, HeadersCommitted)]
    hist.sort(key=lambda e: e.commit.commit_index)
    assert [e.commit.commit_index for e in hist] == list(range(reg.commit_count()))
    roots = [e.commit.history_root for e in hist]
    commits = reg.committed_logs(START["block"])
    assert len(commits) == sum(len(e.commit.header_hashes) for e in hist)
    checked = 0
    for i, c in enumerate(commits):
        block = clients[i % 4].block(c.stream_id, c.number)
        assert block is not None and block["header_hash"] == hx(c.header_hash)
        header = HeaderOut.model_validate(block["header"]).to_header()
        assert hash_header(header) == c.header_hash
        proof = v2.history_proof(roots, hist[c.commit_index].commit.header_hashes, c.commit_index, c.position)
        assert reg.verify_header_committed(header, proof)
        checked += 1
    print(f"{checked} headers proved committed on chain (verifyHeaderCommitted)")
    assert checked == len(commits) >= 2 * len(STREAMS)
