"""`python -m node devnet`: a whole local network in one command, with a load generator and live figures.

With no flags it starts its own Anvil (node_modules), deploys the registry, registers N nodes (fresh keys,
funded by the deployer, each in an encrypted keystore), creates S streams, starts the nodes as separate
`python -m node run` processes (node.cluster), then drives a bounded load through the nodes' HTTP API:
every client key first JOINs every stream, and once its JOIN is committed (a JOIN in block n lets its
author post MESSAGEs from block n + 1 on, docs/protocol.md) it posts MESSAGEs. Progress is read from
the chain (MiniblockCommitted logs) and the nodes (the committed blocks' event lists); commit latency is
client post -> the header carrying the event seen committed on chain, measured here, client side.

Keys: on its own Anvil (and with ``--rpc-url URL --dev``) the deployer is Anvil's dev account 0.
``--rpc-url`` without ``--dev`` needs ``--keystore`` (password in $MINIBLOCK_KEYSTORE_PASSWORD, or the
variable named by --password-env); time is then never warped, the devnet waits for the epoch boundary
(node joins take effect at the next epoch). The chain named by --rpc-url is left running.
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from node.commands.deploy import DEFAULT_PASSWORD_ENV, load_account

KIND_MESSAGE, KIND_JOIN = 0, 1


class DevnetError(RuntimeError):
    """A failure with a reason for the user (exit code 1)."""


# ---------------------------------------------------------------------------------------------------
# shared figures (load generator thread writes, main thread reads and renders)


@dataclass
class Stats:
    streams: list[bytes]
    lock: threading.Lock = field(default_factory=threading.Lock)
    posted: dict[bytes, float] = field(default_factory=dict)  # our event hash -> monotonic time of its POST
    latency: dict[bytes, float] = field(default_factory=dict)  # our committed event -> seconds post -> commit seen
    kinds: dict[bytes, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # "error: detail" -> count
    post_errors: int = 0  # transport errors / 5xx (retried)
    blocks: dict[bytes, int] = field(default_factory=lambda: defaultdict(int))  # committed in this run
    block_events: dict[bytes, int] = field(default_factory=lambda: defaultdict(int))
    heads: dict[bytes, int] = field(default_factory=dict)
    rejected_headers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    commit_txs: int = 0
    commit_gas: int = 0
    first_post: float | None = None
    last_commit: float | None = None

    @property
    def submitted(self) -> int:
        return len(self.posted)

    @property
    def committed(self) -> int:
        return len(self.latency)

    def pending(self) -> int:
        return self.submitted - self.committed

    def headers_committed(self) -> int:
        return sum(self.blocks.values())

    def gas_per_header(self) -> int | None:
        n = self.headers_committed()
        return round(self.commit_gas / n) if n else None

    def latencies_ms(self) -> dict[str, float | None]:
        xs = sorted(self.latency.values())
        if not xs:
            return {"p50": None, "p99": None, "max": None, "mean": None}

        def q(p: float) -> float:
            return round(1000 * xs[min(len(xs) - 1, max(0, math.ceil(p * len(xs)) - 1))], 1)

        return {"p50": q(0.50), "p99": q(0.99), "max": round(1000 * xs[-1], 1),
                "mean": round(1000 * sum(xs) / len(xs), 1)}

    def elapsed(self) -> float:
        if self.first_post is None:
            return 0.0
        end = self.last_commit if self.last_commit is not None else time.monotonic()
        return max(end - self.first_post, 1e-9)


# ---------------------------------------------------------------------------------------------------
# load generator


class LoadGen(threading.Thread):
    """Posts signed events through the nodes' HTTP API (POST /v1/events), round-robin over the nodes.

    `total` events (None: unbounded, until stopped), at most `rate` per second (0: as fast as the bound on
    uncommitted events allows) and never more than `max_inflight` posted but not yet seen committed.
    This thread signs; `posters` threads post concurrently (each with its own HTTP connections).
    """

    def __init__(self, stats: Stats, domain, node_urls: list[str], streams: list[bytes], n_clients: int,
                 total: int | None, rate: float, max_inflight: int, stop: threading.Event, posters: int = 4) -> None:
        super().__init__(name="loadgen", daemon=True)
        from node.server.client import Author

        self.stats, self.streams, self.total, self.rate = stats, streams, total, rate
        self.max_inflight, self.stop_ev = max_inflight, stop
        self.urls = node_urls
        self.authors = [Author(domain) for _ in range(max(1, n_clients))]
        self.error: BaseException | None = None
        self.q: queue.Queue = queue.Queue(maxsize=2 * posters)
        self.posters = [threading.Thread(target=self._poster, args=(k,), name=f"poster{k}", daemon=True)
                        for k in range(posters)]
        # JOINs first: (author, stream) pairs, capped by `total`
        pairs = [(a, s) for a in range(len(self.authors)) for s in range(len(streams))]
        if total is not None:
            pairs = pairs[:total]
        self.joins = pairs
        self.join_hash: dict[tuple[int, int], bytes] = {}

    def _post(self, clients, k: int, body: dict[str, Any]) -> tuple[bool, str]:
        """POST, retrying transport errors and 5xx on the next nodes; (accepted, reason)."""
        import httpx

        last = ""
        for attempt in range(2 * len(clients) + 2):
            c = clients[(k + attempt) % len(clients)]
            try:
                r = c.post_event(body)
            except httpx.HTTPError as e:
                last = f"{c.url}: {type(e).__name__}"
            else:
                if r.status_code == 202:
                    return True, ""
                if 400 <= r.status_code < 500:
                    try:
                        j = r.json()
                        return False, f"{j.get('error')}: {j.get('detail')}"
                    except ValueError:
                        return False, f"HTTP {r.status_code}"
                last = f"{c.url}: HTTP {r.status_code}"
            with self.stats.lock:
                self.stats.post_errors += 1
            if self.stop_ev.wait(min(0.1 * (attempt + 1), 1.0)):
                break
        return False, f"unreachable ({last})"

    def _poster(self, k: int) -> None:
        from node.server.client import NodeClient

        clients = [NodeClient(u, timeout=10.0) for u in self.urls]
        n = k
        try:
            while True:
                item = self.q.get()
                if item is None:
                    return
                h, body = item
                n += 1
                ok, reason = (False, "") if self.stop_ev.is_set() else self._post(clients, n, body)
                if not ok:
                    with self.stats.lock:
                        self.stats.posted.pop(h, None)
                        if reason:
                            self.stats.rejected[reason] += 1
        finally:
            for c in clients:
                c.close()

    def _send(self, h: bytes, body: dict[str, Any], kind: int) -> None:
        now = time.monotonic()
        with self.stats.lock:
            self.stats.posted[h] = now
            self.stats.kinds[h] = kind
            if self.stats.first_post is None:
                self.stats.first_post = now
        self.q.put((h, body))

    def run(self) -> None:
        for t in self.posters:
            t.start()
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e
        finally:
            for _ in self.posters:
                self.q.put(None)
            for t in self.posters:
                t.join(15)

    def _pace(self, sent: int, t0: float, batch: int = 1) -> bool:
        """Wait for the rate and the in-flight bound (counting the `batch` about to be posted, which
        may alone exceed the bound); False once stopped."""
        while not self.stop_ev.is_set():
            if self.rate > 0 and sent > 0:
                due = t0 + sent / self.rate
                if time.monotonic() < due:
                    self.stop_ev.wait(min(due - time.monotonic(), 0.2))
                    continue
            if self.stats.pending() + batch <= max(self.max_inflight, batch):
                return True
            self.stop_ev.wait(0.01 if batch > 1 else 0.02)
        return False

    def _run(self) -> None:
        t0, sent = time.monotonic(), 0
        for a, s in self.joins:
            if not self._pace(sent, t0):
                return
            h, body = self.authors[a].event(self.streams[s], KIND_JOIN, b"")
            self.join_hash[(a, s)] = h
            self._send(h, body, KIND_JOIN)
            sent += 1
        i = 0
        while self.total is None or sent < self.total:
            # MESSAGEs only from authors whose JOIN of that stream is committed
            ready = [p for p, h in self.join_hash.items() if h in self.stats.latency]
            if not ready:
                if self.join_hash and all(h not in self.stats.posted for h in self.join_hash.values()):
                    return  # every JOIN was refused: nothing can follow
                if self.stop_ev.wait(0.05):
                    return
                continue
            if not self._pace(sent, t0):
                return
            a, s = ready[i % len(ready)]
            payload = f"hello #{i} from client {a}".encode()
            h, body = self.authors[a].event(self.streams[s], KIND_MESSAGE, payload)
            self._send(h, body, KIND_MESSAGE)
            sent += 1
            i += 1


# ---------------------------------------------------------------------------------------------------
# chain watcher: MiniblockCommitted logs -> blocks fetched from the nodes -> our events' latency


class Watcher:
    def __init__(self, stats: Stats, registry, node_urls: list[str], from_block: int) -> None:
        import httpx

        self.stats, self.reg, self.from_block = stats, registry, from_block
        self.http = httpx.Client(timeout=5.0, trust_env=False)
        self.urls = node_urls
        self.todo: list[tuple[bytes, int, float, int]] = []  # (stream, number, seen at, tries)
        self._rr = 0

    def close(self) -> None:
        self.http.close()

    def poll(self) -> None:
        to = self.reg.block_number()
        if to >= self.from_block:
            seen = time.monotonic()
            committed = self.reg.committed_logs(self.from_block, to)
            rejected = self.reg.rejected_logs(self.from_block, to)
            txs = {c.tx_hash for c in committed} | {r.tx_hash for r in rejected}
            gas = sum(self.reg.receipt(t).gas_used for t in txs)
            with self.stats.lock:
                self.stats.commit_txs += len(txs)
                self.stats.commit_gas += gas
                for c in committed:
                    self.stats.blocks[c.stream_id] += 1
                    self.stats.block_events[c.stream_id] += c.event_count
                    self.stats.heads[c.stream_id] = max(self.stats.heads.get(c.stream_id, 0), c.number)
                for r in rejected:
                    self.stats.rejected_headers[r.reason_name] += 1
            self.todo += [(c.stream_id, c.number, seen, 0) for c in committed if c.event_count]
            self.from_block = to + 1
        self._fetch()

    def _fetch(self) -> None:
        import httpx

        left = []
        for sid, n, seen, tries in self.todo:
            url = self.urls[(self._rr + tries) % len(self.urls)]
            self._rr += 1
            try:
                r = self.http.get(f"{url}/v1/streams/0x{sid.hex()}/blocks/{n}", params={"events": "false"})
            except httpx.HTTPError:
                r = None
            if r is None or r.status_code != 200:
                left.append((sid, n, seen, tries + 1))  # that node has not applied it yet: ask again
                continue
            hashes = [bytes.fromhex(h[2:]) for h in r.json()["event_hashes"]]
            with self.stats.lock:
                for h in hashes:
                    t = self.stats.posted.get(h)
                    if t is not None and h not in self.stats.latency:
                        self.stats.latency[h] = max(seen - t, 0.0)
                        self.stats.last_commit = seen
        self.todo = left


# ---------------------------------------------------------------------------------------------------
# display


def _short(x: str, n: int = 10) -> str:
    return x[:n] + "…" if len(x) > n + 1 else x


def render(stats: Stats, info: dict[str, Any], done_note: str = ""):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    with stats.lock:
        lat = stats.latencies_ms()
        sub, com, el = stats.submitted, stats.committed, stats.elapsed()
        t = Table(title="streams", title_justify="left", expand=False)
        for col, j in (("stream", "left"), ("replicas", "left"), ("head", "right"),
                       ("blocks (this run)", "right"), ("events in blocks", "right")):
            t.add_column(col, justify=j)  # type: ignore[arg-type]
        for sid in stats.streams:
            reps = ", ".join(_short(r, 8) for r in info["replicas"].get(sid, []))
            t.add_row(_short("0x" + sid.hex(), 12), reps, str(stats.heads.get(sid, 0)), str(stats.blocks[sid]),
                      str(stats.block_events[sid]))
        gph = stats.gas_per_header()
        rej = sum(stats.rejected.values())
        rejh = sum(stats.rejected_headers.values())
        rejwhy = ", ".join(f"{n} {r}" for r, n in sorted(stats.rejected_headers.items()))
        txs = stats.commit_txs
    rate = com / el if el > 0 and com else 0.0
    def fmt(v):
        return ("-" if v is None else f"{v:,.0f} ms")
    lines = [
        Text.assemble(("events   ", "bold"), (f"{com:,}", "bold green"), f" committed / {sub:,} submitted",
                      f"  ({sub - com:,} pending" + (f", {rej} refused" if rej else "") + ")",
                      f"   {rate:,.1f} ev/s over {el:,.1f}s"),
        Text.assemble(("blocks   ", "bold"), f"{sum(stats.blocks.values()):,} committed",
                      f" (+{rejh} rejected: {rejwhy})" if rejh else "",
                      f"   {txs:,} commit txs   gas/header " + ("-" if gph is None else f"{gph:,}")),
        Text.assemble(("latency  ", "bold"), f"p50 {fmt(lat['p50'])}   p99 {fmt(lat['p99'])}",
                      ("   (client post -> header on chain)", "dim")),
    ]
    parts = [t, *lines]
    if done_note:
        parts.append(Text(done_note, style="bold"))
    return Group(*parts)


# ---------------------------------------------------------------------------------------------------
# set-up


def _fund(sender, addresses: list[str], wei: int) -> None:
    """Plain value transfers from the deployer (nodes pay for their own commit transactions)."""
    hashes = [sender.transfer(a, wei, wait=False) for a in addresses]
    for h in hashes:
        if sender.wait_receipt(h).status != 1:
            raise DevnetError(f"funding transfer {h.hex()} failed")


# A tiny process that outlives the devnet only if the devnet is killed without its clean-up (SIGKILL, OOM):
# it then stops the process groups listed in the file (Anvil, the nodes: each leads its own group).
WATCHDOG = r"""
import os, signal, sys, time
parent, listing = os.getppid(), sys.argv[1]
while os.getppid() == parent:
    time.sleep(0.5)
try:
    groups = [int(x) for x in open(listing).read().split()]
except (OSError, ValueError):
    groups = []
for sig, pause in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
    for g in groups:
        try:
            os.killpg(g, sig)
        except OSError:
            pass
    time.sleep(pause)
"""


@dataclass
class Net:
    """What the devnet started (and must stop)."""

    base: Path
    own_dir: bool
    anvil: Any = None
    cluster: Any = None
    rpc_url: str = ""
    ws_url: str | None = None
    deployment: Any = None
    deployment_path: Path | None = None
    setups: list = field(default_factory=list)
    streams: list[bytes] = field(default_factory=list)
    replicas: dict[bytes, list[str]] = field(default_factory=dict)
    setup_s: float = 0.0

    watchdog: Any = None

    def start_watchdog(self) -> None:
        import subprocess

        self.watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(self.base / "children.pids")],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)

    def record_children(self) -> None:
        pids = []
        if self.anvil is not None and self.anvil.proc is not None:
            pids.append(self.anvil.proc.pid)
        if self.cluster is not None:
            pids += [p.pid for p in self.cluster.procs.values()]
        tmp = self.base / "children.pids.tmp"
        tmp.write_text(" ".join(map(str, pids)))
        os.replace(tmp, self.base / "children.pids")

    def stop(self, keep: bool) -> None:
        try:
            if self.cluster is not None:
                self.cluster.stop()
        finally:
            if self.anvil is not None:
                self.anvil.stop()
            if self.watchdog is not None:
                self.watchdog.kill()
                self.watchdog.wait(5)
            if self.own_dir and not keep:
                shutil.rmtree(self.base, ignore_errors=True)


def start_net(net: Net, *, rpc_url: str | None, account, dev: bool, n_nodes: int, n_streams: int,
              epoch_length: int, leader_timeout: int, fund_wei: int, say) -> None:
    from node.build import load_artifact
    from node.chain.anvil import Anvil
    from node.chain.deploy import deploy, parse_stream_id
    from node.chain.deployment import Deployment
    from node.chain.registry import Registry, TxSender
    from node.cluster import Cluster, prepare_nodes

    t0 = time.monotonic()
    art = load_artifact("MiniblockRegistry")
    if rpc_url is None:
        net.anvil = Anvil(log_path=net.base / "anvil.log").start()
        net.record_children()
        net.rpc_url, net.ws_url = net.anvil.http_url, net.anvil.ws_url
        say(f"anvil started: {net.rpc_url} (chain id {net.anvil.chain_id_value})")
        w3 = net.anvil.w3()
    else:
        net.rpc_url = rpc_url
        if rpc_url.startswith("http"):
            net.ws_url = "ws" + rpc_url[4:]
        w3 = _w3(rpc_url, timeout=60)
        if not w3.is_connected():
            raise DevnetError(f"cannot reach {rpc_url}")
        say(f"using the chain at {rpc_url} (chain id {w3.eth.chain_id}); it is left running")

    node_keys = [secrets.token_bytes(32) for _ in range(n_nodes)]
    net.setups = prepare_nodes(n_nodes, net.base, keys=node_keys)
    sender = TxSender(w3, account)
    _fund(sender, [s.address for s in net.setups], fund_wei)
    say(f"{n_nodes} node keys created and funded by the deployer {account.address}")
    net.streams = [parse_stream_id(f"devnet/stream-{i}") for i in range(n_streams)]
    net.deployment_path = net.base / "deployment.json"
    deploy(w3, sender, epoch_length=epoch_length, leader_timeout=leader_timeout,
           replication_factor=min(3, n_nodes), nodes=[s.spec() for s in net.setups], streams=net.streams,
           artifact=art, rpc_url=net.rpc_url, ws_url=net.ws_url, out=net.deployment_path, warp=dev,
           epoch_timeout=max(120.0, 3.0 * epoch_length), log=say)
    net.deployment = Deployment.load(net.deployment_path)
    reg = Registry(w3, net.deployment.registry, art["abi"])
    net.replicas = {s: reg.replicas_of(s) for s in net.streams}
    net.cluster = Cluster(net.deployment_path, net.setups)
    net.cluster.start()
    net.record_children()
    say(f"starting {n_nodes} node processes (python -m node run) ...")
    net.cluster.wait_healthy(timeout=90)
    net.setup_s = time.monotonic() - t0
    say(f"nodes healthy: {', '.join(net.cluster.urls)}  (set-up {net.setup_s:.1f}s)")


# ---------------------------------------------------------------------------------------------------
# the command


def main(
    rpc_url: str | None = typer.Option(
        None, "--rpc-url", help="Use this chain instead of starting Anvil (it is left running). "
        "Needs --dev (Anvil dev keys, time warped) or --keystore."),
    dev: bool = typer.Option(False, "--dev", help="With --rpc-url: it is an Anvil dev chain; deploy with its "
                             "dev account 0 (or --private-key) and warp time to the next epoch."),
    private_key: str | None = typer.Option(None, "--private-key", help="With --dev: an Anvil dev key."),
    keystore: Path | None = typer.Option(None, "--keystore", help="Deployer's encrypted JSON keystore."),
    password_env: str = typer.Option(DEFAULT_PASSWORD_ENV, "--password-env",
                                     help="Env var holding the keystore password."),
    nodes: int = typer.Option(4, "--nodes", min=1, max=64, help="Node processes to register and start."),
    streams: int = typer.Option(3, "--streams", min=1, max=256, help="Streams to create."),
    events: int | None = typer.Option(
        None, "--events", min=1, help="Post exactly E events (JOINs included), exit 0 once all are committed "
        "(non-zero with a reason if not within --timeout). Default: run until Ctrl-C."),
    clients: int = typer.Option(4, "--clients", min=1, max=1000, help="Client keys posting events."),
    rate: float = typer.Option(-1, "--rate", help="Events per second posted (0: unthrottled; "
                               "default: 50 until Ctrl-C, unthrottled with --events)."),
    max_inflight: int = typer.Option(500, "--max-inflight", min=1, help="Bound on posted, uncommitted events."),
    timeout: float = typer.Option(180.0, "--timeout", help="With --events: seconds allowed for the load."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object with the figures at the end."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Keep deployment, node data and logs "
                                            "here (default: a temporary directory, removed at exit)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temporary directory."),
    epoch_length: int = typer.Option(0, "--epoch-length", help="Seconds per epoch (default: 3600 when time can "
                                     "be warped, else 30)."),
    leader_timeout: int = typer.Option(4, "--leader-timeout", help="Seconds before the next replica may lead."),
    fund_eth: float = typer.Option(0.0, "--fund-eth", help="ETH sent to each node key for gas (default: 10 on "
                                   "dev chains, 0.05 otherwise)."),
) -> None:
    """Run a local devnet: Anvil, the registry, N nodes, streams, a load generator and live progress."""
    from rich.console import Console

    # keys: own Anvil or --dev -> Anvil dev key 0; else a keystore
    if rpc_url is None:
        if keystore:
            raise typer.BadParameter("--keystore is for --rpc-url chains; the devnet's own Anvil uses its dev keys")
        dev = True
    elif not dev and not keystore:
        raise typer.BadParameter("with --rpc-url give --keystore (deployer key; password in "
                                 f"${password_env}), or --dev if it is an Anvil dev chain")
    account = load_account(private_key=private_key, keystore=keystore, password_env=password_env, dev=dev)
    epoch_length = epoch_length or (3600 if dev else 30)
    fund_wei = int((fund_eth or (10.0 if dev else 0.05)) * 10**18)
    if rate < 0:
        rate = 0.0 if events is not None else 50.0

    out = Console(stderr=json_out, highlight=False)
    def say(s):
        return (out.print(f"[dim]devnet:[/dim] {s}", soft_wrap=True))
    own_dir = data_dir is None
    base = Path(tempfile.mkdtemp(prefix="devnet-")) if own_dir else data_dir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    net = Net(base, own_dir)

    # Ctrl-C and SIGTERM/SIGHUP end the run the same way: the finally below stops every child.
    def _term(_sig, _frm):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (`cmd &`)

    stop = threading.Event()
    loadgen: LoadGen | None = None
    watcher: Watcher | None = None
    stats = Stats([])
    interrupted = False
    failure: str | None = None
    result: dict[str, Any] = {}
    try:
        net.start_watchdog()
        say(f"data dir {base}")
        start_net(net, rpc_url=rpc_url, account=account, dev=dev, n_nodes=nodes, n_streams=streams,
                  epoch_length=epoch_length, leader_timeout=leader_timeout, fund_wei=fund_wei, say=say)
        from node.chain.registry import Registry
        from node.protocol.types import Domain

        dep = net.deployment
        reg = Registry(net.anvil.w3() if net.anvil else _w3(net.rpc_url), dep.registry, dep.abi())
        stats = Stats(list(net.streams))
        watcher = Watcher(stats, reg, net.cluster.urls, reg.block_number() + 1)
        domain = Domain(dep.chain_id, dep.registry)
        loadgen = LoadGen(stats, domain, net.cluster.urls, net.streams, clients, events, rate, max_inflight, stop)
        if not json_out:
            say(f"registry {dep.registry}; try, while it runs (./dev X = python -m node X in the venv):\n"
                f"    ./dev headers --rpc-url {net.rpc_url} --registry {dep.registry}\n"
                f"    ./dev status --node {net.cluster.urls[0]}\n"
                f"    ./dev submit --node {net.cluster.urls[0]} --stream devnet/stream-0 --key 0x… --dev --kind join\n"
                f"    ./dev explorer --rpc-url {net.rpc_url} --registry {dep.registry}")
            say(f"posting events from {clients} client keys "
                + (f"({events} events)" if events else f"at {rate:g}/s until Ctrl-C") + " ...")
        loadgen.start()
        failure = _drive(stats, net, loadgen, watcher, events, timeout, json_out, out)
    except KeyboardInterrupt:
        interrupted = True
    except DevnetError as e:
        failure = str(e)
    except Exception as e:  # noqa: BLE001 - set-up failures: say what and where the logs are
        failure = f"{type(e).__name__}: {e}"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stop.set()
        if loadgen is not None and loadgen.is_alive():
            loadgen.join(15)
        if watcher is not None:
            try:
                watcher.poll()  # last figures
            except Exception:  # noqa: BLE001
                pass
        checked = _spot_check(stats, net) if (net.cluster is not None and stats.latency) else 0
        if failure and net.cluster is not None:
            tails = "\n".join(net.cluster.log_tail(i, 15) for i in range(len(net.setups)))
            out.print(f"devnet: {failure}\n{tails}", markup=False, style="red" if not json_out else None)
        if net.deployment is not None:
            result = _result(stats, net, checked, failure, interrupted, keep or not own_dir)
        if not json_out and stats.first_post is not None:
            out.print(render(stats, {"replicas": net.replicas}))
        if watcher is not None:
            watcher.close()
        say("stopping nodes" + (" and anvil" if net.anvil else "") + " ...")
        net.stop(keep)
        if not own_dir or keep:
            say(f"kept {base}")
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if json_out:
        if not result:
            result = {"ok": False, "error": failure or "interrupted during set-up"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    elif failure:
        out.print(f"devnet failed: {failure}", markup=False, style="red")
    else:
        say("stopped cleanly")
    if failure:
        raise typer.Exit(1)
    if interrupted and events is not None:
        raise typer.Exit(130)


def _w3(url: str, timeout: float = 30):
    from node.chain.rpc import http_web3

    return http_web3(url, timeout=timeout)


def _drive(stats: Stats, net: Net, loadgen: LoadGen, watcher: Watcher, events: int | None, timeout: float,
           json_out: bool, out) -> str | None:
    """Poll the chain and refresh the display until done (--events), failed or interrupted."""
    from rich.live import Live

    t_start = time.monotonic()
    live = None
    if not json_out and out.is_terminal:
        live = Live(render(stats, {"replicas": net.replicas}), console=out, refresh_per_second=4, transient=True)
        live.start()
    last_line = 0.0
    try:
        while True:
            watcher.poll()
            for i in range(len(net.setups)):
                if not net.cluster.running(i):
                    return f"node {i} exited unexpectedly (log: {net.setups[i].data_dir / 'node.log'})"
            if loadgen.error is not None:
                return f"load generator failed: {loadgen.error!r}"
            now = time.monotonic()
            if live is not None:
                live.update(render(stats, {"replicas": net.replicas}))
            elif not json_out and now - last_line > 5:
                last_line = now
                for r in render(stats, {"replicas": net.replicas}).renderables[1:]:
                    out.print(r, soft_wrap=True)
            if events is not None:
                with stats.lock:
                    refused = sum(stats.rejected.values())
                    reasons = "; ".join(f"{n}x {r}" for r, n in stats.rejected.items())
                    done = stats.committed
                if refused:
                    return f"{refused} of {events} events were refused by the nodes ({reasons})"
                if done >= events:
                    return None
                if now - t_start > timeout:
                    return (f"timeout: {done} of {events} events committed after {timeout:.0f}s "
                            f"({stats.submitted} submitted)")
            time.sleep(0.2)
    finally:
        if live is not None:
            live.stop()


def _spot_check(stats: Stats, net: Net, n: int = 5) -> int:
    """Read a few committed events back through GET /v1/events/{hash} and check their Merkle proofs."""
    import httpx

    from node.protocol.merkle import verify_proof

    with stats.lock:
        sample = random.sample(sorted(stats.latency), min(n, len(stats.latency)))
    ok = 0
    for k, h in enumerate(sample):
        url = net.cluster.urls[k % len(net.cluster.urls)]
        try:
            r = httpx.get(f"{url}/v1/events/0x{h.hex()}", timeout=5, trust_env=False)
            j = r.json()
        except (httpx.HTTPError, ValueError):
            continue
        if r.status_code == 200 and j.get("status") == "committed":
            root = bytes.fromhex(j["header"]["events_root"][2:])
            proof = [bytes.fromhex(p[2:]) for p in j["proof"]]
            if verify_proof(root, j["header"]["event_count"], j["index"], h, proof):
                ok += 1
    return ok


def _result(stats: Stats, net: Net, checked: int, failure: str | None, interrupted: bool,
            keep: bool) -> dict[str, Any]:
    dep = net.deployment
    with stats.lock:
        el = stats.elapsed()
        return {
            "ok": failure is None,
            "error": failure,
            "interrupted": interrupted,
            "chain_id": dep.chain_id,
            "rpc_url": net.rpc_url,
            "registry": dep.registry,
            "deployment": str(net.deployment_path) if keep else None,
            "node_urls": list(net.cluster.urls) if net.cluster else [],
            "nodes": len(net.setups),
            "streams": [{"stream_id": "0x" + s.hex(), "replicas": net.replicas.get(s, []),
                         "head": stats.heads.get(s, 0), "miniblocks": stats.blocks[s],
                         "events": stats.block_events[s]} for s in net.streams],
            "events_submitted": stats.submitted,
            "events_committed": stats.committed,
            "events_refused": sum(stats.rejected.values()),
            "joins_committed": sum(1 for h in stats.latency if stats.kinds.get(h) == KIND_JOIN),
            "miniblocks": stats.headers_committed(),
            "headers_rejected": dict(stats.rejected_headers),
            "commit_txs": stats.commit_txs,
            "elapsed_s": round(el, 3),
            "events_per_s": round(stats.committed / el, 2) if stats.committed else 0.0,
            "commit_latency_ms": stats.latencies_ms(),
            "gas_per_header": stats.gas_per_header(),
            "status_checked": checked,
            "setup_s": round(net.setup_s, 2),
        }
