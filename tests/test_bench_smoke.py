"""The benchmark command in its tiny mode: it runs end to end on a fresh Anvil with node processes and
writes its JSON lines, results.jsonl and the PNG. No timed assertion: figures are a benchmark's, not a test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("matplotlib")
pytest.importorskip("psutil")


def test_bench_tiny_writes_json_lines_and_png(tmp_path):
    out = tmp_path / "bench"
    env = dict(os.environ, PATH=f"{ROOT / 'node_modules' / '.bin'}:{os.environ.get('PATH', '')}")
    p = subprocess.run([sys.executable, "-m", "node", "bench", "--tiny", "--only", "throughput", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
    scen = {r["scenario"] for r in lines}
    assert {"machine", "throughput"} <= scen, scen
    tp = next(r for r in lines if r["scenario"] == "throughput")
    assert "error" not in tp, tp
    assert tp["committed"] == tp["posted"] > 0
    for k in ("events_per_s", "latency_ms", "gas_per_header", "cpu_s_per_1k_events_mean", "rss_hwm_mb_per_node"):
        assert tp.get(k) is not None, k
    assert (out / "results.jsonl").read_text().splitlines() == p.stdout.splitlines()
    png = out / "bench.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
