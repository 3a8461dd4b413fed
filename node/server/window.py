"""The attempt window at send time: until when a header of attempt `a` may still be sent.

The contract takes a header of attempt `a` any time after its window opens (`head.timestamp + a *
leaderTimeout`), but from `head.timestamp + (a + 1) * leaderTimeout` on the next attempt's leader builds
too (once it has been open `ATTEMPT_MARGIN_S`, node/server/core.py); a header of attempt `a` sent after that
races the next leader's, and one of the two comes back BAD_NUMBER. So a leader, and the aggregator for it,
sends a header only while its own attempt's window is open with `SEND_SLACK_S` left for the transaction to
reach the chain; past that the draft is dropped (its events stay pending for the next leader). Pure
arithmetic on chain-clock seconds, no I/O.
"""

from __future__ import annotations

SEND_SLACK_S = 0.5
"""Time kept for a sent transaction to be mined before the next attempt opens (an Anvil automine send and
its receipt take 0.05-0.5 s on this box under load)."""

LAND_S = 2.0
"""After an earlier attempt's send deadline, how long its transaction may still take to be mined and seen
by another node's watcher: a node that attested that attempt's header waits this long past the deadline
(not a whole leader timeout) before it leads the next attempt."""


OWN_RESERVE_S = 0.5
"""Kept by a leader that hands headers off: its wait for the aggregator ends this long before its send
deadline, so it can still send them itself (a hung aggregator otherwise cost each replica's attempt in turn)."""

HANDOFF_LAND_S = 0.5
"""An aggregator stops sending a hand-off this long before the leader's wait ends (OWN_RESERVE_S before the
deadline), for its transaction to be mined and seen when the leader re-reads the heads before its own send."""


def handoff_room(left: float) -> float:
    """Of `left` seconds to a header's send deadline, how long an aggregator may still take to send it."""
    return left - OWN_RESERVE_S - HANDOFF_LAND_S


def closes_at(head_ts: int, attempt: int, leader_timeout: int) -> float:
    """When the next attempt's window opens (chain time): attempt `attempt` stops being the only one."""
    return float(head_ts + (attempt + 1) * leader_timeout)


def send_by(head_ts: int, attempt: int, leader_timeout: int, slack: float = SEND_SLACK_S) -> float:
    """The last chain time at which a header of `attempt` on a head of `head_ts` may be sent."""
    return closes_at(head_ts, attempt, leader_timeout) - slack


def time_left(now: float, head_ts: int, attempt: int, leader_timeout: int, slack: float = SEND_SLACK_S) -> float:
    """Seconds left (negative: past) to send a header of `attempt` at chain time `now`."""
    return send_by(head_ts, attempt, leader_timeout, slack) - now


def earlier_settled_at(head_ts: int, attempt: int, leader_timeout: int) -> float:
    """When a header of an earlier `attempt` can no longer land unseen: its send deadline plus LAND_S."""
    return send_by(head_ts, attempt, leader_timeout) + LAND_S


def next_lag(prev: float, seen: float, keep: float = 0.7) -> float:
    """A leader's estimate of its tick's time from start to send, after a tick that took `seen`: up at once to a
    slower tick, down gradually (a slot started with less of its window left than this would be dropped late,
    its replicas' votes and attestations spent for nothing)."""
    return max(seen, keep * prev + (1 - keep) * seen)


MIN_START_S = 0.25  # a slot with less of its send window left is never started (votes + attestations take longer)


def start_need(lag: float, leader_timeout: int, margin: float) -> float:
    """How much of its send window a slot must have left to be started by a leader whose ticks recently took
    `lag` from start to send: MIN_START_S plus the lag, but at most half the window of an attempt >= 1 (open
    from `margin` after its start to SEND_SLACK_S before its end), so a run of slow ticks can never stop a
    leader from starting any slot (its lag is only measured by the ticks it runs)."""
    usable = leader_timeout - margin - SEND_SLACK_S
    return max(MIN_START_S, min(MIN_START_S + lag, usable / 2))
