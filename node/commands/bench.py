"""`python -m node bench [--out DIR] [--quick]`: the benchmarks of issue 5 (docs/performance.md).

Fresh local Anvils and node processes on loopback; every load bounded in count and time. Prints one
JSON line per figure set on stdout (progress on stderr) and writes DIR/results.jsonl and DIR/bench.png.
The scenarios live in the repository's bench/ package.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parent.parent.parent

SCENARIOS = ("ceiling_anvil", "throughput", "pool", "scale_nodes", "scale_streams", "stream_scale",
             "active_streams")
NAMED_ONLY_QUICK = ("active_streams",)  # in --quick only when named in --only (1,000 streams take minutes)

# (full, quick, tiny) sizes
SIZES: dict[str, dict[str, Any]] = {
    "full": dict(gas_batches=[1, 8, 64], anvil_txs=30, anvil_streams=64, stream_counts=[1, 16, 256],
                 events={1: 4000, 16: 20000, 256: 20000}, timeout=60.0, half_load=True, node_counts=[3, 5, 7],
                 scale_events=20000, many_streams=1000, many_events=10000, pool_events=100_000, pool_streams=16,
                 drain_timeout=240.0, registered=[10, 10_000, 100_000], active=(1000, 30_000, 60.0)),
    "quick": dict(gas_batches=[1, 8, 64], anvil_txs=10, anvil_streams=64, stream_counts=[1, 16],
                  events={1: 1000, 16: 4000}, timeout=25.0, half_load=True, node_counts=[], scale_events=0,
                  many_streams=0, many_events=0, pool_events=10_000, pool_streams=16, drain_timeout=45.0,
                  registered=[], active=(1000, 20_000, 40.0)),
    "tiny": dict(gas_batches=[1, 4], anvil_txs=3, anvil_streams=4, stream_counts=[1],
                 events={1: 100}, timeout=20.0, half_load=False, node_counts=[], scale_events=0,
                 many_streams=0, many_events=0, pool_events=400, pool_streams=2, drain_timeout=30.0,
                 registered=[], active=None),
}


def main(
    out: Path | None = typer.Option(None, "--out", help="Folder for results.jsonl and bench.png "
                                       "(default: bench-results/<timestamp>)."),
    quick: bool = typer.Option(False, "--quick", help="Smaller loads, no node/stream scaling (~2 min)."),
    tiny: bool = typer.Option(False, "--tiny", hidden=True, help="Smallest loads (the smoke test)."),
    only: str | None = typer.Option(None, "--only", help=f"Comma-separated subset of {','.join(SCENARIOS)}."),
    keep: bool = typer.Option(False, "--keep", help="Keep the node data dirs and logs (in DIR/work)."),
    registry: str = typer.Option("v2", "--registry", help="The registry the node scenarios deploy: v2 or v1."),
) -> None:
    """Benchmarks: throughput, latency, gas, node cost, scale, mini-pool, ceilings. JSON lines + PNG."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench import scenarios as sc
    from bench.active_streams import active_streams
    from bench.calibrate import annotate
    from bench.calibrate import measure as calibrate
    from bench.plot import plot
    from bench.stream_scale import stream_scale
    from node.commands.deploy import registry_version

    sc.REGISTRY_VERSION = registry_version(registry)
    mode = "tiny" if tiny else "quick" if quick else "full"
    z = SIZES[mode]
    todo = [s.strip() for s in only.split(",")] if only else [
        s for s in SCENARIOS if mode == "full" or s not in NAMED_ONLY_QUICK]
    bad = [s for s in todo if s not in SCENARIOS]
    if bad:
        raise typer.BadParameter(f"unknown scenario(s) {bad}; choose from {SCENARIOS}")
    out = (out or ROOT / "bench-results" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work" if keep else Path(tempfile.mkdtemp(prefix="bench-"))
    results = out / "results.jsonl"
    results.write_text("")
    rows: list[dict[str, Any]] = []

    def log(s: str) -> None:
        print(f"bench: {s}", file=sys.stderr, flush=True)

    def emit(new: list[dict[str, Any]]) -> None:
        cal = calibrate(5) if new else {}  # the box's speed now: every row carries it (bench/calibrate.py)
        with results.open("a") as fh:
            for r in new:
                la = os.getloadavg()  # the box is shared: its load when the figures were taken
                r = {**annotate(r, cal), "mode": mode, "registry_version": sc.REGISTRY_VERSION,
                     "loadavg_1m": round(la[0], 2), "loadavg_5m": round(la[1], 2)}
                rows.append(r)
                line = json.dumps(r)
                print(line, flush=True)
                fh.write(line + "\n")

    t0 = time.monotonic()
    failed = []
    try:
        import platform

        import psutil

        emit([{"scenario": "machine", "cpus": psutil.cpu_count(),
               "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
               "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}])
        steps = {
            "ceiling_anvil": lambda: sc.ceiling_anvil(work, z["gas_batches"], z["anvil_txs"], z["anvil_streams"], log),
            "throughput": lambda: sc.throughput(work, z["stream_counts"], z["events"], z["timeout"], log,
                                                half_load=z["half_load"]),
            "pool": lambda: sc.intake_and_pool(work, z["pool_events"], z["pool_streams"], z["drain_timeout"], log),
            "scale_nodes": lambda: sc.node_scale(work, z["node_counts"], 16, z["scale_events"], z["timeout"], log)
            if z["node_counts"] else [],
            "scale_streams": lambda: sc.many_streams(work, z["many_streams"], z["many_events"], z["timeout"], log)
            if z["many_streams"] else [],
            "stream_scale": lambda: stream_scale(work, z["registered"], log) if z["registered"] else [],
            "active_streams": lambda: active_streams(work, z["active"][0], z["active"][1], z["active"][2], log)
            if z["active"] else [],
        }
        for name in SCENARIOS:
            if name not in todo:
                continue
            t = time.monotonic()
            log(f"== {name} ==")
            try:
                emit(steps[name]())
            except Exception as e:  # noqa: BLE001 - one scenario failing must not lose the others
                failed.append(name)
                emit([{"scenario": name, "error": f"{type(e).__name__}: {e}"}])
            log(f"{name}: {time.monotonic() - t:.0f}s")
    finally:
        if rows:
            png = plot(rows, out / "bench.png")
            log(f"plot: {png}")
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    log(f"done in {time.monotonic() - t0:.0f}s: {results}")
    if failed:
        raise typer.Exit(1)
