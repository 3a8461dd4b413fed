"""The explorer on a live network: real node processes commit blocks while the page is open, and an
event hash is found through a node (`--node`) and proven against the chain.

One network for the module (Anvil, the registry, 3 node processes over loopback); the explorer is
given a dead node URL first, so the lookup also shows that a node that does not answer is skipped.
Run on registry v1 and on v2 (there the event's header is proved committed by its history proof).
"""

from __future__ import annotations

import httpx
import pytest
from browser import needs_chromium, run_explorer

from node.chain.deploy import parse_stream_id
from node.devnet.network import Network
from node.netutil import free_port
from node.protocol.hexutil import hx
from node.protocol.types import EventKind
from node.server.client import Author, NodeClient

pytestmark = [needs_chromium, pytest.mark.timeout(300), pytest.mark.usefixtures("node_logs_on_failure")]

NAME = "explorer-live"
S = parse_stream_id(NAME)
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "log_level": "INFO"}


@pytest.fixture(scope="module", params=[2], ids=["v2"])  # the default registry (v1: test_headers_cli)
def net(request, tmp_path_factory):
    with Network(tmp_path_factory.mktemp("explorer-live"), n_nodes=3, streams=[S], leader_timeout=3,
                 settings=SETTINGS, registry_version=request.param) as d:
        yield d


@pytest.fixture(scope="module")
def node0(net):
    c = NodeClient(net.urls[0])
    yield c
    c.close()


@pytest.fixture(scope="module")
def explorer(net):
    assert net.deployment is not None and net.rpc_url is not None
    dead = f"http://127.0.0.1:{free_port()}"
    with run_explorer(net.rpc_url, net.deployment.registry, "--node", dead, "--node", net.urls[1],
                      "--node", net.urls[2]) as url:
        yield url


def join(net, node0: NodeClient) -> tuple[bytes, dict]:
    """A fresh author JOINs the stream through node 0; its committed status there."""
    h, body = Author(net.domain).event(S, EventKind.JOIN)
    assert node0.post_event(body).status_code == 202
    return h, node0.wait_committed([h], timeout=60)[h]


def test_event_hash_found_through_a_node_and_proven_on_chain(net, node0, explorer, browser) -> None:
    h, st = join(net, node0)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(explorer + "/")
    page.fill("#q", hx(h))
    page.click("#go")
    page.wait_for_url(f"**/event/{hx(h)}")
    assert page.locator("#event-status").get_attribute("data-status") == "proven"
    checks = page.locator("#checks [data-ok]")
    assert checks.count() == 6 and page.locator("#checks [data-ok=true]").count() == 6
    committed_by = "historyProof" if net.deployment.registry_version == 2 else "headerHashAt"
    assert page.locator(f"#checks [data-check={committed_by}]").count() == 1
    answers = [t.inner_text() for t in page.locator("#event-nodes td[data-status]").all()]
    assert answers[0] == "error" and answers[1] == "committed"       # the dead node, then a live one
    page.screenshot(path="/tmp/explorer_event.png", full_page=True)
    page.click("#header-link")
    page.wait_for_url("**/header/0x*")
    assert page.locator("[data-field=headerHash]").inner_text() == st["header_hash"]
    assert page.locator("[data-field=number]").inner_text() == str(st["block"])

    j = httpx.get(f"{explorer}/api/events/{hx(h)}", timeout=30).json()
    assert j["status"] == "proven" and j["result"]["ok"] and j["result"]["number"] == st["block"]
    assert j["result"]["index"] == st["index"] and j["result"]["proof"] == st["proof"]
    r = httpx.get(f"{explorer}/api/events/0x{'ab' * 32}", timeout=30)
    assert r.status_code == 404 and "no node of the 3 given knows" in r.json()["detail"]
    # the stream by its name
    page.fill("#q", NAME)
    page.click("#go")
    page.wait_for_url(f"**/stream/{hx(S)}")


def test_stream_page_follows_the_chain_as_nodes_commit(net, node0, explorer, browser) -> None:
    _, first = join(net, node0)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(f"{explorer}/stream/{hx(S)}?size=5")
    page.wait_for_selector(f"#rows tr.committed[data-number='{first['block']}']")
    page.evaluate("window.__sameDocument = 'yes'")
    later = [join(net, node0)[1]["block"] for _ in range(2)]
    for n in later:
        page.wait_for_selector(f"#rows tr.committed[data-number='{n}']", timeout=20_000)
    assert page.evaluate("window.__sameDocument") == "yes"
    assert int(page.locator("#head-number").inner_text()) >= later[-1]
    assert "unbroken from genesis" in page.locator("#chain-ok").inner_text()
    nums = [int(r.get_attribute("data-number") or 0) for r in page.locator("#rows tr").all()]
    assert nums == sorted(nums, reverse=True) and len(nums) <= 5
    page.screenshot(path="/tmp/explorer_live_stream.png", full_page=True)
