"""Shared fixtures: the compiled registry, one Anvil per session, fresh deployments.

    def test_x(deployment_factory):
        d = deployment_factory(nodes=5, replication=3, streams=2)
        d.registry.stream_head(d.streams[0]) ...

Everything runs on a real Anvil (automine) with the contract compiled from
contracts/src by node.build.  Node keys are Anvil's dev accounts 1.. (then derived
keys): nodes never send transactions, only sign; the deployer is dev account 0.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from node.chain.anvil import DEV_KEYS, Anvil  # noqa: E402
from node.chain.deploy import NodeSpec, deploy  # noqa: E402
from node.chain.deployment import Deployment  # noqa: E402
from node.chain.devtools import NodeKeys  # noqa: E402
from node.chain.registry import Registry, TxSender  # noqa: E402
from node.protocol.onion import HashOnion  # noqa: E402
from node.protocol.types import Domain  # noqa: E402

ONION_DEPTH = 512


@pytest.fixture(scope="session")
def artifact() -> dict:
    from node.build import load_artifact

    return load_artifact("MiniblockRegistry")


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with Anvil() as a:
        yield a


@pytest.fixture(scope="session")
def w3(anvil: Anvil):
    return anvil.w3()


@pytest.fixture(scope="session")
def dev_accounts():
    return [Account.from_key(k) for k in DEV_KEYS]


@pytest.fixture(scope="session")
def deployer_sender(w3, dev_accounts) -> TxSender:
    """One TxSender (one nonce counter) for dev account 0 across the session."""
    return TxSender(w3, dev_accounts[0])


def node_private_key(i: int) -> bytes:
    """Node i's key: Anvil dev account i+1 while there are some, then derived ones."""
    if i + 1 < len(DEV_KEYS):
        return bytes.fromhex(DEV_KEYS[i + 1][2:])
    return keccak(b"miniblock test node %d" % i)


@dataclass
class Deployed:
    deployment: Deployment
    registry: Registry  # sends from the deployer (dev account 0)
    keys: dict[str, NodeKeys]  # node address -> key + onion
    streams: list[bytes] = field(default_factory=list)

    @property
    def nodes(self) -> list[str]:
        return list(self.keys)


@pytest.fixture(scope="session")
def deployment_factory(w3, anvil, artifact, deployer_sender) -> Callable[..., Deployed]:
    counter = iter(range(10**9))

    def make(
        *,
        nodes: int = 5,
        replication: int = 3,
        streams: int = 1,
        epoch_length: int = 3600,
        leader_timeout: int = 30,
        onion_depth: int = ONION_DEPTH,
    ) -> Deployed:
        n = next(counter)
        keys: dict[str, NodeKeys] = {}
        for i in range(nodes):
            k = NodeKeys(node_private_key(i), HashOnion(keccak(b"onion %d %d" % (n, i)), onion_depth))
            keys[k.address] = k
        specs = [
            NodeSpec(addr, f"http://127.0.0.1:{20000 + i}", k.onion.commitment)
            for i, (addr, k) in enumerate(keys.items())
        ]
        sids = [keccak(b"stream %d %d" % (n, j)) for j in range(streams)]
        dep = deploy(
            w3, deployer_sender, epoch_length=epoch_length, leader_timeout=leader_timeout,
            replication_factor=replication, nodes=specs, streams=sids, artifact=artifact,
            rpc_url=anvil.http_url, ws_url=anvil.ws_url, warp=True,
        )
        reg = Registry(w3, dep.registry, artifact["abi"], deployer_sender)
        return Deployed(dep, reg, keys, sids)

    return make



# --- a module's network: modules that define a `net` fixture (a node.devnet.network.Network) get these ---


@pytest.fixture
def node_logs_on_failure(request, net):
    """On a failure, show the tail of every node's log with the test report."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        for i in range(len(net.cluster.setups)):
            print(net.cluster.log_tail(i, 60))


@pytest.fixture(scope="module")
def domain(net) -> Domain:
    return net.domain


@pytest.fixture(scope="module")
def clients(net):
    from node.server.client import NodeClient

    cs = [NodeClient(u) for u in net.cluster.urls]
    yield cs
    for c in cs:
        c.close()


@pytest.fixture(scope="module")
def reg(net):
    return net.registry()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright (tests/browser.py; skips where it is not installed)."""
    from browser import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
