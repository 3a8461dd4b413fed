"""node/protocol/v2.py against MiniblockRegistryV2 on a real Anvil: the packed batch (decoding and
its reverts), EIP-2098 signatures, header hash and digest under the v2 domain, the commit log, the
history root, accumulator and proofs against verifyHeaderCommitted, and Python-built commits
accepted (or rejected with the right reason when tampered)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from eth_utils.crypto import keccak

from bench.v2chain import Signed, V2Chain
from node.chain.anvil import Anvil
from node.protocol import eip712, v2
from node.protocol.eip712 import SignatureError
from node.protocol.types import Domain, Header, RejectReason

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@pytest.fixture(scope="module")
def chain(anvil: Anvil) -> Iterator[V2Chain]:
    ch = V2Chain(anvil, nodes=5, replication=3, tag=b"v2 equivalence")
    ch.create_streams([keccak(b"v2 eq stream %d" % i) for i in range(40)])
    anvil.increase_time(1)
    anvil.mine()
    yield ch


_used: set[bytes] = set()


def _fresh(ch: V2Chain, count: int = 1) -> list[bytes]:
    """Streams not used by another test (each test commits on its own)."""
    out = [s for s in ch.full_head if s not in _used][:count]
    assert len(out) == count, "out of streams"
    _used.update(out)
    return out


def _commit_ok(ch: V2Chain, items: list[Signed]) -> tuple[Any, v2.CommitLog, bytes, list[Signed]]:
    batch, signed = ch.batch(items)
    rc, log, rejected = ch.commit(batch)
    assert not rejected, rejected
    assert log is not None
    ch.note_accepted(signed)
    return rc, log, batch, signed


def _revert_data(ch: V2Chain, batch: bytes) -> bytes:
    try:
        ch.raw_call(ch.calldata(batch))
    except Exception as e:  # web3's ContractLogicError carries the revert data
        data = getattr(e, "data", None)
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        raise
    raise AssertionError("expected a revert")


def _error(name: str, arg: int) -> bytes:
    return keccak(f"{name}(uint256)".encode())[:4] + arg.to_bytes(32, "big")


# --- header hash, digest, domain -------------------------------------------------------------------


def test_domain_hash_and_digest(chain: V2Chain) -> None:
    d = chain.call("eip712Domain")
    assert (d[1], d[2], d[3], d[4]) == ("MiniblockRegistry", v2.DOMAIN_VERSION_V2, chain.domain.chain_id,
                                        chain.address)
    sid = _fresh(chain)[0]
    h = chain.next_signed(sid, signers=2, state_root=os.urandom(32)).header
    assert bytes(chain.call("hashHeader", h.as_abi())) == eip712.hash_header(h)
    assert bytes(chain.call("headerDigest", h.as_abi())) == eip712.header_digest(chain.domain, h)
    # the v1 domain (version "1") gives another digest: v1 signatures never verify on v2
    v1dom = Domain(chain.domain.chain_id, chain.address)
    assert eip712.header_digest(v1dom, h) != eip712.header_digest(chain.domain, h)


# --- EIP-2098 --------------------------------------------------------------------------------------


def test_compact_signatures_roundtrip_and_high_s(chain: V2Chain) -> None:
    key = next(iter(chain.keys.values())).private_key
    for i in range(8):
        sig = eip712.sign_digest(keccak(b"digest %d" % i), key)
        c = v2.to_compact(sig)
        assert len(c) == 64 and v2.from_compact(c) == sig
        assert (c[32] >> 7) == sig[64] - 27
    s = int.from_bytes(sig[32:64], "big")
    high = sig[:32] + (_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(SignatureError):
        v2.to_compact(high)
    with pytest.raises(SignatureError):
        v2.from_compact(b"\x00" * 63)


# --- a Python-built commit, accepted; the log, the head, the history --------------------------------


def test_commit_log_packed_decoding() -> None:
    hh = [bytes([i]) * 32 for i in range(1, 4)]
    data = (0b1011).to_bytes(32, "big") + b"".join(hh)
    log = v2.decode_commit_log(7, data)
    assert (log.commit_index, log.accepted, log.header_hashes) == (7, 0b1011, tuple(hh))
    assert log.history_root == v2.history_root(hh)
    for bad in (data[:-1], data[:32], data + bytes(32), (0b11).to_bytes(32, "big") + b"".join(hh)):
        with pytest.raises(ValueError):
            v2.decode_commit_log(7, bad)


def test_python_commit_accepted_log_head_and_proofs(chain: V2Chain) -> None:
    sids = _fresh(chain, 3)
    items = [chain.next_signed(s, signers=2 + (i % 2), state_root=os.urandom(32)) for i, s in enumerate(sids)]
    _, log, batch, signed = _commit_ok(chain, items)
    hashes = [eip712.hash_header(s.header) for s in signed]
    # the log
    assert log.header_hashes == tuple(hashes)
    assert log.accepted == 0b111
    assert log.history_root == v2.history_root(hashes)
    # historyAcc and the mix are no longer logged: the accumulator folds from the logged roots
    assert v2.history_acc(chain.roots) == bytes(chain.call("historyAcc"))
    assert chain.roots[-1] == log.history_root
    assert [(r.stream_id, r.number, hh) for r, hh in v2.accepted_records(batch, log)] == [
        (s.header.stream_id, s.header.number, hh) for s, hh in zip(signed, hashes, strict=True)
    ]
    # the heads
    for s, hh in zip(signed, hashes, strict=True):
        num, prefix, _ts = chain.call("streamHead", s.header.stream_id)
        assert num == s.header.number and bytes(prefix) == v2.head_prefix(hh)
        assert chain.call("isHead", s.header.stream_id, num, hh)
    # the history proofs
    for i, s in enumerate(signed):
        p = chain.proof(log.commit_index, i)
        assert chain.call("verifyHeaderCommitted", s.header.as_abi(), p.as_abi())
        assert _py_verify(chain, hashes[i], p)


def _py_verify(ch: V2Chain, hh: bytes, p: v2.HistoryProof) -> bool:
    last = p.commit_index + len(p.later_roots)
    cp = bytes(ch.call("historyCheckpoint", last // v2.HISTORY_WINDOW))
    return v2.verify_history(hh, p, commit_count=ch.call("commitCount"), acc_now=bytes(ch.call("historyAcc")),
                             checkpoint=cp if cp != b"\x00" * 32 else None)


def test_history_across_windows(chain: V2Chain) -> None:
    assert chain.call("HISTORY_WINDOW") == v2.HISTORY_WINDOW
    sid = _fresh(chain)[0]
    mine: list[tuple[Header, int]] = []
    for _ in range(v2.HISTORY_WINDOW + 3):
        _, log, _, signed = _commit_ok(chain, [chain.next_signed(sid, signers=2, state_root=os.urandom(32))])
        mine.append((signed[0].header, log.commit_index))
    count = chain.call("commitCount")
    assert count == len(chain.roots)
    for w in range(count // v2.HISTORY_WINDOW):
        assert bytes(chain.call("historyCheckpoint", w)) == v2.history_acc(chain.roots[: (w + 1) * v2.HISTORY_WINDOW])
    for h, ci in mine:
        p = chain.proof(ci, 0)
        hh = eip712.hash_header(h)
        assert chain.call("verifyHeaderCommitted", h.as_abi(), p.as_abi()), ci
        assert _py_verify(chain, hh, p)
        # tampered proofs fail on both sides
        bad = [
            v2.HistoryProof(p.commit_index, p.position, p.header_hashes, keccak(b"x"), p.later_roots),
            v2.HistoryProof(p.commit_index, p.position, (*p.header_hashes, keccak(b"y")), p.prev_acc, p.later_roots),
            v2.HistoryProof(p.commit_index + 1, p.position, p.header_hashes, p.prev_acc, p.later_roots),
        ]
        if p.later_roots:
            bad.append(v2.HistoryProof(p.commit_index, p.position, p.header_hashes, p.prev_acc, p.later_roots[:-1]))
        for b in bad:
            ok = chain.call("verifyHeaderCommitted", h.as_abi(), b.as_abi())
            assert ok == _py_verify(chain, hh, b)
            if b.later_roots == p.later_roots or (ci + len(b.later_roots)) % v2.HISTORY_WINDOW != v2.HISTORY_WINDOW - 1:
                assert not ok


# --- the packed batch: decoding, reverts ------------------------------------------------------------


def test_decode_matches_encode_and_contract_reverts(chain: V2Chain) -> None:
    sids = _fresh(chain, 2)
    items = [chain.next_signed(s, signers=2 + i, state_root=os.urandom(32)) for i, s in enumerate(sids)]
    batch, signed = chain.batch(items)
    reveals, recs = v2.decode_batch(batch)
    assert len(recs) == 2
    assert chain.call("RECORD_FIXED") == v2.RECORD_FIXED
    for r, s in zip(recs, signed, strict=True):
        h = s.header
        assert (r.stream_id, r.events_root, r.state_root, r.number, r.epoch, r.event_count, r.attempt) == (
            h.stream_id, h.events_root, h.state_root, h.number, h.epoch, h.event_count, h.attempt)
        assert r.prev_tail == h.prev_hash[v2.PREV_SENT_FROM:]
        assert v2.prev_hash_of(v2.head_prefix(h.prev_hash), r.prev_tail) == h.prev_hash
        # reveal j belongs to the j-th distinct leader in record order
        assert reveals[list(dict.fromkeys(x.header.leader for x in signed)).index(h.leader)] == h.randao_reveal
        assert (r.leader_pos, r.attesters) == (s.leader_pos, s.attesters)
        assert [v2.from_compact(x) for x in r.signatures] == s.signatures
    # malformed batches: the contract reverts with the error decode_batch names
    cases = [batch[:2], b"\x00\x00\x00", batch[:-1], batch + b"\x00", batch[:200], batch[:400],
             b"\x00\x03" + batch[2:], b"\x00\x01" + batch[2:], batch[:2] + b"\xff" + batch[3:]]
    for bad in cases:
        with pytest.raises(v2.BatchError) as ei:
            v2.decode_batch(bad)
        name, arg = str(ei.value).rstrip(")").split("(")
        assert _revert_data(chain, bad) == _error(name, int(arg)), str(ei.value)


# --- tampered commits: the right reason -------------------------------------------------------------


def _reason_of(ch: V2Chain, batch: bytes) -> list[int]:
    before = (ch.call("commitCount"), bytes(ch.call("randaoMix")))
    _, log, rejected = ch.commit(batch)
    assert log is None and (ch.call("commitCount"), bytes(ch.call("randaoMix"))) == before
    return [r for _, _, r in rejected]


def test_tampered_commits_rejected_with_reason(chain: V2Chain) -> None:
    (sid,) = _fresh(chain)
    base = chain.next_signed(sid, signers=2, state_root=os.urandom(32))
    h = base.header

    def with_header(**kw: Any) -> Signed:
        fields = {f: getattr(h, f) for f in Header.__slots__}
        fields.update(kw)
        return Signed(Header(**fields), base.leader_pos, base.attesters)

    # number, parent (bytes 18..19 differ), epoch, elected leader
    assert _reason_of(chain, chain.batch([with_header(number=h.number + 1)])[0]) == [RejectReason.BAD_NUMBER]
    stale = h.prev_hash[:18] + bytes([h.prev_hash[18] ^ 1]) + h.prev_hash[19:]
    assert _reason_of(chain, chain.batch([with_header(prev_hash=stale)])[0]) == [RejectReason.BAD_PARENT]
    assert _reason_of(chain, chain.batch([with_header(epoch=h.epoch + 1)])[0]) == [RejectReason.WRONG_EPOCH]
    other = Signed(h, (base.leader_pos + 1) % 3, base.attesters)
    assert _reason_of(chain, chain.batch([other])[0]) == [RejectReason.NOT_ELECTED_LEADER]
    # signatures: the leader's by someone else, an attestation by someone else, a duplicate
    batch, signed = chain.batch([base])
    _, recs = v2.decode_batch(batch)
    reps = chain.replicas(sid)
    outsider = next(a for a in chain.keys if a not in reps)
    d = eip712.header_digest(chain.domain, signed[0].header)
    forged = v2.to_compact(eip712.sign_digest(d, chain.keys[outsider].private_key))
    sig0 = len(batch) - 64 * len(recs[0].signatures)  # the signatures follow all records
    assert _reason_of(chain, batch[:sig0] + forged + batch[sig0 + 64:]) == [RejectReason.BAD_LEADER_SIGNATURE]
    assert _reason_of(chain, batch[:sig0 + 64] + forged) == [RejectReason.BAD_ATTESTATION]
    assert _reason_of(chain, batch[:sig0 + 64] + batch[sig0:sig0 + 64]) == [RejectReason.BAD_ATTESTATION]
    # high s: the same signature with s' = n - s (and the parity flipped) is refused
    vs = int.from_bytes(batch[sig0 + 32:sig0 + 64], "big")
    s, parity = vs & ((1 << 255) - 1), vs >> 255
    high = batch[sig0:sig0 + 32] + ((_N - s) | ((parity ^ 1) << 255)).to_bytes(32, "big")
    assert _reason_of(chain, batch[:sig0] + high + batch[sig0 + 64:]) == [RejectReason.BAD_LEADER_SIGNATURE]
    # no quorum: the leader alone
    alone = Signed(h, base.leader_pos, 0)
    assert _reason_of(chain, chain.batch([alone])[0]) == [RejectReason.NO_QUORUM]
    # and the untampered one is accepted
    _commit_ok(chain, [base])


# --- bench/gas_v2.py in its smallest form ------------------------------------------------------------


def test_gas_v2_bench_rows(anvil: Anvil, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import gas_v2

    rows = gas_v2.measure(anvil, nodes=4, replication=3, signers_list=[2], batches=[2, 16], repeat=1, events=4)
    assert [(r["batch"], r["access_list"]) for r in rows] == [(2, False), (2, True), (16, False), (16, True)]
    for r in rows:
        assert (r["replication"], r["signers"]) == (3, 2)
        b = r["breakdown"]
        whole = (b["base"] + b["calldata"] + b["execution"]) * r["batch"]
        assert r["gas_used"] == pytest.approx(whole, abs=0.1 * r["batch"])  # the parts are rounded to 0.1
        parts = b["base"] + b["calldata"] + b["execution"] + b["checkpoint_share"]
        assert r["gas_per_header"] == pytest.approx(parts, abs=0.2)
    # the access list: none pays at 2 headers; at 16 (16 head slots and the tx's own) it is attached
    # and saves gas (node.chain.access_list; the forge suite checks by how much on one batch). Two
    # batches compare only with as many leaders: each leader's reveal costs ~7,700 gas, 100x what the
    # list saves, and a batch of 16 random streams misses one of the 4 nodes as leader ~4 % of the time.
    assert rows[1]["access_list_keys"] == 0
    assert rows[3]["access_list_keys"] >= 25
    if rows[3]["leaders"] == rows[2]["leaders"]:
        assert rows[3]["gas_used"] < rows[2]["gas_used"]
    assert capsys.readouterr().out.count("\n") == 4
