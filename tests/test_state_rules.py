"""Unit tests of the stream-state and fair-block rules (docs/protocol.md, "Stream state", "Ordering rule"):
the incremental members tree equals its definition, the JOIN policy and invitations, the per-author cap
and age order, and sync's signature check of what peers serve."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import pytest
from eth_account import Account

from node.protocol.block_rules import AgedEntry, age_order, check_block_events, order_events, select_events
from node.protocol.eip712 import hash_event, sign_event
from node.protocol.limits import MAX_AUTHOR_EVENTS_PER_BLOCK
from node.protocol.member_tree import MemberDelta, MemberTree, slots_root
from node.protocol.state import (
    POLICY_INVITE,
    MembershipError,
    StreamRules,
    check_membership,
    sign_invite,
    state_delta,
)
from node.protocol.types import Domain, Event, EventEntry, EventKind
from node.server.client import signed_event_json
from node.server.sync import fetch_events

DOMAIN = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
SID = b"\x07" * 32
CREATOR = Account.create()


def entry(acct, nonce: int, kind: int = EventKind.MESSAGE, payload: bytes = b"p") -> EventEntry:
    e = Event(SID, acct.address, nonce, kind, payload)
    return EventEntry(hash_event(e), e, sign_event(DOMAIN, e, bytes(acct.key)))


def test_incremental_members_tree_equals_the_definition():
    rng = random.Random(9)
    addrs = [Account.create().address for _ in range(120)]
    tree, slots, present = MemberTree(), [], set()
    for step in range(150):
        joined = tuple(a for a in rng.sample(addrs, rng.randint(0, 6)) if a not in present)
        left = tuple(rng.sample(sorted(present), min(len(present), rng.randint(0, 3))))
        delta = MemberDelta(joined, left)
        before = tree.root
        preview = tree.root_after(delta)
        assert tree.root == before  # a preview changes nothing
        for a in left:
            slots[slots.index(a)] = None
            present.discard(a)
        slots += joined
        present.update(joined)
        assert preview == slots_root(slots), step
        tree.apply(delta)
        assert tree.root == preview and set(tree) == present
    assert MemberTree.from_slots(slots).root == tree.root  # what a restart rebuilds from the rows
    assert MemberTree().root == b"\x00" * 32


def test_block_cost_does_not_grow_with_members():
    """A block of 100 JOINs on a tree of 20,000 members hashes ~100 x log2 nodes, not 20,000."""
    import node.protocol.member_tree as mt

    tree = MemberTree.from_slots([Account.create().address for _ in range(2_000)] + [None] * 18_000)
    calls = 0
    real = mt.node_hash

    def counting(a: bytes, b: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return real(a, b)

    mt.node_hash = counting
    try:
        tree.root_after(MemberDelta(tuple(Account.create().address for _ in range(100))))
    finally:
        mt.node_hash = real
    assert calls < 100 + 2 * 16, calls


def test_invite_only_stream_needs_the_creators_invitation():
    rules = StreamRules(CREATOR.address, True, DOMAIN)
    alice, mallory = Account.create(), Account.create()
    invite = sign_invite(DOMAIN, SID, alice.address, bytes(CREATOR.key))
    check_membership(frozenset(), entry(alice, 0, EventKind.JOIN, invite + b"hello").event, rules)
    with pytest.raises(MembershipError, match="invite-only"):
        check_membership(frozenset(), entry(mallory, 0, EventKind.JOIN).event, rules)
    with pytest.raises(MembershipError, match="invite-only"):  # alice's invitation is not mallory's
        check_membership(frozenset(), entry(mallory, 0, EventKind.JOIN, invite).event, rules)
    forged = sign_invite(DOMAIN, SID, mallory.address, bytes(mallory.key))
    with pytest.raises(MembershipError, match="invite-only"):
        check_membership(frozenset(), entry(mallory, 0, EventKind.JOIN, forged).event, rules)
    check_membership(frozenset(), entry(CREATOR, 0, EventKind.JOIN).event, rules)  # the creator needs none
    # open stream: anyone
    check_membership(frozenset(), entry(mallory, 0, EventKind.JOIN).event, StreamRules(CREATOR.address))


def test_policy_event_only_by_the_creator_and_applies_from_the_next_block():
    rules = StreamRules(CREATOR.address, False, DOMAIN)
    pol = entry(CREATOR, 0, EventKind.POLICY, POLICY_INVITE)
    outsider = Account.create()
    with pytest.raises(MembershipError, match="creator"):
        check_membership(frozenset(), entry(outsider, 0, EventKind.POLICY, POLICY_INVITE).event, rules)
    with pytest.raises(MembershipError, match="one byte"):
        check_membership(frozenset(), entry(CREATOR, 1, EventKind.POLICY, b"\x02").event, rules)
    with pytest.raises(MembershipError, match="creator"):  # creator unknown here: no POLICY is valid
        check_membership(frozenset(), pol.event, StreamRules(None))
    join = entry(outsider, 0, EventKind.JOIN)
    # POLICY and an uninvited JOIN in one block: the JOIN is judged by the policy before the block
    delta = state_delta(frozenset(), [pol.event, join.event], rules)
    assert delta.invite_only is True and delta.members.joined == (outsider.address,)
    assert check_block_events(frozenset(), order_events([pol, join]), rules) is None


def test_fair_selection_caps_each_author_and_keeps_block_order():
    spammer = min((Account.create() for _ in range(8)), key=lambda a: a.address.lower())  # lowest address
    others = [Account.create() for _ in range(5)]
    members = frozenset([spammer.address, *(o.address for o in others)])
    aged = [AgedEntry(entry(spammer, i), float(i) / 1e4) for i in range(3_000)]  # older than the others
    aged += [AgedEntry(entry(o, 0), 10.0 + k) for k, o in enumerate(others)]
    sel = select_events(members, age_order(aged), cap=1_500)
    by_author = {}
    for _h, e, _s in sel.kept:
        by_author[e.author] = by_author.get(e.author, 0) + 1
    assert by_author[spammer.address] == MAX_AUTHOR_EVENTS_PER_BLOCK
    assert all(by_author[o.address] == 1 for o in others)  # the others commit while the spammer waits
    assert sel.kept == order_events(sel.kept)  # block order, whatever the selection order
    assert len(sel.deferred) == 3_000 - MAX_AUTHOR_EVENTS_PER_BLOCK
    assert check_block_events(members, sel.kept) is None
    # An attester refuses a block where one author has more than its share.
    over = order_events([entry(spammer, i) for i in range(MAX_AUTHOR_EVENTS_PER_BLOCK + 1)])
    assert "share" in (check_block_events(members, over) or "")
    # Age order: with a full block, the oldest events go first (here the spammer's, within its share).
    sel = select_events(members, age_order(aged[-5:] + aged[:10]), cap=5)
    assert [e.nonce for _h, e, _s in sel.kept] == [0, 1, 2, 3, 4] and len(sel.deferred) == 10


def test_age_order_is_first_seen_then_block_order():
    a, b = Account.create(), Account.create()
    e1, e2, e3 = entry(a, 0), entry(b, 0), entry(a, 1)
    assert age_order([AgedEntry(e3, 1.0), AgedEntry(e2, 0.5), AgedEntry(e1, 1.0)])[0] == e2


class _Peers:
    def __init__(self, answers: dict[str, list[dict]]) -> None:
        self.answers = answers

    async def fetch_events(self, url: str, hashes: list[str]) -> dict:
        return {"events": self.answers[url]}


def test_sync_fetch_refuses_a_forged_signature_and_asks_the_next_peer():
    alice = Account.create()
    good = entry(alice, 0)
    forged_sig = sign_event(DOMAIN, good.event, bytes(Account.create().key))
    forged = signed_event_json(DOMAIN, good.event, bytes(alice.key))
    forged["signature"] = "0x" + forged_sig.hex()
    node = SimpleNamespace(domain=DOMAIN, peers=_Peers({
        "http://evil": [forged], "http://honest": [signed_event_json(DOMAIN, good.event, bytes(alice.key))]}))
    only_evil = asyncio.run(fetch_events(node, [good.hash], [("0x1", "http://evil")]))  # type: ignore[arg-type]
    assert only_evil == {}
    both = asyncio.run(fetch_events(node, [good.hash], [("0x1", "http://evil"), ("0x2", "http://honest")]))  # type: ignore[arg-type]
    assert both == {good.hash: (good.event, good.signature)}
