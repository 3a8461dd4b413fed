"""`producer.own_rejections`: which rejections of a mined commit are this leader's headers.

v2 logs the hash of the header as the contract rebuilt it (the chain's head as parent, the current epoch),
so a header rejected for its parent or number comes back under another hash than the one signed; the
leader must still see it as its own (metrics, logs, the retry of transient reasons)."""

from __future__ import annotations

from node.chain.logs import MiniblockCommitted, MiniblockRejected
from node.protocol.state import StateDelta
from node.protocol.types import RejectReason
from node.server.producer import Draft, own_rejections

S1, S2 = b"\x01" * 32, b"\x02" * 32


def draft(sid: bytes, number: int) -> Draft:
    return Draft(sid, number, 0, 1, b"\x00" * 32, [], StateDelta(), b"\x00" * 32, 0)


def rejected(sid: bytes, number: int, h: bytes, reason: RejectReason = RejectReason.BAD_NUMBER) -> MiniblockRejected:
    return MiniblockRejected(block_number=5, tx_hash=b"\x09" * 32, log_index=0, stream_id=sid, number=number,
                             header_hash=h, reason=int(reason))


def committed(sid: bytes, number: int, h: bytes) -> MiniblockCommitted:
    return MiniblockCommitted(block_number=5, tx_hash=b"\x09" * 32, log_index=1, stream_id=sid, number=number,
                              header_hash=h, prev_hash=b"", events_root=b"\x00" * 32, event_count=0, leader="")


def test_a_rejection_under_the_contracts_rebuilt_hash_is_matched_by_slot() -> None:
    a, b = draft(S1, 3), draft(S2, 7)
    by_hash = {b"\xaa" * 32: a, b"\xbb" * 32: b}
    got = own_rejections([a, b], by_hash, [], [rejected(S1, 3, b"\xcc" * 32)])
    assert [(r.number, d) for r, d in got] == [(3, a)]


def test_the_signed_hash_matches_first_and_foreign_slots_are_ignored() -> None:
    a = draft(S1, 3)
    by_hash = {b"\xaa" * 32: a}
    got = own_rejections([a], by_hash, [], [rejected(S2, 3, b"\xdd" * 32), rejected(S1, 3, b"\xaa" * 32)])
    assert [d for _r, d in got] == [a]


def test_a_slot_whose_own_header_committed_is_not_also_rejected() -> None:
    # an aggregator's transaction holding another leader's header at the same number: that one is rejected
    a = draft(S1, 3)
    by_hash = {b"\xaa" * 32: a}
    got = own_rejections([a], by_hash, [committed(S1, 3, b"\xaa" * 32)], [rejected(S1, 3, b"\xee" * 32)])
    assert got == []


def test_one_match_per_draft() -> None:
    a = draft(S1, 3)
    got = own_rejections([a], {b"\xaa" * 32: a}, [],
                         [rejected(S1, 3, b"\xcc" * 32), rejected(S1, 3, b"\xaa" * 32, RejectReason.NO_QUORUM)])
    assert len(got) == 1 and got[0][1] is a
