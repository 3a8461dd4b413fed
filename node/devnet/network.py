"""One way to set up a local network, for the devnet command, the tests and the bench.

    with Network(base_dir, n_nodes=4, streams=[sid], settings={"tick_ms": 100}) as net:
        net.urls, net.registry(), net.domain, net.cluster.kill(1) ...

`start()`: the chain (its own Anvil, or an existing one at `rpc_url`, left running), node keys, ports and
onion secrets (node.cluster.prepare_nodes; default keys: Anvil's dev accounts 1.., funded at genesis;
`fund_wei` sends each node key that much from the deployer), the registry deployed with the first
`n_nodes` registered (`extra_nodes` more are prepared but not registered: for join tests) and `streams`
created (node.chain.deploy; time warped to the nodes' epoch if `warp`, else waited for), then the node
processes (node.cluster.Cluster), healthy. `stop()` stops the nodes, then Anvil. With `watchdog=True` a
watchdog process stops them too if this process is killed outright.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cluster import Cluster, NodeSetup, prepare_nodes
from node.protocol.hexutil import hx
from node.protocol.types import Domain

from .watchdog import Watchdog

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from node.chain.anvil import DevChain
    from node.chain.deployment import Deployment
    from node.chain.registry import Registry, TxSender

Log = Callable[[str], None]


class NetworkError(RuntimeError):
    """A set-up failure with a reason for the user."""


def _quiet(_s: str) -> None:
    pass


def connect(rpc_url: str, timeout: float = 60.0) -> Any:
    """A Web3 on an existing chain (through the one chain client); NetworkError if it does not answer."""
    from node.chain.rpc import http_web3

    w3 = http_web3(rpc_url, timeout=timeout)
    if not w3.is_connected():
        raise NetworkError(f"cannot reach {rpc_url}")
    return w3


def fund(sender: TxSender, addresses: list[str], wei: int) -> None:
    """Plain value transfers from the deployer (nodes pay for their own commit transactions)."""
    hashes = [sender.transfer(a, wei, wait=False) for a in addresses]
    for h in hashes:
        assert isinstance(h, bytes)
        if sender.wait_receipt(h).status != 1:
            raise NetworkError(f"funding transfer {hx(h)} failed")


@dataclass
class Network:
    base_dir: Path
    n_nodes: int = 4
    streams: Sequence[bytes] = ()
    epoch_length: int = 3600
    leader_timeout: int = 4
    replication_factor: int | None = None  # default min(3, n_nodes)
    dead_misses: int = 3  # the dead-replica rule (node.chain.deploy.DEAD_MISSES); a test shortens it (v1 only)
    dead_epochs: int = 2  # node.chain.deploy.DEAD_EPOCHS
    registry_version: int = 1  # 1: MiniblockRegistry, 2: MiniblockRegistryV2 (docs/protocol.md "Version 2")
    settings: dict[str, Any] = field(default_factory=dict)  # [node] settings for every node
    extra_nodes: int = 0
    rpc_url: str | None = None  # an existing chain; None: start a dev chain of kind `chain`
    chain: str = "anvil"  # "anvil" or "hardhat" (node.chain.anvil.launch_chain)
    block_time: float | None = None  # None: automine (a block per transaction); else seconds per block
    node_rpc_url: str | None = None  # the URL the nodes use (e.g. a proxy in front of the chain); None: the chain's
    account: LocalAccount | None = None  # the deployer; default Anvil's dev account 0
    warp: bool = True  # a dev chain: warp time to the epoch where the nodes are active
    node_keys: Sequence[bytes] | None = None  # default Anvil's dev accounts 1..
    fund_wei: int = 0
    watchdog: bool = False
    read_replicas: bool = False  # fill `replicas` (one call per stream)
    health_timeout: float = 60.0
    # what start() made
    anvil: DevChain | None = None  # the chain started here (Anvil or Hardhat)
    w3: Any = None
    ws_url: str | None = None
    sender: TxSender | None = None
    deployment: Deployment | None = None
    deployment_path: Path | None = None
    setups: list[NodeSetup] = field(default_factory=list)
    cluster: Cluster | None = None
    replicas: dict[bytes, list[str]] = field(default_factory=dict)
    setup_s: float = 0.0
    _watchdog: Watchdog | None = None

    def start(self, log: Log = _quiet, wait: bool = True) -> Network:
        from eth_account import Account

        from node.build import load_artifact
        from node.chain.anvil import DEV_KEYS, launch_chain
        from node.chain.deploy import deploy
        from node.chain.deployment import Deployment
        from node.chain.registry import TxSender

        t0 = time.monotonic()
        self.base_dir = Path(self.base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.streams = list(self.streams)
        if self.watchdog and self._watchdog is None:
            self._watchdog = Watchdog(self.base_dir / "children.pids").start()
        account = self.account if self.account is not None else Account.from_key(DEV_KEYS[0])
        from node.chain.abi import registry_contract

        art = load_artifact(registry_contract(self.registry_version))
        if self.rpc_url is None:
            self.anvil = launch_chain(self.chain, log_path=self.base_dir / f"{self.chain}.log",
                                      block_time=self.block_time)
            self._record_children()
            self.rpc_url, self.ws_url = self.anvil.http_url, self.anvil.ws_url
            cadence = "automine" if self.block_time is None else f"a block every {self.block_time:g}s"
            log(f"{self.chain} started: {self.rpc_url} (chain id {self.anvil.chain_id_value}, {cadence})")
            self.w3 = self.anvil.w3()
        else:
            if self.rpc_url.startswith("http"):
                self.ws_url = "ws" + self.rpc_url[4:]
            self.w3 = connect(self.rpc_url)
            log(f"using the chain at {self.rpc_url} (chain id {self.w3.eth.chain_id}); it is left running")
        self.setups = prepare_nodes(self.n_nodes + self.extra_nodes, self.base_dir, keys=self.node_keys)
        self.sender = TxSender(self.w3, account)
        if self.fund_wei:
            fund(self.sender, [s.address for s in self.setups], self.fund_wei)
            log(f"{len(self.setups)} node keys created and funded by the deployer {account.address}")
        self.deployment_path = self.base_dir / "deployment.json"
        deploy(self.w3, self.sender, epoch_length=self.epoch_length, leader_timeout=self.leader_timeout,
               replication_factor=self.replication_factor or min(3, self.n_nodes),
               dead_misses=self.dead_misses, dead_epochs=self.dead_epochs,
               nodes=[s.spec() for s in self.setups[:self.n_nodes]], streams=self.streams, artifact=art,
               rpc_url=self.rpc_url, ws_url=self.ws_url, out=self.deployment_path, warp=self.warp,
               epoch_timeout=max(120.0, 3.0 * self.epoch_length), log=log)
        self.deployment = Deployment.load(self.deployment_path)
        if self.read_replicas:
            reg = self.registry()
            self.replicas = {s: reg.replicas_of(s) for s in self.streams}
        settings = dict(self.settings)
        if self.node_rpc_url is not None:
            settings.setdefault("rpc_url", self.node_rpc_url)
            settings.setdefault("ws_url", "ws" + self.node_rpc_url[4:])
        self.cluster = Cluster(self.deployment_path, self.setups, settings)
        for i in range(self.n_nodes):
            self.cluster.start(i)
        self._record_children()
        log(f"starting {self.n_nodes} node processes (python -m node run) ...")
        if wait:
            self.cluster.wait_healthy(range(self.n_nodes), timeout=self.health_timeout)
            self.setup_s = time.monotonic() - t0
            log(f"nodes healthy: {', '.join(self.urls)}  (set-up {self.setup_s:.1f}s)")
        return self

    def _record_children(self) -> None:
        if self._watchdog is None:
            return
        pids = [self.anvil.proc.pid] if self.anvil is not None and self.anvil.proc is not None else []
        if self.cluster is not None:
            pids += [p.pid for p in self.cluster.procs.values()]
        self._watchdog.record(pids)

    @property
    def urls(self) -> list[str]:
        """The registered nodes' URLs."""
        return [s.url for s in self.setups[:self.n_nodes]]

    @property
    def domain(self) -> Domain:
        assert self.deployment is not None, "start() first"
        return Domain(self.deployment.chain_id, self.deployment.registry,
                      version=str(self.deployment.registry_version))

    def registry(self, account: LocalAccount | None = None) -> Registry:
        """A sync node.chain.registry.Registry, sending from `account` (default: the deployer)."""
        from node.chain.registry import Registry

        assert self.deployment is not None, "start() first"
        return Registry.from_deployment(self.deployment, w3=self.w3, account=account or self.sender)

    def pids(self) -> list[int]:
        """The registered nodes' process ids."""
        assert self.cluster is not None, "start() first"
        return [self.cluster.procs[i].pid for i in range(self.n_nodes)]

    def stop(self) -> None:
        try:
            if self.cluster is not None:
                self.cluster.stop()
        finally:
            if self.anvil is not None:
                self.anvil.stop()
            if self._watchdog is not None:
                self._watchdog.stop()

    def __enter__(self) -> Network:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
