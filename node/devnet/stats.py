"""The figures a load shares between its load generator (writes what it posted), its watcher (writes what
it saw committed) and whoever reports them (reads, under `lock`)."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field


def quantiles_ms(seconds: Iterable[float], *, mean: bool = False) -> dict[str, float | None]:
    """p50, p99 and max (and the mean if asked) of durations in seconds, in ms rounded to 0.1."""
    xs = sorted(seconds)
    keys = ("p50", "p99", "max", "mean") if mean else ("p50", "p99", "max")
    if not xs:
        return dict.fromkeys(keys)

    def q(p: float) -> float:
        return round(1000 * xs[min(len(xs) - 1, max(0, math.ceil(p * len(xs)) - 1))], 1)

    out: dict[str, float | None] = {"p50": q(0.50), "p99": q(0.99), "max": round(1000 * xs[-1], 1)}
    if mean:
        out["mean"] = round(1000 * sum(xs) / len(xs), 1)
    return out


@dataclass
class Stats:
    streams: list[bytes]
    lock: threading.Lock = field(default_factory=threading.Lock)
    posted: dict[bytes, float] = field(default_factory=dict)  # our event hash -> monotonic time of its POST
    latency: dict[bytes, float] = field(default_factory=dict)  # our committed event -> seconds post -> commit seen
    kinds: dict[bytes, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # "error: detail" -> count
    post_errors: int = 0  # transport errors / 5xx (retried)
    blocks: dict[bytes, int] = field(default_factory=lambda: defaultdict(int))  # committed in this run
    block_events: dict[bytes, int] = field(default_factory=lambda: defaultdict(int))
    heads: dict[bytes, int] = field(default_factory=dict)
    rejected_headers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    commit_txs: int = 0
    commit_gas: int = 0
    first_post: float | None = None
    last_commit: float | None = None

    @property
    def submitted(self) -> int:
        return len(self.posted)

    @property
    def committed(self) -> int:
        return len(self.latency)

    def pending(self) -> int:
        return self.submitted - self.committed

    def headers_committed(self) -> int:
        return sum(self.blocks.values())

    def gas_per_header(self) -> int | None:
        n = self.headers_committed()
        return round(self.commit_gas / n) if n else None

    def gas_per_event(self) -> float | None:
        """Commit gas over the events in the blocks committed (JOINs included)."""
        n = sum(self.block_events.values())
        return round(self.commit_gas / n, 1) if n else None

    def latencies_ms(self) -> dict[str, float | None]:
        return quantiles_ms(self.latency.values(), mean=True)

    def elapsed(self) -> float:
        if self.first_post is None:
            return 0.0
        end = self.last_commit if self.last_commit is not None else time.monotonic()
        return max(end - self.first_post, 1e-9)
