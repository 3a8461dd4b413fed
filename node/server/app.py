"""Wiring: build a Node from its config, serve the API, run the loops (watcher, producer, gossip,
replica upkeep). `run(cfg)` is what `python -m node run` calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import uvicorn
from eth_account import Account

from node.chain.client import RegistryClient
from node.chain.rpc import RegistryError, RpcError, RpcUnavailable
from node.chain.tx import FeePolicy
from node.protocol import v2
from node.protocol.registry import RegistryParams
from node.protocol.types import Domain

from .aggregate import Aggregator
from .api import BodyLimit, build_api
from .config import NodeConfig
from .core import Node
from .handoff import handoff_on_stop
from .intake import gossip_loop
from .keys import load_onion, load_private_key
from .peer_auth import Concurrency, install
from .peers import Peers
from .producer import produce_loop
from .replicas import upkeep_loop
from .storage import Storage
from .watcher import init_heads, watch_loop, ws_loop

log = logging.getLogger("node")


def resolve_chain(cfg: NodeConfig) -> tuple[str, int | None, list, str | None]:
    """(registry address, chain id, ABI, ws url) from the deployment file and/or the config."""
    registry, chain_id, ws = cfg.registry, cfg.chain_id, cfg.ws_url
    abi = None
    if cfg.deployment is not None:
        from node.chain.deployment import Deployment

        dep = Deployment.load(cfg.deployment)
        registry = registry or dep.registry
        chain_id = chain_id or dep.chain_id
        cfg.rpc_url = cfg.rpc_url or dep.rpc_url
        cfg.ws_url = ws = ws or dep.ws_url
        if cfg.start_block == 0:
            cfg.start_block = dep.deploy_block
        if cfg.registry_version is None:
            cfg.registry_version = dep.registry_version
        elif cfg.registry_version != dep.registry_version:
            raise SystemExit(f"registry_version {cfg.registry_version}, but the deployment is of "
                             f"v{dep.registry_version}")
        try:
            abi = dep.abi()
        except (OSError, ValueError, KeyError):
            abi = None
    cfg.rpc_url = cfg.rpc_url or "http://127.0.0.1:8545"
    if registry is None:
        raise SystemExit("no registry: give --deployment FILE or --registry ADDRESS")
    from node.chain.abi import abi_version, load_abi

    if abi is None or (cfg.registry_version is not None and abi_version(abi) != cfg.registry_version):
        abi = load_abi(None, cfg.registry_version or 1)
    return registry, chain_id, abi, ws


async def connect_chain(cfg: NodeConfig, registry: str, chain_id: int | None, abi: list,
                        key: bytes) -> tuple[RegistryClient, int, RegistryParams]:
    """The chain client, checked before anything is stored: the endpoint answers JSON-RPC (waited for with
    back-off up to `chain_wait_s`: a chain restarting, an RPC that hangs or answers garbage), it is the
    expected chain, and a MiniblockRegistry is at the address. Otherwise a clear SystemExit, so a
    supervisor restarting the node does not loop fast and no store is touched."""
    urls = cfg.endpoints()
    fees = FeePolicy.gwei(cfg.max_fee_gwei, replace_after_s=cfg.tx_replace_s)
    chain = RegistryClient.for_node(urls, registry, abi, Account.from_key(key), rpc_timeout=cfg.rpc_timeout_s,
                                    rpc_retries=cfg.rpc_retries, fees=fees)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.chain_wait_s
    delay = 0.5
    while True:
        try:
            actual = await chain.get_chain_id()
            break
        except RpcUnavailable as exc:
            if loop.time() + delay > deadline:
                raise StartupError(f"the chain at {', '.join(urls)} gave no JSON-RPC answer within "
                                   f"{cfg.chain_wait_s:g}s: {exc}") from exc
            log.warning("chain not answering (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        except RpcError as exc:
            raise StartupError(f"{chain.rpc.url} is not an Ethereum JSON-RPC endpoint: {exc}") from exc
    if chain_id is not None and chain_id != actual:
        raise StartupError(f"chain id mismatch: the deployment says {chain_id}, {chain.rpc.url} is chain {actual}")
    if not await chain.code_at():
        raise StartupError(f"no contract at the registry address {registry} on chain {actual} ({chain.rpc.url}): "
                           "a wrong address, or the wrong chain")
    try:
        params = RegistryParams.from_mapping(await chain.params())
        version = int((await chain.domain()).version)
    except (RegistryError, ValueError) as exc:  # RpcUnavailable included: the checks above just got answers
        raise StartupError(f"the contract at {registry} does not answer as a MiniblockRegistry: {exc}") from exc
    if version != chain.version:
        if cfg.registry_version is not None:
            raise StartupError(f"the registry at {registry} is version {version} (its eip712Domain), "
                               f"not {cfg.registry_version} as configured")
        from node.chain.abi import load_abi  # no version given: speak the one the chain has

        chain = RegistryClient.for_node(urls, registry, load_abi(None, version), Account.from_key(key),
                                        rpc_timeout=cfg.rpc_timeout_s, rpc_retries=cfg.rpc_retries, fees=fees)
        await chain.get_chain_id()
    cfg.registry_version = version
    await chain.latest_block()
    return chain, actual, params


class StartupError(SystemExit):
    """A start-up check failed: the message (on stderr, exit code 1) says what to fix."""

    def __init__(self, message: str) -> None:
        log.error("%s", message)
        super().__init__(f"node: {message}")


IDENTITY_KEY = "chain_identity"


def check_store(storage: Storage, chain_id: int, registry: str, data_dir: Path) -> None:
    """A data dir serves one registry on one chain: refuse to mix another's state into it."""
    ident = f"{chain_id}:{registry.lower()}"
    old = storage.get_kv(IDENTITY_KEY)
    if old is None:
        storage.set_kv(IDENTITY_KEY, ident)
    elif old != ident:
        storage.close()
        raise StartupError(f"{data_dir} holds the state of chain:registry {old}, not {ident}; use another data_dir")


async def build_node(cfg: NodeConfig) -> Node:
    key = load_private_key(cfg)
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    onion = load_onion(cfg)
    registry, chain_id, abi, _ws = resolve_chain(cfg)
    assert cfg.rpc_url is not None  # resolve_chain set it
    chain, actual, params = await connect_chain(cfg, registry, chain_id, abi, key)
    storage = Storage(Path(cfg.data_dir) / "node.sqlite", cfg.sqlite_sync)
    check_store(storage, actual, registry, Path(cfg.data_dir))
    # the registry's own EIP-712 domain (eip712Domain: version "1" or "2"), for headers, events and peers
    domain = await chain.domain()
    node = Node(cfg=cfg, key=key, onion=onion, storage=storage, chain=chain, peers=Peers(cfg.peer_timeout_s),
                domain=Domain(actual, registry, domain.name, domain.version), params=params)
    node.metrics.watch_chain(chain.rpc.stats, chain.sender.stats if chain.sender else None)
    node.aggregator = Aggregator(node)
    await node.refresh_nodes()
    rec = node.view.nodes.get(node.me)
    if rec is None and cfg.self_register:
        await self_register(node)
        rec = node.view.nodes.get(node.me)
    if rec is None:
        log.warning("%s is not registered in the registry: it serves and forwards but never leads or attests",
                    node.me)
    else:
        try:
            onion.position(rec.randao_commit, v2.COMMIT_PREFIX_BYTES if chain.version == 2 else 32)
        except ValueError:
            log.error("the on-chain RANDAO commitment of %s is not a layer of the onion in %s: it cannot lead",
                      node.me, cfg.data_dir)
    return node


async def self_register(node: Node) -> None:
    """registerNode(me, public_url, onion commitment), sent by the node itself as its own operator."""
    cfg = node.cfg
    url = cfg.public_url or f"http://{cfg.host}:{cfg.port}"
    if not await node.chain.is_operator(node.me):
        log.error("self_register: %s is not an allowed operator; ask the registry owner (allowOperator)", node.me)
        return
    rc = await node.chain.register_node(node.me, url, node.onion.commitment, check=False)
    log.info("self_register: registered %s at %s (tx status %s); active from the next epoch", node.me, url,
             rc.status)
    await node.refresh_nodes()


async def serve(cfg: NodeConfig) -> None:
    node = await build_node(cfg)
    # Heads and replicas from the store, then HTTP at once: the watch loop's first round scans the logs since
    # the stored cursor and syncs what is behind; /healthz answers 503 until that round is done (`ready`),
    # and the loops that lead, forward and replace replicas start only then (as they did after a scan
    # made before HTTP, when a restart read two views per stream first).
    await init_heads(node)
    api = install(node, build_api(node))  # /peer/* authenticated; outgoing peer requests signed
    app = Concurrency(BodyLimit(api, cfg.max_body), cfg.max_concurrent_client, cfg.max_concurrent_peer)
    server = _Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, http=http_impl(cfg.http),
                                    log_level="warning", access_log=False, lifespan="off",
                                    timeout_keep_alive=30, timeout_graceful_shutdown=2))
    assert node.aggregator is not None  # build_node made it
    tasks = [asyncio.create_task(c, name=n) for n, c in (
        ("watch", watch_loop(node)), ("ws", ws_loop(node)), ("produce", once_ready(node, produce_loop)),
        ("gossip", once_ready(node, gossip_loop)), ("upkeep", once_ready(node, upkeep_loop)),
        ("aggregate", node.aggregator.loop()))]
    # Events accepted before a restart and not yet forwarded are forwarded again (gossiped flag).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    srv = asyncio.create_task(server.serve(), name="http")
    log.info("node %s serving on http://%s:%d (registry %s)", node.me, cfg.host, cfg.port, node.chain.address)
    await asyncio.wait([srv, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    node.stopping = True
    server.should_exit = True
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(srv, timeout=5)
    await handoff_on_stop(node)  # a node stopped before its leave hands off what it alone may hold
    await node.peers.close()
    await node.chain.rpc.close()
    node.storage.close()
    log.info("node %s stopped", node.me)


async def once_ready(node: Node, loop_fn: Callable[[Node], Awaitable[None]]) -> None:
    """Run a loop once the first chain round is done (`node.ready`): it then sees the chain's heads."""
    while not node.ready and not node.stopping:
        await asyncio.sleep(0.05)
    if not node.stopping:
        await loop_fn(node)


class _Server(uvicorn.Server):
    """SIGINT/SIGTERM are the node's (its loops stop first, then HTTP), not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def http_impl(choice: str) -> str:
    """uvicorn's HTTP/1.1 parser: httptools (C, llhttp) when installed or named, else h11 (pure Python)."""
    if choice == "auto":
        return "httptools" if _installed("httptools") else "h11"
    if not _installed(choice):
        raise StartupError(f"http = {choice!r}, but the {choice} package is not installed")
    return choice


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the node runs on: uvloop (libuv) when installed or named, else asyncio's own (None).
    The node makes its loop itself (asyncio.Runner), so uvicorn's own `loop` setting would not apply."""
    if choice == "asyncio" or (choice == "auto" and not _installed("uvloop")):
        return None
    if not _installed("uvloop"):
        raise StartupError("event_loop = 'uvloop', but the uvloop package is not installed")
    import uvloop

    return uvloop.new_event_loop


def _run(cfg: NodeConfig) -> None:
    factory = loop_factory(cfg.event_loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        log.info("event loop %s, HTTP parser %s", type(runner.get_loop()).__module__.split(".")[0],
                 http_impl(cfg.http))
        runner.run(serve(cfg))


def run(cfg: NodeConfig) -> None:
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    prof_path = os.environ.get("NODE_PROFILE")  # operator aid: write cProfile stats here on exit
    if not prof_path:
        _run(cfg)
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        _run(cfg)
    finally:
        prof.disable()
        prof.dump_stats(f"{prof_path}.{cfg.port}")
