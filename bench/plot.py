"""One PNG with the benchmark's figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def by(name: str) -> list[dict[str, Any]]:
        return [r for r in rows if r.get("scenario") == name]

    fig, ax = plt.subplots(2, 3, figsize=(17, 9.5))
    fig.suptitle("mini-block nodes on one 2-core machine (loopback, Anvil automine)", fontsize=13)

    # 1. throughput by streams (4 nodes, r=3) with the ceilings
    a = ax[0][0]
    tp = by("throughput") + by("scale_streams")
    xs = [str(r["streams"]) for r in tp]
    ys = [r.get("events_per_s") or 0 for r in tp]
    a.bar(xs, ys, color="tab:blue", label="committed (4 nodes, r=3)")
    for x, y in zip(xs, ys, strict=False):
        a.annotate(f"{y:,.0f}", (x, y), ha="center", va="bottom", fontsize=8)
    intake = next(iter(by("ceiling_intake")), None)
    if intake:
        a.axhline(intake["events_per_s"], color="tab:orange", ls="--", label="ceiling: node HTTP intake, commits off")
    anv = next(iter(by("ceiling_anvil")), None)
    if anv:
        hps = ", ".join(f"{r['streams']} str: {r.get('headers_per_s', 0):,.0f}" for r in tp if r.get("headers_per_s"))
        a.text(0.02, 0.02, f"headers/s committed by the nodes: {hps}\nceiling, Anvil alone (pre-signed, "
               f"{anv['headers_per_tx']}/tx): {anv['headers_per_s']:,.0f} headers/s",
               transform=a.transAxes, fontsize=7, va="bottom")
    a.axhline(5000, color="grey", ls=":", label="target 5,000/s (16 streams)")
    a.set_yscale("log")
    a.set_xlabel("streams")
    a.set_ylabel("events/s")
    a.set_title("throughput")
    a.legend(fontsize=7)

    # 2. latency p50/p99: max load vs half load
    a = ax[0][1]
    lat = [(f"{r['streams']} str\nmax load", r) for r in by("throughput")] + \
          [(f"{r['streams']} str\nhalf load", r) for r in by("latency_half_load")]
    labels = [name for name, _ in lat]
    p50 = [(r.get("latency_ms") or {}).get("p50") or 0 for _, r in lat]
    p99 = [(r.get("latency_ms") or {}).get("p99") or 0 for _, r in lat]
    idx = range(len(lat))
    a.bar([i - 0.2 for i in idx], p50, 0.4, label="p50")
    a.bar([i + 0.2 for i in idx], p99, 0.4, label="p99")
    a.axhline(2000, color="grey", ls=":", label="target p99 < 2 s at half load")
    a.set_xticks(list(idx), labels, fontsize=7)
    a.set_ylabel("ms, client post -> commit seen")
    a.set_title("commit latency")
    a.legend(fontsize=7)

    # 3. gas per header by batch size
    a = ax[0][2]
    gc = by("gas_contract")
    if gc:
        a.plot([r["batch"] for r in gc], [r["gas_per_header"] for r in gc], "o-", label="contract alone (3 signers)")
    nodes_gas: dict[str, list[int]] = {}
    for r in by("throughput") + by("scale_nodes") + by("scale_streams"):
        for g in r.get("gas_by_batch") or []:
            nodes_gas.setdefault(g["batch"], []).append(g["gas_per_header"])
    if nodes_gas:
        def mid(b: str) -> float:
            lo, _, hi = b.partition("-")
            return (int(lo) + int(hi or lo)) / 2
        pts = sorted((mid(b), sum(v) / len(v)) for b, v in nodes_gas.items())
        a.plot([p[0] for p in pts], [p[1] for p in pts], "s--", label="nodes' commit txs (receipts)")
    a.axhline(30000, color="grey", ls=":", label="target 30,000 at batch 64")
    a.set_xscale("log", base=2)
    a.set_xlabel("headers per commitMiniblocks tx")
    a.set_ylabel("gas per header")
    a.set_title("gas")
    a.legend(fontsize=7)

    # 4. node cost per 1,000 events
    a = ax[1][0]
    cost = [r for r in by("throughput") + by("scale_nodes") if r.get("cpu_s_per_1k_events_mean") is not None]
    labels = [f"{r['nodes']}n/{r['streams']}s" for r in cost]
    a.bar(labels, [r["cpu_s_per_1k_events_mean"] for r in cost], color="tab:green")
    a.set_ylabel("CPU s per 1,000 events, per node (mean)")
    a2 = a.twinx()
    a2.plot(labels, [max(r.get("rss_hwm_mb_per_node") or [0]) for r in cost], "kD", label="peak RSS (max node)")
    a2.set_ylabel("MB")
    a2.legend(fontsize=7, loc="upper right")
    a.set_title("node cost")
    a.tick_params(axis="x", labelsize=7)

    # 5. nodes 3/5/7 (+ the 4-node run with the same streams)
    a = ax[1][1]
    sc = by("scale_nodes")
    s16 = sc[0]["streams"] if sc else 16
    pts = sorted([(r["nodes"], r.get("events_per_s") or 0) for r in sc]
                 + [(r["nodes"], r.get("events_per_s") or 0) for r in by("throughput") if r["streams"] == s16])
    if pts:
        a.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        for n_nodes, ev_s in pts:
            a.annotate(f"{ev_s:,.0f}", (n_nodes, ev_s), fontsize=8)
    a.set_xlabel(f"nodes (replication 3, {s16} streams)")
    a.set_ylabel("events/s committed")
    a.set_title("scale: nodes")

    # 6. mini-pool
    a = ax[1][2]
    pool = next(iter(by("pool_100k") + by("pool")), None)
    intake = next(iter(by("ceiling_intake")), None)
    if pool and intake:
        names = ["intake\n(commits off)", "drain\n(commits on)"]
        vals = [intake.get("events_per_s") or 0, pool.get("drain_events_per_s") or 0]
        a.bar(names, vals, color=["tab:orange", "tab:purple"])
        for n, v in zip(names, vals, strict=False):
            a.annotate(f"{v:,.0f}/s", (n, v), ha="center", va="bottom", fontsize=8)
        a.set_title(f"mini-pool of {pool.get('pool_events', 0):,}: healthz {pool.get('healthz_ms')} ms while full, "
                    f"drained={pool.get('drained')} in {pool.get('drain_s')} s", fontsize=8)
    a.set_ylabel("events/s")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
