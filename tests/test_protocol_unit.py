"""Pure tests of node/protocol: each rule against an independent reference (eth-account, brute force)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol import eip712, election, merkle, onion, state
from node.protocol.types import Domain, Event, EventKind, Header

b32 = st.binary(min_size=32, max_size=32)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
events = st.builds(
    Event, b32, addresses, st.integers(0, 2**64 - 1), st.sampled_from(list(EventKind)), st.binary(max_size=300)
)
headers = st.builds(
    Header, b32, st.integers(0, 2**64 - 1), b32, b32, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1), addresses, b32, b32,
)
domains = st.builds(Domain, st.integers(1, 2**64), addresses)


@settings(max_examples=100, deadline=None)
@given(domains, events, headers)
def test_struct_hashes_and_digests_match_eth_account(domain: Domain, event: Event, header: Header) -> None:
    for obj, hash_fn, digest_fn in (
        (event, eip712.hash_event, eip712.event_digest),
        (header, eip712.hash_header, eip712.header_digest),
    ):
        signable = encode_typed_data(full_message=eip712.typed_data(domain, obj))
        assert bytes(signable.body) == hash_fn(obj)
        assert bytes(signable.header) == eip712.domain_separator(domain)
        assert digest_fn(domain, obj) == eip712.keccak(b"\x19\x01" + signable.header + signable.body)


@settings(max_examples=20, deadline=None)
@given(domains, headers)
def test_signatures_equal_eth_account_and_recover(domain: Domain, header: Header) -> None:
    account = Account.create()
    ours = eip712.sign_header(domain, header, account.key)
    theirs = Account.sign_typed_data(account.key, full_message=eip712.typed_data(domain, header)).signature
    assert ours == bytes(theirs)
    assert eip712.recover_header_signer(domain, header, ours) == account.address
    assert eip712.address_of(account.key) == account.address


def test_recover_rejects_malformed_and_malleable_signatures() -> None:
    domain = Domain(31337, "0x" + "11" * 20)
    header = Header.genesis(b"\x01" * 32, 0)
    sig = eip712.sign_header(domain, header, Account.create().key)
    with pytest.raises(eip712.SignatureError, match="65 bytes"):
        eip712.recover_header_signer(domain, header, sig[:64])
    with pytest.raises(eip712.SignatureError, match="v must be"):
        eip712.recover_header_signer(domain, header, sig[:64] + b"\x01")
    high_s = (eip712.SECP256K1_N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big")
    flipped_v = bytes([55 - sig[64]])
    with pytest.raises(eip712.SignatureError, match="high-s"):
        eip712.recover_header_signer(domain, header, sig[:32] + high_s + flipped_v)


@settings(max_examples=60, deadline=None)
@given(st.lists(b32, max_size=70), st.data())
def test_merkle_proofs_round_trip_and_tampering_fails(hashes: list[bytes], data: st.DataObject) -> None:
    root = merkle.merkle_root(hashes)
    if not hashes:
        assert root == b"\x00" * 32
        return
    i = data.draw(st.integers(0, len(hashes) - 1))
    proof = merkle.merkle_proof(hashes, i)
    assert merkle.verify_proof(root, len(hashes), i, hashes[i], proof)
    other = b"\xff" * 32 if hashes[i] != b"\xff" * 32 else b"\x00" * 32
    assert not merkle.verify_proof(root, len(hashes), i, other, proof)
    assert not merkle.verify_proof(root, len(hashes), i, hashes[i], proof + [b"\x00" * 32])
    if proof:
        bad = list(proof)
        bad[0] = bytes(32 - len(bad[0][:1])) + b"\x01" if bad[0] != bytes(31) + b"\x01" else bytes(32)
        assert not merkle.verify_proof(root, len(hashes), i, hashes[i], bad)


def test_merkle_odd_node_is_promoted_not_duplicated() -> None:
    a, b, c = (bytes([x]) * 32 for x in (1, 2, 3))
    leaf = merkle.leaf_hash
    assert merkle.merkle_root([a, b, c]) == merkle.node_hash(merkle.node_hash(leaf(a), leaf(b)), leaf(c))
    assert merkle.merkle_root([a, b, c]) != merkle.merkle_root([a, b, c, c])


def test_election_walks_replicas_by_attempt() -> None:
    replicas = ["0x" + f"{i:040x}" for i in range(1, 6)]
    seed, stream = b"\x09" * 32, b"\x0a" * 32
    first = election.leader_index(seed, stream, 7, 0, 5)
    assert [election.elected_leader(seed, stream, 7, a, replicas) for a in range(5)] == [
        replicas[(first + a) % 5] for a in range(5)
    ]
    assert election.open_attempt(now=130, head_timestamp=100, leader_timeout=10) == 3
    assert election.attempt_opens_at(100, 3, 10) == 130


def test_onion_reveals_in_order_and_skips_are_bounded() -> None:
    o = onion.HashOnion(b"\x05" * 32, 30)
    reveals = o.reveals(o.commitment, 9)
    assert eip712.keccak(reveals[0]) == o.commitment
    assert onion.reveal_matches(reveals[7], o.commitment)
    assert not onion.reveal_matches(reveals[8], o.commitment)
    assert o.next_reveal(reveals[2]) == reveals[3]
    with pytest.raises(onion.OnionExhausted):
        o.reveals(o.layer(2), 3)


def test_membership_is_judged_against_the_previous_block() -> None:
    alice, bob = "0x" + "aa" * 20, "0x" + "bb" * 20
    sid = b"\x01" * 32
    join = Event(sid, alice, 1, EventKind.JOIN, b"")
    msg = Event(sid, alice, 2, EventKind.MESSAGE, b"hi")
    with pytest.raises(state.MembershipError, match="not a member"):
        state.apply_membership(set(), [join, msg])
    after = state.apply_membership(set(), [join])
    assert state.apply_membership(after, [msg]) == after
    assert state.members_root(after) != state.members_root(set()) == b"\x00" * 32
    # slots in join order (docs/protocol.md, "Stream state"): the order matters, the address case does not
    assert state.members_root([alice, bob]) == state.members_root([alice.upper().replace("0X", "0x"), bob])
    assert state.members_root([alice, bob]) != state.members_root([bob, alice])
    with pytest.raises(state.MembershipError, match="already"):
        state.check_membership(after, Event(sid, alice, 3, EventKind.JOIN, b""))
