"""The chaos run, short (20 faults, bounded to a few minutes): every event that got a 2xx is committed
exactly once, every node's blocks are the chain's headers, no stream stalled past the bound."""

from __future__ import annotations

import pytest

from node.chaos.report import text
from node.chaos.run import ChaosConfig, run_chaos

pytestmark = pytest.mark.timeout(420)


def test_short_chaos_run_loses_nothing_and_every_node_follows_the_chain(tmp_path):
    cfg = ChaosConfig(faults=20, max_s=150, rate=20, seed=7, settle_s=120, stall_bound_s=60, data_dir=tmp_path,
                      registry_version=2)  # the devnet default
    report = run_chaos(cfg, log=lambda _s: None)
    print(text(report))
    assert report.ok, report.reasons
    assert report.faults_total == 20
    assert report.events_accepted > 0 and report.events_lost == 0 and report.events_doubled == 0
    assert report.events_committed == report.events_accepted
    assert not report.node_block_mismatches
