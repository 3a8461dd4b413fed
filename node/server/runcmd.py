"""`python -m node run`: start a node. Every setting from --config FILE, NODE_* env, or flags."""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    config: Path | None = typer.Option(None, "--config", "-c", help="node.toml ([node] table)"),
    deployment: Path | None = typer.Option(None, help="deployment file (registry, chain id, ABI)"),
    rpc_url: str | None = typer.Option(None, help="JSON-RPC endpoint"),
    ws_url: str | None = typer.Option(None, help="WebSocket endpoint (log subscription)"),
    registry: str | None = typer.Option(None, help="registry address (without a deployment file)"),
    host: str | None = typer.Option(None), port: int | None = typer.Option(None),
    data_dir: Path | None = typer.Option(None, help="SQLite database and onion secret live here"),
    keystore: Path | None = typer.Option(None, help="eth-account encrypted keystore; password in $NODE_KEY_PASSWORD"),
    password_env: str | None = typer.Option(None, help="env var holding the keystore password"),
    dev: bool = typer.Option(False, "--dev", help="allow a raw private key (--dev-key / NODE_DEV_KEY)"),
    dev_key: str | None = typer.Option(None, help="raw private key, only with --dev"),
    onion_secret: str | None = typer.Option(None, help="RANDAO onion secret (stored in the data dir)"),
    onion_depth: int | None = typer.Option(None),
    tick_ms: int | None = typer.Option(None), poll_ms: int | None = typer.Option(None),
    regossip_s: float | None = typer.Option(None),
    log_level: str | None = typer.Option(None),
    produce: bool | None = typer.Option(None, "--produce/--no-produce",
                                           help="lead and commit blocks (--no-produce: intake, gossip, attest only)"),
    chain_id: int | None = typer.Option(None, help="expected chain id (checked against the RPC)"),
    start_block: int | None = typer.Option(None, help="first chain block to scan (default: the deploy block)"),
    public_url: str | None = typer.Option(None, help="the URL peers use (registered by --self-register)"),
    self_register: bool | None = typer.Option(None, "--self-register/--no-self-register",
                                                 help="register this node on first start (it must be an operator)"),
    gossip_ms: int | None = typer.Option(None), peer_timeout_s: float | None = typer.Option(None),
    max_payload: int | None = typer.Option(None, help="event payload limit, bytes"),
    max_body: int | None = typer.Option(None, help="HTTP request body limit, bytes"),
    max_block_events: int | None = typer.Option(None), max_batch_events: int | None = typer.Option(None),
    sqlite_sync: str | None = typer.Option(None, help="OFF | NORMAL | FULL | EXTRA"),
    sync_all_streams: bool | None = typer.Option(None, "--sync-all-streams/--sync-own-streams"),
    replace_replicas: bool | None = typer.Option(None, "--replace-replicas/--no-replace-replicas"),
    max_block_bytes: int | None = typer.Option(None, help="leader's byte cap per block (at most 10 MiB)"),
    peer_auth_window_s: float | None = typer.Option(None, help="accepted age of a peer request's proof, s"),
    peer_replay_cache: int | None = typer.Option(None, help="peer signatures remembered per sending node"),
    max_concurrent_client: int | None = typer.Option(None, help="client requests in flight (then 503)"),
    max_concurrent_peer: int | None = typer.Option(None, help="peer requests in flight (then 503)"),
    max_fetch_hashes: int | None = typer.Option(None, help="hashes per /peer/events request (then 413)"),
    max_fetch_bytes: int | None = typer.Option(None, help="bytes of a /peer/events answer"),
    max_blocks_bytes: int | None = typer.Option(None, help="bytes of a /peer/blocks answer"),
    max_vote_hashes: int | None = typer.Option(None, help="hashes in a /peer/votes answer"),
    pool_quota_author: int | None = typer.Option(None, help="pending events per (stream, author) (then 429)"),
    pool_quota_stream: int | None = typer.Option(None, help="pending events per stream (then 429)"),
    unknown_stream_ttl_s: float | None = typer.Option(None, help="how long 'no such stream' is remembered, s"),
    rpc_urls: str | None = typer.Option(None, help="more JSON-RPC endpoints, comma-separated (failover order)"),
    rpc_timeout_s: float | None = typer.Option(None, help="one JSON-RPC try, s (then retried with back-off)"),
    rpc_retries: int | None = typer.Option(None, help="retries of a failed JSON-RPC try"),
    chain_wait_s: float | None = typer.Option(None, help="start-up: how long to wait for an unreachable chain, s"),
    confirmations: int | None = typer.Option(None, help="chain blocks under the latest before a block is final"),
    finality: str | None = typer.Option(None, help="depth | safe | finalized (block tag, with --confirmations)"),
    max_fee_gwei: float | None = typer.Option(None, help="ceiling on maxFeePerGas, gwei"),
    tx_replace_s: float | None = typer.Option(None, help="a transaction not mined this long is replaced, s"),
) -> None:
    """Run a mini-block node."""
    from node.server.app import run
    from node.server.config import load_config

    overrides = dict(deployment=deployment, rpc_url=rpc_url, ws_url=ws_url, registry=registry, host=host, port=port,
                     data_dir=data_dir, keystore=keystore, password_env=password_env, dev=dev or None,
                     dev_key=dev_key, onion_secret=onion_secret, onion_depth=onion_depth, tick_ms=tick_ms,
                     poll_ms=poll_ms, regossip_s=regossip_s, log_level=log_level, produce=produce,
                     chain_id=chain_id, start_block=start_block, public_url=public_url, self_register=self_register,
                     gossip_ms=gossip_ms, peer_timeout_s=peer_timeout_s, max_payload=max_payload, max_body=max_body,
                     max_block_events=max_block_events, max_batch_events=max_batch_events, sqlite_sync=sqlite_sync,
                     sync_all_streams=sync_all_streams, replace_replicas=replace_replicas,
                     max_block_bytes=max_block_bytes, peer_auth_window_s=peer_auth_window_s,
                     peer_replay_cache=peer_replay_cache, max_concurrent_client=max_concurrent_client,
                     max_concurrent_peer=max_concurrent_peer, max_fetch_hashes=max_fetch_hashes,
                     max_fetch_bytes=max_fetch_bytes, max_blocks_bytes=max_blocks_bytes,
                     max_vote_hashes=max_vote_hashes, pool_quota_author=pool_quota_author,
                     pool_quota_stream=pool_quota_stream, unknown_stream_ttl_s=unknown_stream_ttl_s,
                     rpc_urls=rpc_urls, rpc_timeout_s=rpc_timeout_s, rpc_retries=rpc_retries,
                     chain_wait_s=chain_wait_s, confirmations=confirmations, finality=finality,
                     max_fee_gwei=max_fee_gwei, tx_replace_s=tx_replace_s)
    cfg = load_config(config, overrides)
    run(cfg)
