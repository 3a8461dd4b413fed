"""Leaders stalled past their attempt's send window (SIGSTOP during their ticks, SIGCONT after longer than
the leader timeout) do not send the headers they drafted (node/server/window.py): the next attempt's leader
commits those numbers, nothing comes back BAD_NUMBER, and no accepted event is lost.

Real Anvil + registry v2 + 4 node processes over loopback; every leader sends its own transaction
(`aggregate = false`: the path where a late leader's send raced the next one's). A steady load keeps the
leaders' ticks under way when a stall hits. Bounded: 6 stalls of 4.5 s; at most 1,200 events, one per
stream every 100 ms, posted to the nodes not stalled.
"""

from __future__ import annotations

import threading
import time

import pytest

from node.chain.deploy import parse_stream_id
from node.devnet.network import Network
from node.protocol.types import EventKind
from node.server.client import Author, NodeClient

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("node_logs_on_failure")]

STREAMS = [parse_stream_id(f"window-{i}") for i in range(4)]
TIMEOUT_S = 3
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 3.0, "log_level": "INFO", "aggregate": False}
STALLS = 6
STALL_S = TIMEOUT_S + 1.5  # past the stalled leader's window: the next attempt opens and its leader builds
MAX_EVENTS = 1_200


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("window"), n_nodes=4, streams=STREAMS, leader_timeout=TIMEOUT_S,
                 settings=SETTINGS) as d:
        yield d


def counter(c: NodeClient, name: str, label: str) -> float:
    total = 0.0
    for line in c.metrics().splitlines():
        if line.startswith(name) and label in line:
            total += float(line.split()[-1])
    return total


def test_stalled_leaders_send_nothing_late(net, clients, domain, reg):
    a = Author(domain)
    first_block = reg.block_number() + 1
    joins = []
    for sid in STREAMS:
        h, body = a.event(sid, EventKind.JOIN)
        assert clients[0].post_event(body).status_code == 202
        joins.append(h)
    clients[0].wait_committed(joins, timeout=60, stream_of=a.stream_of)

    posted: list[tuple[bytes, int]] = []
    stalled = [-1]  # the node stalled now (-1: none); written by the test, read by the poster
    done = threading.Event()

    def poster() -> None:  # its own clients: httpx clients are not shared across threads
        cs = [NodeClient(u) for u in net.cluster.urls]
        try:
            for k in range(MAX_EVENTS // len(STREAMS)):
                if done.is_set():
                    return
                live = [i for i in range(4) if i != stalled[0]]
                for j, sid in enumerate(STREAMS):
                    i = live[(k + j) % len(live)]
                    h, body = a.event(sid, EventKind.MESSAGE, f"load {k}".encode())
                    if cs[i].post_event(body).status_code == 202:
                        posted.append((h, i))
                time.sleep(0.1)
        finally:
            for c in cs:
                c.close()

    load = threading.Thread(target=poster, daemon=True)
    load.start()
    try:
        time.sleep(2.0)
        for k in range(STALLS):
            stalled[0] = k % 4
            time.sleep(0.2)  # the poster has moved off it; its tick is under way
            net.cluster.pause(k % 4)
            try:
                time.sleep(STALL_S)
            finally:
                net.cluster.resume(k % 4)
                stalled[0] = -1
            time.sleep(1.5)
    finally:
        done.set()
        load.join(timeout=30)
    assert len(posted) > 100

    deadline = time.monotonic() + 90
    for h, i in posted:  # nothing accepted is lost: the later attempts' leaders carried the events
        clients[i].wait_committed([h], timeout=max(1.0, deadline - time.monotonic()), stream_of=a.stream_of)
    rejected = reg.rejected_logs(first_block)
    late = sum(counter(c, "node_drafts_late_total", "stage=") for c in clients)
    print(f"rejected by reason: {[r.reason_name for r in rejected]}; drafts dropped late: {late:.0f}")
    assert [r for r in rejected if r.reason_name == "BAD_NUMBER"] == []
    assert sum(counter(c, "node_blocks_rejected_total", 'reason="BAD_NUMBER"') for c in clients) == 0
