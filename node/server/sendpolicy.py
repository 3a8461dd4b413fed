"""When the aggregator sends (node/server/aggregate.py): a transaction's fixed cost (~76k gas on v2, plus
~7k per leader) is shared by its headers, so a batch of 3 costs ~2x per header what a batch of 16 does.
Sending on a fixed cadence splits the streams into groups whose block cycles stay apart; holding a batch
until the streams it just committed are back (their next headers come at about the same time) merges
them, and the hold is bounded so a slow or idle stream costs the others at most `hold_s`.

Send when something waits, at least `min_gap_s` after the last send, and one of: `fill` headers wait;
every stream of the recent sends (the last `recent_s`) has a header waiting; the oldest header has
waited `hold_s`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from .bounded import MAP_BOUND, BoundedDict


@dataclass
class SendPolicy:
    min_gap_s: float
    hold_s: float
    fill: int
    recent_s: float
    # stream -> when a send last carried it (the streams expected back); one writer: the aggregator
    sent_at: dict[bytes, float] = field(default_factory=lambda: BoundedDict(MAP_BOUND["per_stream"]))

    def expected(self, now: float) -> set[bytes]:
        """The streams of the sends of the last `recent_s`: their next headers are likely on their way."""
        return {sid for sid, t in self.sent_at.items() if now - t <= self.recent_s}

    def wait_s(self, now: float, oldest: float | None, streams: Collection[bytes], count: int,
               last_sent: float) -> float | None:
        """Seconds until the next send is due (0.0: now) for `count` headers of `streams` waiting, the oldest
        since `oldest` (monotonic); None: nothing waits."""
        if oldest is None or count == 0:
            return None
        gap = max(0.0, last_sent + self.min_gap_s - now)
        if count >= self.fill:
            return gap
        expected = self.expected(now)
        if expected and expected.issubset(streams):
            return gap
        return max(gap, oldest + self.hold_s - now)

    def sent(self, now: float, streams: Collection[bytes]) -> None:
        """A send carried these streams; streams not seen for `recent_s` are forgotten."""
        for sid in streams:
            self.sent_at.pop(sid, None)
            self.sent_at[sid] = now
        while self.sent_at:
            sid, t = next(iter(self.sent_at.items()))
            if now - t <= self.recent_s:
                break
            del self.sent_at[sid]
