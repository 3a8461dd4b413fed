"""stateRoot = keccak256(0x02 ‖ membersRoot ‖ uint8 inviteOnly ‖ noncesRoot) (node/protocol/state_root.py,
docs/protocol.md "Stream state"): the incremental accumulator equals the from-scratch definition, the node's
storage keeps it in step (restart, pruning, snapshot install, rollback history), and a snapshot whose policy
or nonces were changed is refused by the chain check alone."""

from __future__ import annotations

import random

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address

from node.protocol import snapshot as fmt
from node.protocol.eip712 import hash_event, hash_header, sign_event
from node.protocol.member_tree import MemberTree, slots_root
from node.protocol.merkle import merkle_root, node_hash
from node.protocol.snapshot import Snapshot, SnapshotError, check_snapshot
from node.protocol.state import POLICY_INVITE, StreamRules, state_delta
from node.protocol.state_root import (
    NonceFrontier,
    nonce_leaf,
    nonces_root,
    root_after,
    state_root,
    state_root_of,
)
from node.protocol.types import ZERO32, Domain, Event, EventKind, Header
from node.server.storage import STATE_HISTORY_DEPTH, Storage

SID = b"\x0a" * 32
DOMAIN = Domain(31337, "0x" + "22" * 20)
AUTHORS = [to_checksum_address(f"0x{i:040x}") for i in range(1, 9)]


def test_definition_bytes():
    a = AUTHORS[0]
    assert nonce_leaf(a, 5) == nonce_leaf(a.lower(), 5)  # the address bytes, not its spelling
    assert len(bytes.fromhex(a[2:]) + (5).to_bytes(8, "big")) == 28  # abi.encodePacked(address, uint64)
    assert nonces_root([]) == ZERO32 and NonceFrontier().root == ZERO32
    m, n = b"\x01" * 32, b"\x02" * 32
    assert state_root(m, False, n) != state_root(m, True, n) != state_root(n, True, m)
    assert state_root(m, True, n) != node_hash(m, n)  # tag 0x02: never a Merkle node


def test_incremental_root_equals_definition_over_random_blocks():
    rng = random.Random(7)
    frontier, used = NonceFrontier(), []
    for _block in range(300):
        block = [(rng.choice(AUTHORS), rng.randrange(2**64)) for _ in range(rng.choice((0, 0, 1, 2, 3, 7, 16)))]
        after = frontier.appended(nonce_leaf(a, n) for a, n in block)
        assert frontier.count == len(used)  # immutable: the draft's root never moves the state
        frontier, used = after, used + block
        assert frontier.root == nonces_root(used) == merkle_root([nonce_leaf(a, n) for a, n in used])
        assert len(frontier.peaks) == frontier.count.bit_count() <= 64
        assert NonceFrontier.from_stored(frontier.count, frontier.peaks_blob()) == frontier
    with pytest.raises(ValueError):
        NonceFrontier.from_stored(3, b"\x00" * 32)


def test_root_after_equals_state_root_of_with_membership_and_policy():
    """Random blocks of JOIN / LEAVE / MESSAGE / POLICY: the leader's incremental root is the definition."""
    rng = random.Random(11)
    creator = AUTHORS[0]
    tree, slots, policy, frontier, used, nonce = MemberTree(), [], False, NonceFrontier(), [], 0
    for _block in range(150):
        events = []
        for a in rng.sample(AUTHORS, rng.randrange(0, 5)):
            kind = rng.choice((EventKind.JOIN, EventKind.LEAVE, EventKind.MESSAGE, EventKind.POLICY))
            payload = rng.choice((b"\x00", POLICY_INVITE)) if kind == EventKind.POLICY else b""
            nonce += 1
            events.append(Event(SID, creator if kind == EventKind.POLICY else a, nonce, kind, payload))
        rules = StreamRules(creator, policy)
        delta = state_delta(tree, events, rules, strict=False)
        got = root_after(tree, policy, frontier, delta, events)
        tree.apply(delta.members)
        for a in delta.members.left:
            slots[slots.index(a)] = None
        slots += list(delta.members.joined)
        policy = policy if delta.invite_only is None else delta.invite_only
        used += [(e.author, e.nonce) for e in events]  # every event of a block uses its nonce
        frontier = frontier.appended(nonce_leaf(e.author, e.nonce) for e in events)
        assert got == state_root_of(slots, policy, used) == state_root(slots_root(slots), policy, frontier.root)


# ---- snapshots: tampering is refused by the chain check alone -----------------------------------------------

def _snapshot() -> tuple[Snapshot, bytes]:
    slots = (AUTHORS[1], None, AUTHORS[2])
    used = ((AUTHORS[1], 9), (AUTHORS[2], 3), (AUTHORS[1], 4), (AUTHORS[3], 1))
    h = Header(SID, 12, b"\x01" * 32, ZERO32, 0, 3, 0, AUTHORS[4], b"\x02" * 32, state_root_of(slots, True, used))
    return Snapshot(SID, 12, h, AUTHORS[0], True, slots, used), hash_header(h)


def test_snapshot_carries_and_checks_policy_and_nonces():
    s, hh = _snapshot()
    body = fmt.encode(s)
    assert fmt.decode(body) == s  # commit order survives the canonical bytes
    assert check_snapshot(s, stream_id=SID, header_hash=hh, creator=s.creator).root == nonces_root(s.used)
    u = s.used
    for bad in (
        Snapshot(SID, 12, s.header, s.creator, False, s.slots, u),  # policy flipped
        Snapshot(SID, 12, s.header, s.creator, True, s.slots, u[:1] + ((AUTHORS[2], 2),) + u[2:]),  # one nonce
        Snapshot(SID, 12, s.header, s.creator, True, s.slots, u[:-1]),  # one nonce dropped
        Snapshot(SID, 12, s.header, s.creator, True, s.slots, u + ((AUTHORS[5], 7),)),  # one added
        Snapshot(SID, 12, s.header, s.creator, True, s.slots, (u[1], u[0]) + u[2:]),  # reordered
    ):
        with pytest.raises(SnapshotError, match="stateRoot"):
            check_snapshot(fmt.decode(fmt.encode(bad)), stream_id=SID, header_hash=hh, creator=s.creator)
    with pytest.raises(SnapshotError, match="used twice"):
        fmt.decode(fmt.encode(Snapshot(SID, 12, s.header, s.creator, True, s.slots, u + u[:1])))


# ---- storage: the frontier row per block, restart, pruning, snapshot install, rollback history ------------

def _blocks(st: Storage, count: int, rng: random.Random) -> list[list[tuple[str, int]]]:
    """Apply `count` blocks of MESSAGEs by members (one JOIN block first); returns each block's used nonces."""
    keys = [Account.create() for _ in range(3)]
    out, nonce, prev = [], 0, ZERO32
    for n in range(1, count + 1):
        items = []
        kinds = [EventKind.JOIN] * 3 if n == 1 else [EventKind.MESSAGE] * rng.choice((0, 1, 4))
        for i, kind in enumerate(kinds):
            k = keys[i % 3] if n == 1 else rng.choice(keys)
            nonce += 1
            e = Event(SID, k.address, nonce, kind, b"m")
            items.append((hash_event(e), e, sign_event(DOMAIN, e, k.key)))
        state = st.state(SID)
        delta = state_delta(state.members, [e for _h, e, _s in items], strict=False)
        root = root_after(state.members, state.invite_only, state.nonces, delta, [e for _h, e, _s in items])
        h = Header(SID, n, prev, merkle_root([x[0] for x in items]), len(items), 0, 0, keys[0].address, ZERO32, root)
        prev = hash_header(h)
        st.apply_block(h, prev, items, delta, None)
        out.append([(e.author, e.nonce) for _h, e, _s in items])
    return out


def test_storage_keeps_the_accumulator_in_step(tmp_path):
    rng = random.Random(3)
    st = Storage(tmp_path / "n.sqlite")
    st.upsert_stream(SID, ZERO32, [AUTHORS[0]], 1)
    blocks = _blocks(st, 150, rng)
    flat = [p for b in blocks for p in b]
    assert st.state(SID).nonces.root == nonces_root(flat)
    assert st.get_block(SID, 150).header.state_root == state_root_of(st.state(SID).members.slots, False, flat)
    # rollback history: every block of the last STATE_HISTORY_DEPTH is there, older ones are trimmed
    for b in range(150 - STATE_HISTORY_DEPTH, 151):
        policy, f = st.state_at(SID, b)
        assert not policy and f.root == nonces_root([p for blk in blocks[:b] for p in blk])
    rows = st.db.execute("SELECT count(*) FROM state_frontier WHERE stream_id=?", (SID,)).fetchone()[0]
    assert rows <= STATE_HISTORY_DEPTH + 1
    assert st.state_at(SID, 10) is None  # trimmed: the caller rebuilds
    assert st.rebuild_nonces(SID, 10).root == nonces_root([p for blk in blocks[:10] for p in blk])
    # pruning moves nonces to used_nonces in commit order; a restart reads the frontier row, not the history
    st.prune_history(SID, 100)
    assert st.used_nonces_up_to(SID, 150) == flat
    assert st.rebuild_nonces(SID, 150).root == nonces_root(flat)
    st.close()
    st = Storage(tmp_path / "n.sqlite")
    assert st.state(SID).nonces.root == nonces_root(flat) and st.state(SID).number == 150
    # a snapshot of this state installs on an empty node and gives the same accumulator
    s = st.state(SID)
    snap = Snapshot(SID, 150, st.get_block(SID, 150).header, None, False, tuple(s.members.slots),
                    tuple(st.used_nonces_up_to(SID, 150)))
    f = check_snapshot(fmt.decode(fmt.encode(snap)), stream_id=SID, header_hash=hash_header(snap.header), creator=None)
    other = Storage(tmp_path / "o.sqlite")
    other.upsert_stream(SID, ZERO32, [AUTHORS[0]], 1)
    body = fmt.encode(snap)
    other.install_snapshot(snap, hash_header(snap.header), fmt.digest(body), len(body), fmt.pack(body), f)
    assert other.state(SID).nonces == s.nonces and other.used_nonces_up_to(SID, 150) == flat
    other.close()
    st.close()
