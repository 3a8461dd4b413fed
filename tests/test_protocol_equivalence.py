"""node/protocol's Python against the contract's views and its commit, on a real Anvil.

Each rule of docs/protocol.md exists once in Solidity and once in Python; these
tests hold them equal on generated inputs: typed-data hashes and digests, the
EIP-712 domain, the Merkle tree and its proofs, the leader election (with the seed
and replicas read from the chain), the hash onion (reveals accepted by an actual
commit), and signatures made in Python accepted (or rejected) by commitMiniblocks.
"""

from __future__ import annotations

import pytest
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.chain.devtools import next_header, sign_header
from node.protocol import eip712
from node.protocol.election import elected_leader
from node.protocol.merkle import merkle_proof, merkle_root, verify_proof
from node.protocol.onion import mix_reveal, reveal_matches
from node.protocol.types import Domain, Event, Header, RejectReason

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
COMMITS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

b32 = st.binary(min_size=32, max_size=32)
u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
events = st.builds(
    Event,
    stream_id=b32,
    author=addresses,
    nonce=u64,
    kind=st.sampled_from([0, 1, 2]),
    payload=st.binary(max_size=600),
)
headers = st.builds(
    Header,
    stream_id=b32,
    number=u64,
    prev_hash=b32,
    events_root=b32,
    event_count=u32,
    epoch=u64,
    attempt=u32,
    leader=addresses,
    randao_reveal=b32,
    state_root=b32,
)
hash_lists = st.lists(b32, min_size=0, max_size=70)


@pytest.fixture(scope="module")
def d(deployment_factory):
    return deployment_factory(nodes=5, replication=3, streams=4)


@pytest.fixture(scope="module")
def domain(d) -> Domain:
    return Domain(chain_id=d.deployment.chain_id, verifying_contract=d.deployment.registry)


# --- typed data -------------------------------------------------------------------


def test_eip712_domain(d, domain, w3):
    info = d.registry.eip712_domain()
    assert info.fields == 0x0F
    assert (info.name, info.version) == (domain.name, domain.version) == ("MiniblockRegistry", "1")
    assert info.chain_id == w3.eth.chain_id == domain.chain_id
    assert info.verifying_contract == d.deployment.registry
    assert info.salt == b"\0" * 32 and info.extensions == []
    assert d.registry.domain() == domain


@EXAMPLES
@given(ev=events)
def test_event_hash_and_digest(d, domain, ev):
    assert d.registry.hash_event(ev) == eip712.hash_event(ev)
    assert d.registry.event_digest(ev) == eip712.event_digest(domain, ev)


@EXAMPLES
@given(h=headers)
def test_header_hash_and_digest(d, domain, h):
    assert d.registry.hash_header(h) == eip712.hash_header(h)
    assert d.registry.header_digest(h) == eip712.header_digest(domain, h)


def test_genesis_header_hash(d):
    for sid in d.streams:
        created = d.registry.stream_created_logs(d.deployment.deploy_block, stream_id=sid)[0]
        g = Header.genesis(sid, created.epoch)
        assert d.registry.header_hash_at(sid, 0) == eip712.hash_header(g) == created.genesis_hash


# --- Merkle tree --------------------------------------------------------------------


@EXAMPLES
@given(hs=hash_lists)
def test_merkle_root(d, hs):
    assert d.registry.merkle_root(hs) == merkle_root(hs)


@EXAMPLES
@given(data=st.data(), hs=st.lists(b32, min_size=1, max_size=70))
def test_merkle_proofs(d, data, hs):
    reg = d.registry
    n = len(hs)
    i = data.draw(st.integers(0, n - 1), label="index")
    root = merkle_root(hs)
    proof = merkle_proof(hs, i)
    assert verify_proof(root, n, i, hs[i], proof)
    assert reg.verify_merkle_proof(root, n, i, hs[i], proof)

    # Tampered variants: the chain and Python agree on each.  A changed root, leaf or
    # sibling never verifies; a changed (count, index) or proof length may only
    # verify where the tree shape allows it, so for those we ask agreement alone.
    must_fail = [
        (root, n, i, keccak(hs[i]), proof),
        (keccak(root), n, i, hs[i], proof),
        (root, n, i, hs[i], proof + [keccak(b"extra")]),
        (root, n, n, hs[i], proof),
    ]
    agree = [
        (root, n, (i + 1) % n, hs[i], proof),
        (root, n + 1, i, hs[i], proof),
        (root, 2 * n, i, hs[i], proof),
    ]
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1), label="flip")
        must_fail.append((root, n, i, hs[i], proof[:j] + [keccak(proof[j])] + proof[j + 1 :]))
        agree.append((root, n, i, hs[i], proof[:-1]))
    for v in must_fail:
        assert not verify_proof(*v), v
        assert not reg.verify_merkle_proof(*v), v
    for v in agree:
        assert reg.verify_merkle_proof(*v) == verify_proof(*v), v


# --- election -------------------------------------------------------------------------


@EXAMPLES
@given(k=st.integers(0, 3), number=u64, attempt=st.integers(0, 2**32 - 1))
def test_elected_leader(d, k, number, attempt):
    reg = d.registry
    sid = d.streams[k]
    seed = reg.current_seed()
    replicas = reg.replicas_of(sid)
    assert reg.elected_leader(sid, number, attempt) == elected_leader(seed, sid, number, attempt, replicas)


# --- hash onion + signatures through commits ------------------------------------------


def _commit_one(d, header, sigs):
    res = d.registry.commit_miniblocks([header], [sigs])
    assert len(res.committed) + len(res.rejected) == 1
    return res


@COMMITS
@given(k=st.integers(0, 3), skip=st.integers(1, 10))
def test_onion_reveal_accepted_by_commit(d, k, skip):
    reg = d.registry
    sid = d.streams[k]
    base = next_header(reg, sid, d.keys)
    leader = base.leader
    onion = d.keys[leader].onion
    commit = reg.randao_commit_of(leader)
    pos = onion.position(commit)
    if pos - skip < 0:
        return
    reveal = onion.layer(pos - skip)
    h = Header(**{**_fields(base), "randao_reveal": reveal})
    mix_before = reg.randao_mix()
    res = _commit_one(d, h, sign_header(reg, h, d.keys))
    ok = reveal_matches(reveal, commit)
    assert ok == (skip <= 8)
    if ok:
        assert res.committed and res.committed[0].header_hash == eip712.hash_header(h)
        assert reg.randao_commit_of(leader) == reveal
        assert reg.randao_mix() == mix_reveal(mix_before, reveal)
        assert onion.position(reg.randao_commit_of(leader)) == pos - skip
    else:
        assert res.rejected[0].reason == RejectReason.BAD_RANDAO_REVEAL
        assert reg.randao_commit_of(leader) == commit
        assert reg.randao_mix() == mix_before


def _fields(h: Header) -> dict:
    return {f: getattr(h, f) for f in Header.__dataclass_fields__}


@COMMITS
@given(k=st.integers(0, 3), hs=st.lists(b32, min_size=0, max_size=40), attesters=st.integers(0, 2), data=st.data())
def test_python_signatures_accepted_by_commit(d, domain, k, hs, attesters, data):
    reg = d.registry
    sid = d.streams[k]
    head = reg.stream_head(sid)
    h = next_header(reg, sid, d.keys, event_hashes=hs)
    sigs = sign_header(reg, h, d.keys, attesters=attesters)
    replicas = reg.replicas_of(sid)
    for s in sigs:
        assert eip712.recover_header_signer(domain, h, s) in replicas
    assert eip712.recover_header_signer(domain, h, sigs[0]) == h.leader
    res = _commit_one(d, h, sigs)
    quorum = len(replicas) // 2 + 1
    if 1 + attesters >= quorum:
        (c,) = res.committed
        assert (c.stream_id, c.number, c.prev_hash, c.events_root, c.event_count, c.leader) == (
            sid, head.number + 1, head.header_hash, merkle_root(hs), len(hs), h.leader,
        )
        assert c.header_hash == eip712.hash_header(h) == reg.header_hash_at(sid, h.number)
        assert reg.stream_head(sid).header_hash == c.header_hash
        if hs:
            i = data.draw(st.integers(0, len(hs) - 1), label="index")
            assert reg.verify_inclusion(h, merkle_proof(hs, i), i, hs[i])
            assert not reg.verify_inclusion(h, merkle_proof(hs, i), i, keccak(hs[i]))
    else:
        assert res.rejected[0].reason == RejectReason.NO_QUORUM
        assert reg.stream_head(sid) == head


def _reason(d, header, sigs) -> RejectReason:
    res = _commit_one(d, header, sigs)
    assert not res.committed, "expected a rejection"
    return RejectReason(res.rejected[0].reason)


def test_bad_signatures_rejected_like_python(d, domain):
    reg = d.registry
    sid = d.streams[0]
    h = next_header(reg, sid, d.keys)
    good = sign_header(reg, h, d.keys, attesters=2)

    # Flipped byte in the leader's signature.
    bad = bytearray(good[0])
    bad[5] ^= 0xFF
    try:
        py_ok = eip712.recover_header_signer(domain, h, bytes(bad)) == h.leader
    except eip712.SignatureError:
        py_ok = False
    assert not py_ok
    assert _reason(d, h, [bytes(bad)] + good[1:]) == RejectReason.BAD_LEADER_SIGNATURE

    # High-s twin of the leader's signature: valid ECDSA, refused by both sides.
    r, s, v = good[0][:32], int.from_bytes(good[0][32:64], "big"), good[0][64]
    high = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    with pytest.raises(eip712.SignatureError):
        eip712.recover_header_signer(domain, h, high)
    assert _reason(d, h, [high] + good[1:]) == RejectReason.BAD_LEADER_SIGNATURE

    # Signed over another domain (other chain id): recovers to someone else.
    other = Domain(chain_id=domain.chain_id + 1, verifying_contract=domain.verifying_contract)
    wrong = eip712.sign_header(other, h, d.keys[h.leader].private_key)
    assert _reason(d, h, [wrong] + good[1:]) == RejectReason.BAD_LEADER_SIGNATURE

    # An attestation by a registered node that is not a replica of the stream.
    outsider = next(a for a in d.keys if a not in reg.replicas_of(sid))
    att = eip712.sign_header(domain, h, d.keys[outsider].private_key)
    assert _reason(d, h, [good[0], att]) == RejectReason.NOT_REPLICA

    # The same replica twice.
    assert _reason(d, h, [good[0], good[1], good[1]]) == RejectReason.DUPLICATE_ATTESTER

    # A malformed attestation.
    assert _reason(d, h, [good[0], good[1][:64]]) == RejectReason.BAD_ATTESTATION

    # And the untouched set goes through.
    res = _commit_one(d, h, good)
    assert res.committed[0].header_hash == eip712.hash_header(h)


def test_batch_across_streams_with_one_leader(d):
    """Several headers of one tx led by the same node: successive onion layers."""
    reg = d.registry
    used: dict[str, int] = {}
    hs, sigs = [], []
    for sid in d.streams:
        leader = reg.elected_leader(sid, reg.stream_head(sid).number + 1, 0)
        h = next_header(reg, sid, d.keys, reveal_offset=used.get(leader, 0))
        used[leader] = used.get(leader, 0) + 1
        hs.append(h)
        sigs.append(sign_header(reg, h, d.keys))
    res = reg.commit_miniblocks(hs, sigs)
    assert not res.rejected
    assert [c.header_hash for c in res.committed] == [eip712.hash_header(h) for h in hs]


def test_seed_at_epoch_boundary_is_the_mix_and_election_follows(d, anvil):
    reg = d.registry
    # Make the mix move, then cross the boundary: seed[e+1] == mix at the boundary.
    sid = d.streams[1]
    h = next_header(reg, sid, d.keys)
    assert _commit_one(d, h, sign_header(reg, h, d.keys)).committed
    e = reg.current_epoch()
    mix = reg.randao_mix()
    assert reg.current_seed() != mix
    boundary = reg.genesis_time() + (e + 1) * reg.epoch_length()
    anvil.increase_time(boundary - reg.chain_time())
    anvil.mine()
    assert reg.current_epoch() == e + 1
    assert reg.current_seed() == mix
    for sid in d.streams:
        for number in range(1, 6):
            for attempt in range(3):
                assert reg.elected_leader(sid, number, attempt) == elected_leader(
                    mix, sid, number, attempt, reg.replicas_of(sid)
                )
    # And a header of the new epoch, built from the chain's seed in Python, commits.
    sid = d.streams[2]
    head = reg.stream_head(sid)
    leader = elected_leader(reg.current_seed(), sid, head.number + 1, 0, reg.replicas_of(sid))
    h = next_header(reg, sid, d.keys)
    assert h.leader == leader and h.epoch == e + 1
    assert _commit_one(d, h, sign_header(reg, h, d.keys)).committed
