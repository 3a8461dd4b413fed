"""A reusable launcher of N node processes on loopback (tests, the devnet command, benchmarks).

    setups = prepare_nodes(4, base_dir)                 # keys, free ports, onion secrets in data dirs
    dep = deploy(..., nodes=[s.spec() for s in setups]) # register them (urls + RANDAO commitments)
    with Cluster(dep_path, setups) as c:                # writes node.toml each, starts `python -m node run`
        c.wait_healthy()
        ...

Each node gets its signing key as an encrypted keystore (password via $NODE_KEY_PASSWORD), as in
production, unless `dev_keys=True` (raw key with --dev).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from node.protocol.eip712 import address_of
from node.server.config import dump_toml
from node.server.keys import write_keystore, write_onion

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_PASSWORD = "cluster-dev-password"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class NodeSetup:
    index: int
    key: bytes
    port: int
    data_dir: Path
    commitment: bytes
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        return address_of(self.key)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def spec(self):
        """A node.chain.deploy.NodeSpec to register this node."""
        from node.chain.deploy import NodeSpec

        return NodeSpec(self.address, self.url, self.commitment)


def prepare_nodes(n: int, base_dir: Path, keys: Sequence[str | bytes] | None = None, onion_depth: int = 20_000,
                  host: str = "127.0.0.1") -> list[NodeSetup]:
    """Keys (default: Anvil dev accounts 1..n, which are funded), free ports, data dirs with onion secrets."""
    if keys is None:
        from node.chain.anvil import DEV_KEYS

        if n > len(DEV_KEYS) - 1:
            raise ValueError(f"at most {len(DEV_KEYS) - 1} nodes with Anvil's dev keys; pass keys=")
        keys = DEV_KEYS[1:n + 1]
    out = []
    for i in range(n):
        k = keys[i]
        key = bytes.fromhex(k.removeprefix("0x")) if isinstance(k, str) else bytes(k)
        d = Path(base_dir) / f"node{i}"
        onion = write_onion(d, secrets.token_bytes(32), onion_depth)
        out.append(NodeSetup(i, key, free_port(host), d, onion.commitment, host))
    return out


@dataclass
class Cluster:
    deployment: Path
    setups: list[NodeSetup]
    settings: dict[str, Any] = field(default_factory=dict)  # extra [node] settings for every node
    settings_for: dict[int, dict[str, Any]] = field(default_factory=dict)  # per node index, over `settings`
    dev_keys: bool = False
    python: str = sys.executable
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    def config_path(self, i: int) -> Path:
        return self.setups[i].data_dir / "node.toml"

    def write_config(self, i: int) -> Path:
        s = self.setups[i]
        s.data_dir.mkdir(parents=True, exist_ok=True)
        values: dict[str, Any] = {"deployment": str(Path(self.deployment).resolve()), "host": s.host, "port": s.port,
                                  "data_dir": str(s.data_dir.resolve()), "public_url": s.url}
        if self.dev_keys:
            values.update(dev=True, dev_key="0x" + s.key.hex())
        else:
            ks = s.data_dir / "keystore.json"
            if not ks.exists():
                write_keystore(s.key, ks, CLUSTER_PASSWORD)
            values["keystore"] = str(ks.resolve())
        values.update(self.settings)
        values.update(self.settings_for.get(i, {}))
        p = self.config_path(i)
        p.write_text(dump_toml(values))
        return p

    def url(self, i: int) -> str:
        return self.setups[i].url

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.setups]

    def start(self, i: int | None = None) -> None:
        for j in ([i] if i is not None else range(len(self.setups))):
            if j in self.procs and self.procs[j].poll() is None:
                continue
            cfg = self.write_config(j)
            env = dict(os.environ, NODE_KEY_PASSWORD=CLUSTER_PASSWORD, PYTHONUNBUFFERED="1")
            log = open(self.setups[j].data_dir / "node.log", "ab")
            self.procs[j] = subprocess.Popen([self.python, "-m", "node", "run", "--config", str(cfg)],
                                             cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            log.close()

    def running(self, i: int) -> bool:
        p = self.procs.get(i)
        return p is not None and p.poll() is None

    def kill(self, i: int) -> None:
        """SIGKILL: a crash, no clean shutdown."""
        p = self.procs.get(i)
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)

    def pause(self, i: int) -> None:
        """SIGSTOP: the node hangs (its sockets accept, nothing answers)."""
        os.killpg(self.procs[i].pid, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        os.killpg(self.procs[i].pid, signal.SIGCONT)

    def stop(self, i: int | None = None, timeout: float = 10.0) -> None:
        """SIGTERM (all at once), wait, then SIGKILL what is left."""
        live = [self.procs[j] for j in ([i] if i is not None else list(self.procs))
                if j in self.procs and self.procs[j].poll() is None]
        for p in live:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)

    def health(self, i: int, timeout: float = 1.0) -> dict | None:
        try:
            r = httpx.get(self.url(i) + "/healthz", timeout=timeout, trust_env=False)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def wait_healthy(self, indices: Sequence[int] | None = None, timeout: float = 60.0) -> None:
        todo = set(range(len(self.setups)) if indices is None else indices)
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for j in list(todo):
                if not self.running(j):
                    raise RuntimeError(f"node {j} exited:\n{self.log_tail(j)}")
                if self.health(j):
                    todo.discard(j)
            time.sleep(0.2)
        if todo:
            raise TimeoutError(f"nodes {sorted(todo)} not healthy in {timeout}s:\n"
                               + "\n".join(self.log_tail(j) for j in todo))

    def log_tail(self, i: int, lines: int = 40) -> str:
        p = self.setups[i].data_dir / "node.log"
        if not p.exists():
            return ""
        return f"--- node{i} log ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Devnet:
    """Anvil + registry + N registered nodes + streams + the node processes, all on loopback.

    Time is warped to the epoch where the nodes are active (Anvil only), streams are created, then the
    nodes start. `stop()` stops the nodes and Anvil.
    """

    base_dir: Path
    n_nodes: int = 4
    streams: Sequence[bytes] = ()
    epoch_length: int = 3600
    leader_timeout: int = 4
    replication_factor: int = 3
    settings: dict[str, Any] = field(default_factory=dict)
    extra_nodes: int = 0  # prepared (keys, ports, onions) but not registered: for join tests
    anvil: Any = None
    cluster: Cluster | None = None
    deployment_path: Path | None = None
    setups: list[NodeSetup] = field(default_factory=list)

    def start(self, log=lambda s: None, wait: bool = True) -> Devnet:
        from eth_account import Account

        from node.chain.anvil import DEV_KEYS, Anvil
        from node.chain.deploy import deploy

        self.base_dir = Path(self.base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.anvil = Anvil(log_path=self.base_dir / "anvil.log").start()
        self.setups = prepare_nodes(self.n_nodes + self.extra_nodes, self.base_dir)
        registered = self.setups[:self.n_nodes]
        self.deployment_path = self.base_dir / "deployment.json"
        deploy(self.anvil.w3(), Account.from_key(DEV_KEYS[0]), epoch_length=self.epoch_length,
               leader_timeout=self.leader_timeout, replication_factor=self.replication_factor,
               nodes=[s.spec() for s in registered], streams=list(self.streams), rpc_url=self.anvil.http_url,
               ws_url=self.anvil.ws_url, out=self.deployment_path, warp=True, log=log)
        self.cluster = Cluster(self.deployment_path, self.setups, dict(self.settings))
        for i in range(self.n_nodes):
            self.cluster.start(i)
        if wait:
            self.cluster.wait_healthy(range(self.n_nodes))
        return self

    def registry(self, key_index: int = 0):
        """A sync node.chain.registry.Registry sending from Anvil dev account `key_index`."""
        from eth_account import Account

        from node.chain.anvil import DEV_KEYS
        from node.chain.deployment import Deployment
        from node.chain.registry import Registry

        return Registry.from_deployment(Deployment.load(self.deployment_path), w3=self.anvil.w3(),
                                        account=Account.from_key(DEV_KEYS[key_index]))

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        if self.anvil is not None:
            self.anvil.stop()

    def __enter__(self) -> Devnet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
