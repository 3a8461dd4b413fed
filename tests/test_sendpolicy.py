"""The aggregator's send rule (node/server/sendpolicy.py): full batches go at once, a batch waits for the
streams its recent sends carried but never longer than the hold, and never two sends within the gap."""

from __future__ import annotations

import pytest

from node.server.sendpolicy import SendPolicy

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def policy() -> SendPolicy:
    return SendPolicy(min_gap_s=0.25, hold_s=0.3, fill=3, recent_s=2.0)


def test_nothing_waiting_is_never_due() -> None:
    assert policy().wait_s(10.0, None, set(), 0, 0.0) is None


def test_a_first_batch_waits_the_hold_from_its_oldest_header() -> None:
    p = policy()
    assert p.wait_s(10.0, 10.0, {A}, 1, 0.0) == pytest.approx(0.3)
    assert p.wait_s(10.2, 10.0, {A}, 1, 0.0) == pytest.approx(0.1)
    assert p.wait_s(10.4, 10.0, {A}, 1, 0.0) == 0.0


def test_a_full_batch_goes_at_once_but_not_within_the_gap() -> None:
    p = policy()
    assert p.wait_s(10.0, 10.0, {A, B, C}, 3, 0.0) == 0.0
    assert p.wait_s(10.0, 10.0, {A, B, C}, 3, 9.9) == pytest.approx(0.15)


def test_a_batch_goes_once_every_recent_stream_is_back() -> None:
    p = policy()
    p.sent(9.0, {A, B})
    assert p.wait_s(10.0, 10.0, {A}, 1, 9.0) == pytest.approx(0.3)  # B is still on its way: wait (at most the hold)
    assert p.wait_s(10.1, 10.0, {A, B}, 2, 9.0) == 0.0  # both back: no reason to wait


def test_streams_not_sent_lately_are_not_waited_for() -> None:
    p = policy()
    p.sent(5.0, {A, B})
    p.sent(6.0, {C})
    assert p.expected(6.5) == {A, B, C}
    assert p.expected(7.5) == {C}  # A and B were last sent more than recent_s ago
    p.sent(10.0, {C})  # and are forgotten: the map holds only what may still be expected
    assert set(p.sent_at) == {C}
    assert p.wait_s(10.5, 10.5, {C}, 1, 10.0) == 0.0
