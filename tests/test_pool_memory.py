"""The mini-pool in memory (node/server/pool.py) against its journal, a real SQLite store: after every
operation (intake, block apply, rollback, drop, prune, gossip passes, snapshot install, restart) the
memory views equal what the rows say; the pool reloads on restart; replays of pending events are seen;
gossip is due in order; the node-wide bound refuses with 429."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from eth_utils.address import to_checksum_address

from node.protocol.eip712 import hash_event
from node.protocol.snapshot import Snapshot
from node.protocol.state import StateDelta
from node.protocol.types import Event, EventKind, Header
from node.server.storage import Storage

S1, S2 = b"\x01" * 32, b"\x02" * 32
GEN = b"\x00" * 31 + b"\x07"
AUTHORS = [to_checksum_address("0x" + f"{i:02x}" * 20) for i in range(1, 5)]
SIG = b"\x05" * 65


def ev(sid: bytes, author: str, nonce: int, kind: int = int(EventKind.MESSAGE), payload: bytes = b"p"):
    e = Event(sid, author, nonce, kind, payload)
    return (hash_event(e), e, SIG)


def open_store(path: Path) -> Storage:
    st = Storage(path)
    st.upsert_streams([(S1, GEN, AUTHORS[:2], 1, None, 0), (S2, GEN, AUTHORS[:2], 1, None, 0)])
    return st


@pytest.fixture
def st(tmp_path):
    s = open_store(tmp_path / "node.sqlite")
    yield s
    s.close()


def apply(st: Storage, sid: bytes, events: list, tag: int = 0) -> None:
    row = st.get_stream(sid)
    assert row is not None
    n = row.head_number + 1
    header = Header(sid, n, row.head_hash, b"\x02" * 32, len(events), 1, 0, AUTHORS[0], b"\x03" * 32, b"\x04" * 32)
    st.apply_block(header, bytes([n, tag, sid[0]]) * 10 + b"\x00\x00", events, StateDelta(), None)


def assert_consistent(st: Storage) -> None:
    """Every memory view of the pool equals the rows' (the pool's journal)."""
    rows = {bytes(r[0]): r for r in st.db.execute(
        "SELECT hash, stream_id, author, nonce, kind, payload, signature, received FROM events WHERE block IS NULL")}
    assert st.pool_total() == len(rows)
    assert st.streams_with_pending() == {bytes(r[1]) for r in rows.values()}
    for sid in (S1, S2):
        mine = [h for h, r in rows.items() if bytes(r[1]) == sid]
        hs = st.pool_hashes(sid)
        assert sorted(hs) == sorted(mine) and st.pool_size(sid) == len(mine)
        received = [rows[h][7] for h in hs]
        assert received == sorted(received)  # oldest first
        assert st.pool_oldest(sid, 3) == hs[:3] and st.pool_hashes(sid, 2) == hs[:2]
        for a in AUTHORS:
            assert st.pool_count(sid, a) == sum(1 for h in mine if rows[h][2] == a)
    got = st.get_events(rows)
    for h, r in rows.items():
        se = got[h]
        assert se.block is None and se.idx is None and se.received == r[7] and se.signature == bytes(r[6])
        assert (se.event.stream_id, se.event.author, se.event.nonce, se.event.kind, se.event.payload) == \
            (bytes(r[1]), r[2], r[3], r[4], bytes(r[5]))
        assert st.replay_statuses([(h, se.event, se.signature)]) == ["known"]
        assert st.pool.key_hash(se.event.stream_id, se.event.author, se.event.nonce) == h


def reopen(st: Storage, path: Path) -> Storage:
    st.close()
    return open_store(path)


def test_restart_reloads_the_pool_with_its_order(tmp_path):
    path = tmp_path / "node.sqlite"
    st = open_store(path)
    st.add_events([ev(S1, AUTHORS[0], n) for n in range(5)], now=100.0)
    st.add_events([ev(S1, AUTHORS[1], n) for n in range(3)] + [ev(S2, AUTHORS[0], 0)], now=50.0)
    before = st.pool_hashes(S1)
    st = reopen(st, path)
    assert st.pool_total() == 9 and st.pool_hashes(S1) == before
    assert_consistent(st)
    st.close()


def test_block_apply_takes_events_out_and_drops_a_conflicting_pending_one(st):
    a = [ev(S1, AUTHORS[0], n) for n in range(4)]
    st.add_events(a)
    other = ev(S1, AUTHORS[1], 7, payload=b"mine")
    st.add_events([other])
    committed = ev(S1, AUTHORS[1], 7, payload=b"theirs")  # same key, other hash: the chain decided
    apply(st, S1, [a[0], a[2], committed])
    assert set(st.pool_hashes(S1)) == {a[1][0], a[3][0]}
    assert st.get_events([other[0]]) == {}
    assert st.get_event(committed[0]).block == 1  # type: ignore[union-attr]
    assert st.replay_statuses([other]) == ["replay"]
    assert_consistent(st)


def test_rollback_returns_the_events_in_received_order_and_they_are_due_again(st):
    early = [ev(S1, AUTHORS[0], n) for n in range(3)]
    st.add_events(early, now=10.0)
    apply(st, S1, early)
    late = ev(S1, AUTHORS[1], 0)
    st.add_events([late], now=20.0, gossiped=True)
    st.take_due_for_gossip(30.0, 5.0)
    assert st.take_due_for_gossip(31.0, 5.0) == []
    rb = st.rollback_stream(S1, 0)
    assert rb is not None and rb.events == 3
    assert st.pool_hashes(S1) == [h for h, _e, _s in early] + [late[0]]
    due = st.take_due_for_gossip(31.0, 5.0)  # the returned ones were never forwarded since
    assert [se.hash for se in due] == [h for h, _e, _s in early]
    assert_consistent(st)


def test_replays_of_pending_events_are_seen_in_a_batch_and_across_batches(st):
    e = ev(S1, AUTHORS[0], 1)
    assert st.add_events([e, ev(S1, AUTHORS[0], 1, payload=b"other")]) == ["new", "replay"]
    assert st.replay_statuses([ev(S1, AUTHORS[0], 1, payload=b"again"), e]) == ["replay", "known"]
    assert st.add_events([e, ev(S1, AUTHORS[0], 1, payload=b"x")]) == ["known", "replay"]
    assert st.pool_count(S1, AUTHORS[0]) == 1
    assert_consistent(st)


def test_gossip_is_due_new_first_then_by_back_off(st):
    old = ev(S1, AUTHORS[0], 0)
    st.add_events([old], now=100.0, gossiped=True)  # came by gossip: forwarded on by its sender
    fresh = [ev(S1, AUTHORS[1], n) for n in range(3)]
    st.add_events(fresh, now=101.0)  # client events: never forwarded
    assert sorted(se.hash for se in st.take_due_for_gossip(101.5, 5.0)) == sorted(h for h, _e, _s in fresh)
    assert st.take_due_for_gossip(104.0, 5.0) == []
    assert [se.hash for se in st.take_due_for_gossip(106.0, 5.0)] == [old[0]]  # forwarded at 100, due after 105
    # back-off: at 106 the fresh ones (received 101) get their next forward after 106 + 0 = 106, due after 111
    assert len(st.take_due_for_gossip(111.5, 5.0, limit=2)) == 2
    st.mark_gossiped([h for h, _e, _s in [old, *fresh]], 10_000.0)
    assert st.due_for_gossip(older_than=200.0) == []
    assert len(st.due_for_gossip(older_than=20_000.0)) == 4


def test_drop_prune_and_snapshot_install_keep_memory_and_rows_equal(st):
    a, b = AUTHORS[0], AUTHORS[1]
    join_b = ev(S1, b, 0, int(EventKind.JOIN), b"")
    st.add_events([ev(S1, a, 1), ev(S1, a, 2), join_b, ev(S1, b, 1), ev(S2, a, 5)])
    assert st.prune_pool(S1, frozenset()) == 2  # a's MESSAGEs (no member, no JOIN pending); b has a JOIN
    assert_consistent(st)
    st.drop_pool_events([join_b[0]])
    assert_consistent(st)
    header = Header(S2, 3, GEN, b"\x02" * 32, 0, 1, 0, a, b"\x03" * 32, b"\x04" * 32)
    snap = Snapshot(S2, 3, header, None, False, (a,), ((a, 5), (a, 6)))
    st.install_snapshot(snap, b"\x0a" * 32, b"\x0b" * 32, 1, b"x")
    assert st.pool_size(S2) == 0  # its nonce is used by a committed event the snapshot carries
    assert st.replay_statuses([ev(S2, a, 6)]) == ["replay"]
    assert_consistent(st)


def test_the_node_wide_bound_refuses_new_events_with_429(tmp_path):
    from node.server.intake import Quotas

    class _Metric:
        def labels(self, *_a):
            return self

        def inc(self, *_a):
            return None

    class _Cfg:
        pool_quota_author = 1_000
        pool_quota_stream = 1_000
        pool_max_events = 3

    class _Node:
        def __init__(self, storage: Storage) -> None:
            self.storage, self.cfg = storage, _Cfg()
            self.metrics = type("M", (), {"quota_refused": _Metric()})()

    st = open_store(tmp_path / "node.sqlite")
    st.add_events([ev(S1, AUTHORS[0], n) for n in range(2)])
    q = Quotas(_Node(st))  # type: ignore[arg-type]
    assert q.take(ev(S2, AUTHORS[1], 0)[1]) is None
    rej = q.take(ev(S2, AUTHORS[1], 1)[1])
    assert rej is not None and rej.status == 429 and rej.error == "pool_full"
    st.close()


def test_random_operations_keep_memory_equal_to_the_rows(tmp_path):
    """A small property test: seeded random sequences of every pool-changing operation, checked after each."""
    path = tmp_path / "node.sqlite"
    for seed in range(6):
        rng = random.Random(seed)
        p = path.with_name(f"node{seed}.sqlite")
        st = open_store(p)
        nonce = 0
        now = 1_000.0
        for _step in range(60):
            op = rng.choice(["add", "add", "add", "apply", "rollback", "drop", "prune", "gossip", "restart"])
            sid = rng.choice([S1, S2])
            now += rng.choice([0.0, 0.5, 3.0])
            if op == "add":
                items = []
                for _ in range(rng.randint(1, 6)):
                    a = rng.choice(AUTHORS)
                    if rng.random() < 0.2 and nonce:  # a replay or a second copy
                        n = rng.randrange(nonce)
                    else:
                        n, nonce = nonce, nonce + 1
                    items.append(ev(rng.choice([S1, S2]), a, n, payload=bytes([rng.randrange(3)])))
                st.add_events(items, now=now - rng.choice([0.0, 10.0]), gossiped=rng.random() < 0.5)
            elif op == "apply":
                pending = st.pool_hashes(sid)
                got = st.get_events(rng.sample(pending, min(len(pending), rng.randint(0, 4))))
                events = [(h, se.event, se.signature) for h, se in got.items()]
                if rng.random() < 0.3:  # an event fetched from a peer, not pending here
                    events.append(ev(sid, rng.choice(AUTHORS), nonce))
                    nonce += 1
                apply(st, sid, events)
            elif op == "rollback":
                row = st.get_stream(sid)
                if row is not None and row.head_number > 0:
                    st.rollback_stream(sid, rng.randrange(row.head_number))
            elif op == "drop":
                pending = st.pool_hashes(sid)
                st.drop_pool_events(rng.sample(pending, min(len(pending), 2)))
            elif op == "prune":
                st.prune_pool(sid, frozenset(rng.sample(AUTHORS, 2)))
            elif op == "gossip":
                st.take_due_for_gossip(now, 2.0, limit=rng.randint(1, 10))
            else:
                st = reopen(st, p)
            assert_consistent(st)
        st.close()


def test_forget_stream_drops_its_rows_keeps_its_pending_events_and_refuses_with_blocks(tmp_path):
    """A stream whose creation a reorg orphaned (`Storage.forget_stream`): its rows go, its pending events stay
    pending (the creation may be mined again); a stream that still holds blocks is not forgotten."""
    st = open_store(tmp_path / "node.sqlite")
    pending = ev(S2, AUTHORS[0], 1)
    st.add_events([pending])
    apply(st, S1, [ev(S1, AUTHORS[0], 1)])
    assert st.forget_stream(S1) is False and st.get_stream(S1) is not None
    assert st.forget_stream(S2) is True
    assert st.get_stream(S2) is None and S2 not in {r.stream_id for r in st.all_streams()}
    assert st.pool_hashes(S2) == [pending[0]] and st.get_event(pending[0]) is not None
    st.close()
    st = Storage(tmp_path / "node.sqlite")  # after a restart too
    assert st.get_stream(S2) is None and st.pool_hashes(S2) == [pending[0]]
    st.upsert_streams([(S2, GEN, AUTHORS[:2], 9, None, 0)])  # the creation mined again
    assert st.get_stream(S2) is not None and st.pool_hashes(S2) == [pending[0]]
    st.close()
