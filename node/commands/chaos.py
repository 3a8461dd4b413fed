"""`python -m node chaos`: a devnet under load and random faults, then checks from the chain and every node.

The logic is in node/chaos/; this module parses the flags and prints the figures (text, or JSON with
--json) and with --doc writes them into docs/reliability.md. Exit 0 only if every check passed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "reliability.md"


def main(
    faults: int = typer.Option(200, "--faults", min=1, help="Faults to inject (the fault phase ends here)."),
    max_s: float = typer.Option(900.0, "--max-s", help="Upper bound on the fault phase, seconds."),
    nodes: int = typer.Option(4, "--nodes", min=3, max=8),
    streams: int = typer.Option(3, "--streams", min=1, max=16),
    rate: float = typer.Option(30.0, "--rate", help="Load: events per second."),
    kinds: str = typer.Option("", "--kinds", help="Comma-separated subset of the fault kinds (default: all)."),
    seed: int | None = typer.Option(None, "--seed"),
    stall_bound: float = typer.Option(60.0, "--stall-bound", help="Fail if a stream head stood still longer, s."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout (progress on stderr)."),
    doc: bool = typer.Option(False, "--doc", help="Write the figures into docs/reliability.md."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Keep node data and logs here."),
    registry: str = typer.Option("v1", "--registry", help="Registry version to deploy: v1 or v2."),
) -> None:
    """Chaos run: faults by kind, events accepted / committed / lost, longest stall, p99 latency."""
    from node.chaos.faults import KINDS
    from node.chaos.report import text, write_doc
    from node.chaos.run import ChaosConfig, run_chaos
    from node.commands.deploy import registry_version

    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip()) or KINDS
    bad = [k for k in chosen if k not in KINDS]
    if bad:
        raise typer.BadParameter(f"unknown fault kinds {bad}; known: {', '.join(KINDS)}")
    cfg = ChaosConfig(faults=faults, max_s=max_s, nodes=nodes, streams=streams, rate=rate, kinds=chosen, seed=seed,
                      stall_bound_s=stall_bound, data_dir=data_dir.resolve() if data_dir else None,
                      registry_version=registry_version(registry))

    def say(s: str) -> None:
        print(s, file=sys.stderr if json_out else sys.stdout, flush=True)

    report = run_chaos(cfg, log=say)
    if json_out:
        sys.stdout.write(json.dumps(report.as_json()) + "\n")
    else:
        print(text(report))
    if doc:
        write_doc(DOC, report, cfg, "python -m node chaos " + " ".join(sys.argv[2:]))
        say(f"chaos: figures written to {DOC}")
    if not report.ok:
        raise typer.Exit(1)
