"""Streams at scale (issue 12): registered-but-idle streams and what they cost a node.

One devnet (4 nodes, r = 3, 10 streams from deploy). For each stream count N (10, then more streams
registered on-chain through the test-only StreamBatch helper, contracts/test/helpers/StreamBatch.sol, 170
per transaction), once every node has seen them all: node 0 is stopped (SIGTERM) and started
again on its data dir, and the row gives
- `ready_s`: from the process start to its port open (`port_s`), `/healthz` 200 (`healthz_ok_s`) and
  caught up (healthz `behind` 0 and `chain_block` at least the chain's block at the restart);
- `idle_cpu_pct`: CPU of node 0 (and the most of the others) over `idle_s` seconds, % of one core;
- `healthz_ms`: p50/p99 of `/healthz` over 200 sequential requests;
- `rss_mb`: node 0's RSS after that;
- `commit_ms`: p50/max of the client-side latency (POST to a node answering `committed`) of a JOIN on
  `samples` idle streams, each on a stream no event ever touched;
- `chain_tx_ms`: p50/max of a plain transfer's send-to-receipt time on the chain then (the chain's own
  block time, the floor under `commit_ms`: Anvil's grows with its state, about 1-2 s at 100,000 streams).

Run alone: `python -m bench.stream_scale --counts 10,10000,100000` (JSON lines on stdout, progress on
stderr); `python -m node bench --only stream_scale` runs it with the full sizes.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from node.chain.abi import Abi
from node.chain.logs import Receipt
from node.protocol.hashing import keccak
from node.protocol.types import EventKind

from .scenarios import Log, Net, start_net

HELPER_DIR = Path(__file__).resolve().parent.parent / "contracts" / "test" / "helpers"
TAG = keccak(b"bench/stream-scale")
# createStream costs ~85k gas: 170 per transaction stay under half of Anvil's 30M block gas limit, so the base
# fee does not grow block after block (over half, it grows 12.5% a block and queued transactions starve)
PER_TX = 170
TX_GAS = 15_000_000


def batch_stream_id(tag: bytes, i: int) -> bytes:
    """The id StreamBatch gives stream i: keccak256(abi.encode(tag, i))."""
    return keccak(tag + i.to_bytes(32, "big"))


class StreamMaker:
    """Registers streams on-chain in batches through the StreamBatch helper (deployed once)."""

    def __init__(self, net: Net, log: Log) -> None:
        from node.build import ROOT, build

        arts = build(src_dir=HELPER_DIR, out_dir=ROOT / "build" / "test-contracts")
        art = json.loads(arts["StreamBatch"].read_text())
        sender = net.network.sender
        assert sender is not None and net.network.deployment is not None, "started"
        self.sender, self.registry = sender, net.network.deployment.registry
        self.abi = Abi(art["abi"])
        rc = sender.deploy(art)
        assert rc.contract_address is not None
        self.address: str = rc.contract_address
        self.made = 0
        self.log = log

    def make_up_to(self, n: int) -> dict[str, Any]:
        """Create streams self.made..n-1; returns time, transactions and gas."""
        t0 = time.monotonic()
        hashes = []
        first = self.made
        for a in range(self.made, n, PER_TX):
            data = self.abi.encode_call("create", [self.registry, TAG, a, min(n, a + PER_TX)])
            hashes.append(self.sender.send(self.address, data, gas=TX_GAS, wait=False))
        gas = 0
        for h in hashes:
            assert isinstance(h, bytes)
            rc = self.sender.wait_receipt(h, timeout=300)
            assert isinstance(rc, Receipt)
            if rc.status != 1:
                raise RuntimeError(f"StreamBatch.create reverted: 0x{h.hex()}")
            gas += rc.gas_used
        self.made = max(self.made, n)
        dt = time.monotonic() - t0
        each = gas / max(1, n - first)
        self.log(f"  {n - first} streams created in {dt:.1f}s ({len(hashes)} txs, {each:.0f} gas each)")
        return {"create_s": round(dt, 1), "create_txs": len(hashes),
                "gas_per_stream": round(gas / (n - first)) if n > first else None}

    def ids(self, a: int, b: int) -> list[bytes]:
        return [batch_stream_id(TAG, i) for i in range(a, b)]


def _health(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any] | None]:
    try:
        r = httpx.get(url + "/healthz", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return 0, None
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, None


def wait_seen(net: Net, n: int, timeout: float, log: Log) -> float:
    """Until every node's /healthz counts n streams (the watcher recorded their StreamCreated logs)."""
    t0 = time.monotonic()
    latest = net.reg.block_number()
    while time.monotonic() - t0 < timeout:
        hs = [_health(u, 10.0)[1] for u in net.urls]
        if all(h and h.get("streams", 0) >= n and h.get("chain_block", 0) >= latest for h in hs):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise TimeoutError(f"nodes did not see {n} streams within {timeout:.0f}s: {hs}")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def restart(net: Net, i: int, timeout: float, log: Log) -> dict[str, Any]:
    """Stop node i (SIGTERM), start it on its data dir; times to port open, healthz 200, caught up."""
    cl = net.cluster
    cl.stop(i)
    latest = net.reg.block_number()
    setup = cl.setups[i]
    t0 = time.monotonic()
    cl.start(i)
    port_s = ok_s = ready_s = None
    while time.monotonic() - t0 < timeout:
        if not cl.running(i):
            raise RuntimeError(f"node {i} exited:\n{cl.log_tail(i)}")
        if port_s is None:
            if _port_open(setup.host, setup.port):
                port_s = time.monotonic() - t0
            else:
                time.sleep(0.02)
                continue
        code, h = _health(setup.url)
        if code == 200 and h is not None:
            if ok_s is None:
                ok_s = time.monotonic() - t0
            if h.get("behind", 1) == 0 and h.get("chain_block", 0) >= latest:
                ready_s = time.monotonic() - t0
                break
        time.sleep(0.05)
    r = lambda x: None if x is None else round(x, 2)  # noqa: E731
    log(f"  restart of node {i}: port {r(port_s)}s, healthz {r(ok_s)}s, caught up {r(ready_s)}s")
    return {"port_s": r(port_s), "healthz_ok_s": r(ok_s), "ready_s": r(ready_s),
            **({} if ready_s is not None else {"error": f"not ready within {timeout:.0f}s"})}


def idle_cpu(net: Net, seconds: float) -> dict[str, Any]:
    import psutil

    procs = [psutil.Process(p) for p in net.network.pids()]

    def cpu() -> list[float]:
        return [sum(p.cpu_times()[:2]) for p in procs]

    a, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    b, dt = cpu(), time.monotonic() - t0
    pct = [round(100 * (y - x) / dt, 1) for x, y in zip(a, b, strict=True)]
    return {"idle_s": seconds, "idle_cpu_pct": pct[0], "idle_cpu_pct_others_max": max(pct[1:]),
            "rss_mb": round(procs[0].memory_info().rss / 2**20, 1),
            "rss_mb_others_max": round(max(p.memory_info().rss for p in procs[1:]) / 2**20, 1)}


def healthz_latency(url: str, n: int = 200) -> dict[str, Any]:
    ms = []
    with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as c:
        c.get("/healthz")
        for _ in range(n):
            t = time.perf_counter()
            c.get("/healthz")
            ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    return {"healthz_ms_p50": round(statistics.median(ms), 1), "healthz_ms_p99": round(ms[int(0.99 * (n - 1))], 1)}


def commit_latency(net: Net, streams: list[bytes], timeout: float, log: Log) -> dict[str, Any]:
    """A JOIN by a fresh key on each stream in turn, posted to node 0; client-side time until a node
    answers it committed (polled every 25 ms on every node)."""
    from node.server.client import Author

    urls = net.urls
    out: list[float] = []
    errors = 0
    with httpx.Client(timeout=5.0, trust_env=False) as c:
        for sid in streams:
            h, body = Author(net.network.domain).event(sid, int(EventKind.JOIN), b"")
            t0 = time.monotonic()
            r = c.post(urls[0] + "/v1/events", json=body)
            if r.status_code != 202:
                errors += 1
                log(f"  JOIN refused: {r.status_code} {r.text[:200]}")
                continue
            done = False
            while not done and time.monotonic() - t0 < timeout:
                for u in urls:
                    try:
                        g = c.get(f"{u}/v1/events/0x{h.hex()}")
                    except httpx.HTTPError:
                        continue
                    if g.status_code == 200 and g.json().get("status") == "committed":
                        out.append(time.monotonic() - t0)
                        done = True
                        break
                time.sleep(0.025)
            if not done:
                errors += 1
    ms = sorted(x * 1000 for x in out)
    res: dict[str, Any] = {"commit_samples": len(streams),
                           "commit_ms_p50": round(statistics.median(ms)) if ms else None,
                           "commit_ms_max": round(ms[-1]) if ms else None, "commit_ms": [round(x) for x in ms]}
    if errors:
        res["commit_errors"] = errors
    log(f"  idle-stream JOIN commit: {res['commit_ms']} ms")
    return res


def chain_tx_latency(net: Net, n: int = 5) -> dict[str, Any]:
    """Send-to-receipt of a 1-wei self-transfer by the deployer, `n` times (the chain's block time now)."""
    sender = net.network.sender
    assert sender is not None, "started"
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        sender.transfer(sender.address, 1, wait=True)
        ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    return {"chain_tx_ms_p50": round(statistics.median(ms)), "chain_tx_ms_max": round(ms[-1])}


def stream_scale(base: Path, counts: list[int], log: Log, idle_s: float = 30.0, samples: int = 5,
                 ready_timeout: float = 600.0) -> list[dict[str, Any]]:
    """One row per stream count (the first count must be the devnet's own 10, or more)."""
    rows: list[dict[str, Any]] = []
    net = start_net(base / "stream-scale", 4, 10, log)
    try:
        maker: StreamMaker | None = None
        sampled = 0
        for n in counts:
            row: dict[str, Any] = {"scenario": "stream_scale", "nodes": 4, "replication": 3, "streams": n}
            try:
                if n > 10:
                    maker = maker or StreamMaker(net, log)
                    row.update(maker.make_up_to(n - 10))
                    row["seen_s"] = round(wait_seen(net, n, ready_timeout, log), 1)
                row.update(restart(net, 0, ready_timeout, log))
                row.update(idle_cpu(net, idle_s))
                row.update(healthz_latency(net.urls[0]))
                if maker is None:
                    idle = net.streams[:samples]
                else:  # streams no event touched, spread over the ones made
                    step = max(1, maker.made // samples)
                    idle = [batch_stream_id(TAG, (sampled + k * step) % maker.made) for k in range(samples)]
                    sampled += 1
                row.update(commit_latency(net, idle, 60.0, log))
                row.update(chain_tx_latency(net))
            except Exception as exc:  # noqa: BLE001 - a row with its error; larger counts would fail too
                row["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
                break
            log(f"  {json.dumps(row)}")
            rows.append(row)
    finally:
        net.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="10,10000,100000")
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--ready-timeout", type=float, default=600.0)
    ap.add_argument("--dir", type=Path, default=None)
    a = ap.parse_args()

    def log(s: str) -> None:
        print(f"stream_scale: {s}", file=sys.stderr, flush=True)

    base = a.dir or Path(tempfile.mkdtemp(prefix="stream-scale-"))
    for r in stream_scale(base, [int(x) for x in a.counts.split(",")], log, a.idle_s, a.samples, a.ready_timeout):
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
