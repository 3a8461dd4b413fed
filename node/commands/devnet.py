"""`python -m node devnet`: a whole local network in one command, with a load generator and live figures.

With no flags it starts its own Anvil (node_modules), deploys the registry, registers N nodes (fresh keys,
funded by the deployer, each in an encrypted keystore), creates S streams, starts the nodes as separate
`python -m node run` processes (node.devnet.network), then drives a bounded load through the nodes' HTTP API:
every client key first JOINs every stream, and once its JOIN is committed (a JOIN in block n lets its
author post MESSAGEs from block n + 1 on, docs/protocol.md) it posts MESSAGEs. Progress is read from
the chain (MiniblockCommitted logs) and the nodes (the committed blocks' event lists); commit latency is
client post -> the header carrying the event seen committed on chain, measured here, client side. The parts
(network set-up, load generator, watcher, display, watchdog) are in node/devnet/; this module is the command.

Keys: on its own Anvil (and with ``--rpc-url URL --dev``) the deployer is Anvil's dev account 0.
``--rpc-url`` without ``--dev`` needs ``--keystore`` (password in $MINIBLOCK_KEYSTORE_PASSWORD, or the
variable named by --password-env); time is then never warped, the devnet waits for the epoch boundary
(node joins take effect at the next epoch). The chain named by --rpc-url is left running.
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from node.commands.deploy import DEFAULT_PASSWORD_ENV, load_account, registry_version

if TYPE_CHECKING:  # the command's body imports them: `python -m node --help` stays light
    from rich.console import Console

    from node.devnet.loadgen import LoadGen
    from node.devnet.network import Network
    from node.devnet.stats import Stats
    from node.devnet.watcher import Watcher


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
    chain: str = typer.Option("anvil", "--chain", help="The dev chain to start: anvil, or hardhat (npm hardhat@2: "
                              "node_modules/.bin/hardhat or $HARDHAT_BIN)."),
    block_time: float | None = typer.Option(None, "--block-time", min=0.1, help="Seconds per chain block (a real "
                                            "chain's cadence; default: automine, a block per transaction)."),
    registry: str = typer.Option("v2", "--registry", help="The registry to deploy: v2 (MiniblockRegistryV2: packed "
                                 "commits, ~19-27k gas per header in full batches) or v1 (MiniblockRegistry)."),
) -> None:
    """Run a local devnet: Anvil, the registry, N nodes, streams, a load generator and live progress."""
    from rich.console import Console

    from node.chain.deploy import parse_stream_id
    from node.devnet.loadgen import LoadGen
    from node.devnet.network import Network, NetworkError
    from node.devnet.render import render
    from node.devnet.stats import Stats
    from node.devnet.watcher import Watcher

    if chain not in ("anvil", "hardhat"):
        raise typer.BadParameter("--chain is anvil or hardhat")
    if rpc_url is not None and (chain != "anvil" or block_time is not None):
        raise typer.BadParameter("--chain / --block-time choose the chain the devnet starts; not with --rpc-url")
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

    def say(s: str) -> None:
        out.print(f"[dim]devnet:[/dim] {s}", soft_wrap=True)

    own_dir = data_dir is None
    base = Path(tempfile.mkdtemp(prefix="devnet-")) if data_dir is None else data_dir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    net = Network(base, n_nodes=nodes, streams=[parse_stream_id(f"devnet/stream-{i}") for i in range(streams)],
                  epoch_length=epoch_length, leader_timeout=leader_timeout, rpc_url=rpc_url, account=account,
                  warp=dev, node_keys=[secrets.token_bytes(32) for _ in range(nodes)], fund_wei=fund_wei,
                  watchdog=True, read_replicas=True, health_timeout=90, chain=chain, block_time=block_time,
                  registry_version=registry_version(registry))

    # Ctrl-C and SIGTERM/SIGHUP end the run the same way: the finally below stops every child.
    def _term(_sig: int, _frm: FrameType | None) -> None:
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
        say(f"data dir {base}")
        net.start(log=say)
        reg = net.registry()
        stats = Stats(list(net.streams))
        watcher = Watcher(stats, reg, net.urls, reg.block_number() + 1)
        loadgen = LoadGen(stats, net.domain, net.urls, list(net.streams), clients=clients, total=events, rate=rate,
                          max_inflight=max_inflight, stop=stop)
        if not json_out:
            registry = net.deployment.registry if net.deployment else ""
            say(f"registry {registry}; try, while it runs (./dev X = python -m node X in the venv):\n"
                f"    ./dev headers --rpc-url {net.rpc_url} --registry {registry}\n"
                f"    ./dev status --node {net.urls[0]}\n"
                f"    ./dev submit --node {net.urls[0]} --stream devnet/stream-0 --key 0x… --dev --kind join\n"
                f"    ./dev explorer --rpc-url {net.rpc_url} --registry {registry} --node {net.urls[0]}")
            say(f"posting events from {clients} client keys "
                + (f"({events} events)" if events else f"at {rate:g}/s until Ctrl-C") + " ...")
        loadgen.start()
        failure = _drive(stats, net, loadgen, watcher, events, timeout, json_out, out)
    except KeyboardInterrupt:
        interrupted = True
    except NetworkError as e:
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
            except Exception:  # noqa: BLE001 - best effort: the chain may be gone; the figures so far stand
                pass
        checked = _spot_check(stats, net) if (net.cluster is not None and stats.latency) else 0
        if failure and net.cluster is not None:
            tails = "\n".join(net.cluster.log_tail(i, 15) for i in range(len(net.setups)))
            out.print(f"devnet: {failure}\n{tails}", markup=False, style="red" if not json_out else None)
        if net.deployment is not None:
            result = _result(stats, net, checked, failure, interrupted, keep or not own_dir)
        if not json_out and stats.first_post is not None:
            out.print(render(stats, net.replicas))
        if watcher is not None:
            watcher.close()
        say("stopping nodes" + (f" and {chain}" if net.anvil else "") + " ...")
        net.stop()
        if own_dir and not keep:
            shutil.rmtree(base, ignore_errors=True)
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


def _drive(stats: Stats, net: Network, loadgen: LoadGen, watcher: Watcher, events: int | None, timeout: float,
           json_out: bool, out: Console) -> str | None:
    """Poll the chain and refresh the display until done (--events), failed or interrupted."""
    from rich.live import Live

    from node.devnet.render import render

    assert net.cluster is not None
    t_start = time.monotonic()
    live = None
    if not json_out and out.is_terminal:
        live = Live(render(stats, net.replicas), console=out, refresh_per_second=4, transient=True)
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
                live.update(render(stats, net.replicas))
            elif not json_out and now - last_line > 5:
                last_line = now
                for r in render(stats, net.replicas).renderables[1:]:
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


def _spot_check(stats: Stats, net: Network, n: int = 5) -> int:
    """Read a few committed events back through GET /v1/events/{hash} and check their Merkle proofs."""
    import httpx

    from node.protocol.hexutil import hx, unhex
    from node.protocol.merkle import verify_proof

    with stats.lock:
        sample = random.sample(sorted(stats.latency), min(n, len(stats.latency)))
    ok = 0
    for k, h in enumerate(sample):
        j: dict = {}
        for d in range(len(net.urls)):  # a node stores only the streams it replicates: the first that has it
            url = net.urls[(k + d) % len(net.urls)]
            try:
                r = httpx.get(f"{url}/v1/events/{hx(h)}", timeout=5, trust_env=False)
                j = r.json() if r.status_code == 200 else {}
            except (httpx.HTTPError, ValueError):
                continue
            if j.get("status") == "committed":
                break
        if j.get("status") == "committed":
            root = unhex(j["header"]["events_root"])
            proof = [unhex(p) for p in j["proof"]]
            if verify_proof(root, j["header"]["event_count"], j["index"], h, proof):
                ok += 1
    return ok


def _result(stats: Stats, net: Network, checked: int, failure: str | None, interrupted: bool,
            keep: bool) -> dict[str, Any]:
    from node.devnet.loadgen import KIND_JOIN
    from node.protocol.hexutil import hx

    dep = net.deployment
    assert dep is not None
    with stats.lock:
        el = stats.elapsed()
        return {
            "ok": failure is None,
            "error": failure,
            "interrupted": interrupted,
            "chain_id": dep.chain_id,
            "rpc_url": net.rpc_url,
            "chain": net.chain if net.anvil is not None else None,
            "block_time": net.block_time,
            "registry": dep.registry,
            "registry_version": dep.registry_version,
            "deployment": str(net.deployment_path) if keep else None,
            "node_urls": net.urls if net.cluster else [],
            "nodes": len(net.setups),
            "streams": [{"stream_id": hx(s), "replicas": net.replicas.get(s, []),
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
            "gas_per_event": stats.gas_per_event(),
            "status_checked": checked,
            "setup_s": round(net.setup_s, 2),
        }
