"""The devnet's display (rich): one row per stream, then the events, blocks and latency lines."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from node.protocol.hexutil import hx

from .stats import Stats


def short(x: str, n: int = 10) -> str:
    return x[:n] + "…" if len(x) > n + 1 else x


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms"


def render(stats: Stats, replicas: dict[bytes, list[str]]) -> Group:
    with stats.lock:
        lat = stats.latencies_ms()
        sub, com, el = stats.submitted, stats.committed, stats.elapsed()
        t = Table(title="streams", title_justify="left", expand=False)
        t.add_column("stream", justify="left")
        t.add_column("replicas", justify="left")
        t.add_column("head", justify="right")
        t.add_column("blocks (this run)", justify="right")
        t.add_column("events in blocks", justify="right")
        for sid in stats.streams:
            reps = ", ".join(short(r, 8) for r in replicas.get(sid, []))
            t.add_row(short(hx(sid), 12), reps, str(stats.heads.get(sid, 0)), str(stats.blocks[sid]),
                      str(stats.block_events[sid]))
        gph = stats.gas_per_header()
        gpe = stats.gas_per_event()
        rej = sum(stats.rejected.values())
        rejh = sum(stats.rejected_headers.values())
        rejwhy = ", ".join(f"{n} {r}" for r, n in sorted(stats.rejected_headers.items()))
        txs = stats.commit_txs
        blocks = sum(stats.blocks.values())
    rate = com / el if el > 0 and com else 0.0
    lines = [
        Text.assemble(("events   ", "bold"), (f"{com:,}", "bold green"), f" committed / {sub:,} submitted",
                      f"  ({sub - com:,} pending" + (f", {rej} refused" if rej else "") + ")",
                      f"   {rate:,.1f} ev/s over {el:,.1f}s"),
        Text.assemble(("blocks   ", "bold"), f"{blocks:,} committed",
                      f" (+{rejh} rejected: {rejwhy})" if rejh else "",
                      f"   {txs:,} commit txs   gas/header " + ("-" if gph is None else f"{gph:,}")
                      + "   gas/event " + ("-" if gpe is None else f"{gpe:,.0f}")),
        Text.assemble(("latency  ", "bold"), f"p50 {_ms(lat['p50'])}   p99 {_ms(lat['p99'])}",
                      ("   (client post -> header on chain)", "dim")),
    ]
    return Group(t, *lines)
