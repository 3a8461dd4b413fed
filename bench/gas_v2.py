#!/usr/bin/env python3
"""Gas per committed header of registry v2, by batch size, from real Anvil receipts (a script, not
a test; the forge twin is contracts/test/GasV2.t.sol).

On a fresh Anvil: deploy MiniblockRegistryV2 (node/build.py compiles contracts/src) with 4 nodes
and replication 3, create one stream per header, and commit batches of 1, 8 and 64 headers (each
header a different stream at its block 1, 16 events, a non-zero stateRoot) signed by 2 of 3 and by
3 of 3 replicas (the leader's signature counts). Steady state: one warm-up commit first (the very
first commit of a registry also turns the history accumulator non-zero), and no measured commit
closes a history window (a filler commit is sent instead), so the checkpoint's slot is added as
its share, 22,100 / HISTORY_WINDOW per commit. Prints one JSON line per (replication, signers,
batch) on stdout:

    {"replication": 3, "signers": 2, "batch": 64, "gas_per_header": ..., "breakdown": {
     "base": ..., "calldata": ..., "execution": ..., "checkpoint_share": ...}, ...}

    .venv/bin/python bench/gas_v2.py [--batches 1,8,64] [--signers 2,3] [--repeat 3] [--access-list both|on|off]

Each (signers, batch) is measured without and with the EIP-2930 access list the nodes' sender
attaches (`access_list`: the part of eth_createAccessList that saves gas; none below ~14 headers).

gas_used is the receipt's (21,000 + calldata + execution), median of --repeat batches, each on
fresh streams; the breakdown is per header: base = 21,000 / batch, calldata from the bytes
(4 per zero byte, 16 per other), execution = the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.v2chain import V2Chain  # noqa: E402
from node.chain.anvil import Anvil  # noqa: E402
from node.protocol import v2  # noqa: E402
from node.protocol.hashing import keccak  # noqa: E402
from node.protocol.merkle import merkle_root  # noqa: E402

BASE = 21_000
CHECKPOINT_SLOT = 22_100  # a new storage slot (cold): 20,000 + 2,100


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def calldata_gas(data: bytes) -> int:
    return sum(4 if b == 0 else 16 for b in data)


def measure(anvil: Anvil, *, nodes: int, replication: int, signers_list: list[int], batches: list[int],
            repeat: int, events: int, access_modes: tuple[bool, ...] = (False, True)) -> list[dict[str, Any]]:
    ch = V2Chain(anvil, nodes=nodes, replication=replication, tag=b"gas v2")
    per_mode = sum(batches) * repeat * len(signers_list) + 2 * (len(batches) * repeat * len(signers_list) + 2)
    need = len(access_modes) * per_mode
    sids = [keccak(b"gas v2 stream %d" % j) for j in range(need)]
    ch.create_streams(sids)
    anvil.increase_time(1)
    anvil.mine()
    it = iter(sids)

    def commit_one(sid: bytes, signers: int) -> tuple[Any, v2.CommitLog, bytes]:
        item = ch.next_signed(sid, signers=signers, events_root=merkle_root([os.urandom(32) for _ in range(events)]),
                              event_count=events, state_root=os.urandom(32))
        batch, signed = ch.batch([item])
        rc, lg, rej = ch.commit(batch)
        if rej or lg is None:
            raise SystemExit(f"filler commit rejected: {rej}")
        ch.note_accepted(signed)
        return rc, lg, batch

    commit_one(next(it), 2)  # warm-up: the accumulator becomes non-zero
    out = []
    for signers, b, al in ((sg, b, al) for sg in signers_list for b in batches for al in access_modes):
        runs: list[tuple[int, int]] = []
        leaders: list[int] = []
        for _ in range(repeat):
            if len(ch.roots) % v2.HISTORY_WINDOW == v2.HISTORY_WINDOW - 1:
                commit_one(next(it), 2)  # the measured commit must not close a window
            items = [
                ch.next_signed(next(it), signers=signers,
                               events_root=merkle_root([os.urandom(32) for _ in range(events)]),
                               event_count=events, state_root=os.urandom(32))
                for _ in range(b)
            ]
            batch, signed = ch.batch(items)
            leaders.append(len({it.header.leader for it in signed}))
            rc, lg, rej = ch.commit(batch, access_list=al)
            if rej or lg is None or len(lg.header_hashes) != b:
                raise SystemExit(f"batch of {b}: rejected {rej}")
            ch.note_accepted(signed)
            runs.append((int(rc["gasUsed"]), calldata_gas(ch.calldata(batch))))
        gas = statistics.median(g for g, _ in runs)
        cd = statistics.median(c for _, c in runs)
        share = CHECKPOINT_SLOT / v2.HISTORY_WINDOW
        per = (gas + share) / b
        row = {
            "registry": "v2",
            "replication": replication,
            "nodes": nodes,
            "signers": signers,
            "batch": b,
            "access_list": al,
            "access_list_keys": sum(len(e["storageKeys"]) for e in ch.last_access_list),
            "events_per_header": events,
            # distinct leaders: each pays its reveal (one onion slot read and written, ~7,700 gas per tx)
            "leaders": statistics.median(leaders),
            "gas_used": int(gas),
            "gas_per_header": round(per, 1),
            "breakdown": {
                "base": round(BASE / b, 1),
                "calldata": round(cd / b, 1),
                "execution": round((gas - BASE - cd) / b, 1),
                "checkpoint_share": round(share / b, 1),
            },
            "calldata_bytes_per_header": round(len(ch.calldata(batch)) / b, 1),
            "runs": repeat,
            "gas_used_runs": [g for g, _ in runs],
        }
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--signers", default="2,3")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--access-list", choices=["both", "on", "off"], default="both",
                    help="commit with the EIP-2930 access list the nodes attach (node.chain.access_list), "
                         "without, or both")
    ap.add_argument("--events", type=int, default=16, help="events per header (only eventsRoot/eventCount go on-chain)")
    args = ap.parse_args()
    with Anvil() as anvil:
        measure(anvil, nodes=4, replication=3, signers_list=[int(x) for x in args.signers.split(",")],
                batches=[int(x) for x in args.batches.split(",")], repeat=args.repeat, events=args.events,
                access_modes={"both": (False, True), "on": (True,), "off": (False,)}[args.access_list])


if __name__ == "__main__":
    main()
