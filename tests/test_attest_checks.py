"""The attester's checks (node/server/attest.py), one unit test each, by name: every check refuses
with its own Refusal (HTTP status and error code as the API answers them) and lets a good input pass."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_account import Account

from node.protocol.commit import StreamHead
from node.protocol.eip712 import hash_event, sign_event
from node.protocol.election import elected_leader
from node.protocol.member_tree import MemberTree
from node.protocol.merkle import merkle_root
from node.protocol.registry import RegistryParams
from node.protocol.state import members_root
from node.protocol.state_root import state_root_of
from node.protocol.types import ZERO32, Domain, Event, EventEntry, EventKind, Header
from node.server import attest as A
from node.server.attest import AttestRefused, Refusal
from node.server.models import AttestIn, HeaderOut
from node.server.storage import StoredEvent, StreamRow, StreamState

SID = b"\x11" * 32
DOMAIN = Domain(31337, "0x" + "22" * 20)
PARAMS = RegistryParams(genesis_time=1000, epoch_length=600, leader_timeout=30, replication_factor=3)
AUTHOR = Account.create()
REPLICAS = [Account.create().address for _ in range(3)]


def entry(nonce: int, kind: int = EventKind.MESSAGE, sid: bytes = SID, key=AUTHOR) -> EventEntry:
    ev = Event(sid, key.address, nonce, kind, b"p")
    return EventEntry(hash_event(ev), ev, sign_event(DOMAIN, ev, key.key))


def header(**kw) -> Header:
    base = dict(stream_id=SID, number=5, prev_hash=b"\x05" * 32, events_root=ZERO32, event_count=0, epoch=7,
                attempt=0, leader=REPLICAS[0], randao_reveal=b"\x09" * 32, state_root=ZERO32)
    return Header(**{**base, **kw})


def row() -> StreamRow:
    return StreamRow(SID, b"\x00" * 32, REPLICAS, 4, b"\x05" * 32)


def refused(refusal: Refusal, fn, *args) -> None:
    with pytest.raises(AttestRefused) as info:
        fn(*args)
    exc = info.value
    assert exc.refusal is refusal and (exc.status, exc.error) == refusal.value and exc.detail


class Terms:
    def __init__(self, join_epoch: int, leave_epoch: int) -> None:
        self.join_epoch, self.leave_epoch = join_epoch, leave_epoch


def test_every_refusal_has_its_own_check_and_code():
    assert [r for _fn, r in A.CHECKS] == list(Refusal)
    assert len({fn for fn, _r in A.CHECKS}) == len(A.CHECKS)
    # the HTTP answers the API has always given
    assert {r.error: r.status for r in Refusal} == {
        "malformed": 422, "unknown_stream": 404, "not_replica": 409, "wrong_epoch": 409, "inactive": 409,
        "no_seed": 503, "not_elected": 409, "bad_parent": 409, "attempt_not_open": 409, "bad_events_root": 409,
        "duplicate_event": 409, "missing_events": 409, "wrong_stream": 409, "bad_signature": 409,
        "already_committed": 409, "replayed_nonce": 409, "invalid_event": 409, "bad_state_root": 409}


def test_parse_proposal():
    good = AttestIn(header=HeaderOut.of(header()), event_hashes=["0x" + "ab" * 32])
    assert A.parse_proposal(good) == (header(), [b"\xab" * 32])
    refused(Refusal.MALFORMED, A.parse_proposal, AttestIn(header=HeaderOut.of(header()), event_hashes=["0xzz"]))
    bad = good.model_copy(update={"header": HeaderOut.of(header()).model_copy(update={"prev_hash": "0x01"})})
    refused(Refusal.MALFORMED, A.parse_proposal, bad)


def test_check_stream_known():
    assert A.check_stream_known(row()) == row()
    refused(Refusal.UNKNOWN_STREAM, A.check_stream_known, None)


def test_check_replica_here():
    A.check_replica_here(REPLICAS[1], SID, REPLICAS)
    refused(Refusal.NOT_REPLICA, A.check_replica_here, AUTHOR.address, SID, REPLICAS)


def test_check_current_epoch():
    A.check_current_epoch(header(epoch=7), 7)
    refused(Refusal.WRONG_EPOCH, A.check_current_epoch, header(epoch=7), 8)


def test_check_active_here():
    A.check_active_here(Terms(3, 2**64 - 1), 7)
    refused(Refusal.INACTIVE, A.check_active_here, None, 7)  # not registered
    refused(Refusal.INACTIVE, A.check_active_here, Terms(8, 2**64 - 1), 7)  # active from the next epoch
    refused(Refusal.INACTIVE, A.check_active_here, Terms(3, 7), 7)  # left


def test_check_seed_known():
    assert A.check_seed_known(b"\x01" * 32) == b"\x01" * 32
    refused(Refusal.NO_SEED, A.check_seed_known, None)


def test_check_elected_leader():
    seed = b"\x03" * 32
    leader = elected_leader(seed, SID, 5, 0, REPLICAS)
    A.check_elected_leader(header(leader=leader), seed, REPLICAS)
    other = next(r for r in REPLICAS if r != leader)
    refused(Refusal.NOT_ELECTED, A.check_elected_leader, header(leader=other), seed, REPLICAS)


def test_check_parent():
    A.check_parent(header(), row())
    refused(Refusal.BAD_PARENT, A.check_parent, header(number=6), row())
    refused(Refusal.BAD_PARENT, A.check_parent, header(prev_hash=b"\x06" * 32), row())


def test_check_attempt_open():
    head = StreamHead(4, b"\x05" * 32, 2000)
    A.check_attempt_open(header(attempt=0), head, 1000.0, PARAMS)  # attempt 0 is always open
    A.check_attempt_open(header(attempt=2), None, 1000.0, PARAMS)  # head not seen yet: not checked
    A.check_attempt_open(header(attempt=2), head, 2060 - A.ATTEMPT_TOLERANCE_S, PARAMS)
    refused(Refusal.ATTEMPT_NOT_OPEN, A.check_attempt_open, header(attempt=2), head,
            2059.5 - A.ATTEMPT_TOLERANCE_S, PARAMS)


def test_check_events_root():
    hashes = [entry(0).hash, entry(1).hash]
    A.check_events_root(header(events_root=merkle_root(hashes), event_count=2), hashes)
    refused(Refusal.BAD_EVENTS_ROOT, A.check_events_root, header(events_root=merkle_root(hashes), event_count=1),
            hashes)
    refused(Refusal.BAD_EVENTS_ROOT, A.check_events_root, header(events_root=ZERO32, event_count=2), hashes)


def test_check_distinct_events():
    A.check_distinct_events([b"\x01" * 32, b"\x02" * 32])
    refused(Refusal.DUPLICATE_EVENT, A.check_distinct_events, [b"\x01" * 32, b"\x01" * 32])


def test_check_all_fetched():
    e = entry(0)
    A.check_all_fetched([e.hash], {e.hash: (e.event, e.signature)})
    refused(Refusal.MISSING_EVENTS, A.check_all_fetched, [e.hash, b"\x07" * 32], {e.hash: (e.event, e.signature)})


def test_check_event_stream():
    e = entry(0)
    A.check_event_stream(SID, e.hash, e.event)
    refused(Refusal.WRONG_STREAM, A.check_event_stream, b"\x12" * 32, e.hash, e.event)


def test_check_author_signature():
    e = entry(0)
    A.check_author_signature(DOMAIN, e.hash, e.event, e.signature)
    other = sign_event(DOMAIN, e.event, Account.create().key)
    refused(Refusal.BAD_SIGNATURE, A.check_author_signature, DOMAIN, e.hash, e.event, other)
    refused(Refusal.BAD_SIGNATURE, A.check_author_signature, DOMAIN, e.hash, e.event, e.signature[:64])


def test_check_not_committed():
    e = entry(0)
    pending = StoredEvent(e.hash, e.event, e.signature, None, None, 0.0)
    A.check_not_committed(e.hash, pending)
    refused(Refusal.ALREADY_COMMITTED, A.check_not_committed, e.hash, replace(pending, block=3, idx=0))


def test_check_nonce_unused():
    A.check_nonce_unused(b"\x01" * 32, None)
    refused(Refusal.REPLAYED_NONCE, A.check_nonce_unused, b"\x01" * 32, b"\x02" * 32)


def test_check_events_valid():
    members = frozenset({AUTHOR.address})
    A.check_events_valid(members, [entry(0), entry(1)])
    refused(Refusal.INVALID_EVENT, A.check_events_valid, members, [entry(1), entry(0)])  # out of order
    refused(Refusal.INVALID_EVENT, A.check_events_valid, frozenset(), [entry(0)])  # not a member


def test_check_state_root():
    join = entry(0, EventKind.JOIN)
    empty = StreamState(4, MemberTree(), None, False)
    good = state_root_of([AUTHOR.address], False, [(AUTHOR.address, 0)])
    A.check_state_root(header(state_root=good), empty, [join])
    refused(Refusal.BAD_STATE_ROOT, A.check_state_root, header(state_root=ZERO32), empty, [join])
    # the members alone (the old stateRoot) no longer pass, nor a root over another policy or other nonces
    for bad in (members_root([AUTHOR.address]), state_root_of([AUTHOR.address], True, [(AUTHOR.address, 0)]),
                state_root_of([AUTHOR.address], False, [(AUTHOR.address, 1)])):
        refused(Refusal.BAD_STATE_ROOT, A.check_state_root, header(state_root=bad), empty, [join])
