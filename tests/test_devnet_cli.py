"""The devnet, submit and status commands end to end, run as a user runs them (subprocesses, real Anvil).

Every wait is bounded; every test checks that no process it caused is left behind.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from node.chain.anvil import Anvil

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="120")
ENV.pop("NODE_KEY_PASSWORD", None)


def node_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "node", *args]


def processes_mentioning(*needles: str) -> list[str]:
    """Command lines of live processes (not zombies) that contain any of the needles."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(n in cmd for n in needles):
            out.append(f"{d.name}: {cmd}")
    return out


def assert_no_children(*needles: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    left = processes_mentioning(*needles)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_mentioning(*needles)
    assert not left, f"processes left behind: {left}"


def anvil_needle(rpc_url: str) -> str:
    return f"--port {rpc_url.rsplit(':', 1)[1]}"


def check_figures(res: dict, events: int, nodes: int, streams: int) -> None:
    assert res["ok"] is True and res["error"] is None, res
    assert res["chain_id"] == 31337
    assert res["rpc_url"].startswith("http://127.0.0.1:")
    assert res["registry"].startswith("0x") and len(res["registry"]) == 42
    assert len(res["node_urls"]) == nodes and all(u.startswith("http://127.0.0.1:") for u in res["node_urls"])
    assert res["events_submitted"] == events
    assert res["events_committed"] == events
    assert res["events_refused"] == 0
    # every client key JOINs every stream first: 4 clients (the default) x streams, at most `events`
    assert res["joins_committed"] == min(events, 4 * streams)
    assert len(res["streams"]) == streams
    assert sum(s["events"] for s in res["streams"]) == events
    assert res["miniblocks"] == sum(s["miniblocks"] for s in res["streams"])
    # at most one block per event; a stream's first block holds only JOINs (nobody is a member before it), so a
    # stream that also got MESSAGEs has at least two (which streams the MESSAGEs go to depends on when each
    # stream's JOINs commit)
    assert streams <= res["miniblocks"] <= events
    joins_per_stream = res["joins_committed"] // streams
    for s in res["streams"]:
        assert s["miniblocks"] >= (2 if s["events"] > joins_per_stream else 1), s
    assert all(s["head"] == s["miniblocks"] for s in res["streams"])
    assert 0 < res["elapsed_s"] < 120
    assert res["events_per_s"] == pytest.approx(events / res["elapsed_s"], rel=0.02)
    lat = res["commit_latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"] < 60_000
    # a commitMiniblocks tx: 21k base + calldata + signature checks + storage; per header (v2, the devnet's
    # default: packed records, one head slot per stream; far below v1's 54-100k once batches hold several)
    assert 15_000 < res["gas_per_header"] < 1_000_000
    assert res["status_checked"] == 5  # five events read back through GET /v1/events, proofs valid
    # a rejected header (e.g. a leader racing a commit it had not seen yet) costs gas but changes nothing
    assert all(isinstance(n, int) and n > 0 for n in res["headers_rejected"].values())


def test_devnet_own_anvil_events_json(tmp_path):
    data = tmp_path / "dn"
    p = subprocess.run(node_cmd("devnet", "--nodes", "4", "--streams", "2", "--events", "40", "--json",
                                "--data-dir", str(data)),
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=170)
    assert p.returncode == 0, p.stderr[-4000:]
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stdout  # exactly one JSON object on stdout
    res = json.loads(lines[0])
    check_figures(res, events=40, nodes=4, streams=2)
    assert res["deployment"] == str((data / "deployment.json").resolve())
    dep = json.loads((data / "deployment.json").read_text())
    assert dep["registry"] == res["registry"] and len(dep["nodes"]) == 4
    # its own Anvil and every node process are gone
    assert_no_children(str(data), anvil_needle(res["rpc_url"]))
    with pytest.raises(httpx.HTTPError):
        httpx.post(res["rpc_url"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=2,
                   trust_env=False)


def test_devnet_rpc_url_leaves_the_chain_running(tmp_path):
    with Anvil(log_path=tmp_path / "anvil.log") as anvil:
        # an existing chain needs a deployer: --dev (Anvil dev key 0) or --keystore
        p = subprocess.run(node_cmd("devnet", "--rpc-url", anvil.http_url, "--events", "5"),
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and "--keystore" in p.stderr
        data = tmp_path / "dn"
        p = subprocess.run(node_cmd("devnet", "--rpc-url", anvil.http_url, "--dev", "--nodes", "3", "--streams",
                                    "1", "--events", "12", "--json", "--data-dir", str(data)),
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=150)
        assert p.returncode == 0, p.stderr[-4000:]
        res = json.loads(p.stdout.strip().splitlines()[-1])
        check_figures(res, events=12, nodes=3, streams=1)
        assert res["rpc_url"] == anvil.http_url
        assert_no_children(str(data))
        # the chain is still up, with the registry and its headers on it
        assert anvil.running
        w3 = anvil.w3()
        assert len(w3.eth.get_code(res["registry"])) > 0
        assert w3.eth.block_number > 0
        # the devnet's registry is v2 by default: `headers` proves every header it shows committed
        p = subprocess.run(node_cmd("headers", "--rpc-url", anvil.http_url, "--registry", res["registry"], "--all",
                                    "--json"), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-3000:]
        lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
        shown = [x for x in lines if x["type"] == "header" and x["status"] == "committed"]
        assert len(shown) == res["miniblocks"] and all(x["verification"]["ok"] and x["provedOnChain"] for x in shown)
        assert [x["ok"] for x in lines if x["type"] == "stream"] == [True]
        # events that cannot all be committed in time: non-zero exit and the reason, still in JSON (4,000 events
        # in 0.2 s is out of reach: the JOIN block alone must commit before the first MESSAGE is posted; 400
        # in 0.5 s was reached once on a fast moment of this box)
        data2 = tmp_path / "dn2"
        p = subprocess.run(node_cmd("devnet", "--rpc-url", anvil.http_url, "--dev", "--nodes", "1", "--streams",
                                    "1", "--events", "4000", "--timeout", "0.2", "--json", "--data-dir", str(data2)),
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=150)
        assert p.returncode == 1, p.stdout + p.stderr[-3000:]
        res = json.loads(p.stdout.strip().splitlines()[-1])
        assert res["ok"] is False and res["error"].startswith("timeout: ")
        assert "of 4000 events committed" in res["error"]
        assert res["events_committed"] < 4000
        assert_no_children(str(data2))
        assert anvil.running


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"devnet exited ({proc.returncode}) while waiting for {what}:\n"
                                 + (log.read_text()[-3000:] if log else ""))
        try:
            v = pred()
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            v = None
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n" + (log.read_text()[-3000:] if log else ""))


def test_submit_and_status_against_a_running_devnet(tmp_path):
    data = tmp_path / "dn"
    log = tmp_path / "devnet.out"
    with open(log, "wb") as fh:
        dn = subprocess.Popen(node_cmd("devnet", "--nodes", "3", "--streams", "2", "--rate", "4",
                                       "--data-dir", str(data)),
                              cwd=ROOT, env=ENV, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    rpc = None
    try:
        dep = _wait(lambda: json.loads((data / "deployment.json").read_text()), 90, "the deployment", dn, log)
        rpc = dep["rpc_url"]
        url = dep["nodes"][0]["url"]
        _wait(lambda: "nodes healthy" in log.read_text(), 90, "healthy nodes", dn, log)

        def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
            return subprocess.run(node_cmd(*args), cwd=ROOT, env=env or ENV, capture_output=True, text=True,
                                  timeout=60)

        key = "0x" + secrets.token_hex(32)
        # raw keys only with --dev
        p = run("submit", "--node", url, "--stream", "devnet/stream-0", "--key", key, "--kind", "join")
        assert p.returncode == 2 and "--dev" in p.stderr
        # JOIN, then a MESSAGE (valid from the block after the JOIN's)
        p = run("submit", "--node", url, "--stream", "devnet/stream-0", "--key", key, "--dev", "--kind", "join")
        assert p.returncode == 0, p.stdout + p.stderr
        h, status = p.stdout.splitlines()[:2]
        assert h.startswith("0x") and len(h) == 66
        assert status.startswith("status: committed in block ")
        join_block = int(status.split("block ")[1].split()[0])
        p = run("submit", "--node", url, "--stream", "devnet/stream-0", "--key", key, "--dev",
                "--payload", "hello", "--json")
        assert p.returncode == 0, p.stdout + p.stderr
        out = json.loads(p.stdout)
        assert out["status"] == "committed" and out["kind"] == "message" and out["block"] > join_block
        # the node serves it back, committed
        ev = httpx.get(f"{url}/v1/events/{out['hash']}", trust_env=False, timeout=5).json()
        assert ev["status"] == "committed" and bytes.fromhex(ev["event"]["payload"][2:]) == b"hello"
        # not a member of stream 1: refused with the reason, exit 1
        p = run("submit", "--node", url, "--stream", "devnet/stream-1", "--key", key, "--dev", "--payload", "x")
        assert p.returncode == 1 and "membership" in p.stdout
        # a keystore key, password from the environment
        from eth_account import Account

        ks = tmp_path / "client.json"
        ks.write_text(json.dumps(Account.encrypt(bytes.fromhex(secrets.token_hex(32)), "pw", iterations=2**10)))
        p = run("submit", "--node", dep["nodes"][1]["url"], "--stream", "devnet/stream-1", "--keystore", str(ks),
                "--kind", "join", "--json", env=dict(ENV, MINIBLOCK_KEYSTORE_PASSWORD="pw"))
        assert p.returncode == 0 and json.loads(p.stdout)["status"] == "committed", p.stdout + p.stderr
        author = json.loads(p.stdout)["author"]

        # status: JSON and the table
        p = run("status", "--node", url, "--json")
        assert p.returncode == 0, p.stderr
        st = json.loads(p.stdout)
        assert st["info"]["registry"] == dep["registry"] and st["health"]["ok"] is True
        by_id = {s["stream_id"]: s for s in st["streams"]}
        assert set(by_id) == set(dep["streams"])
        s0, s1 = by_id[dep["streams"][0]], by_id[dep["streams"][1]]
        assert Account.from_key(key).address in s0["members"] and author in s1["members"]
        assert s0["head_number"] >= out["block"] and len(s0["members"]) >= 5  # 4 load clients + ours
        assert all(isinstance(s["pool_size"], int) and s["pool_size"] >= 0 for s in st["streams"])
        p = run("status", "--node", url)
        assert p.returncode == 0, p.stderr
        assert "mini-pool" in p.stdout and dep["streams"][0][:14] in p.stdout and st["info"]["address"] in p.stdout
        p = run("status", "--node", "http://127.0.0.1:9")  # nothing listens there
        assert p.returncode == 2

        # Ctrl-C: the devnet stops every child and exits 0
        os.killpg(dn.pid, signal.SIGINT)
        assert dn.wait(60) == 0, log.read_text()[-3000:]
        assert "stopped cleanly" in log.read_text()
    finally:
        if dn.poll() is None:
            os.killpg(dn.pid, signal.SIGKILL)
            dn.wait(10)
    assert_no_children(str(data), *([anvil_needle(rpc)] if rpc else []))


def test_register_and_create_stream_commands(tmp_path):
    from eth_account import Account

    from node.chain.anvil import DEV_KEYS
    from node.chain.history import load_registry_abi
    from node.chain.registry import Registry
    from node.protocol.onion import HashOnion

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(node_cmd(*args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)

    with Anvil(log_path=tmp_path / "anvil.log") as anvil:
        rpc = anvil.http_url
        operator = Account.from_key(DEV_KEYS[1])
        p = run("deploy", "--rpc-url", rpc, "--dev", "--epoch-length", "3600", "--operator", operator.address,
                "--out", str(tmp_path / "deployment.json"), "--quiet")
        assert p.returncode == 0, p.stderr
        reg_addr = p.stdout.strip().splitlines()[-1]
        node_addr = Account.create().address
        # the operator registers the node; its onion is made in the node's data dir
        args = ("register", "--rpc-url", rpc, "--registry", reg_addr, "--node", node_addr, "--url",
                "http://127.0.0.1:19999", "--data-dir", str(tmp_path / "n1"), "--dev", "--private-key", DEV_KEYS[1])
        p = run(*args)
        assert p.returncode == 0, p.stderr
        assert f"node {node_addr} registered by {operator.address}" in p.stdout and "active from epoch 1" in p.stdout
        blob = json.loads((tmp_path / "n1" / "onion.json").read_text())
        onion = HashOnion(bytes.fromhex(blob["secret"][2:]), blob["depth"])
        reg = Registry(anvil.w3(), reg_addr, load_registry_abi())
        info = reg.get_node(node_addr)
        assert info.url == "http://127.0.0.1:19999" and bytes(info.randao_commit) == onion.commitment
        assert run(*args).returncode == 1  # already registered: refused, with the reason
        # streams take replicas among active nodes: none before the boundary, ours after it
        p = run("create-stream", "--rpc-url", rpc, "--registry", reg_addr, "--stream", "general", "--dev")
        assert p.returncode == 1 and "failed" in p.stderr
        anvil.increase_time(3600)
        anvil.mine()
        p = run("create-stream", "--rpc-url", rpc, "--registry", reg_addr, "--stream", "general", "--dev")
        assert p.returncode == 0, p.stderr
        assert "(general) replicas " + node_addr in p.stdout
        # the operator renews the node's onion: on chain first, then the data dir (the old file kept)
        p = run("renew-onion", "--rpc-url", rpc, "--registry", reg_addr, "--node", node_addr,
                "--data-dir", str(tmp_path / "n1"), "--onion-depth", "64", "--dev", "--private-key", DEV_KEYS[1])
        assert p.returncode == 0, p.stderr
        blob2 = json.loads((tmp_path / "n1" / "onion.json").read_text())
        renewed = HashOnion(bytes.fromhex(blob2["secret"][2:]), blob2["depth"])
        assert renewed.commitment != onion.commitment and "usable from the next epoch" in p.stdout
        assert bytes(reg.randao_commit_of(node_addr)) == renewed.commitment
        assert list((tmp_path / "n1").glob("onion.json.replaced-*"))
        # someone else cannot renew it, and the node's onion stays as it is
        p = run("renew-onion", "--rpc-url", rpc, "--registry", reg_addr, "--node", node_addr,
                "--data-dir", str(tmp_path / "n1"), "--dev", "--private-key", DEV_KEYS[2])
        assert p.returncode == 1 and "unchanged" in p.stderr
        assert json.loads((tmp_path / "n1" / "onion.json").read_text()) == blob2
        # only the owner evicts; the node stops counting at the next boundary
        p = run("evict", "--rpc-url", rpc, "--registry", reg_addr, "--node", node_addr, "--dev",
                "--private-key", DEV_KEYS[1])
        assert p.returncode == 1 and "evict failed" in p.stderr
        p = run("evict", "--rpc-url", rpc, "--registry", reg_addr, "--node", node_addr, "--dev")
        assert p.returncode == 0, p.stderr
        assert reg.get_node(node_addr).leave_epoch == reg.current_epoch() + 1 and "inactive from epoch" in p.stdout


def test_devnet_killed_outright_leaves_no_children(tmp_path):
    """SIGKILL gives the devnet no chance to clean up: its watchdog stops Anvil and the nodes."""
    data = tmp_path / "dn"
    log = tmp_path / "devnet.out"
    with open(log, "wb") as fh:
        dn = subprocess.Popen(node_cmd("devnet", "--nodes", "2", "--streams", "1", "--rate", "5",
                                       "--data-dir", str(data)),
                              cwd=ROOT, env=ENV, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        dep = _wait(lambda: json.loads((data / "deployment.json").read_text()), 90, "the deployment", dn, log)
        _wait(lambda: "posting events" in log.read_text(), 90, "the load", dn, log)
        assert processes_mentioning(str(data))  # the nodes run
    finally:
        os.killpg(dn.pid, signal.SIGKILL)
        dn.wait(10)
    assert_no_children(str(data), anvil_needle(dep["rpc_url"]), within=20)
