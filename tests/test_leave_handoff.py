"""A node whose leave is requested and that is stopped before its leave epoch (an operator stops it early;
the chaos run's heal step does it) hands the events it alone holds to active replicas on its way out.

Real Anvil, registry and 4 node processes. The leaver runs with a gossip interval of a minute, so an event
posted to it is on its disk only (the situation the chaos run found: accepted 236 ms before the stop, never
forwarded); without the hand-off on stop it is on no running node and never commits.
"""

from __future__ import annotations

import pytest

from node.chain.deploy import parse_stream_id
from node.devnet.network import Network
from node.protocol.types import EventKind
from node.server.client import Author, NodeClient

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("node_logs_on_failure")]

S = parse_stream_id("leave-handoff")
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 3.0, "log_level": "INFO"}
EPOCH = 3600


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("leave"), n_nodes=4, streams=[S], leader_timeout=3,
                 epoch_length=EPOCH, settings=SETTINGS) as d:
        yield d


def test_node_stopped_before_its_leave_epoch_hands_off_what_it_alone_holds(net, clients, domain, reg):
    reps = reg.replicas_of(S)
    li = next(s.index for s in net.setups if s.address == reps[0])
    other = next(s.index for s in net.setups if s.address == reps[1])
    a = Author(domain)
    h, body = a.event(S, EventKind.JOIN)
    assert clients[other].post_event(body).status_code == 202
    clients[other].wait_committed([h], timeout=30)
    # The leaver forwards nothing for a minute: what it accepts stays on its disk only.
    net.cluster.stop(li)
    net.cluster.settings_for[li] = {"gossip_ms": 60_000}
    net.cluster.start(li)
    net.cluster.wait_healthy([li], timeout=60)
    reg.request_leave(reps[0])  # leave epoch: the next one, an hour of chain time away
    leaver = NodeClient(net.setups[li].url)
    hs = []
    for k in range(3):
        h, body = a.event(S, EventKind.MESSAGE, f"only on the leaver {k}".encode())
        assert leaver.post_event(body).status_code == 202
        hs.append(h)
    leaver.close()
    net.cluster.stop(li)  # SIGTERM before its leave epoch, never started again
    sts = clients[other].wait_committed(hs, timeout=40)
    assert set(sts) == set(hs)
