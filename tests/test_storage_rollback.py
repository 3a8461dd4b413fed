"""Storage under reorgs, without a chain: a rollback returns a block's events to the mini-pool and puts
head and members back; a block that does not build on the head is refused; a replacement header for a
recorded number rolls the stream back; the cursor keeps block hashes."""

from __future__ import annotations

import pytest
from eth_utils.address import to_checksum_address

from node.protocol.eip712 import hash_event
from node.protocol.state import NO_CHANGE, state_delta
from node.protocol.types import Event, EventKind, Header
from node.server.storage import CommitRow, ParentMismatch, Storage

SID = b"\x01" * 32
GEN = b"\x00" * 31 + b"\x07"
A, B = to_checksum_address("0x" + "aa" * 20), to_checksum_address("0x" + "bb" * 20)


def header(n: int, prev: bytes, count: int) -> Header:
    return Header(SID, n, prev, b"\x02" * 32, count, 1, 0, A, b"\x03" * 32, b"\x04" * 32)


def hh(n: int, tag: int = 0) -> bytes:
    return bytes([n, tag]) * 16


@pytest.fixture
def st(tmp_path):
    s = Storage(tmp_path / "node.sqlite")
    s.upsert_stream(SID, GEN, [A, B], 1)
    yield s
    s.close()


def members(st: Storage) -> frozenset[str]:
    state = st.state(SID)
    return frozenset() if state is None else frozenset(state.members)


def block(st: Storage, n: int, prev: bytes, evs: list[Event], after: frozenset[str], tag: int = 0) -> bytes:
    """Apply block n with `evs` (its state delta computed as sync does); `after` is the member set it gives."""
    h = hh(n, tag)
    delta = state_delta(members(st), evs, strict=False)
    st.apply_block(header(n, prev, len(evs)), h, [(hash_event(e), e, b"\x05" * 65) for e in evs], delta, None)
    assert members(st) == after
    st.add_commits([CommitRow(SID, n, h, prev, b"\x02" * 32, len(evs), A, b"\x06" * 32, 10 + n, b"\x09" * 32)])
    return h


def test_rollback_returns_events_to_the_pool_and_restores_head_and_members(st):
    j = Event(SID, A, 0, int(EventKind.JOIN), b"")
    m1 = Event(SID, A, 1, int(EventKind.MESSAGE), b"x")
    jb = Event(SID, B, 0, int(EventKind.JOIN), b"")
    h1 = block(st, 1, GEN, [j], frozenset({A}))
    state1 = st.state(SID)
    assert state1 is not None
    nonces1 = state1.nonces.root
    h2 = block(st, 2, h1, [m1, jb], frozenset({A, B}))
    block(st, 3, h2, [], frozenset({A, B}))
    assert st.pool_size(SID) == 0

    rbs = st.rollback_after_block(11)  # blocks 2 and 3 were seen after chain block 11
    assert [(r.head_number, r.blocks, r.events) for r in rbs] == [(1, 2, 2)]
    row = st.get_stream(SID)
    assert row is not None and (row.head_number, row.head_hash, members(st)) == (1, h1, frozenset({A}))
    state = st.state(SID)  # the whole stream state is block 1's again: members, policy, used nonces
    assert state is not None and state.nonces.root == nonces1 and not state.invite_only
    assert set(st.pool_hashes(SID)) == {hash_event(m1), hash_event(jb)}
    assert st.get_block(SID, 2) is None and st.get_commit(SID, 2) is None
    assert st.get_proposal(h2) is not None  # a re-mined commit of the same header applies again at once
    # The canonical block 2 takes one of them; the other stays pooled.
    block(st, 2, h1, [m1], frozenset({A}), tag=1)
    assert st.pool_hashes(SID) == [hash_event(jb)]


def test_a_block_not_on_the_head_is_refused(st):
    block(st, 1, GEN, [], frozenset())
    with pytest.raises(ParentMismatch):
        st.apply_block(header(2, b"\xee" * 32, 0), hh(2), [], NO_CHANGE, None)


def test_a_replacement_header_rolls_the_stream_back(st):
    h1 = block(st, 1, GEN, [Event(SID, A, 0, int(EventKind.JOIN), b"")], frozenset({A}))
    rbs = st.add_commits([CommitRow(SID, 1, hh(1, 9), GEN, b"\x02" * 32, 0, B, b"\x06" * 32, 20, b"\x08" * 32)])
    assert [r.head_number for r in rbs] == [0]
    row = st.get_stream(SID)
    assert row is not None and row.head_number == 0 and row.head_hash == GEN and members(st) == frozenset()
    c = st.get_commit(SID, 1)
    assert c is not None and c.header_hash == hh(1, 9) and c.header_hash != h1
    assert st.pool_size(SID) == 1


def test_cursor_keeps_block_hashes_and_drops_an_orphaned_branch(st):
    st.set_cursor(10, b"\x0a" * 32, {8: b"\x08" * 32})
    assert st.cursor() == (10, b"\x0a" * 32)
    st.set_cursor(12, b"\x0c" * 32)
    assert [n for n, _ in st.chain_block_hashes()] == [12, 10, 8]
    st.set_cursor(9, None)  # back to the fork: hashes above it go
    assert st.cursor() == (9, None) and [n for n, _ in st.chain_block_hashes()] == [8]
