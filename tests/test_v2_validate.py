"""node.protocol.commit.validate_batch_v2 against MiniblockRegistryV2's commitMiniblocks on a real Anvil:
each batch is judged in Python from the chain's views (heads with the full hashes the logs told,
replicas, nodes, RANDAO commitments, onion epochs) and then sent; the two verdict lists must be equal.
One test per rejection reason the node can meet (docs/protocol.md "Version 2", checks 1..13), the
reveal-table rule (one entry per elected leader, by first appearance; a shifted table fails the
records that hash the wrong reveal), and accepted batches of several leaders."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
from eth_utils.crypto import keccak

from bench.v2chain import Signed, V2Chain
from node.chain.anvil import Anvil
from node.protocol import eip712, v2
from node.protocol.commit import CommitView, StreamHead, validate_batch_v2
from node.protocol.registry import RegistryParams
from node.protocol.types import Header, RejectReason

R = RejectReason


@pytest.fixture(scope="module")
def ch(anvil: Anvil) -> Iterator[V2Chain]:
    c = V2Chain(anvil, nodes=5, replication=3, tag=b"v2 validate")
    c.create_streams([keccak(b"v2 validate stream %d" % i) for i in range(72)])
    anvil.increase_time(1)
    anvil.mine()
    yield c


_used: set[bytes] = set()


def fresh(ch: V2Chain, count: int = 1) -> list[bytes]:
    out = [s for s in ch.full_head if s not in _used][:count]
    assert len(out) == count, "out of streams"
    _used.update(out)
    return out


def view_of(ch: V2Chain) -> tuple[CommitView, RegistryParams]:
    """The registry as the next commit sees it: every head with its full hash (as the logs told it)."""
    heads, replicas = {}, {}
    for sid, full in ch.full_head.items():
        n, prefix, ts = ch.call("streamHead", sid)
        assert full[:20] == bytes(prefix)
        heads[sid] = StreamHead(n, full, ts)
        replicas[sid] = ch.replicas(sid)
    infos = ch.call("getNodes", 0, 256)
    nodes = {i[0]: _Terms(i[4], i[5]) for i in infos}
    commits = {i[0]: bytes(i[6]) for i in infos}
    usable = {a: led for a in nodes if (led := ch.call("livenessOf", a)[1]) > ch.call("currentEpoch")}
    now = ch.w3.eth.get_block("latest")["timestamp"]
    view = CommitView(now=now, epoch=ch.call("currentEpoch"), seed=bytes(ch.call("currentSeed")), heads=heads,
                      replicas=replicas, nodes=nodes, randao_commits=commits, onion_usable_from=usable)
    params = RegistryParams(ch.call("genesisTime"), ch.call("epochLength"), ch.call("leaderTimeout"),
                            ch.call("replicationFactor"))
    return view, params


@dataclasses.dataclass(frozen=True)
class _Terms:
    join_epoch: int
    leave_epoch: int


def pack(ch: V2Chain, items: list[Signed], *, sign: Callable[[int, Header], Header] | None = None,
         tamper: Callable[[int, v2.Record], v2.Record] | None = None,
         reveals: Callable[[list[bytes]], list[bytes]] | None = None) -> tuple[list[v2.Record], list[bytes]]:
    """Records and reveal table of `items` as an honest leader builds them (one reveal per leader, its
    next onion layer; signed by the leader and the attesters), then `sign` (the header the signatures
    are made over), `tamper` (the record as sent) and `reveals` (the table) applied."""
    leaders = list(dict.fromkeys(it.header.leader for it in items))
    table = [ch._next_reveal(a) for a in leaders]
    recs = []
    for i, it in enumerate(items):
        h = dataclasses.replace(it.header, randao_reveal=table[leaders.index(it.header.leader)])
        hs = sign(i, h) if sign else h
        reps = ch.replicas(h.stream_id)
        signers = [h.leader] + [reps[k] for k in range(len(reps)) if it.attesters >> k & 1]
        sigs = tuple(v2.to_compact(eip712.sign_header(ch.domain, hs, ch.keys[a].private_key)) for a in signers)
        rec = v2.Record(h, it.leader_pos, leaders.index(h.leader), it.attesters, sigs)
        recs.append(tamper(i, rec) if tamper else rec)
    return recs, reveals(table) if reveals else table


def encode(recs: list[v2.Record], table: list[bytes]) -> bytes:
    """encode_batch without its honesty check on reveal indexes (a test sends dishonest tables)."""
    out = len(recs).to_bytes(2, "big") + bytes([len(table)]) + b"".join(table)
    return out + b"".join(v2.encode_record(r) for r in recs) + b"".join(v2.encode_signatures(r) for r in recs)


def judged(ch: V2Chain, recs: list[v2.Record], table: list[bytes]) -> list[R | None]:
    """Python's verdicts, then the contract's; asserted equal; returned."""
    view, params = view_of(ch)
    py = validate_batch_v2(view, params, ch.domain, recs, table)
    rc, log, rejected = ch.commit(encode(recs, table))
    reasons = {(sid, n): R(code) for sid, n, code in rejected}
    chain = [reasons.get((r.header.stream_id, r.header.number)) for r in recs]
    assert py == chain, f"python {py} != contract {chain}"
    accepted = [it for it, v in zip(recs, chain, strict=True) if v is None]
    for r in accepted:
        ch.full_head[r.header.stream_id] = eip712.hash_header(r.header)
    assert (log is not None) == bool(accepted)
    return chain


def one(ch: V2Chain, reason: R | None, **kw) -> None:
    (sid,) = fresh(ch)
    recs, table = pack(ch, [ch.next_signed(sid, signers=2)], **kw)
    assert judged(ch, recs, table) == [reason]


def header_change(**changes) -> Callable[[int, v2.Record], v2.Record]:
    """The sent record's header differs from the signed one in `changes`."""
    return lambda _i, r: dataclasses.replace(r, header=dataclasses.replace(r.header, **changes))


def test_accepted_batch_of_several_leaders(ch):
    sids = fresh(ch, 8)
    items = [ch.next_signed(s, signers=2 + (i % 2)) for i, s in enumerate(sids)]
    assert len({it.header.leader for it in items}) >= 2
    recs, table = pack(ch, items)
    assert judged(ch, recs, table) == [None] * 8


def test_unknown_stream(ch):
    (sid,) = fresh(ch)
    recs, table = pack(ch, [ch.next_signed(sid, signers=2)],
                       tamper=header_change(stream_id=keccak(b"no such stream")))
    assert judged(ch, recs, table) == [R.UNKNOWN_STREAM]


def test_bad_number(ch):
    (sid,) = fresh(ch)
    it = ch.next_signed(sid, signers=2)
    recs, table = pack(ch, [it], tamper=header_change(number=it.header.number + 1))
    assert judged(ch, recs, table) == [R.BAD_NUMBER]


def test_bad_parent_in_the_overlap_bytes_and_beyond(ch):
    (sid,) = fresh(ch)
    it = ch.next_signed(sid, signers=2)
    p = it.header.prev_hash
    recs, table = pack(ch, [it], tamper=header_change(prev_hash=p[:18] + bytes([p[18] ^ 1]) + p[19:]))
    assert judged(ch, recs, table) == [R.BAD_PARENT]
    # a parent that differs only in the bytes taken from the slot ([0:18]) hashes another header: 7
    signed_on = p[:3] + bytes([p[3] ^ 1]) + p[4:]
    one(ch, R.BAD_LEADER_SIGNATURE, sign=lambda _i, h: dataclasses.replace(h, prev_hash=signed_on))


def test_wrong_epoch(ch):
    (sid,) = fresh(ch)
    it = ch.next_signed(sid, signers=2)
    recs, table = pack(ch, [it], tamper=header_change(epoch=it.header.epoch + 1))
    assert judged(ch, recs, table) == [R.WRONG_EPOCH]


def test_attempt_not_open_and_not_elected(ch):
    (sid,) = fresh(ch)
    recs, table = pack(ch, [ch.next_signed(sid, signers=2, attempt=100)])  # opens 100 leader timeouts on
    assert judged(ch, recs, table) == [R.ATTEMPT_NOT_OPEN]
    (sid,) = fresh(ch)
    it = ch.next_signed(sid, signers=2)
    recs, table = pack(ch, [it], tamper=lambda _i, r: dataclasses.replace(r, leader_pos=(r.leader_pos + 1) % 3))
    assert judged(ch, recs, table) == [R.NOT_ELECTED_LEADER]


def test_too_many_events(ch):
    (sid,) = fresh(ch)
    recs, table = pack(ch, [ch.next_signed(sid, signers=2, event_count=15_001)])
    assert judged(ch, recs, table) == [R.TOO_MANY_EVENTS]


def test_attester_bitmap_rules(ch):
    def bits(value: int) -> Callable[[int, v2.Record], v2.Record]:
        """The bitmap `value`, with as many signatures as it asks for (copies of the attestation)."""
        n = 1 + bin(value).count("1")
        return lambda _i, r: dataclasses.replace(r, attesters=value, signatures=(r.signatures * n)[:n])

    (sid,) = fresh(ch)
    it = ch.next_signed(sid, signers=2)
    recs, table = pack(ch, [it], tamper=bits(it.attesters | 1 << 3))  # a bit past r
    assert judged(ch, recs, table) == [R.NOT_REPLICA]
    (sid,) = fresh(ch)
    it = ch.next_signed(sid, signers=2)
    recs, table = pack(ch, [it], tamper=bits(it.attesters | 1 << it.leader_pos))  # the leader's own bit
    assert judged(ch, recs, table) == [R.DUPLICATE_ATTESTER]
    (sid,) = fresh(ch)
    recs, table = pack(ch, [ch.next_signed(sid, signers=1)])  # the leader alone of 3
    assert judged(ch, recs, table) == [R.NO_QUORUM]


def test_bad_signatures(ch):
    outsider = keccak(b"outsider key")

    def leader_sig_by_outsider(_i: int, r: v2.Record) -> v2.Record:
        forged = v2.to_compact(eip712.sign_header(ch.domain, r.header, outsider))
        return dataclasses.replace(r, signatures=(forged, *r.signatures[1:]))

    def attestation_by_outsider(_i: int, r: v2.Record) -> v2.Record:
        forged = v2.to_compact(eip712.sign_header(ch.domain, r.header, outsider))
        return dataclasses.replace(r, signatures=(r.signatures[0], forged))

    one(ch, R.BAD_LEADER_SIGNATURE, tamper=leader_sig_by_outsider)
    one(ch, R.BAD_ATTESTATION, tamper=attestation_by_outsider)


def test_reveal_table_rules(ch):
    # a made-up reveal: the leader signed the header with it, so only check 13 fails
    one(ch, R.BAD_RANDAO_REVEAL, reveals=lambda t: [keccak(b"made up")],
        sign=lambda _i, h: dataclasses.replace(h, randao_reveal=keccak(b"made up")))
    # no table at all: the leader's reveal is 0, the header it signed hashes another: 7
    one(ch, R.BAD_LEADER_SIGNATURE, reveals=lambda t: [])
    # two leaders' reveals swapped: each record hashes the other's reveal
    sids = fresh(ch, 12)
    items, leaders = [], []
    for s in sids:
        it = ch.next_signed(s, signers=2)
        if it.header.leader not in leaders and len(leaders) < 2:
            leaders.append(it.header.leader)
            items.append(it)
    assert len(items) == 2
    recs, table = pack(ch, items, reveals=lambda t: t[::-1])
    assert judged(ch, recs, table) == [R.BAD_LEADER_SIGNATURE] * 2


def test_one_reveal_per_leader_and_a_non_elected_record_takes_none(ch):
    sids = fresh(ch, 12)
    items = [ch.next_signed(s, signers=2) for s in sids]
    by_leader: dict[str, list[Signed]] = {}
    for it in items:
        by_leader.setdefault(it.header.leader, []).append(it)
    lead = max(by_leader, key=lambda a: len(by_leader[a]))
    mine = by_leader[lead][:2]
    assert len(mine) == 2, "no leader with two streams"
    other = next(it for it in items if it.header.leader != lead)
    bad = next(it for it in items if it not in mine and it is not other)
    # a record at a position that is not the elected one goes first: it takes no reveal entry, so entry 0
    # is `lead`'s (both of its records use it, checked once) and entry 1 is the other leader's
    recs, table = pack(ch, [bad, *mine, other],
                       tamper=lambda i, r: dataclasses.replace(r, leader_pos=(r.leader_pos + 1) % 3) if i == 0 else r,
                       reveals=lambda _t: [ch._next_reveal(lead), ch._next_reveal(other.header.leader)])
    assert judged(ch, recs, table) == [R.NOT_ELECTED_LEADER, None, None, None]
    # the same batch with the table in the order of all records' leaders (as if the first took one): the
    # shifted entries make the honest records hash the wrong reveal
    sids = fresh(ch, 12)
    items = [ch.next_signed(s, signers=2) for s in sids]
    first, second = items[0], next(it for it in items if it.header.leader != items[0].header.leader)
    recs, table = pack(ch, [first, second],
                       tamper=lambda i, r: dataclasses.replace(r, leader_pos=(r.leader_pos + 1) % 3) if i == 0 else r)
    assert judged(ch, recs, table) == [R.NOT_ELECTED_LEADER, R.BAD_LEADER_SIGNATURE]


def test_headers_rebuild_from_a_commit_transactions_input(ch):
    """What a v2 node's sync falls back to (node/server/sync.py header_from_packed): the header of each
    accepted record, rebuilt from the transaction's packed batch, the replica list, the parent's full
    hash and a reveal of the table, hashes to the hash the commit log names."""
    from node.chain.calldata import decode_packed_call

    sids = fresh(ch, 6)
    parents = {s: ch.full_head[s] for s in sids}
    recs, table = pack(ch, [ch.next_signed(s, signers=2) for s in sids])
    rc, log, rejected = ch.commit(encode(recs, table))
    assert log is not None and not rejected
    tx = ch.w3.eth.get_transaction(rc["transactionHash"])
    reveals, decoded = v2.decode_batch(decode_packed_call(bytes(tx["input"])))
    for (rec, hh), orig in zip(v2.accepted_records(encode(recs, table), log), recs, strict=True):
        reps = ch.replicas(rec.stream_id)
        rebuilt = [v2.header_of(rec, reps[rec.leader_pos], rv, parents[rec.stream_id]) for rv in reveals]
        assert [h for h in rebuilt if eip712.hash_header(h) == hh] == [orig.header]
        ch.full_head[rec.stream_id] = hh
    assert len(decoded) == len(sids)
