"""One chaos run: a devnet (its own Anvil, the nodes behind an RPC proxy) under a steady load, random
faults at random gaps, bounded by a count and a time; then the load stops, every fault is healed, and the
end checks run (node.chaos.check) with the figures gathered in a `ChaosReport`."""

from __future__ import annotations

import random
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from .check import check_network
from .faults import KINDS, Faults
from .proxy import Proxy


@dataclass(frozen=True)
class ChaosConfig:
    faults: int = 200
    max_s: float = 900.0  # the fault phase ends at `faults` faults or after this long
    gap_s: tuple[float, float] = (0.5, 2.5)  # pause between faults (uniform)
    nodes: int = 4
    extra_nodes: int = 2  # prepared for joins
    streams: int = 3
    rate: float = 30.0  # events/s of load
    clients: int = 4
    epoch_length: int = 20
    stall_bound_s: float = 60.0  # the run fails if a stream's head did not move for longer (under load)
    settle_s: float = 180.0  # after the faults: time allowed for every accepted event to be committed
    kinds: tuple[str, ...] = KINDS
    seed: int | None = None
    data_dir: Path | None = None
    registry_version: int = 1  # 1: MiniblockRegistry, 2: MiniblockRegistryV2


class StallMonitor(threading.Thread):
    """Polls each stream's chain head; the longest time a head did not change while the load ran."""

    def __init__(self, reg: Any, streams: list[bytes]) -> None:
        super().__init__(name="stall-monitor", daemon=True)
        self.reg, self.streams = reg, streams
        self.stop_ev = threading.Event()
        self.longest: dict[bytes, float] = {}

    def run(self) -> None:
        last: dict[bytes, tuple[int, bytes, float]] = {}
        while not self.stop_ev.wait(0.5):
            now = time.monotonic()
            for sid in self.streams:
                try:
                    h = self.reg.stream_head(sid)
                except Exception:  # noqa: BLE001 - the chain may be busy: measure on the next round
                    continue
                prev = last.get(sid)
                if prev is None or (prev[0], prev[1]) != (h.number, h.header_hash):
                    last[sid] = (h.number, h.header_hash, now)
                else:
                    self.longest[sid] = max(self.longest.get(sid, 0.0), now - prev[2])


@dataclass
class ChaosReport:
    ok: bool
    reasons: list[str]
    seed: int
    duration_s: float
    faults: dict[str, int]
    faults_total: int
    skipped: dict[str, int]
    events_accepted: int
    events_committed: int
    events_lost: int
    events_doubled: int
    nodes_checked: int
    node_block_mismatches: list[str]
    longest_stall_s: float
    stall_bound_s: float
    latency_ms: dict[str, float | None]
    node_counters: dict[str, float]
    heads: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


COUNTERS = {"reorgs": "node_reorgs_total", "rolled_back_blocks": "node_rolled_back_blocks_total",
            "rolled_back_events": "node_rolled_back_events_total", "state_mismatch": "node_state_mismatch_total",
            "tx_replaced": 'node_tx_total{event="replaced"}', "tx_resent": 'node_tx_total{event="resent"}',
            "tx_nonce_gaps": 'node_tx_total{event="gaps"}', "rpc_failovers": "node_rpc_failovers_total",
            "rpc_unavailable": "node_rpc_unavailable_total"}


def node_counters(urls: list[str]) -> dict[str, float]:
    """Sums over the nodes of a few counters (counted since each node's last start)."""
    out = dict.fromkeys(COUNTERS, 0.0)
    retries = 0.0
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        for u in urls:
            try:
                text = http.get(f"{u}/metrics").text
            except httpx.HTTPError:
                continue
            for k, name in COUNTERS.items():
                m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
                if m:
                    out[k] += float(m.group(1))
            retries += sum(float(x) for x in re.findall(r"^node_rpc_retries_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))
    out["rpc_retries"] = retries
    return out


def run_chaos(cfg: ChaosConfig, log: Callable[[str], None] = print) -> ChaosReport:
    from node.chain.deploy import parse_stream_id
    from node.devnet.loadgen import LoadGen
    from node.devnet.network import Network
    from node.devnet.stats import Stats
    from node.devnet.watcher import Watcher

    seed = cfg.seed if cfg.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    base = cfg.data_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    base.mkdir(parents=True, exist_ok=True)
    streams = [parse_stream_id(f"chaos/stream-{i}") for i in range(cfg.streams)]
    settings = {"tick_ms": 100, "poll_ms": 200, "regossip_s": 3.0, "tx_replace_s": 2.0, "rpc_timeout_s": 3.0,
                "rpc_retries": 6, "peer_timeout_s": 2.0, "log_level": "INFO"}
    net = Network(base, n_nodes=cfg.nodes, extra_nodes=cfg.extra_nodes, streams=streams,
                  epoch_length=cfg.epoch_length, leader_timeout=3, settings=settings, watchdog=True,
                  registry_version=cfg.registry_version)
    proxy: Proxy | None = None
    stop = threading.Event()
    loadgen: LoadGen | None = None
    monitor: StallMonitor | None = None
    t0 = time.monotonic()
    reasons: list[str] = []
    try:
        # The chain first (to know its port), then the proxy, then the nodes behind it.
        from node.chain.anvil import Anvil

        net.anvil = Anvil(log_path=base / "anvil.log").start()
        u = urlparse(net.anvil.http_url)
        proxy = Proxy(u.hostname or "127.0.0.1", u.port or 8545).start()
        net.rpc_url, net.node_rpc_url = net.anvil.http_url, proxy.url
        net.start(log=lambda s: log(f"chaos: {s}"))
        reg = net.registry()
        assert net.cluster is not None
        stats = Stats(streams)
        watcher = Watcher(stats, reg, net.urls, reg.block_number() + 1, budget=1.0)
        loadgen = LoadGen(stats, net.domain, net.urls, streams, clients=cfg.clients, rate=cfg.rate,
                          max_inflight=400, stop=stop)
        loadgen.start()
        monitor = StallMonitor(reg, streams)
        monitor.start()
        faults = Faults(net, reg, proxy, rng, log=lambda s: log(f"chaos: {s}"))
        kinds = list(cfg.kinds)
        end = time.monotonic() + cfg.max_s
        next_poll = 0.0
        while sum(faults.counts.values()) < cfg.faults and time.monotonic() < end:
            faults.recover_due()
            kind = rng.choice(kinds)
            try:
                faults.inject(kind)
            except Exception as e:  # noqa: BLE001 - a fault that failed to inject is reported, the run goes on
                faults.skipped[kind] += 1
                log(f"chaos: {kind} failed to inject: {type(e).__name__}: {e}")
            wait_until = time.monotonic() + rng.uniform(*cfg.gap_s)
            while time.monotonic() < wait_until:
                faults.recover_due()
                if time.monotonic() >= next_poll:
                    try:
                        watcher.poll()
                    except Exception:  # noqa: BLE001 - figures only; the chain may be busy
                        pass
                    next_poll = time.monotonic() + 1.0
                time.sleep(0.05)
        fault_phase = time.monotonic() - t0
        log(f"chaos: {sum(faults.counts.values())} faults in {fault_phase:.0f}s; healing and settling")
        stop.set()
        loadgen.join(20)
        monitor.stop_ev.set()
        faults.recover_due(all_=True)
        checked = sorted(faults.members)
        for i in checked:  # every member runs again (a no-op for those running)
            net.cluster.start(i)
        net.cluster.wait_healthy(checked, timeout=90)
        with stats.lock:
            accepted = list(stats.posted)
        urls = [net.setups[i].url for i in checked]
        deadline = time.monotonic() + cfg.settle_s
        while time.monotonic() < deadline:
            try:
                watcher.poll()
            except Exception:  # noqa: BLE001 - figures only
                pass
            with stats.lock:
                if len(stats.latency) >= len(accepted):
                    break
            time.sleep(1.0)
        res = check_network(reg, urls, streams, accepted, settle_s=60)
        # The watcher counts an event once it saw a log of its block, also of a block a reorg orphaned since:
        # its events are back in the pools and commit again, so "lost" is final only at the settle deadline.
        while res.lost and not res.doubled and time.monotonic() < deadline:
            time.sleep(2.0)
            res = check_network(reg, urls, streams, accepted, settle_s=max(5.0, min(60.0, deadline - time.monotonic())))
        counters = node_counters(urls)
        longest = max(monitor.longest.values(), default=0.0)
        if not res.ok:
            reasons += res.mismatches[:10]
            if res.lost:
                reasons.append(f"{len(res.lost)} accepted events in no block (e.g. {res.lost[:3]})")
            if res.doubled:
                reasons.append(f"{len(res.doubled)} events in more than one block")
        if longest > cfg.stall_bound_s:
            reasons.append(f"a stream stalled {longest:.1f}s (bound {cfg.stall_bound_s:g}s)")
        if counters["state_mismatch"]:
            reasons.append(f"{counters['state_mismatch']:g} stateRoot mismatches")
        with stats.lock:
            lat = stats.latencies_ms()
        return ChaosReport(
            ok=not reasons, reasons=reasons, seed=seed, duration_s=round(time.monotonic() - t0, 1),
            faults=dict(sorted(faults.counts.items())), faults_total=sum(faults.counts.values()),
            skipped=dict(sorted(faults.skipped.items())), events_accepted=len(accepted),
            events_committed=res.committed, events_lost=len(res.lost), events_doubled=len(res.doubled),
            nodes_checked=len(urls), node_block_mismatches=res.mismatches, longest_stall_s=round(longest, 1),
            stall_bound_s=cfg.stall_bound_s, latency_ms=lat, node_counters=counters,
            heads={k[:10]: v for k, v in res.heads.items()})
    finally:
        stop.set()
        if monitor is not None:
            monitor.stop_ev.set()
        if loadgen is not None and loadgen.is_alive():
            loadgen.join(10)
        net.stop()
        if proxy is not None:
            proxy.stop()
