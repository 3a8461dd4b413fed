"""Node settings: a TOML file, overridden by NODE_* environment variables, overridden by flags.

Precedence (lowest first): defaults < config file < environment (NODE_<FIELD>, upper case) < CLI flags.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, field_validator

ENV_PREFIX = "NODE_"


class NodeConfig(BaseModel):
    model_config = {"extra": "forbid"}

    # chain
    rpc_url: str | None = None  # default: the deployment's, else http://127.0.0.1:8545
    rpc_urls: list[str] = []  # several endpoints, tried in order on failures (failover); rpc_url goes first
    rpc_timeout_s: float = 10.0  # one JSON-RPC try; then a retry with back-off on the next URL
    rpc_retries: int = 4  # retries of a failed try (timeout, refused, HTTP error, garbage) before giving up
    chain_wait_s: float = 120.0  # at start-up: how long to wait (with back-off) for a chain that does not answer
    # finality (docs/node.md): a block is final once its commit is this many chain blocks deep ...
    confirmations: int = 0
    finality: str = "depth"  # ... and, with "safe" / "finalized", at or below that block tag too
    # transactions
    max_fee_gwei: float | None = None  # ceiling on maxFeePerGas (None: none)
    tx_replace_s: float = 6.0  # a commit not mined this long is re-sent or replaced with a bumped fee
    ws_url: str | None = None  # WebSocket endpoint for log subscription (wake-ups); polling is the fallback
    deployment: Path | None = None  # deployment file (registry address, chain id, start block)
    registry: str | None = None  # registry address, if no deployment file
    # 1 (MiniblockRegistry) or 2 (MiniblockRegistryV2): checked at start against the chain's eip712Domain
    registry_version: int | None = None  # version; default: the deployment's, else as the chain says
    chain_id: int | None = None
    start_block: int = 0  # first chain block to scan for registry logs

    # identity
    keystore: Path | None = None  # eth-account encrypted keystore (JSON)
    password_env: str = "NODE_KEY_PASSWORD"  # env var holding the keystore password
    dev: bool = False  # allow a raw key (dev_key) instead of a keystore
    dev_key: str | None = None
    onion_secret: str | None = None  # hex secret for the RANDAO hash onion (else data_dir/onion.json)
    onion_depth: int = 10_000

    # server
    host: str = "127.0.0.1"
    port: int = 8600
    public_url: str | None = None  # the URL peers use (registered on-chain by self_register)
    self_register: bool = False  # on start, register this node (needs its address allowed as operator)
    data_dir: Path = Path("node-data")
    # the HTTP stack (README "Dependencies"): "auto" takes uvloop / httptools when installed (pyproject
    # dependencies), else asyncio's own loop / h11; naming one that is not installed fails at start
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    http: Literal["auto", "httptools", "h11"] = "auto"  # uvicorn's HTTP/1.1 parser

    # behaviour
    tick_ms: int = 150
    poll_ms: int = 250  # chain log poll interval (the WebSocket subscription wakes the loop earlier)
    gossip_ms: int = 40
    regossip_s: float = 5.0  # re-forward pending events older than this (anti-entropy)
    peer_timeout_s: float = 3.0
    # a client request passed on to a replica (node/server/forward.py): as long as a client would wait for a big
    # batch there (each event's signature checked and stored), not a peer call's budget
    relay_timeout_s: float = 30.0
    max_payload: int = 64 * 1024
    max_body: int = 32 * 1024 * 1024
    max_block_events: int = 5000
    max_batch_events: int = 5000  # per batch-intake call, and per /peer/gossip request
    max_block_bytes: int = 10 * 1024 * 1024  # leader's byte cap per block (never above node.protocol.limits)
    # limits (docs/node.md, "Limits")
    peer_auth_window_s: float = 30.0  # a peer request's X-Peer-Time must be within this of our chain time
    peer_replay_cache: int = 20_000  # signatures remembered per sending node (replay refusal)
    max_concurrent_client: int = 256  # client requests in flight; more: 503 + Retry-After
    max_concurrent_peer: int = 256  # peer requests in flight; more: 503 + Retry-After
    max_fetch_hashes: int = 1024  # hashes per /peer/events request; more: 413
    max_fetch_bytes: int = 4 * 1024 * 1024  # /peer/events answer: events up to about this many bytes
    max_blocks_bytes: int = 16 * 1024 * 1024  # /peer/blocks answer: blocks up to about this many bytes (>= 1)
    max_vote_hashes: int = 30_000  # hashes in a /peer/votes answer (oldest first)
    max_vote_batch_hashes: int = 120_000  # hashes in a /peer/votes/batch answer, all its streams (then truncated)
    max_attest_batch_hashes: int = 60_000  # event hashes in a /peer/attest/batch request, all its proposals (413)
    pool_quota_author: int = 20_000  # pending events per (stream, author); more: 429 + Retry-After
    pool_quota_stream: int = 100_000  # pending events per stream; more: 429 + Retry-After
    pool_max_events: int = 100_000  # pending events over all streams (the pool is held in memory); more: 429
    unknown_stream_ttl_s: float = 10.0  # how long "no such stream on chain" is remembered
    max_author_events: int = 1024  # leader's cap on one author's events per block (at most the protocol's 1,024)
    catch_up_s: float = 2.0  # a MESSAGE by a non-member here: wait this long at most to catch up with the chain
    # FULL: an accepted event is on disk (fsync) before the answer; NORMAL (WAL) survives a process crash only
    sqlite_sync: str = "FULL"
    # store every stream's events and blocks; False: only those replicated here (node/server/forward.py: the others)
    sync_all_streams: bool = False
    replace_replicas: bool = True
    produce: bool = True  # lead and commit blocks; False: intake, gossip, votes, attest and sync only (benchmarks)
    # batches that fill (docs/node.md, "Transactions"): a leader hands its signed headers to the time slot's
    # aggregator (an active node, round robin by chain time), which sends one commitMiniblocks per tick for all
    aggregate: bool = True  # False: every leader sends its own headers (and refuses to aggregate others')
    aggregate_ms: int = 250  # the aggregator's cadence: at most one commit tx per this many ms
    # a batch is sent once `aggregate_fill` headers wait, or every stream of the sends of the last
    # `aggregate_recent_ms` is back, or its oldest header has waited `aggregate_hold_ms` (sendpolicy.py)
    aggregate_fill: int = 16
    aggregate_hold_ms: int = 300  # 2 leader ticks
    aggregate_recent_ms: int = 2000
    aggregate_wait_ms: int = 2500  # a leader waits this long for the aggregator's commit, then sends it itself
    aggregate_slot_s: float = 30.0  # the aggregator role moves to the next active node every this many seconds
    aggregate_max_batch: int = 64  # headers per aggregator tx, and per hand-off request (<= MAX_BATCH 256)
    aggregate_max_bytes: int = 96 * 1024  # calldata per aggregator tx, about (a header of r=3 is ~870 bytes)
    aggregate_max_pending: int = 256  # headers waiting at the aggregator, all senders (each at most max_batch)
    log_level: str = "INFO"

    # snapshots and pruning (docs/node.md, "Snapshots")
    snapshot_every: int = 256  # snapshot each stream's state after every block number divisible by this (0: never)
    snapshot_keep: int = 2  # snapshots kept per stream (newest)
    snapshot_sync: bool = True  # a stream more than snapshot_every blocks behind starts from a peer's snapshot
    snapshot_agree: int = 1  # optional filter: peers that must list a snapshot digest before it is fetched
    # (fewer answering: all of them); not needed for correctness, check_snapshot verifies it against the chain
    snapshot_page_bytes: int = 4 * 1024 * 1024  # /peer/snapshot answer: at most this many bytes per page
    snapshot_max_bytes: int = 512 * 1024 * 1024  # a peer's snapshot body (decompressed) larger than this is refused
    retain_blocks: int = 0  # keep events of the last this many blocks (and all after the newest snapshot); 0: all

    # subscriptions (WebSocket / SSE at /v1/subscribe; docs/node.md "Subscriptions")
    sub_max_subscribers: int = 256  # open subscriptions per node (WebSocket + SSE)
    sub_max_streams: int = 64  # streams per subscription
    sub_queue_messages: int = 256  # messages waiting to be sent to one subscriber before it is dropped
    sub_queue_bytes: int = 16 * 1024 * 1024  # bytes (estimated) waiting for one subscriber before it is dropped
    sub_page_blocks: int = 32  # blocks read from SQLite per catch-up page
    sub_pool_events: int = 5_000  # with pending=true: mini-pool events sent on subscribe, over all streams asked
    sub_hello_timeout_s: float = 10.0  # WebSocket: time to send the subscribe frame
    sub_keepalive_s: float = 15.0  # SSE comment / WebSocket keepalive message when idle this long
    sub_send_timeout_s: float = 30.0  # a client that takes longer to take one message is dropped (slow_consumer)
    sub_close_timeout_s: float = 10.0  # time to get the error message and close frame out to a dropped client
    @field_validator("rpc_urls", mode="before")
    @classmethod
    def _urls(cls, v: Any) -> Any:
        if isinstance(v, str):  # NODE_RPC_URLS="http://a,http://b"
            return [u.strip() for u in v.split(",") if u.strip()]
        return v

    @field_validator("registry_version")
    @classmethod
    def _version(cls, v: int | None) -> int | None:
        if v is not None and v not in (1, 2):
            raise ValueError("registry_version must be 1 or 2")
        return v

    @field_validator("finality")
    @classmethod
    def _finality(cls, v: str) -> str:
        if v not in ("depth", "safe", "finalized"):
            raise ValueError("finality must be depth, safe or finalized")
        return v

    def endpoints(self) -> list[str]:
        """The RPC URLs in failover order (rpc_url first), without repeats."""
        out: list[str] = []
        for u in [self.rpc_url, *self.rpc_urls]:
            if u and u not in out:
                out.append(u)
        return out

    @field_validator("sqlite_sync")
    @classmethod
    def _sync(cls, v: str) -> str:
        v = v.upper()
        if v not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("sqlite_sync must be OFF, NORMAL, FULL or EXTRA")
        return v


def _env_overrides(env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in NodeConfig.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in env and key != "NODE_KEY_PASSWORD":
            out[name] = env[key]
    return out


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None,
                env: dict[str, str] | None = None) -> NodeConfig:
    data: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        data.update(raw.get("node", raw))
    data.update(_env_overrides(dict(os.environ if env is None else env)))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg = NodeConfig.model_validate(data)
    if path is not None:  # relative paths in a file are relative to the file
        base = Path(path).resolve().parent
        for name in ("deployment", "keystore", "data_dir"):
            p = getattr(cfg, name)
            if p is not None and not Path(p).is_absolute() and name in data and (overrides or {}).get(name) is None:
                setattr(cfg, name, base / p)
    return cfg


def dump_toml(values: dict[str, Any]) -> str:
    """A minimal TOML writer for flat node configs (str, int, float, bool, Path)."""
    lines = ["[node]"]
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, (list, tuple)):
            items = ", ".join('"' + str(x).replace("\\", "\\\\").replace('"', '\\"') + '"' for x in v)
            lines.append(f"{k} = [{items}]")
        elif isinstance(v, (int, float)):
            lines.append(f"{k} = {v}")
        else:
            s = str(v).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{k} = "{s}"')
    return "\n".join(lines) + "\n"
