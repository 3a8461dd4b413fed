#!/usr/bin/env python3
"""Gas per committed header, by batch size (a script, not a test).

On a fresh Anvil: deploy the registry with 5 nodes and replication 5, create one
stream per header, and commit batches of 1, 8 and 64 headers (each header a
different stream, each at its block 1) with 3 of 5 replicas signing (the leader +
2 attestations, the quorum).  Then the same with replication 3 and all 3 signing.
Prints one JSON line per (configuration, batch size) on stdout:

    {"replication": 5, "signers": 3, "batch": 8, "gas_used": ..., "gas_per_header": ...,
     "calldata_bytes_per_header": ..., "runs": 3, ...}

    .venv/bin/python bench/gas_per_header.py [--batches 1,8,64] [--repeat 3] [--events 16]

gas_used is the receipt's (21000 intrinsic + calldata + execution), median of
--repeat batches, each on fresh streams.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eth_account import Account  # noqa: E402

from node.build import load_artifact  # noqa: E402
from node.chain.anvil import DEV_KEYS, Anvil  # noqa: E402
from node.chain.deploy import NodeSpec, deploy  # noqa: E402
from node.chain.devtools import NodeKeys, next_header, sign_header  # noqa: E402
from node.chain.registry import Registry, TxSender  # noqa: E402
from node.protocol.hashing import keccak  # noqa: E402
from node.protocol.onion import HashOnion  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure(
    anvil: Anvil, artifact: dict[str, Any], *, nodes: int, replication: int, signers: int,
    batches: list[int], repeat: int, events: int, tag: int,
) -> list[dict[str, Any]]:
    w3 = anvil.w3()
    sender = TxSender(w3, Account.from_key(DEV_KEYS[0]))
    keys: dict[str, NodeKeys] = {}
    for i in range(nodes):
        k = NodeKeys(bytes.fromhex(DEV_KEYS[i + 1][2:]), HashOnion(keccak(b"bench %d %d" % (tag, i)), 4096))
        keys[k.address] = k
    specs = [NodeSpec(a, f"http://127.0.0.1:{40000 + i}", k.onion.commitment) for i, (a, k) in enumerate(keys.items())]
    dep = deploy(
        w3, sender, epoch_length=86_400, leader_timeout=30, replication_factor=replication,
        nodes=specs, artifact=artifact, warp=True,
    )
    reg = Registry(w3, dep.registry, artifact["abi"], sender)
    # Streams need active nodes: registered in epoch 0, active from epoch 1.
    anvil.increase_time(86_400)
    anvil.mine()
    assert reg.current_epoch() == 1
    n_streams = sum(batches) * repeat
    sids = [keccak(b"bench stream %d %d" % (tag, j)) for j in range(n_streams)]
    t = time.monotonic()
    for sid in sids:
        reg.create_stream(sid)
    log(f"r={replication}: {n_streams} streams created in {time.monotonic() - t:.1f}s")

    out = []
    it = iter(sids)
    for b in batches:
        runs = []
        for _ in range(repeat):
            used: dict[str, int] = {}
            headers, sigs = [], []
            for _ in range(b):
                sid = next(it)
                leader = reg.elected_leader(sid, 1, 0)
                hs = [os.urandom(32) for _ in range(events)]
                h = next_header(reg, sid, keys, event_hashes=hs, reveal_offset=used.get(leader, 0))
                used[leader] = used.get(leader, 0) + 1
                headers.append(h)
                sigs.append(sign_header(reg, h, keys, attesters=signers - 1))
            res = reg.commit_miniblocks(headers, sigs)
            if res.rejected or len(res.committed) != b:
                raise SystemExit(f"batch of {b}: rejected {[(r.number, r.reason_name) for r in res.rejected]}")
            runs.append((res.gas_used, len(reg.transaction(res.tx_hash).input)))
        gas = statistics.median(g for g, _ in runs)
        calldata = statistics.median(c for _, c in runs)
        row = {
            "replication": replication,
            "signers": signers,
            "batch": b,
            "events_per_header": events,
            "gas_used": int(gas),
            "gas_per_header": round(gas / b, 1),
            "calldata_bytes_per_header": round(calldata / b, 1),
            "runs": repeat,
            "gas_used_runs": [g for g, _ in runs],
        }
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--events", type=int, default=16, help="events per header (only eventsRoot/eventCount go on-chain)")
    args = ap.parse_args()
    batches = [int(x) for x in args.batches.split(",")]
    artifact = load_artifact("MiniblockRegistry")
    with Anvil() as anvil:
        measure(anvil, artifact, nodes=5, replication=5, signers=3, batches=batches,
                repeat=args.repeat, events=args.events, tag=1)
    with Anvil() as anvil:
        measure(anvil, artifact, nodes=5, replication=3, signers=3, batches=batches,
                repeat=args.repeat, events=args.events, tag=2)


if __name__ == "__main__":
    main()
