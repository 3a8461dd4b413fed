"""Deploying as a user would: `python -m node deploy ...` in a subprocess against a
real Anvil, then the deployment file and the chain's views must agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak

from node.chain.anvil import DEV_KEYS, Anvil
from node.chain.deployment import Deployment
from node.chain.registry import NodeStatus, Registry
from node.protocol.eip712 import hash_header
from node.protocol.onion import HashOnion
from node.protocol.types import Header

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], *, env: dict | None = None, script: bool = False) -> subprocess.CompletedProcess:
    cmd = ([sys.executable, str(ROOT / "deploy_scripts" / "deploy.py")] if script
           else [sys.executable, "-m", "node", "deploy"])
    return subprocess.run(
        cmd + args, cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def chain():
    # Its own Anvil: the CLI sends from dev account 0 outside the session's nonce counter.
    with Anvil() as a:
        yield a


@pytest.fixture(scope="module")
def nodes():
    accts = [Account.from_key(k) for k in DEV_KEYS[1:6]]
    onions = [HashOnion(keccak(b"deploy test %d" % i), 64) for i in range(5)]
    return [(a.address, f"http://127.0.0.1:{31000 + i}", o.commitment)
            for i, (a, o) in enumerate(zip(accts, onions, strict=False))]


def test_deploy_cli_register_and_create_streams(chain, nodes, artifact, tmp_path):
    out = tmp_path / "deployment.json"
    extra_op = Account.from_key(DEV_KEYS[8]).address
    args = [
        "--rpc-url", chain.http_url, "--ws-url", chain.ws_url, "--dev", "--private-key", DEV_KEYS[0], "--warp",
        "--epoch-length", "120", "--leader-timeout", "7", "--replication", "3",
        "--operator", extra_op,
        *sum((["--node", f"{a}={u}=0x{c.hex()}"] for a, u, c in nodes), []),
        "--stream", "general", "--stream", "0x" + "ab" * 32,
        "--out", str(out),
    ]
    r = run_cli(args)
    assert r.returncode == 0, r.stderr
    dep = Deployment.load(out)
    assert r.stdout.strip() == dep.registry

    w3 = chain.w3()
    deployer = Account.from_key(DEV_KEYS[0]).address
    # The file.
    raw = json.loads(out.read_text())
    for key in ("chain_id", "rpc_url", "registry", "deploy_block", "abi_path", "epoch_length",
                "leader_timeout", "replication_factor"):
        assert key in raw
    assert dep.chain_id == w3.eth.chain_id == 31337
    assert dep.rpc_url == chain.http_url and dep.ws_url == chain.ws_url
    assert (dep.epoch_length, dep.leader_timeout, dep.replication_factor) == (120, 7, 3)
    assert dep.owner == deployer
    assert dep.resolved_abi_path() == tmp_path / "deployment.abi.json"
    assert dep.abi() == artifact["abi"]
    assert w3.eth.get_code(dep.registry, dep.deploy_block) != b""
    assert w3.eth.get_code(dep.registry, dep.deploy_block - 1) == b""
    receipt = w3.eth.get_transaction_receipt(dep.deploy_tx)
    assert receipt["contractAddress"] == dep.registry and receipt["blockNumber"] == dep.deploy_block
    assert [n.address for n in dep.nodes] == [a for a, _, _ in nodes]
    sids = [keccak(text="general"), bytes.fromhex("ab" * 32)]
    assert dep.streams == ["0x" + s.hex() for s in sids]

    # The chain's views.
    reg = Registry.from_deployment(dep, w3=w3)
    assert reg.owner() == deployer
    assert (reg.epoch_length(), reg.leader_timeout(), reg.replication_factor()) == (120, 7, 3)
    assert reg.genesis_time() == dep.genesis_time
    assert reg.is_operator(extra_op) and reg.is_operator(deployer)
    assert not reg.is_operator(nodes[0][0])
    assert reg.node_count() == len(nodes)
    epoch = reg.current_epoch()
    assert epoch == 1
    infos = reg.get_nodes(0, 100)
    assert [i.node for i in infos] == [a for a, _, _ in nodes]
    for (addr, url, commit), info in zip(nodes, infos, strict=False):
        assert info == reg.get_node(addr)
        assert (info.url, info.randao_commit, info.operator) == (url, commit, deployer)
        assert info.status == NodeStatus.ACTIVE and info.join_epoch == 1
        assert reg.randao_commit_of(addr) == commit
    assert reg.stream_count() == 2 and reg.stream_ids() == sids
    node_set = {a for a, _, _ in nodes}
    created = {c.stream_id: c for c in reg.stream_created_logs(dep.deploy_block)}
    for sid in sids:
        assert reg.stream_exists(sid)
        reps = reg.replicas_of(sid)
        assert len(reps) == 3 and len(set(reps)) == 3 and set(reps) <= node_set
        head = reg.stream_head(sid)
        genesis = hash_header(Header.genesis(sid, epoch))
        assert head.number == 0 and head.header_hash == genesis == reg.header_hash_at(sid, 0)
        assert reg.header_hash_at(sid, 1) == b"\0" * 32
        assert created[sid].replicas == reps and created[sid].genesis_hash == genesis
        assert created[sid].creator == deployer and created[sid].epoch == epoch
    regs = reg.node_registered_logs(dep.deploy_block)
    assert [(x.node, x.url, x.operator, x.join_epoch) for x in regs] == [(a, u, deployer, 1) for a, u, _ in nodes]


def test_deploy_script_with_keystore_waits_for_the_epoch(chain, tmp_path):
    """deploy_scripts/deploy.py, an encrypted keystore, no --dev: real waiting for the
    epoch boundary (2 s epochs) before the stream can pick active replicas."""
    key = DEV_KEYS[7]
    ks = tmp_path / "key.json"
    ks.write_text(json.dumps(Account.encrypt(key, "s3cret", kdf="scrypt", iterations=2**10)))
    node = Account.from_key(DEV_KEYS[6]).address
    out = tmp_path / "d.json"
    args = [
        "--rpc-url", chain.http_url, "--keystore", str(ks), "--password-env", "TEST_KS_PW",
        "--epoch-length", "2", "--leader-timeout", "1", "--replication", "1",
        "--node", f"{node}=http://127.0.0.1:1=0x{'11' * 32}", "--stream", "s", "--out", str(out), "-q",
    ]
    t = time.monotonic()
    r = run_cli(args, env={"TEST_KS_PW": "s3cret"}, script=True)
    assert r.returncode == 0, r.stderr
    dep = Deployment.load(out)
    reg = Registry.from_deployment(dep)
    assert reg.owner() == Account.from_key(key).address
    assert reg.replicas_of(keccak(text="s")) == [node]
    assert time.monotonic() - t < 60


def test_key_rules(chain, tmp_path):
    base = ["--rpc-url", chain.http_url, "--out", str(tmp_path / "x.json")]
    # A raw key without --dev is refused.
    r = run_cli(base + ["--private-key", DEV_KEYS[0]])
    assert r.returncode != 0 and "--dev" in r.stderr
    # --dev takes only Anvil's dev keys.
    r = run_cli(base + ["--dev", "--private-key", "0x" + "42" * 32])
    assert r.returncode != 0
    # A keystore without its password variable is refused.
    ks = tmp_path / "k.json"
    ks.write_text(json.dumps(Account.encrypt(DEV_KEYS[5], "pw", kdf="scrypt", iterations=2**10)))
    r = run_cli(base + ["--keystore", str(ks), "--password-env", "NOT_SET_ANYWHERE_XYZ"])
    assert r.returncode != 0 and "NOT_SET_ANYWHERE_XYZ" in r.stderr
    # Wrong password.
    r = run_cli(base + ["--keystore", str(ks), "--password-env", "PW"], env={"PW": "wrong"})
    assert r.returncode != 0
    assert not (tmp_path / "x.json").exists()


def test_build_is_cached(artifact):
    from node.build import OUT_DIR, build

    t = time.monotonic()
    arts = build()
    assert time.monotonic() - t < 5
    art = json.loads(arts["MiniblockRegistry"].read_text())
    assert art["sourceHash"] == artifact["sourceHash"]
    assert art["bytecode"].startswith("0x6") and len(art["bytecode"]) > 1000
    assert arts["MiniblockRegistry"].parent == OUT_DIR
    assert art["settings"]["optimizer"] == {"enabled": True, "runs": 2000}
    assert art["settings"]["evmVersion"] == "cancun"
