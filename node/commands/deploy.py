"""`python -m node deploy`: deploy the registry and set it up; writes a deployment file.

Keys: ``--keystore FILE`` (an eth-account encrypted JSON keystore; password from
the environment variable named by ``--password-env``), or, for local dev chains
only, ``--dev`` with ``--private-key`` being one of Anvil's well-known dev keys
(default: its account 0).
"""

from __future__ import annotations

from pathlib import Path

import typer

from node.chain.anvil import DEV_KEYS

DEFAULT_PASSWORD_ENV = "MINIBLOCK_KEYSTORE_PASSWORD"


def registry_version(name: str) -> int:
    """--registry v1 | v2 (1 | 2): MiniblockRegistry or MiniblockRegistryV2 (docs/protocol.md "Version 2")."""
    v = name.lower().removeprefix("v")
    if v not in ("1", "2"):
        raise typer.BadParameter("--registry is v1 or v2")
    return int(v)


def load_account(
    *, private_key: str | None, keystore: Path | None, password_env: str, dev: bool
):
    from eth_account import Account

    from node.keystore import KeystoreError, decrypt_keystore

    if keystore and private_key:
        raise typer.BadParameter("give either --keystore or --private-key, not both")
    if keystore:
        try:
            return Account.from_key(decrypt_keystore(keystore, password_env))
        except KeystoreError as e:
            raise typer.BadParameter(str(e)) from None
    if not dev:
        raise typer.BadParameter(
            "a raw private key is only accepted with --dev (Anvil's dev keys); use --keystore"
        )
    key = (private_key or DEV_KEYS[0]).lower()
    if not key.startswith("0x"):
        key = "0x" + key
    if key not in DEV_KEYS:
        raise typer.BadParameter("--dev takes only Anvil's well-known dev keys; use --keystore")
    return Account.from_key(key)


def main(
    rpc_url: str = typer.Option("http://127.0.0.1:8545", "--rpc-url", help="JSON-RPC endpoint."),
    private_key: str | None = typer.Option(
        None, "--private-key", "--key", help="Raw key (only with --dev: Anvil dev keys)."
    ),
    keystore: Path | None = typer.Option(None, "--keystore", help="Encrypted JSON keystore."),
    password_env: str = typer.Option(
        DEFAULT_PASSWORD_ENV, "--password-env", help="Env var holding the keystore password."
    ),
    dev: bool = typer.Option(False, "--dev", help="Local dev chain: allow Anvil's dev keys."),
    warp: bool = typer.Option(
        False, "--warp", help="With --dev: move Anvil's time to the next epoch instead of waiting."
    ),
    epoch_length: int = typer.Option(60, "--epoch-length", help="Seconds of chain time per epoch."),
    leader_timeout: int = typer.Option(10, "--leader-timeout", help="Seconds before attempt+1 opens."),
    replication: int = typer.Option(3, "--replication", help="Replicas per stream."),
    operator: list[str] = typer.Option([], "--operator", help="Operator address to allow-list (repeat)."),
    node: list[str] = typer.Option(
        [], "--node", help="ADDR=URL=COMMIT: a node to register (repeat); the deployer is its operator."
    ),
    stream: list[str] = typer.Option(
        [], "--stream", help="Stream to create (repeat): 0x + 64 hex, or a name (keccak256 of it)."
    ),
    artifact: Path | None = typer.Option(
        None, "--artifact", help="Contract artifact JSON (default: build it from contracts/src)."
    ),
    registry: str = typer.Option(
        "v1", "--registry", help="Which registry to deploy: v1 (MiniblockRegistry) or v2 (MiniblockRegistryV2)."
    ),
    ws_url: str | None = typer.Option(None, "--ws-url", help="Recorded in the deployment file."),
    out: Path = typer.Option(Path("deployment.json"), "--out", help="Deployment file to write."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    from eth_utils import is_address

    from node.build import BuildError
    from node.chain.deploy import deploy, parse_node_spec, parse_stream_id
    from node.chain.registry import RegistryError
    from node.chain.rpc import http_web3

    if warp and not dev:
        raise typer.BadParameter("--warp moves Anvil's clock: only with --dev")
    account = load_account(private_key=private_key, keystore=keystore, password_env=password_env, dev=dev)
    for op in operator:
        if not is_address(op):
            raise typer.BadParameter(f"--operator {op!r} is not an address")
    try:
        nodes = [parse_node_spec(n) for n in node]
        streams = [parse_stream_id(s) for s in stream]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    version = registry_version(registry)
    if not 1 <= replication <= 16:
        raise typer.BadParameter("--replication must be 1..16")

    w3 = http_web3(rpc_url, timeout=60)
    if not w3.is_connected():
        typer.echo(f"cannot reach {rpc_url}", err=True)
        raise typer.Exit(2)
    log = (lambda s: None) if quiet else (lambda s: typer.echo(s, err=True))
    try:
        dep = deploy(
            w3, account, epoch_length=epoch_length, leader_timeout=leader_timeout,
            replication_factor=replication, operators=operator, nodes=nodes, streams=streams,
            artifact=artifact, registry_version=version, rpc_url=rpc_url, ws_url=ws_url, out=out, warp=warp, log=log,
        )
    except (RegistryError, BuildError) as e:
        typer.echo(f"deploy failed: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(dep.registry)
