"""Benchmark scenarios. Each returns a list of JSON-able rows ({"scenario": ..., ...}).

All run on loopback against fresh local Anvils (node.chain.anvil) and node processes set up by
node.devnet.network.Network; the load is the devnet's load generator (node.devnet.loadgen.LoadGen) in its
batch mode, watched by node.devnet.watcher.Watcher. Every load is bounded in count and in time.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.batching import headers_per_tx, median_gas_per_header
from node.devnet.loadgen import KIND_JOIN, LoadGen
from node.devnet.network import Network
from node.devnet.stats import Stats
from node.devnet.watcher import Watcher

if TYPE_CHECKING:
    from node.chain.registry import Registry
    from node.cluster import Cluster

Log = Callable[[str], None]


def stream_ids(n: int, tag: str = "bench") -> list[bytes]:
    from node.protocol.hashing import keccak

    return [keccak(f"{tag}/stream-{i}".encode()) for i in range(n)]


# ---------------------------------------------------------------------------------------------------
# node processes: CPU seconds and peak RSS (psutil, /proc)


class NodeCost:
    """CPU time (user+sys) of every node process between `start()` and `stop()`, RSS sampled every
    0.25 s (peak of the samples) and the kernel's high-water mark (VmHWM, peak since the process began)."""

    def __init__(self, pids: list[int]) -> None:
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.cpu0: list[float] = []
        self.cpu1: list[float] = []
        self.rss_peak = [0] * len(pids)
        self._stop = threading.Event()
        self._t: threading.Thread | None = None

    def _cpu(self) -> list[float]:
        import psutil

        out = []
        for p in self.procs:
            try:
                t = p.cpu_times()
                out.append(t.user + t.system)
            except psutil.Error:  # a node that exited
                out.append(float("nan"))
        return out

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.25):
            for i, p in enumerate(self.procs):
                try:
                    self.rss_peak[i] = max(self.rss_peak[i], p.memory_info().rss)
                except psutil.Error:  # a node that exited: its peak so far stands
                    pass

    def start(self) -> NodeCost:
        self.cpu0 = self._cpu()
        self._t = threading.Thread(target=self._sample, daemon=True, name="nodecost")
        self._t.start()
        return self

    def stop(self) -> None:
        self.cpu1 = self._cpu()
        self._stop.set()
        if self._t:
            self._t.join(2)

    def hwm(self) -> list[int]:
        out = []
        for p in self.procs:
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out.append(int(line.split()[1]) * 1024)
                        break
                else:
                    out.append(0)
            except OSError:
                out.append(0)
        return out

    def figures(self, events: int) -> dict[str, Any]:
        cpu = [b - a for a, b in zip(self.cpu0, self.cpu1, strict=False)]

        def per_k(x: float) -> float | None:
            return round(1000 * x / events, 3) if events else None

        return {"cpu_s_per_node": [round(c, 2) for c in cpu],
                "cpu_s_per_1k_events_per_node": [per_k(c) for c in cpu],
                "cpu_s_per_1k_events_mean": per_k(statistics.mean(cpu)) if cpu else None,
                "rss_peak_mb_per_node": [round(r / 2**20, 1) for r in self.rss_peak],
                "rss_hwm_mb_per_node": [round(r / 2**20, 1) for r in self.hwm()]}


# ---------------------------------------------------------------------------------------------------
# gas, from the receipts of the commit transactions


def commit_txs(reg: Registry, from_block: int, to_block: int) -> list[dict[str, int]]:
    """Every commitMiniblocks tx in [from_block, to_block]: headers committed / rejected, events, gasUsed."""
    if to_block < from_block:
        return []
    txs: dict[bytes, dict[str, int]] = defaultdict(lambda: {"headers": 0, "rejected": 0, "events": 0})
    for c in reg.committed_logs(from_block, to_block):
        t = txs[c.tx_hash]
        t["headers"] += 1
        t["events"] += c.event_count
    for r in reg.rejected_logs(from_block, to_block):
        txs[r.tx_hash]["rejected"] += 1
    for h, t in txs.items():
        t["gas"] = reg.receipt(h).gas_used
    return list(txs.values())


BUCKETS = ((1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 63), (64, 256))


def gas_by_batch(txs: list[dict[str, int]]) -> list[dict[str, Any]]:
    """Gas per committed header and per event, by the number of headers in the tx."""
    out = []
    for lo, hi in BUCKETS:
        sel = [t for t in txs if lo <= t["headers"] + t["rejected"] <= hi and t["headers"]]
        if not sel:
            continue
        gas = sum(t["gas"] for t in sel)
        hdr = sum(t["headers"] for t in sel)
        ev = sum(t["events"] for t in sel)
        out.append({"batch": f"{lo}" if lo == hi else f"{lo}-{hi}", "txs": len(sel),
                    "headers_per_tx": round(hdr / len(sel), 1), "events_per_header": round(ev / hdr, 1),
                    "gas_per_header": round(gas / hdr), "gas_per_event": round(gas / ev, 1) if ev else None})
    return out


# ---------------------------------------------------------------------------------------------------
# a devnet and one load on it


@dataclass
class Net:
    """A started network and the deployer's registry client."""

    network: Network
    reg: Any

    @property
    def urls(self) -> list[str]:
        return self.network.urls

    @property
    def streams(self) -> list[bytes]:
        return list(self.network.streams)

    @property
    def cluster(self) -> Cluster:
        assert self.network.cluster is not None, "started"
        return self.network.cluster

    def stop(self) -> None:
        self.network.stop()


# The registry the node scenarios deploy (`python -m node bench --registry v1|v2` sets it).
REGISTRY_VERSION = 1


def start_net(base: Path, n_nodes: int, n_streams: int, log: Log, settings: dict[str, Any] | None = None) -> Net:
    t = time.monotonic()
    network = Network(base, n_nodes=n_nodes, streams=stream_ids(n_streams), replication_factor=3, leader_timeout=4,
                      settings=dict(settings or {}), registry_version=REGISTRY_VERSION)
    try:
        network.start()
        reg = network.registry()
    except BaseException:
        network.stop()
        raise
    log(f"devnet: {n_nodes} nodes, {n_streams} streams up in {time.monotonic() - t:.1f}s ({base})")
    return Net(network, reg)


def run_load(net: Net, streams: list[bytes], *, clients: int, total: int, rate: float = 0.0, batch: int = 256,
             max_inflight: int = 20_000, timeout: float = 60.0, posters: int = 4, log: Log) -> dict[str, Any]:
    """Post `total` MESSAGEs (after the JOINs of clients x streams) and wait until they are committed
    (or `timeout` s after the MESSAGEs began). Throughput, latency, per-node cost, gas by batch size."""
    stats = Stats(list(streams))
    first_block = net.reg.block_number() + 1
    # at most 1 s per poll reading blocks back (2 s per request): busy nodes cannot hold the loop past its deadline
    watcher = Watcher(stats, net.reg, net.urls, first_block, http_timeout=2.0, budget=1.0)
    stop = threading.Event()
    load = LoadGen(stats, net.network.domain, net.urls, streams, clients=clients, messages=total, rate=rate,
                   max_inflight=max_inflight, stop=stop, batch=batch, posters=posters, payload_size=64)
    cost = NodeCost(net.network.pids())
    t_start = time.monotonic()
    load.start()
    msg_block = None
    error = None
    deadline_join = t_start + max(30.0, timeout, 0.2 * len(load.joins))  # one header per JOINed stream
    deadline = None
    try:
        while True:
            watcher.poll()
            if load.error is not None:
                error = f"load generator: {load.error!r}"
                break
            if load.joined_at is not None and deadline is None:
                cost.start()
                msg_block = net.reg.block_number() + 1
                deadline = load.joined_at + timeout
            now = time.monotonic()
            if deadline is None:
                if now > deadline_join:
                    error = "JOINs not committed in time"
                    break
            else:
                with stats.lock:
                    done = sum(1 for h in load.msg_hashes if h in stats.latency)
                if load.sent >= total and done >= len(load.msg_hashes) - (
                        sum(stats.rejected.values())):
                    break
                if now > deadline:
                    error = f"timeout: {done} of {total} MESSAGEs committed in {timeout:.0f}s"
                    break
            for i in range(net.network.n_nodes):
                if not net.cluster.running(i):
                    error = f"node {i} exited"
                    break
            if error:
                break
            time.sleep(0.1)
    finally:
        stop.set()
        load.join(10)
        if cost.cpu0:
            cost.stop()
        try:
            watcher.poll()
        finally:
            watcher.close()
    fig = load.message_figures()
    res: dict[str, Any] = {"nodes": net.network.n_nodes, "replication": 3, "streams": len(streams),
                           "clients": clients, "joins": len(load.joins), "batch_post": batch,
                           "rate_target": rate or None, **fig}
    if error:
        res["error"] = error
    if cost.cpu1:
        res.update(cost.figures(fig.get("committed", 0)))
    if msg_block is not None and load.msg_first_post is not None:
        # Committed as the chain says (headers whose logs the watcher saw, by the time it saw them): reading
        # every block back from busy nodes (the latency figures) falls behind at 1,000 streams.
        end = deadline if deadline is not None else float("inf")
        on_chain = [(seen, n) for blk, seen, n in watcher.chain_commits if blk >= msg_block and n and seen <= end]
        if on_chain:
            el = max(max(t for t, _n in on_chain) - load.msg_first_post, 1e-9)
            res.update(chain_committed=sum(n for _t, n in on_chain), chain_elapsed_s=round(el, 3),
                       chain_events_per_s=round(sum(n for _t, n in on_chain) / el, 1))
    if msg_block is not None:
        txs = commit_txs(net.reg, msg_block, net.reg.block_number())
        hdr = sum(t["headers"] for t in txs)
        gas = sum(t["gas"] for t in txs)
        ev = sum(t["events"] for t in txs)
        if fig.get("elapsed_s"):
            res["headers_per_s"] = round(hdr / fig["elapsed_s"], 1)
        res.update(commit_txs=len(txs), headers=hdr, headers_rejected=sum(t["rejected"] for t in txs),
                   gas_per_header=round(gas / hdr) if hdr else None, gas_per_event=round(gas / ev, 1) if ev else None,
                   events_per_header=round(ev / hdr, 1) if hdr else None, gas_by_batch=gas_by_batch(txs),
                   gas_per_header_median=median_gas_per_header(txs), headers_per_tx=headers_per_tx(txs))
    log(f"  {len(streams)} streams x {clients} clients: {fig.get('committed')}/{total} committed, "
        f"{fig.get('events_per_s')} ev/s, latency {fig.get('latency_ms')}; on chain {res.get('chain_committed')} "
        f"events, {res.get('chain_events_per_s')} ev/s" + (f"  [{error}]" if error else ""))
    return res


# ---------------------------------------------------------------------------------------------------
# scenarios


def throughput(base: Path, stream_counts: list[int], events: dict[int, int], timeout: float, log: Log,
               half_load: bool = True, n_nodes: int = 4) -> list[dict[str, Any]]:
    """4 nodes, replication 3: max throughput with 1, 16, 256 streams (one devnet with the most streams,
    loads on the first S of them); right after the 16-stream load, the same streams at half its rate."""
    rows: list[dict[str, Any]] = []
    net = start_net(base / f"tp-{n_nodes}n", n_nodes, max(stream_counts), log)
    try:
        for s in stream_counts:
            clients = max(1, 16 // s)
            r = run_load(net, net.streams[:s], clients=clients, total=events[s], timeout=timeout, log=log)
            rows.append({"scenario": "throughput", **r})
            # the half-load latency run follows the 16-stream run (same streams, fresh client keys)
            after = s == 16 or (s == stream_counts[-1] and 16 not in stream_counts)
            if half_load and after and r.get("events_per_s"):
                rows.append(half(net, r, events[s], timeout, log))
    finally:
        net.stop()
    return rows


def half(net: Net, ref: dict[str, Any], events: int, timeout: float, log: Log) -> dict[str, Any]:
    """The same streams at half the rate `ref` reached: ~10 s of load, batches sized for ~20 posts/s."""
    s = ref["streams"]
    rate = ref["events_per_s"] / 2
    n = int(min(events, max(rate * 10, 500)))
    batch = max(1, min(256, int(rate / 20)))  # ~20 posts/s: batching adds < 50 ms
    r = run_load(net, net.streams[:s], clients=max(1, 16 // s), total=n, rate=rate, batch=batch, timeout=timeout,
                 log=log)
    return {"scenario": "latency_half_load", **r}


def node_scale(base: Path, node_counts: list[int], streams: int, events: int, timeout: float,
               log: Log) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n in node_counts:
        net = start_net(base / f"scale-{n}n", n, streams, log)
        try:
            r = run_load(net, net.streams, clients=max(1, 16 // streams), total=events, timeout=timeout, log=log)
            rows.append({"scenario": "scale_nodes", **r})
        finally:
            net.stop()
    return rows


def many_streams(base: Path, streams: int, events: int, timeout: float, log: Log) -> list[dict[str, Any]]:
    net = start_net(base / f"streams-{streams}", 4, streams, log)
    try:
        r = run_load(net, net.streams, clients=1, total=events, timeout=timeout, log=log)
        return [{"scenario": "scale_streams", **r}]
    finally:
        net.stop()


def intake_and_pool(base: Path, events: int, streams: int, drain_timeout: float, log: Log) -> list[dict[str, Any]]:
    """Commits disabled on every node (produce = false): the node's HTTP intake rate (pre-signed JOINs
    from fresh authors, batches of 500, 4 posters over the 4 nodes); the mini-pools grow to `events`.
    Then: a node still answers (healthz, a stream, a vote) while holding them, and once the nodes are
    restarted with commits enabled the pools drain (all `events` committed on chain)."""
    import httpx

    from node.server.client import Author

    net = start_net(base / "pool", 4, streams, log, settings={"produce": False})
    rows: list[dict[str, Any]] = []
    try:
        t = time.monotonic()
        per_author = len(net.streams)
        n_auth = (events + per_author - 1) // per_author
        authors = [Author(net.network.domain) for _ in range(n_auth)]
        bodies: list[dict[str, Any]] = []
        for a in authors:
            for sid in net.streams:
                if len(bodies) >= events:
                    break
                bodies.append(a.event(sid, KIND_JOIN, b"")[1])
        sign_s = time.monotonic() - t
        log(f"  pool: {len(bodies)} JOINs from {n_auth} authors signed in {sign_s:.1f}s")
        # intake: 4 posters, each its own node, batches of 500, bounded by count and a deadline
        batch, posters = 500, 4
        chunks = [bodies[i:i + batch] for i in range(0, len(bodies), batch)]
        accepted = [0] * posters
        refused: dict[str, int] = defaultdict(int)
        lock = threading.Lock()
        deadline = time.monotonic() + max(60.0, drain_timeout)

        def poster(k: int) -> None:
            with httpx.Client(base_url=net.urls[k % len(net.urls)], timeout=60, trust_env=False) as c:
                for j in range(k, len(chunks), posters):
                    if time.monotonic() > deadline:
                        return
                    r = c.post("/v1/events/batch", json={"events": chunks[j]})
                    if r.status_code != 200:
                        with lock:
                            refused[f"HTTP {r.status_code}"] += len(chunks[j])
                        continue
                    j_ = r.json()
                    accepted[k] += j_["accepted"]
                    if j_["rejected"]:
                        with lock:
                            for it in j_["results"]:
                                if not it["ok"]:
                                    refused[str(it.get("error"))] += 1

        cost = NodeCost(net.network.pids()).start()
        t0 = time.monotonic()
        ths = [threading.Thread(target=poster, args=(k,)) for k in range(posters)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        el = time.monotonic() - t0
        cost.stop()
        acc = sum(accepted)
        rows.append({"scenario": "ceiling_intake", "nodes": 4, "streams": streams, "events": len(bodies),
                     "accepted": acc, "refused": dict(refused), "batch_post": batch, "posters": posters,
                     "elapsed_s": round(el, 2), "events_per_s": round(acc / el, 1),
                     "client_sign_s": round(sign_s, 2), **cost.figures(acc)})
        log(f"  intake (commits disabled): {acc} accepted in {el:.1f}s = {acc / el:.0f} ev/s")
        # the node answers while holding the pool
        probe: dict[str, Any] = {}
        with httpx.Client(timeout=30, trust_env=False) as c:
            t1 = time.monotonic()
            h = c.get(net.urls[0] + "/healthz")
            probe["healthz_ms"] = round(1000 * (time.monotonic() - t1), 1)
            probe["healthz_ok"] = h.status_code == 200
            probe["pool_per_node"] = [c.get(u + "/healthz").json().get("pool") for u in net.urls]
            t1 = time.monotonic()
            # a vote as a replica asks for it (signed with a replica's node key: /peer/* is authenticated)
            from node.server.client import NodeClient

            reps = net.reg.replicas_of(net.streams[0])
            setup = next(s for s in net.network.setups if s.address in reps)
            nc = NodeClient(net.urls[0], timeout=30)
            v = nc.peer("POST", "/peer/votes", key=setup.key, json={"stream_id": "0x" + net.streams[0].hex()})
            nc.close()
            probe["vote_ms"] = round(1000 * (time.monotonic() - t1), 1)
            probe["vote_hashes"] = len(v.json().get("hashes", [])) if v.status_code == 200 else None
        # restart with commits on; wait for the pools to drain
        cl = net.cluster
        first_block = net.reg.block_number() + 1
        t2 = time.monotonic()
        cl.stop()
        cl.settings["produce"] = True
        cl.start()
        cl.wait_healthy(timeout=120)
        restart_s = time.monotonic() - t2
        cost = NodeCost(net.network.pids()).start()
        drained, pools = False, None
        t3 = time.monotonic()
        with httpx.Client(timeout=30, trust_env=False) as c:
            while time.monotonic() - t3 < drain_timeout:
                try:
                    pools = [c.get(u + "/healthz").json().get("pool") for u in net.urls]
                except (httpx.HTTPError, ValueError):
                    pools = None
                if pools is not None and all(p == 0 for p in pools):
                    drained = True
                    break
                time.sleep(0.5)
        drain_s = time.monotonic() - t3
        cost.stop()
        txs = commit_txs(net.reg, first_block, net.reg.block_number())
        committed = sum(t["events"] for t in txs)
        rows.append({"scenario": "pool_100k" if events >= 100_000 else "pool", "nodes": 4, "streams": streams,
                     "pool_events": acc, **probe, "restart_s": round(restart_s, 2), "drained": drained,
                     "drain_s": round(drain_s, 2), "pools_left": pools, "events_committed": committed,
                     "drain_events_per_s": round(committed / drain_s, 1) if drain_s else None,
                     "headers": sum(t["headers"] for t in txs), "commit_txs": len(txs),
                     **cost.figures(committed)})
        log(f"  pool of {acc}: healthz {probe['healthz_ms']} ms while full; drained={drained} in {drain_s:.1f}s "
            f"({committed} events committed)")
    finally:
        net.stop()
    return rows


def ceiling_anvil(base: Path, batches: list[int], rate_txs: int, streams: int, log: Log,
                  events_per_header: int = 64) -> list[dict[str, Any]]:
    """commitMiniblocks alone on a fresh Anvil: 4 registered nodes, replication 3, headers signed in advance
    by the elected leader + both other replicas (3 signatures). Gas per header for each batch size, then
    the rate: `rate_txs` pre-signed txs of `streams` headers each sent back to back."""
    from eth_account import Account

    from node.chain.anvil import DEV_KEYS, Anvil
    from node.chain.deploy import NodeSpec, deploy
    from node.chain.devtools import NodeKeys
    from node.chain.registry import Registry, TxSender
    from node.protocol import eip712
    from node.protocol.election import elected_leader
    from node.protocol.hashing import keccak
    from node.protocol.merkle import merkle_root
    from node.protocol.onion import HashOnion
    from node.protocol.types import Header

    rows: list[dict[str, Any]] = []
    base.mkdir(parents=True, exist_ok=True)
    with Anvil(log_path=base / "anvil-ceiling.log") as anvil:
        w3 = anvil.w3()
        acct = Account.from_key(DEV_KEYS[0])
        sender = TxSender(w3, acct)
        keys = {}
        for i in range(4):
            k = NodeKeys(bytes.fromhex(DEV_KEYS[i + 1][2:]), HashOnion(keccak(b"ceiling %d" % i), 20_000))
            keys[k.address] = k
        specs = [NodeSpec(a, f"http://127.0.0.1:{40000 + i}", nk.onion.commitment)
                 for i, (a, nk) in enumerate(keys.items())]
        n_streams = max(max(batches), streams)
        sids = stream_ids(n_streams, "ceiling")
        t = time.monotonic()
        dep = deploy(w3, sender, epoch_length=86_400, leader_timeout=30, replication_factor=3, nodes=specs,
                     streams=sids, warp=True)
        reg = Registry(w3, dep.registry, dep.abi(), sender)
        log(f"ceiling: registry + {n_streams} streams in {time.monotonic() - t:.1f}s")
        domain = reg.domain()
        seed, epoch = reg.current_seed(), reg.current_epoch()
        replicas = {s: reg.replicas_of(s) for s in sids}
        heads = {s: (0, reg.stream_head(s).header_hash) for s in sids}
        commits = {a: reg.randao_commit_of(a) for a in keys}
        pos = {a: keys[a].onion.position(commits[a]) for a in keys}
        ev_root = merkle_root([keccak(b"e%d" % i) for i in range(events_per_header)])

        def make_batch(sel: list[bytes]) -> tuple[list[Header], list[list[bytes]]]:
            hs, sigs = [], []
            for s in sel:
                n, prev = heads[s]
                leader = elected_leader(seed, s, n + 1, 0, replicas[s])
                pos[leader] -= 1
                h = Header(s, n + 1, prev, ev_root, events_per_header, epoch, 0, leader,
                           keys[leader].onion.layer(pos[leader]), b"\0" * 32)
                heads[s] = (n + 1, eip712.hash_header(h))
                others = [r for r in replicas[s] if r != leader]
                hs.append(h)
                sigs.append([eip712.sign_header(domain, h, keys[leader].private_key)]
                            + [eip712.sign_header(domain, h, keys[r].private_key) for r in others])
            return hs, sigs

        # gas per header by batch size (3 batches each, median)
        for b in batches:
            gas = []
            for _ in range(3):
                hs, sigs = make_batch(sids[:b])
                res = reg.commit_miniblocks(hs, sigs)
                if res.rejected or len(res.committed) != b:
                    raise RuntimeError(f"ceiling batch of {b}: rejected {[r.reason_name for r in res.rejected]}")
                gas.append(res.gas_used)
            g = statistics.median(gas)
            rows.append({"scenario": "gas_contract", "replication": 3, "signers": 3, "batch": b,
                         "events_per_header": events_per_header, "gas_used": int(g),
                         "gas_per_header": round(g / b), "gas_per_event": round(g / b / events_per_header, 1)})
            log(f"  contract alone, batch {b}: {g / b:,.0f} gas/header")
        # rate: pre-signed headers AND pre-signed raw txs, sent back to back, one receipt wait at the end
        sel = sids[:streams]
        fn_gas = None
        raw = []
        nonce = w3.eth.get_transaction_count(acct.address, "pending")
        fees = sender.fees()
        t = time.monotonic()
        for j in range(rate_txs):
            hs, sigs = make_batch(sel)
            args = ([h.as_abi() for h in hs], [list(x) for x in sigs])
            if fn_gas is None:
                fn_gas = int(reg.estimate_gas("commitMiniblocks", *args) * 1.3) + 50_000
            tx: Any = {"to": reg.address, "data": reg.calldata("commitMiniblocks", *args), "nonce": nonce + j,
                       "gas": fn_gas, "chainId": w3.eth.chain_id, **fees}
            raw.append(acct.sign_transaction(tx).raw_transaction)
        prep_s = time.monotonic() - t
        t = time.monotonic()
        hashes = [w3.eth.send_raw_transaction(r) for r in raw]
        rcpts = [w3.eth.wait_for_transaction_receipt(h, timeout=120) for h in hashes]
        el = time.monotonic() - t
        ok = sum(1 for r in rcpts if r["status"] == 1)
        n_hdr = ok * len(sel)
        tx_gas = statistics.median(int(r["gasUsed"]) for r in rcpts)
        calldata = len(bytes(w3.eth.get_transaction(hashes[0])["input"]))
        zero = bytes(w3.eth.get_transaction(hashes[0])["input"]).count(0)
        rows.append({"scenario": "ceiling_anvil", "replication": 3, "signers": 3, "headers_per_tx": len(sel),
                     "events_per_header": events_per_header, "txs": rate_txs, "txs_ok": ok,
                     "elapsed_s": round(el, 3), "txs_per_s": round(ok / el, 1), "headers_per_s": round(n_hdr / el, 1),
                     "events_per_s_equiv": round(n_hdr * events_per_header / el, 1),
                     "gas_per_tx": int(tx_gas), "gas_per_header": round(tx_gas / len(sel)),
                     "calldata_bytes_per_header": round(calldata / len(sel), 1),
                     "calldata_gas_per_header": round((16 * (calldata - zero) + 4 * zero) / len(sel)),
                     "prepare_s": round(prep_s, 2)})
        log(f"  anvil alone: {ok} txs x {len(sel)} headers in {el:.2f}s = {ok / el:.1f} tx/s, "
            f"{n_hdr / el:.0f} headers/s")
    return rows
