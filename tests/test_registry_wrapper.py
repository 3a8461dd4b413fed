"""node.chain.registry on a real Anvil: log queries, error decoding, nonce handling."""

from __future__ import annotations

import pytest
from eth_account import Account

from node.chain.anvil import DEV_KEYS
from node.chain.devtools import next_header, sign_header
from node.chain.registry import RegistryError, TxSender
from node.protocol.eip712 import hash_header
from node.protocol.types import RejectReason


@pytest.fixture(scope="module")
def d(deployment_factory):
    return deployment_factory(nodes=5, replication=3, streams=3)


def test_commit_result_and_log_queries(d):
    reg = d.registry
    start = reg.w3.eth.block_number + 1
    hs, sigs = [], []
    used: dict[str, int] = {}
    for sid in d.streams:
        leader = reg.elected_leader(sid, reg.stream_head(sid).number + 1, 0)
        h = next_header(reg, sid, d.keys, event_hashes=[sid], reveal_offset=used.get(leader, 0))
        used[leader] = used.get(leader, 0) + 1
        hs.append(h)
        sigs.append(sign_header(reg, h, d.keys))
    res = reg.commit_miniblocks(hs, sigs)
    assert res.status == 1 and res.gas_used > 0 and not res.rejected
    assert [c.header_hash for c in res.committed] == [hash_header(h) for h in hs]
    assert all(c.block_number == res.block_number and c.tx_hash == res.tx_hash for c in res.committed)

    # The same batch again: every header rejected (BadNumber), the tx itself fine.
    again = reg.commit_miniblocks(hs, sigs)
    assert not again.committed
    assert [r.reason for r in again.rejected] == [RejectReason.BAD_NUMBER] * len(hs)
    assert again.rejected[0].reason_name == "BAD_NUMBER"

    assert reg.committed_logs(start) == res.committed
    assert reg.committed_logs(start, stream_id=d.streams[1]) == [res.committed[1]]
    leader = hs[0].leader
    assert reg.committed_logs(start, leader=leader) == [c for c in res.committed if c.leader == leader]
    assert reg.committed_logs(start, res.block_number - 1) == []
    assert reg.committed_logs(start, chunk=1) == res.committed
    assert reg.rejected_logs(start) == again.rejected
    assert reg.rejected_logs(start, stream_id=d.streams[2]) == [again.rejected[2]]
    # JSON at the edge: hex strings for bytes32.
    js = res.committed[0].model_dump(mode="json")
    assert js["header_hash"] == "0x" + hash_header(hs[0]).hex()


def test_replica_replaced_logs(d, anvil):
    reg = d.registry
    sid = d.streams[0]
    reps = reg.replicas_of(sid)
    leaving = reps[1]
    start = reg.w3.eth.block_number + 1
    reg.request_leave(leaving)
    with pytest.raises(RegistryError) as ei:
        reg.replace_replica(sid, 1)
    assert ei.value.error == "ReplicaNotDead" and ei.value.error_args[0] == leaving
    anvil.increase_time(reg.epoch_length())
    anvil.mine()
    reg.replace_replica(sid, 1)
    new = reg.replicas_of(sid)
    assert new[0] == reps[0] and new[2] == reps[2] and new[1] not in reps
    (log,) = reg.replica_replaced_logs(start)
    assert (log.stream_id, log.index, log.old_node, log.new_node, log.cause) == (sid, 1, leaving, new[1], 1)
    assert reg.replica_replaced_logs(start, stream_id=d.streams[1]) == []


def test_errors_are_decoded(d, dev_accounts):
    reg = d.registry
    with pytest.raises(RegistryError) as ei:
        reg.create_stream(d.streams[0])
    assert ei.value.error == "StreamAlreadyExists" and ei.value.error_args == (d.streams[0],)
    outsider = reg.with_account(TxSender(reg.w3, dev_accounts[9]))
    with pytest.raises(RegistryError) as ei:
        outsider.register_node(dev_accounts[9].address, "http://x", b"\1" * 32)
    assert ei.value.error == "NotOperator"
    with pytest.raises(RegistryError) as ei:
        reg.commit_miniblocks([], [])
    assert ei.value.error == "BadBatchSize"
    with pytest.raises(RegistryError, match="no account"):
        type(reg)(reg.w3, reg.address, reg.abi).advance_epoch()


def test_nonce_resync_when_the_account_is_used_elsewhere(d, w3, deployer_sender):
    reg = d.registry
    other = TxSender(w3, Account.from_key(DEV_KEYS[0]))  # same account, its own counter
    reg.with_account(other).allow_operator(Account.from_key(DEV_KEYS[4]).address)
    reg.with_account(other).allow_operator(Account.from_key(DEV_KEYS[5]).address)
    # The session sender's counter is now stale: it must resync and go on.
    reg.allow_operator(Account.from_key(DEV_KEYS[6]).address)
    assert all(reg.is_operator(Account.from_key(DEV_KEYS[i]).address) for i in (4, 5, 6))


def test_commit_calldata_decoder_matches_the_compiled_abi(artifact) -> None:
    """node.chain.calldata states the commit signature once by hand; the compiled ABI must agree."""
    from eth_utils import function_abi_to_4byte_selector

    from node.chain.calldata import COMMIT_SELECTOR

    fn = next(i for i in artifact["abi"] if i.get("type") == "function" and i["name"] == "commitMiniblocks")
    assert function_abi_to_4byte_selector(fn) == COMMIT_SELECTOR
