"""The key end-to-end flow on a second EVM and at a real chain's cadence: Hardhat's node (npm hardhat@2,
EDR; skipped with the reason when its binary is absent) and Anvil with a block every 2 s. Events posted to
different nodes are committed identically on every node, each node's blocks are the chain's headers,
and nothing accepted is lost or doubled."""

from __future__ import annotations

import collections
import json

import pytest

from node.chain.anvil import hardhat_binary
from node.chain.deploy import parse_stream_id
from node.chaos.check import check_network
from node.devnet.network import Network
from node.protocol.types import EventKind
from node.server.client import Author

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("node_logs_on_failure")]

S1, S2 = parse_stream_id("evm2-a"), parse_stream_id("evm2-b")
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 4.0}


def _hardhat_missing() -> str | None:
    try:
        hardhat_binary()
    except FileNotFoundError as e:
        return str(e)
    return None


CHAINS = [
    pytest.param(("hardhat", None), id="hardhat",
                 marks=pytest.mark.skipif(_hardhat_missing() is not None, reason=_hardhat_missing() or "")),
    pytest.param(("anvil", 2.0), id="anvil-block-time-2"),
]


@pytest.fixture(scope="module", params=CHAINS)
def net(request, tmp_path_factory):
    chain, block_time = request.param
    with Network(tmp_path_factory.mktemp(chain), n_nodes=4, streams=[S1, S2], leader_timeout=4, chain=chain,
                 block_time=block_time, settings=SETTINGS) as d:
        yield d


def test_events_posted_to_different_nodes_are_committed_identically(net, clients, domain, reg):
    authors = [Author(domain) for _ in range(3)]
    joins = []
    for k, a in enumerate(authors):
        for sid in (S1, S2):
            h, body = a.event(sid, EventKind.JOIN)
            assert clients[k % 4].post_event(body).status_code == 202
            joins.append(h)
    stream_of = collections.ChainMap(*(a.stream_of for a in authors))  # live: a non-replica asks a replica
    for c in clients:
        c.wait_committed(joins, timeout=90, stream_of=stream_of)
    hashes = []
    for k in range(40):
        h, body = authors[k % 3].event((S1, S2)[k % 2], EventKind.MESSAGE, f"m{k}".encode())
        r = clients[k % 4].post_event(body)
        assert r.status_code == 202, r.text
        hashes.append(h)
    for c in clients:
        c.wait_committed(hashes, timeout=90, stream_of=stream_of)

    res = check_network(reg, net.urls, [S1, S2], joins + hashes, settle_s=60)
    assert res.ok, res
    assert res.committed == len(joins) + len(hashes)
    for sid in (S1, S2):
        head = reg.stream_head(sid).number
        for n in range(1, head + 1):
            blocks = [c.block(sid, n) for c in clients]
            assert len({json.dumps(b, sort_keys=True) for b in blocks}) == 1, f"block {n} differs between nodes"
