"""Unit tests of the node's pieces that need no chain: config, keys, storage, ordering rule, fast paths."""

from __future__ import annotations

import pytest
from eth_account import Account

from node.protocol.block_rules import check_block_events as check_block
from node.protocol.block_rules import order_events as order
from node.protocol.block_rules import select_events
from node.protocol.eip712 import hash_event, sign_event
from node.protocol.member_tree import MemberDelta
from node.protocol.state import NO_CHANGE, StateDelta
from node.protocol.types import Domain, Event, EventKind, Header
from node.server.config import dump_toml, load_config
from node.server.fastpath import check_event_signature, make_event
from node.server.keys import KeyError_, load_onion, load_private_key, write_keystore
from node.server.storage import Storage

DOMAIN = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
SID = b"\x07" * 32


def ev(acct, nonce, kind=EventKind.MESSAGE, payload=b"p", sid=SID):
    e = Event(sid, acct.address, nonce, kind, payload)
    return hash_event(e), e, sign_event(DOMAIN, e, bytes(acct.key))


def test_config_precedence_file_env_flags(tmp_path):
    f = tmp_path / "node.toml"
    f.write_text(dump_toml({"port": 1000, "tick_ms": 50, "data_dir": "d", "log_level": "DEBUG"}))
    cfg = load_config(f, {"port": 3000}, env={"NODE_PORT": "2000", "NODE_TICK_MS": "70"})
    assert cfg.port == 3000 and cfg.tick_ms == 70 and cfg.log_level == "DEBUG"
    assert cfg.data_dir == tmp_path / "d"  # relative to the file
    with pytest.raises(ValueError):  # pydantic's ValidationError
        load_config(None, {"no_such_setting": 1}, env={})


def test_keys_keystore_and_dev_flag(tmp_path, monkeypatch):
    acct = Account.create()
    ks = tmp_path / "ks.json"
    write_keystore(bytes(acct.key), ks, "pw")
    monkeypatch.setenv("NODE_KEY_PASSWORD", "pw")
    assert load_private_key(load_config(None, {"keystore": ks}, env={})) == bytes(acct.key)
    monkeypatch.setenv("NODE_KEY_PASSWORD", "wrong")
    with pytest.raises(KeyError_):
        load_private_key(load_config(None, {"keystore": ks}, env={}))
    with pytest.raises(KeyError_, match="--dev"):
        load_private_key(load_config(None, {"dev_key": acct.key.hex()}, env={}))
    assert load_private_key(load_config(None, {"dev_key": acct.key.hex(), "dev": True}, env={})) == bytes(acct.key)
    # The onion secret is created once and kept in the data dir.
    cfg = load_config(None, {"data_dir": tmp_path / "data", "onion_depth": 16}, env={})
    o1, o2 = load_onion(cfg), load_onion(cfg)
    assert o1.commitment == o2.commitment and o1.depth == 16


def test_storage_pool_replay_and_atomic_block(tmp_path):
    st = Storage(tmp_path / "n.sqlite")
    st.upsert_stream(SID, b"\x00" * 32, ["0x" + "11" * 20], 1)
    a = Account.create()
    e1, e2 = ev(a, 0, EventKind.JOIN), ev(a, 1)
    e2b = ev(a, 1, payload=b"other")  # same nonce, other content
    assert st.add_events([e1, e2]) == ["new", "new"]
    assert st.add_events([e1, e2b]) == ["known", "replay"]
    assert st.pool_size(SID) == 2
    hdr = Header(SID, 2, b"\x00" * 32, b"\x00" * 32, 1, 0, 0, a.address, b"\x00" * 32, b"\x00" * 32)
    with pytest.raises(RuntimeError):  # out of order: nothing changes
        st.apply_block(hdr, b"\x01" * 32, [e1], StateDelta(MemberDelta((a.address,))), None)
    assert st.pool_size(SID) == 2 and st.get_stream(SID).head_number == 0 and len(st.state(SID).members) == 0
    hdr1 = Header(SID, 1, b"\x00" * 32, b"\x00" * 32, 1, 0, 0, a.address, b"\x00" * 32, b"\x00" * 32)
    st.apply_block(hdr1, b"\x01" * 32, [e1], StateDelta(MemberDelta((a.address,))), None)
    row = st.get_stream(SID)
    assert row.head_number == 1 and row.head_hash == b"\x01" * 32 and set(st.state(SID).members) == {a.address}
    assert st.pool_hashes(SID) == [e2[0]]
    got = st.get_event(e1[0])
    assert got.block == 1 and got.idx == 0
    # A committed event that conflicts (same author and nonce) with a pending one replaces it.
    hdr2 = Header(SID, 2, b"\x01" * 32, b"\x00" * 32, 1, 0, 0, a.address, b"\x00" * 32, b"\x00" * 32)
    st.apply_block(hdr2, b"\x02" * 32, [e2b], NO_CHANGE, None)
    assert st.get_event(e2[0]) is None and st.get_event(e2b[0]).block == 2 and st.pool_size(SID) == 0
    st.close()
    # Reopened: everything is there.
    st = Storage(tmp_path / "n.sqlite")
    assert st.get_stream(SID).head_number == 2 and st.get_block(SID, 2).event_hashes == [e2b[0]]
    assert set(st.state(SID).members) == {a.address} and st.state(SID).number == 2  # member rows reloaded


def test_ordering_rule_and_validity_filter():
    a, b = Account.create(), Account.create()
    items = [ev(b, 1), ev(a, 2), ev(a, 0, EventKind.JOIN), ev(b, 0), ev(a, 1)]
    ordered = order(items)
    keys = [(bytes.fromhex(e.author[2:]), e.nonce) for _, e, _ in ordered]
    assert keys == sorted(keys)
    members = frozenset({b.address})
    sel = select_events(members, ordered, cap=100)
    kept, invalid, deferred = sel.kept, sel.invalid, sel.deferred
    # a's JOIN is valid; a's MESSAGEs are not (a is not a member after the previous block)
    assert {e.author for _, e, _ in kept} == {a.address, b.address}
    assert all(e.kind == EventKind.JOIN for _, e, _ in kept if e.author == a.address)
    assert len(invalid) == 2 and not deferred
    assert check_block(members, kept) is None
    assert check_block(members, list(reversed(kept))) is not None  # wrong order
    assert check_block(frozenset(), [ev(a, 5)]) is not None  # MESSAGE by a non-member
    # cap
    sel = select_events(frozenset({a.address}), order([ev(a, i) for i in range(5)]), cap=3)
    kept, invalid, deferred = sel.kept, sel.invalid, sel.deferred
    assert len(kept) == 3 and len(deferred) == 2


def test_fast_paths_agree_with_protocol():
    a, other = Account.create(), Account.create()
    h, e, sig = ev(a, 3)
    assert check_event_signature(DOMAIN, h, e.author, sig) is None
    sig2 = sign_event(DOMAIN, e, bytes(other.key))  # a's event, signed by someone else
    assert check_event_signature(DOMAIN, h, e.author, sig2) == other.address
    assert make_event(SID, a.address.lower(), 3, 0, b"p") == e
    with pytest.raises(ValueError):
        make_event(SID, a.address, 3, 7, b"p")


def test_every_setting_has_a_flag():
    """`python -m node run` takes every NodeConfig field as a flag (and NODE_<FIELD> from the env)."""
    import inspect

    from node.server import runcmd
    from node.server.config import NodeConfig

    params = set(inspect.signature(runcmd.main).parameters)
    assert set(NodeConfig.model_fields) <= params, set(NodeConfig.model_fields) - params
