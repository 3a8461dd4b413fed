"""node.protocol.commit.validate_header against commitMiniblocks on a real Anvil: one test per
rejection reason (docs/protocol.md, "Commit"), each header both judged in Python from the chain's
views and sent to the contract, the two verdicts equal; and an accepted header (None) at the end."""

from __future__ import annotations

import dataclasses

import pytest
from eth_utils import keccak

from node.chain.devtools import next_header, sign_header
from node.protocol import eip712
from node.protocol.commit import CommitView, StreamHead, validate_batch, validate_header
from node.protocol.registry import RegistryParams
from node.protocol.types import MAX_EVENTS_PER_BLOCK, ZERO32, Header, RejectReason


@pytest.fixture(scope="module")
def d(deployment_factory):
    return deployment_factory(nodes=5, replication=3, streams=1)


def view_of(d) -> tuple[CommitView, RegistryParams]:
    """The registry as the next commit transaction will see it (read from the latest block)."""
    reg = d.registry
    heads, replicas = {}, {}
    for sid in d.streams:
        h = reg.stream_head(sid)
        heads[sid] = StreamHead(h.number, h.header_hash, h.timestamp)
        replicas[sid] = reg.replicas_of(sid)
    infos = reg.get_nodes()
    view = CommitView(now=reg.chain_time(), epoch=reg.current_epoch(), seed=reg.current_seed(), heads=heads,
                      replicas=replicas, nodes={i.node: i for i in infos},
                      randao_commits={i.node: i.randao_commit for i in infos})
    params = RegistryParams(reg.genesis_time(), reg.epoch_length(), reg.leader_timeout(), reg.replication_factor())
    return view, params


def verdicts(d, header: Header, sigs: list[bytes]) -> tuple[RejectReason | None, RejectReason | None]:
    """(Python's verdict, the contract's verdict) on one header."""
    view, params = view_of(d)
    py = validate_header(view, params, d.registry.domain(), header, sigs)
    res = d.registry.commit_miniblocks([header], [sigs])
    assert len(res.committed) + len(res.rejected) == 1
    chain = RejectReason(res.rejected[0].reason) if res.rejected else None
    return py, chain


def signed(d, header: Header, **kw) -> tuple[Header, list[bytes]]:
    return header, sign_header(d.registry, header, d.keys, **kw)


def fresh(d, **changes) -> tuple[Header, list[bytes]]:
    """The next header of stream 0 by its elected leader, with `changes`, signed by a quorum."""
    h = next_header(d.registry, d.streams[0], d.keys)
    return signed(d, dataclasses.replace(h, **changes))


def assert_reason(d, header: Header, sigs: list[bytes], reason: RejectReason | None) -> None:
    assert verdicts(d, header, sigs) == (reason, reason)


def test_unknown_stream(d):
    h = next_header(d.registry, d.streams[0], d.keys)
    other = dataclasses.replace(h, stream_id=keccak(b"no such stream"), number=1, prev_hash=ZERO32)
    sigs = [eip712.sign_header(d.registry.domain(), other, d.keys[h.leader].private_key)]
    assert_reason(d, other, sigs, RejectReason.UNKNOWN_STREAM)


def test_bad_number(d):
    h = next_header(d.registry, d.streams[0], d.keys)
    assert_reason(d, *fresh(d, number=h.number + 1), RejectReason.BAD_NUMBER)


def test_bad_parent(d):
    assert_reason(d, *fresh(d, prev_hash=keccak(b"not the head")), RejectReason.BAD_PARENT)


def test_wrong_epoch(d):
    h = next_header(d.registry, d.streams[0], d.keys)
    assert_reason(d, *fresh(d, epoch=h.epoch + 1), RejectReason.WRONG_EPOCH)


def test_attempt_not_open(d):
    h = next_header(d.registry, d.streams[0], d.keys, attempt=1_000_000)  # opens in ~a year
    assert_reason(d, *signed(d, h), RejectReason.ATTEMPT_NOT_OPEN)


def test_not_elected_leader(d):
    h = next_header(d.registry, d.streams[0], d.keys)
    other = next(r for r in d.registry.replicas_of(d.streams[0]) if r != h.leader)
    assert_reason(d, *signed(d, dataclasses.replace(h, leader=other)), RejectReason.NOT_ELECTED_LEADER)


def test_bad_leader_signature(d):
    h, good = fresh(d)
    assert_reason(d, h, [], RejectReason.BAD_LEADER_SIGNATURE)
    flipped = bytearray(good[0])
    flipped[5] ^= 0xFF
    assert_reason(d, h, [bytes(flipped), *good[1:]], RejectReason.BAD_LEADER_SIGNATURE)


def test_bad_attestation(d):
    h, good = fresh(d)
    assert_reason(d, h, [good[0], good[1][:64]], RejectReason.BAD_ATTESTATION)


def test_not_replica(d):
    h, good = fresh(d)
    outsider = next(a for a in d.keys if a not in d.registry.replicas_of(d.streams[0]))
    att = eip712.sign_header(d.registry.domain(), h, d.keys[outsider].private_key)
    assert_reason(d, h, [good[0], att], RejectReason.NOT_REPLICA)


def test_duplicate_attester(d):
    h, good = fresh(d)
    assert_reason(d, h, [good[0], good[1], good[1]], RejectReason.DUPLICATE_ATTESTER)
    assert_reason(d, h, [good[0], good[0]], RejectReason.DUPLICATE_ATTESTER)  # the leader twice


def test_no_quorum(d):
    h = next_header(d.registry, d.streams[0], d.keys)
    assert_reason(d, *signed(d, h, attesters=0), RejectReason.NO_QUORUM)


def test_bad_randao_reveal(d):
    assert_reason(d, *fresh(d, randao_reveal=keccak(b"not a layer")), RejectReason.BAD_RANDAO_REVEAL)


def test_too_many_events(d):
    assert_reason(d, *fresh(d, event_count=MAX_EVENTS_PER_BLOCK + 1), RejectReason.TOO_MANY_EVENTS)


def test_accepted(d):
    h, sigs = fresh(d, events_root=keccak(b"root"), event_count=3)
    assert_reason(d, h, sigs, None)
    assert d.registry.stream_head(d.streams[0]).header_hash == eip712.hash_header(h)


def test_batch_in_order(d):
    """validate_batch as the contract runs a batch: the same header twice is committed once, then BadNumber
    (the head moved); a bad header before them changes nothing for the others."""
    h, sigs = fresh(d, events_root=keccak(b"batch"), event_count=1)
    view, params = view_of(d)
    bad = dataclasses.replace(h, prev_hash=keccak(b"not the head"))
    py = validate_batch(view, params, d.registry.domain(), [bad, h, h], [sigs, sigs, sigs])
    assert py == [RejectReason.BAD_PARENT, None, RejectReason.BAD_NUMBER]
    res = d.registry.commit_miniblocks([bad, h, h], [sigs, sigs, sigs])  # logs in call order
    assert [c.header_hash for c in res.committed] == [eip712.hash_header(h)]
    assert [(r.header_hash, RejectReason(r.reason)) for r in res.rejected] == [
        (eip712.hash_header(bad), RejectReason.BAD_PARENT), (eip712.hash_header(h), RejectReason.BAD_NUMBER)]


def test_inactive_attester(deployment_factory, anvil):
    """A replica that left (leave asked in epoch e, inactive from e + 1) still signs: refused, as an
    attestation or as the elected leader's own signature."""
    d = deployment_factory(nodes=4, replication=3, streams=1)
    reg, sid = d.registry, d.streams[0]
    gone = reg.replicas_of(sid)[0]
    reg.request_leave(gone)
    anvil.increase_time(reg.epoch_length())
    anvil.mine()
    assert not reg.get_node(gone).join_epoch <= reg.current_epoch() < reg.get_node(gone).leave_epoch
    h = next_header(reg, sid, d.keys)
    sigs = sign_header(reg, h, d.keys, attesters=0)
    if h.leader != gone:
        sigs.append(eip712.sign_header(reg.domain(), h, d.keys[gone].private_key))
    assert_reason(d, h, sigs, RejectReason.INACTIVE_ATTESTER)
