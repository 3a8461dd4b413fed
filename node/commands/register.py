"""Operator commands for a shared chain: `python -m node register` and `python -m node create-stream`.

    # on the node's machine, once: the node's RANDAO hash onion is created in its data dir,
    # and the operator (allow-listed by the registry owner) registers the node with the onion's commitment
    python -m node register --rpc-url URL --registry ADDR --node-keystore node-key.json \\
        --url https://node1.example.org --data-dir node-data --keystore operator.json

    python -m node create-stream --rpc-url URL --registry ADDR --stream general --keystore me.json

Keys as for `deploy`: an encrypted keystore (password in $MINIBLOCK_KEYSTORE_PASSWORD or --password-env),
or --dev with an Anvil dev key. A node registered in epoch e becomes active at the start of e + 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from node.commands.deploy import DEFAULT_PASSWORD_ENV, load_account
from node.protocol.registry import RegistryParams, epoch_starts_at


def _registry(rpc_url: str, registry: str, account):
    from node.chain.abi import load_abi
    from node.chain.registry import Registry
    from node.chain.rpc import http_web3

    w3 = http_web3(rpc_url, timeout=60)
    if not w3.is_connected():
        typer.echo(f"cannot reach {rpc_url}", err=True)
        raise typer.Exit(2)
    return Registry(w3, registry, load_abi(), account)


def node_address(node: str | None, node_keystore: Path | None, password_env: str = "NODE_KEY_PASSWORD") -> str:
    """From --node, or the keystore's `address` field, else by decrypting it (password in $password_env)."""
    import os

    from eth_account import Account
    from eth_utils import is_address, to_checksum_address

    if node:
        if not is_address(node):
            raise typer.BadParameter(f"--node {node!r} is not an address")
        return to_checksum_address(node)
    if node_keystore is None:
        raise typer.BadParameter("give --node-keystore FILE (its address is read, not its key) or --node ADDRESS")
    try:
        blob = json.loads(node_keystore.read_text())
    except (OSError, ValueError) as e:
        raise typer.BadParameter(f"cannot read {node_keystore}: {e}") from None
    addr = blob.get("address")
    if addr:
        return to_checksum_address(addr if addr.startswith("0x") else "0x" + addr)
    password = os.environ.get(password_env)
    if password is None:
        raise typer.BadParameter(f"{node_keystore} has no 'address' field: set ${password_env} (its password) "
                                 "or give --node ADDRESS")
    try:
        return Account.from_key(Account.decrypt(blob, password)).address
    except ValueError as e:
        raise typer.BadParameter(f"cannot decrypt {node_keystore}: {e}") from None


def register(
    rpc_url: str = typer.Option(..., "--rpc-url", help="JSON-RPC endpoint."),
    registry: str = typer.Option(..., "--registry", help="Registry address."),
    url: str = typer.Option(..., "--url", help="The node's public URL (what peers and clients use)."),
    data_dir: Path = typer.Option(Path("node-data"), "--data-dir",
                                  help="The node's data dir: its RANDAO onion is created (or read) here."),
    node_keystore: Path | None = typer.Option(None, "--node-keystore", help="The node's keystore (address)."),
    node: str | None = typer.Option(None, "--node", help="The node's address (instead of --node-keystore)."),
    node_password_env: str = typer.Option("NODE_KEY_PASSWORD", "--node-password-env",
                                          help="Env var with the node keystore's password (if it has no address)."),
    onion_depth: int = typer.Option(10_000, "--onion-depth", help="Layers of a new onion (one per led block)."),
    keystore: Path | None = typer.Option(None, "--keystore", help="The operator's encrypted keystore."),
    private_key: str | None = typer.Option(None, "--private-key", help="With --dev: an Anvil dev key."),
    password_env: str = typer.Option(DEFAULT_PASSWORD_ENV, "--password-env"),
    dev: bool = typer.Option(False, "--dev", help="Local dev chain: allow Anvil's dev keys."),
) -> None:
    """Register a node (address, URL, RANDAO commitment) from its operator's account."""
    from node.chain.registry import RegistryError
    from node.protocol.onion import HashOnion
    from node.server.keys import new_onion, onion_path

    addr = node_address(node, node_keystore, node_password_env)
    account = load_account(private_key=private_key, keystore=keystore, password_env=password_env, dev=dev)
    p = onion_path(data_dir)
    if p.exists():
        blob = json.loads(p.read_text())
        onion = HashOnion(bytes.fromhex(blob["secret"].removeprefix("0x")), int(blob["depth"]))
    else:
        onion = new_onion(data_dir, onion_depth)
        typer.echo(f"new RANDAO onion in {p} (keep it with the node's data)", err=True)
    reg = _registry(rpc_url, registry, account)
    try:
        res = reg.register_node(addr, url, onion.commitment)
    except RegistryError as e:
        typer.echo(f"register failed: {e}", err=True)
        raise typer.Exit(1) from None
    info = reg.get_node(addr)
    params = RegistryParams(reg.genesis_time(), reg.epoch_length(), reg.leader_timeout(), reg.replication_factor())
    starts = epoch_starts_at(params, info.join_epoch)
    typer.echo(f"node {addr} registered by {account.address} (tx 0x{bytes(res.tx_hash).hex()}); "
               f"active from epoch {info.join_epoch} (chain time {starts})")


def create_stream(
    rpc_url: str = typer.Option(..., "--rpc-url", help="JSON-RPC endpoint."),
    registry: str = typer.Option(..., "--registry", help="Registry address."),
    stream: list[str] = typer.Option(..., "--stream", help="0x + 64 hex, or a name (keccak256 of it); repeat."),
    keystore: Path | None = typer.Option(None, "--keystore", help="Sender's encrypted keystore."),
    private_key: str | None = typer.Option(None, "--private-key", help="With --dev: an Anvil dev key."),
    password_env: str = typer.Option(DEFAULT_PASSWORD_ENV, "--password-env"),
    dev: bool = typer.Option(False, "--dev", help="Local dev chain: allow Anvil's dev keys."),
) -> None:
    """Create streams (anyone may); the registry picks each stream's replicas among the active nodes."""
    from node.chain.deploy import parse_stream_id
    from node.chain.registry import RegistryError

    account = load_account(private_key=private_key, keystore=keystore, password_env=password_env, dev=dev)
    try:
        sids = [parse_stream_id(s) for s in stream]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    reg = _registry(rpc_url, registry, account)
    for name, sid in zip(stream, sids, strict=False):
        try:
            reg.create_stream(sid)
        except RegistryError as e:
            typer.echo(f"createStream({name}) failed: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"stream 0x{sid.hex()} ({name}) replicas {', '.join(reg.replicas_of(sid))}")


def evict(
    rpc_url: str = typer.Option(..., "--rpc-url", help="JSON-RPC endpoint."),
    registry: str = typer.Option(..., "--registry", help="Registry address."),
    node: str = typer.Option(..., "--node", help="The node to evict (its address)."),
    keystore: Path | None = typer.Option(None, "--keystore", help="The registry owner's encrypted keystore."),
    private_key: str | None = typer.Option(None, "--private-key", help="With --dev: an Anvil dev key."),
    password_env: str = typer.Option(DEFAULT_PASSWORD_ENV, "--password-env"),
    dev: bool = typer.Option(False, "--dev", help="Local dev chain: allow Anvil's dev keys."),
) -> None:
    """Evict a node (registry owner): it stops counting at the next epoch boundary, like a leave; its
    streams then get new replicas through replaceReplica (docs/protocol.md, "Streams")."""
    from node.chain.registry import RegistryError

    addr = node_address(node, None)
    account = load_account(private_key=private_key, keystore=keystore, password_env=password_env, dev=dev)
    reg = _registry(rpc_url, registry, account)
    try:
        res = reg.evict_node(addr)
    except RegistryError as e:
        typer.echo(f"evict failed: {e}", err=True)
        raise typer.Exit(1) from None
    info = reg.get_node(addr)
    typer.echo(f"node {addr} evicted by {account.address} (tx 0x{bytes(res.tx_hash).hex()}); "
               f"inactive from epoch {info.leave_epoch}")


def renew_onion(
    rpc_url: str = typer.Option(..., "--rpc-url", help="JSON-RPC endpoint."),
    registry: str = typer.Option(..., "--registry", help="Registry address."),
    data_dir: Path = typer.Option(..., "--data-dir", help="The node's data dir (its onion.json is replaced)."),
    node_keystore: Path | None = typer.Option(None, "--node-keystore", help="The node's keystore (address)."),
    node: str | None = typer.Option(None, "--node", help="The node's address (instead of --node-keystore)."),
    node_password_env: str = typer.Option("NODE_KEY_PASSWORD", "--node-password-env",
                                          help="Env var with the node keystore's password (if it has no address)."),
    onion_depth: int = typer.Option(10_000, "--onion-depth", help="Layers of the new onion (one per led block)."),
    keystore: Path | None = typer.Option(None, "--keystore", help="The node operator's encrypted keystore."),
    private_key: str | None = typer.Option(None, "--private-key", help="With --dev: an Anvil dev key."),
    password_env: str = typer.Option(DEFAULT_PASSWORD_ENV, "--password-env"),
    dev: bool = typer.Option(False, "--dev", help="Local dev chain: allow Anvil's dev keys."),
) -> None:
    """Give a node a fresh RANDAO hash onion (its operator): the new commitment goes on chain first, and
    only once that succeeded is the node's onion.json replaced (the old one is kept beside it). Reveals of
    the new onion count from the next epoch (docs/protocol.md, "Membership"); restart the node to use it."""
    import secrets
    import time

    from node.chain.registry import RegistryError
    from node.protocol.onion import HashOnion
    from node.server.keys import onion_path, write_onion

    addr = node_address(node, node_keystore, node_password_env)
    account = load_account(private_key=private_key, keystore=keystore, password_env=password_env, dev=dev)
    secret = secrets.token_bytes(32)
    onion = HashOnion(secret, onion_depth)
    reg = _registry(rpc_url, registry, account)
    try:
        res = reg.renew_onion(addr, onion.commitment)
    except RegistryError as e:
        typer.echo(f"renewOnion failed (the node's onion is unchanged): {e}", err=True)
        raise typer.Exit(1) from None
    p = onion_path(data_dir)
    if p.exists():
        kept = p.with_name(f"{p.name}.replaced-{int(time.time())}")
        p.replace(kept)
        typer.echo(f"old onion kept as {kept}", err=True)
    write_onion(data_dir, secret, onion_depth)
    typer.echo(f"node {addr}: new onion in {p}, commitment 0x{onion.commitment.hex()} "
               f"(tx 0x{bytes(res.tx_hash).hex()}); usable from the next epoch; restart the node to use it")
