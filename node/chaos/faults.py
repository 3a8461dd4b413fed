"""The fault kinds of the chaos run. Each `inject_*` does its harm now and may leave a recovery to run
later (`Recovery`: SIGCONT, restart), so faults overlap the load, and the run bounds how many nodes are
impaired at once (`Faults.impaired`).

Kinds: kill -9 a node and restart it; SIGSTOP then SIGCONT a node; kill -9 the leader of the busiest
stream; restart the RPC proxy (down for a while) or drop its connections; a reorg of depth 1-3 (Anvil);
a node that joins (an extra node registers and starts) or leaves (requestLeave, stopped once out).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.chain.registry import Registry
    from node.cluster import Cluster
    from node.devnet.network import Network

    from .proxy import Proxy

KINDS = ("kill9", "sigstop", "kill_leader", "proxy_restart", "proxy_drop", "reorg", "join_leave")


@dataclass
class Recovery:
    at: float  # monotonic time
    what: str
    run: Callable[[], None]
    node: int | None = None


@dataclass
class Faults:
    net: Network
    reg: Registry
    proxy: Proxy
    rng: random.Random
    log: Callable[[str], None]
    max_impaired: int = 1
    counts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    pending: list[Recovery] = field(default_factory=list)
    members: set[int] = field(default_factory=set)  # node indices registered and not leaving
    spare: list[int] = field(default_factory=list)  # prepared, not registered (for joins)
    left: set[int] = field(default_factory=set)
    joins: int = 0
    leaves: int = 0

    def __post_init__(self) -> None:
        self.members = set(range(self.net.n_nodes))
        self.spare = list(range(self.net.n_nodes, self.net.n_nodes + self.net.extra_nodes))

    # ---- bookkeeping ---------------------------------------------------------------------------
    @property
    def cluster(self) -> Cluster:
        assert self.net.cluster is not None
        return self.net.cluster

    def impaired(self) -> set[int]:
        return {r.node for r in self.pending if r.node is not None}

    def recover_due(self, now: float | None = None, all_: bool = False) -> None:
        now = time.monotonic() if now is None else now
        keep = []
        for r in sorted(self.pending, key=lambda r: r.at):
            if all_ or r.at <= now:
                r.run()
            else:
                keep.append(r)
        self.pending = keep

    def _pick_node(self) -> int | None:
        busy = self.impaired()
        ok = [i for i in sorted(self.members) if i not in busy and self.cluster.running(i)]
        if len(busy) >= self.max_impaired or not ok:
            return None
        return self.rng.choice(ok)

    # ---- the faults ------------------------------------------------------------------------------
    def inject(self, kind: str) -> bool:
        """Inject one fault of `kind`; False if it cannot be done now (counted as skipped)."""
        done = getattr(self, f"_{kind}")()
        (self.counts if done else self.skipped)[kind] += 1
        return bool(done)

    def _kill(self, i: int, down_s: float, why: str) -> bool:
        self.cluster.kill(i)
        self.log(f"{why}: node{i} killed (-9), restart in {down_s:.1f}s")
        self.pending.append(Recovery(time.monotonic() + down_s, f"restart node{i}", lambda: self.cluster.start(i), i))
        return True

    def _kill9(self) -> bool:
        i = self._pick_node()
        return i is not None and self._kill(i, self.rng.uniform(0.5, 3.0), "kill9")

    def _sigstop(self) -> bool:
        i = self._pick_node()
        if i is None:
            return False
        pause = self.rng.uniform(1.0, 4.0)
        self.cluster.pause(i)
        self.log(f"sigstop: node{i} stopped for {pause:.1f}s")
        self.pending.append(Recovery(time.monotonic() + pause, f"sigcont node{i}", lambda: self.cluster.resume(i), i))
        return True

    def _kill_leader(self) -> bool:
        if len(self.impaired()) >= self.max_impaired:
            return False
        latest = self.reg.block_number()
        logs = self.reg.committed_logs(max(0, latest - 30), latest)
        if not logs:
            return False
        busiest = Counter(c.stream_id for c in logs).most_common(1)[0][0]
        last = [c for c in logs if c.stream_id == busiest][-1]
        leader = last.resolved(self.reg.replicas_of(busiest), None).leader  # v2 logs give the leader's position
        idx = {self.net.setups[i].address: i for i in self.members}
        i = idx.get(leader)
        if i is None or not self.cluster.running(i):
            return False
        return self._kill(i, self.rng.uniform(1.0, 4.0), "kill_leader")

    def _proxy_restart(self) -> bool:
        down = self.rng.uniform(0.3, 2.0)
        self.log(f"proxy_restart: RPC proxy down for {down:.1f}s")
        self.proxy.restart(down)
        return True

    def _proxy_drop(self) -> bool:
        n = self.proxy.drop()
        self.log(f"proxy_drop: {n} RPC connections cut")
        return True

    def _reorg(self) -> bool:
        chain = self.net.anvil
        if chain is None or not chain.supports_reorg:
            return False
        depth = self.rng.randint(1, 3)
        chain.reorg(depth)
        self.log(f"reorg: the last {depth} chain blocks replaced (their transactions dropped)")
        return True

    def _join_leave(self) -> bool:
        """Joins and leaves alternate; a join first (the network never has fewer than n_nodes members)."""
        if self.joins <= self.leaves:
            if not self.spare:
                return False
            i = self.spare.pop(0)
            s = self.net.setups[i]
            self.reg.register_node(s.address, s.url, s.commitment)
            self._bury()
            self.cluster.start(i)
            self.members.add(i)
            self.joins += 1
            self.log(f"join: node{i} registered ({s.address[:10]}) and started; active from the next epoch")
            return True
        busy = self.impaired()
        cands = [i for i in sorted(self.members) if i not in busy and self.cluster.running(i)]
        if len(cands) <= self.net.n_nodes - 1 or len(self.members) <= self.net.n_nodes:
            return False
        i = self.rng.choice(cands)
        self.reg.request_leave(self.net.setups[i].address)
        self._bury()
        self.members.discard(i)
        self.left.add(i)
        self.leaves += 1
        # It serves until its leave epoch, then it is out: stop it then.
        self.pending.append(Recovery(time.monotonic() + self.net.epoch_length + 8, f"stop left node{i}",
                                     lambda: self.cluster.stop(i)))
        self.log(f"leave: node{i} requested to leave; stopped after the epoch boundary (and its hand-off)")
        return True

    def _bury(self) -> None:
        """Put a membership transaction deeper than any reorg this run makes (those are for commits)."""
        chain = self.net.anvil
        if chain is not None:
            chain.mine(4)
