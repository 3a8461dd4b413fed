"""How full the nodes' commit transactions are (issue 11, "batches that fill"): the median gas per header
over the headers committed (each header costs its transaction's gas divided by the headers it committed)
and the distribution of headers per transaction, from the `commit_txs` rows of bench/scenarios.py."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any


def median_gas_per_header(txs: list[dict[str, int]]) -> int | None:
    """Median over committed headers of their transaction's gas / headers committed in it."""
    per = [t["gas"] / t["headers"] for t in txs for _ in range(t["headers"]) if t["headers"]]
    return round(statistics.median(per)) if per else None


def headers_per_tx(txs: list[dict[str, int]]) -> dict[str, Any]:
    """Headers (committed + rejected) per transaction: median, max and the count of txs of each size."""
    sizes = [t["headers"] + t["rejected"] for t in txs]
    if not sizes:
        return {}
    return {"median": statistics.median(sizes), "max": max(sizes),
            "txs_by_size": dict(sorted(Counter(sizes).items()))}
