"""Issue 12, "1,000 active streams": one devnet (4 nodes, r = 3) with 1,000 streams, every stream JOINed by one
client, then MESSAGEs spread over all of them, unthrottled (bench/scenarios.run_load). Besides run_load's
figures (committed events/s, latency, CPU per event, gas), each row carries what decides whether many
streams scale: every leader's tick durations (p50/p99/max, from the `tick:` lines of its log in the
MESSAGE window; a tick longer than the leader timeout lets the next attempt's leader race it), and the
headers the chain rejected, by reason (BAD_NUMBER: two leaders for one number), over the whole run.

The streams are created by the deployer one transaction each (a bounded loop in node.chain.deploy): main
has no helper contract that creates many per transaction.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from bench.scenarios import Log, run_load, start_net

# producer.produce_once's summary line: draft (votes, majority, order, validity), attest, commit+apply
TICK = re.compile(r"tick: (\d+) headers \((\d+) events\).*?draft ([\d.]+)s attest ([\d.]+)s commit\+apply ([\d.]+)s")
LEADER_TIMEOUT_S = 4.0  # start_net's registry setting


def _q(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


def tick_figures(text: str) -> dict[str, Any]:
    """Tick durations (s) of one leader's log text: count, p50/p99/max of the whole tick and of its parts."""
    ticks = [tuple(float(x) for x in m.groups()) for m in TICK.finditer(text)]
    if not ticks:
        return {"ticks": 0}
    total = [d + a + c for _h, _e, d, a, c in ticks]
    return {"ticks": len(ticks), "headers_per_tick_mean": round(statistics.mean(t[0] for t in ticks), 1),
            "tick_s": {"p50": _q(total, 0.5), "p99": _q(total, 0.99), "max": round(max(total), 3)},
            "draft_s_p50": _q([t[2] for t in ticks], 0.5), "attest_s_p50": _q([t[3] for t in ticks], 0.5),
            "commit_s_p50": _q([t[4] for t in ticks], 0.5),
            "ticks_over_leader_timeout": sum(1 for x in total if x > LEADER_TIMEOUT_S)}


def bad_number_trace(net: Any, rejected: list[Any], first: int, last: int) -> dict[str, Any]:
    """Who raced whom, for every BAD_NUMBER: the header committed at the same (stream, number), whether it
    is in the same transaction, from the same sender, and how many blocks before the rejected one it landed
    (the rejected header's own attempt and leader are not in v2's log)."""
    bad = [x for x in rejected if x.reason_name == "BAD_NUMBER"]
    if not bad:
        return {}
    won = {(c.stream_id, c.number): c for c in net.reg.committed_logs(first, last)}
    w3 = net.network.w3
    senders: dict[bytes, str] = {}

    def sender(tx: bytes) -> str:
        if tx not in senders:
            senders[tx] = w3.eth.get_transaction(tx)["from"]
        return senders[tx]

    out: Counter[str] = Counter()
    for x in bad:
        c = won.get((x.stream_id, x.number))
        if c is None:
            out["no_winner_in_run"] += 1
            continue
        out["same_tx" if c.tx_hash == x.tx_hash else "other_tx"] += 1
        out["same_sender" if sender(c.tx_hash) == sender(x.tx_hash) else "other_sender"] += 1
        apart = x.block_number - c.block_number
        out[f"blocks_after_winner_{min(apart, 3) if apart >= 0 else 'neg'}"] += 1
    return dict(out)


def active_streams(base: Path, streams: int, events: int, timeout: float, log: Log) -> list[dict[str, Any]]:
    net = start_net(base / f"active-{streams}", 4, streams, log)
    try:
        first_block = net.reg.block_number() + 1
        logs = [s.data_dir / "node.log" for s in net.network.setups[:net.network.n_nodes]]
        offsets = [p.stat().st_size if p.exists() else 0 for p in logs]
        r = run_load(net, net.streams, clients=1, total=events, timeout=timeout, log=log)
        leaders = []
        for p, off in zip(logs, offsets, strict=True):
            with p.open("rb") as fh:
                fh.seek(off)
                leaders.append(tick_figures(fh.read().decode(errors="replace")))
        last_block = net.reg.block_number()
        rejected_logs = net.reg.rejected_logs(first_block, last_block)
        rejected = Counter(x.reason_name for x in rejected_logs)
        row: dict[str, Any] = {"scenario": "active_streams", **r, "leaders": leaders,
                               "bad_number_trace": bad_number_trace(net, rejected_logs, first_block, last_block),
                               "tick_s_max_all": max((t["tick_s"]["max"] for t in leaders if t["ticks"]), default=None),
                               "rejected_by_reason": dict(rejected), "bad_number": rejected.get("BAD_NUMBER", 0)}
        p50 = [(t.get("tick_s") or {}).get("p50") for t in leaders]
        top = [(t.get("tick_s") or {}).get("max") for t in leaders]
        log(f"  active streams: ticks p50 {p50} max {top} s per leader, rejected {dict(rejected)}")
        return [row]
    finally:
        net.stop()
