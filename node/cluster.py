"""A reusable launcher of N node processes on loopback (used by node.devnet.network, which also starts
the chain and deploys: the devnet command, the tests and the bench set networks up through it).

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
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from node.netutil import free_port
from node.protocol.eip712 import address_of
from node.server.config import dump_toml
from node.server.keys import write_keystore, write_onion

if TYPE_CHECKING:
    from node.chain.deploy import NodeSpec

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_PASSWORD = "cluster-dev-password"


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

    def spec(self) -> NodeSpec:
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
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

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

    def health(self, i: int, timeout: float = 1.0) -> dict[str, Any] | None:
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
