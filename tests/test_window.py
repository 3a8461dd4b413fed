"""The attempt window at send time (node/server/window.py): a header of attempt a is sendable until the next
attempt opens, minus the slack for its transaction to land; a node that attested an earlier attempt waits
for it only until that attempt's deadline plus LAND_S. Pure arithmetic."""

from __future__ import annotations

from node.protocol.election import open_attempt
from node.server import window
from node.server.core import ATTEMPT_MARGIN_S


def test_send_by_is_the_next_attempts_opening_minus_the_slack():
    assert window.closes_at(100, 0, 4) == 104.0
    assert window.closes_at(100, 2, 4) == 112.0
    assert window.send_by(100, 0, 4) == 104.0 - window.SEND_SLACK_S
    assert window.send_by(100, 1, 4, slack=0.0) == 108.0


def test_time_left_counts_down_and_goes_negative_past_the_deadline():
    assert window.time_left(101.0, 100, 0, 4) == 2.5
    assert window.time_left(103.5, 100, 0, 4) == 0.0
    assert window.time_left(105.0, 100, 0, 4) == -1.5
    # attempt 1 on the same head: its own window, one timeout later
    assert window.time_left(105.0, 100, 1, 4) == 2.5


def test_a_sendable_header_is_never_one_the_next_leader_already_builds_on():
    """Wherever a node leads attempt a (open_attempt at now - ATTEMPT_MARGIN_S), every earlier attempt's
    send deadline is at least margin + slack behind it: an honest earlier leader has stopped sending."""
    head, timeout = 1_000, 4
    for tenths in range(0, 400):
        now = head + tenths / 10
        a = open_attempt(int(now - ATTEMPT_MARGIN_S), head, timeout)
        for earlier in range(a):
            assert now - window.send_by(head, earlier, timeout) >= ATTEMPT_MARGIN_S + window.SEND_SLACK_S


def test_an_earlier_attempt_is_waited_for_at_most_land_s_past_its_deadline():
    head, timeout = 1_000, 4
    settled = window.earlier_settled_at(head, 0, timeout)
    assert settled == window.send_by(head, 0, timeout) + window.LAND_S
    # less than the whole leader timeout that the wait used to be from the attestation on
    assert settled - window.closes_at(head, 0, timeout) < timeout


def test_the_send_lag_follows_a_slow_tick_at_once_and_a_fast_one_gradually():
    assert window.next_lag(0.0, 1.2) == 1.2
    lag = 3.0
    for _ in range(5):
        lag = window.next_lag(lag, 0.5)
    assert 0.5 < lag < 1.0
    assert window.next_lag(lag, 2.0) == 2.0


def test_a_slow_leader_still_starts_slots_early_in_their_window():
    """The lag only moves with ticks that run: the need is capped below an attempt's usable window, so a run
    of slow ticks never stops a leader from starting anything (a 1.5x uncapped need did, at load 5)."""
    usable = 4 - ATTEMPT_MARGIN_S - window.SEND_SLACK_S
    assert window.start_need(0.0, 4, ATTEMPT_MARGIN_S) == window.MIN_START_S
    assert window.start_need(0.5, 4, ATTEMPT_MARGIN_S) == window.MIN_START_S + 0.5
    for lag in (2.0, 5.0, 60.0):
        assert window.start_need(lag, 4, ATTEMPT_MARGIN_S) == usable / 2 < usable
    assert window.start_need(9.0, 2, ATTEMPT_MARGIN_S) == window.MIN_START_S  # a short timeout: the floor


def test_a_hand_off_leaves_the_leader_time_to_send_itself():
    """The aggregator sends a hand-off at most until HANDOFF_LAND_S before the leader's wait ends, and the
    leader's wait ends OWN_RESERVE_S before the send deadline: a hung aggregator costs a bound, not the attempt."""
    left = 2.0
    leader_wait_ends = left - window.OWN_RESERVE_S
    aggregator_sends_by = window.handoff_room(left)
    assert aggregator_sends_by + window.HANDOFF_LAND_S == leader_wait_ends < left
    assert window.handoff_room(0.9) < 0  # too little left: the leader sends at once
