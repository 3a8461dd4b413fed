"""Wiring: build a Node from its config, serve the API, run the loops (watcher, producer, gossip,
replica upkeep). `run(cfg)` is what `python -m node run` calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from eth_account import Account

from node.chain.client import RegistryClient
from node.protocol.registry import RegistryParams
from node.protocol.types import Domain

from .api import BodyLimit, build_api
from .config import NodeConfig
from .core import Node
from .intake import gossip_loop
from .keys import load_onion, load_private_key
from .peer_auth import Concurrency, install
from .peers import Peers
from .producer import produce_loop
from .replicas import upkeep_loop
from .storage import Storage
from .watcher import init_heads, poll_once, watch_loop, ws_loop

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
        try:
            abi = dep.abi()
        except (OSError, ValueError, KeyError):
            abi = None
    cfg.rpc_url = cfg.rpc_url or "http://127.0.0.1:8545"
    if registry is None:
        raise SystemExit("no registry: give --deployment FILE or --registry ADDRESS")
    if abi is None:
        from node.chain.abi import load_abi

        abi = load_abi(None)
    return registry, chain_id, abi, ws


async def build_node(cfg: NodeConfig) -> Node:
    key = load_private_key(cfg)
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    onion = load_onion(cfg)
    registry, chain_id, abi, _ws = resolve_chain(cfg)
    assert cfg.rpc_url is not None  # resolve_chain set it
    chain = RegistryClient.for_node(cfg.rpc_url, registry, abi, Account.from_key(key))
    actual = await chain.get_chain_id()
    if chain_id is not None and chain_id != actual:
        raise SystemExit(f"chain id mismatch: deployment says {chain_id}, {cfg.rpc_url} is {actual}")
    params = RegistryParams.from_mapping(await chain.params())
    await chain.latest_block()
    storage = Storage(Path(cfg.data_dir) / "node.sqlite", cfg.sqlite_sync)
    node = Node(cfg=cfg, key=key, onion=onion, storage=storage, chain=chain, peers=Peers(cfg.peer_timeout_s),
                domain=Domain(actual, registry), params=params)
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
            onion.position(rec.randao_commit)
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
    await init_heads(node)
    try:
        await poll_once(node)
    except Exception as exc:  # noqa: BLE001 - any failure: the watch loop scans again
        log.warning("first chain scan failed: %s", exc)
    api = install(node, build_api(node))  # /peer/* authenticated; outgoing peer requests signed
    app = Concurrency(BodyLimit(api, cfg.max_body), cfg.max_concurrent_client, cfg.max_concurrent_peer)
    server = _Server(uvicorn.Config(app, host=cfg.host, port=cfg.port,
                                           log_level="warning", access_log=False, lifespan="off",
                                           timeout_keep_alive=30, timeout_graceful_shutdown=2))
    tasks = [asyncio.create_task(c, name=n) for n, c in (
        ("watch", watch_loop(node)), ("ws", ws_loop(node)), ("produce", produce_loop(node)),
        ("gossip", gossip_loop(node)), ("upkeep", upkeep_loop(node)))]
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
    await node.peers.close()
    await node.chain.rpc.close()
    node.storage.close()
    log.info("node %s stopped", node.me)


class _Server(uvicorn.Server):
    """SIGINT/SIGTERM are the node's (its loops stop first, then HTTP), not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run(cfg: NodeConfig) -> None:
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    prof_path = os.environ.get("NODE_PROFILE")  # operator aid: write cProfile stats here on exit
    if not prof_path:
        asyncio.run(serve(cfg))
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        asyncio.run(serve(cfg))
    finally:
        prof.disable()
        prof.dump_stats(f"{prof_path}.{cfg.port}")
