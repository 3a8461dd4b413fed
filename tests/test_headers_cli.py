"""`python -m node headers` against a chain this test fills with real, signed headers, on registry v1
and on v2 (the same headers in packed batches, proved committed by their history proofs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from explorer_fill import STREAMS, Filled, fill

from node.chain.anvil import Anvil
from node.protocol.eip712 import address_of
from node.protocol.hexutil import hx

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", params=[1, 2], ids=["v1", "v2"])
def filled(request):
    with Anvil() as anvil:
        yield fill(anvil.http_url, anvil.w3(), version=request.param)


def run_cli(*args: str, timeout: float = 120, columns: int = 200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": str(columns)})


def headers_json(f: Filled, *extra: str) -> tuple[list[dict], list[dict]]:
    p = run_cli("headers", "--rpc-url", f.rpc_url, "--registry", f.registry, "--json", *extra)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return [x for x in lines if x["type"] == "header"], [x for x in lines if x["type"] == "stream"]


def test_every_field_and_the_verification(filled: Filled) -> None:
    headers, streams = headers_json(filled)
    assert len(headers) == len(filled.sent)
    # the chain's order is the send order
    for got, s in zip(headers, filled.sent, strict=False):
        h = s.header
        reps = filled.replicas[h.stream_id]
        assert got["status"] == s.status
        assert got["stream"] == hx(h.stream_id)
        assert got["number"] == h.number
        assert got["headerHash"] == hx(s.header_hash)
        assert got["leader"] == h.leader
        assert got["prevHash"] == hx(h.prev_hash)
        assert got["eventsRoot"] == hx(h.events_root)
        assert got["eventCount"] == h.event_count == len(s.event_hashes)
        assert (got["epoch"], got["attempt"]) == (h.epoch, h.attempt)
        assert got["randaoReveal"] == hx(h.randao_reveal)
        assert got["stateRoot"] == hx(h.state_root)
        assert got["txHash"] == hx(s.tx_hash)
        assert got["blockNumber"] == s.block_number
        assert got["batchSize"] == s.batch_size
        assert got["txGasUsed"] == s.gas_used
        assert got["gasShare"] == s.gas_used // s.batch_size
        assert got["replicas"] == reps
        assert got["signatures"] == len(s.signers)
        assert [x["address"] for x in got["signers"]] == s.signers
        assert got["attestations"] == len(set(s.signers) & set(reps))
        assert got["quorum"] == len(reps) // 2 + 1
        v = got["verification"]
        if s.status == "committed":
            assert got["reason"] is None
            assert v == {"ok": True, "hash": True, "parent": True, "leader_signature": True,
                         "attestations": True, "quorum": True, "problems": []}, got
        else:
            assert got["reasonName"] == s.reason.name and got["reason"] == int(s.reason)
    # the attestation counts that the fill chose: full (3), minimal (2), rejected with only the leader (1)
    assert [g["attestations"] for g in headers] == [3, 2, 3, 3, 1, 3, 3]
    nq = next(g for g in headers if g["reasonName"] == "NO_QUORUM")
    assert nq["verification"]["quorum"] is False and nq["signers"][0]["is_leader"]
    assert next(g for g in headers if g["reasonName"] == "BAD_PARENT")["verification"]["leader_signature"] is True
    # a batch of two streams, and a batch of a rejected and a committed header: one tx each
    by_tx: dict[str, list[dict]] = {}
    for g in headers:
        by_tx.setdefault(g["txHash"], []).append(g)
    assert sorted(len(v) for v in by_tx.values()) == [1, 1, 1, 2, 2]
    for group in by_tx.values():
        assert [g["batchIndex"] for g in group] == list(range(len(group)))
    # per stream: unbroken from genesis to the head
    assert {s["stream"] for s in streams} == {hx(s) for s in STREAMS}
    for st in streams:
        assert st["ok"] and st["chainOk"] and st["genesisOk"], st
        commits = [g for g in headers if g["stream"] == st["stream"] and g["status"] == "committed"]
        assert st["headNumber"] == len(commits) == st["commits"]
        assert st["headHash"] == commits[-1]["headerHash"]
        assert commits[0]["prevHash"] == st["genesisHash"]


def test_stream_and_from_filters(filled: Filled) -> None:
    s0 = STREAMS[0]
    headers, streams = headers_json(filled, "--stream", hx(s0))
    assert {g["stream"] for g in headers} == {hx(s0)}
    assert [(g["number"], g["status"]) for g in headers] == [(1, "committed"), (2, "committed"), (3, "committed"),
                                                           (4, "rejected")]
    assert len(streams) == 1 and streams[0]["ok"]
    # --from: the parent of the first header shown is checked against the chain's stored hash
    headers, _ = headers_json(filled, "--stream", hx(s0), "--from", "2", "--no-rejected")
    assert [g["number"] for g in headers] == [2, 3]
    assert all(g["verification"]["ok"] for g in headers)


def test_table_output(filled: Filled) -> None:
    p = run_cli("headers", "--rpc-url", filled.rpc_url, "--registry", filled.registry)
    assert p.returncode == 0, p.stderr
    assert "rejected NO_QUORUM" in p.stdout and "rejected BAD_PARENT" in p.stdout
    assert p.stdout.count("unbroken from genesis") == 2
    assert "2/3" in p.stdout and "3/3" in p.stdout


def test_last_n_newest_first_and_80_columns(filled: Filled) -> None:
    """The default is the newest 20 per stream; --last N and --all; the table fits 80 columns."""
    s0 = hx(STREAMS[0])
    headers, streams = headers_json(filled, "--last", "2")
    by_stream: dict[str, list[dict]] = {}
    for g in headers:
        by_stream.setdefault(g["stream"], []).append(g)
    # the newest two of each stream (JSON lines stay in chain order)
    assert [(g["number"], g["status"]) for g in by_stream[s0]] == [(3, "committed"), (4, "rejected")]
    assert {st["stream"]: (st["shown"], st["total"]) for st in streams} == {s0: (2, 4), hx(STREAMS[1]): (2, 3)}
    assert all(st["ok"] for st in streams)   # the whole-chain verdict does not depend on how many are shown
    headers, _ = headers_json(filled, "--last", "1", "--all")
    assert len(headers) == len(filled.sent)

    p = run_cli("headers", "--rpc-url", filled.rpc_url, "--registry", filled.registry, "--last", "3",
                columns=80)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, "\n".join(lines)
    assert "3 of 4 headers, newest first" in p.stdout and "--last N or --all" in p.stdout
    numbers = [line.split()[0] for line in lines if line.strip()[:1].isdigit() and "0x" in line]
    assert numbers[:3] == ["4", "3", "2"]                  # stream 0, newest first
    assert "rejected BAD_PARENT" in p.stdout
    p = run_cli("headers", "--rpc-url", filled.rpc_url, "--registry", filled.registry, "--all", columns=80)
    assert "--last N" not in p.stdout and "4 of 4 headers" in p.stdout


def test_to_block_pins_every_read(filled: Filled) -> None:
    """--to-block: the logs up to it and the head at it; the verdict holds as of that block."""
    s0 = filled.sent[0].header.stream_id
    first = filled.sent[0]
    headers, streams = headers_json(filled, "--stream", hx(s0), "--to-block", str(first.block_number))
    assert [g["number"] for g in headers] == [1]
    assert streams[0]["headNumber"] == 1 and streams[0]["ok"] and streams[0]["at"] == first.block_number
    p = run_cli("headers", "--rpc-url", filled.rpc_url, "--registry", filled.registry, "--to-block", "99999999")
    assert p.returncode == 2 and "past the latest block" in p.stderr


def test_unreachable_rpc_and_not_a_registry(filled: Filled) -> None:
    from node.netutil import free_port

    if filled.version == 2:
        pytest.skip("the same checks whatever the registry version (run on v1)")

    p = run_cli("headers", "--rpc-url", f"http://127.0.0.1:{free_port()}", "--registry", filled.registry, timeout=60)
    assert p.returncode != 0 and "cannot reach the JSON-RPC endpoint" in p.stderr
    eoa = address_of(bytes.fromhex("01" * 32))
    p = run_cli("headers", "--rpc-url", filled.rpc_url, "--registry", eoa)
    assert p.returncode != 0 and "no contract at" in p.stderr
    p = run_cli("headers", "--rpc-url", filled.rpc_url, "--registry", "0x1234")
    assert p.returncode != 0 and "not an address" in p.stderr
    # a contract, but not a registry: the Merkle library's bytecode deployed on its own
    from eth_account import Account
    from web3 import Web3

    from node.build import load_artifact
    from node.chain.anvil import DEV_KEYS
    from node.chain.registry import TxSender

    w3 = Web3(Web3.HTTPProvider(filled.rpc_url))
    art = load_artifact("Merkle")
    receipt = TxSender(w3, Account.from_key(DEV_KEYS[9])).deploy(art)
    other = receipt.contract_address
    assert w3.eth.get_code(other)
    p = run_cli("headers", "--rpc-url", filled.rpc_url, "--registry", other)
    assert p.returncode != 0 and "is not a MiniblockRegistry" in p.stderr, p.stderr
    p = run_cli("headers", "--rpc-url", filled.rpc_url, "--registry", filled.registry, "--stream", "0x" + "cd" * 32)
    assert p.returncode != 0 and "no stream 0x" + "cd" * 32 in p.stderr
    assert "Traceback" not in p.stderr


def test_library_lookup_for_the_daemon(filled: Filled) -> None:
    """RegistryHistory.committed_header: the full Header and signatures of a committed hash."""
    from node.chain.history import RegistryHistory

    hist = RegistryHistory.connect(filled.rpc_url, filled.registry)
    for s in filled.sent:
        rec = hist.committed_header(s.header_hash, s.header.stream_id, s.header.number)
        if s.status == "rejected":
            assert rec is None
            continue
        assert rec is not None and rec.header == s.header and rec.verification.ok
        assert [x.address for x in rec.signers] == s.signers
        # also without the hints (a scan of all commits)
        assert hist.committed_header(s.header_hash).header == s.header
    rej = [s for s in filled.sent if s.status == "rejected"][0]
    rec = hist.find_header(rej.header_hash)
    assert rec is not None and rec.status == "rejected" and rec.header == rej.header


def test_tampered_signature_sets_are_counted_right(filled: Filled) -> None:
    """The verifier itself, fed signature sets the contract would never accept: counts stay right."""
    import dataclasses

    from node.chain.history import RegistryHistory, Verification

    hist = RegistryHistory.connect(filled.rpc_url, filled.registry)
    rec = [r for r in hist.headers(STREAMS[0]) if r.status == "committed"][0]
    assert rec.attestations == 3 and rec.verification.ok

    def recheck(sigs):
        r = dataclasses.replace(rec, signatures=sigs, verification=Verification())
        hist._check_signatures(r)
        return r

    lead, a1, a2 = rec.signatures
    r = recheck([lead, a1, a1])          # a duplicate attestation
    assert r.attestations == 2 and r.verification.attestations is False and r.verification.quorum is True
    assert [s.duplicate for s in r.signers] == [False, False, True]
    r = recheck([a1, lead])              # the leader's signature not first
    assert r.attestations == 2 and r.verification.leader_signature is False
    r = recheck([lead, b"\x00" * 65])    # a malformed attestation
    assert r.attestations == 1 and r.signers[1].error and r.verification.quorum is False
    r = recheck([lead, a1[:32] + (int.from_bytes(a1[32:64], "big") ^ 1).to_bytes(32, "big") + a1[64:]])
    assert r.signers[1].address != rec.signers[1].address and r.attestations == 1  # recovers to a stranger
    assert r.verification.attestations is False and "not a replica" in " ".join(r.verification.problems)


@pytest.mark.parametrize("version", [2], ids=["v2"])  # v2 rebuilds leaders from positions; v1's path: the module's fill
def test_replica_replaced_old_headers_still_verify(version: int) -> None:
    """A replica leaves and is replaced: headers it attested before still verify (replicas as of their block;
    on v2 also each record's leader, from its replica position)."""
    from eth_account import Account
    from explorer_fill import commit_next

    from node.chain.anvil import DEV_KEYS
    from node.chain.deploy import wait_for_epoch
    from node.chain.history import RegistryHistory
    from node.chain.registry import Registry

    with Anvil() as anvil:
        f = fill(anvil.http_url, anvil.w3(), version=version)
        hist = RegistryHistory.connect(f.rpc_url, f.registry)
        s0 = STREAMS[0]
        before = [r for r in hist.headers(s0) if r.status == "committed"]
        assert all(r.verification.ok for r in before)
        reg = Registry(anvil.w3(), f.registry, hist.abi, Account.from_key(DEV_KEYS[0]))
        old = f.replicas[s0]
        gone = old[0]
        assert any(gone in [x.address for x in r.signers] for r in before)
        reg.request_leave(gone)
        wait_for_epoch(reg, reg.current_epoch() + 1, warp=True)
        reg.replace_replica(s0, 0)
        new = reg.replicas_of(s0)
        assert gone not in new and new[1:] == old[1:]
        res = commit_next(f, s0, reg, attesters=2)
        assert len(res.committed) == 1, res

        after = [r for r in hist.headers(s0) if r.status == "committed"]   # the same long-lived reader
        assert len(after) == len(before) + 1
        for r in after:
            assert r.verification.ok, (r.number, r.verification.problems)
        assert after[0].replicas == old and after[-1].replicas == new
        assert after[-1].attestations == 3 and after[-1].header.epoch == reg.current_epoch()
        assert after[-1].header.leader in new
        assert hist.chain_summary(s0, after)["ok"]


@pytest.mark.parametrize("version", [2], ids=["v2"])  # the default registry (CI time: one version)
def test_pinned_reads_agree_while_the_chain_grows(version: int) -> None:
    """The false alarm of issue 13: commits land while the reader reads; at one pinned block the
    headers, the head and the verdict always agree (never "the commits seen do not reach the head");
    on v2 the head prefix and isHead are read at the pin too, and every header shown proves committed."""
    import threading

    from eth_account import Account
    from explorer_fill import commit_next

    from node.chain.anvil import DEV_KEYS
    from node.chain.history import RegistryHistory
    from node.chain.registry import Registry

    with Anvil() as anvil:
        f = fill(anvil.http_url, anvil.w3(), version=version)
        hist = RegistryHistory.connect(f.rpc_url, f.registry)
        assert hist.version == version
        s0 = STREAMS[0]
        reg = Registry(anvil.w3(), f.registry, hist.abi, Account.from_key(DEV_KEYS[0]))
        n_commits = 12
        failures: list[BaseException] = []

        def commit_more() -> None:
            try:
                for _ in range(n_commits):
                    assert len(commit_next(f, s0, reg).committed) == 1
            except BaseException as exc:  # noqa: BLE001 -- reported by the main thread
                failures.append(exc)

        t = threading.Thread(target=commit_more, daemon=True)
        t.start()
        seen_heads = set()
        for _ in range(200):                       # bounded; ends when the writer is done
            at = hist.pin()
            recs, total = hist.last_headers(s0, at, count=3)
            summ = hist.chain_summary(s0, recs, at=at)
            assert summ["ok"], summ
            assert all(r.verification.ok for r in recs if r.status == "committed")
            assert recs[0].block_number <= at and summ["commits"] == summ["headNumber"]
            seen_heads.add(summ["headNumber"])
            if not t.is_alive():
                break
        t.join(60)
        assert not failures, failures
        assert len(seen_heads) > 1               # the chain did grow under the reader
        assert hist.chain_summary(s0, at=hist.pin())["headNumber"] == 3 + n_commits


def test_v2_forged_headers_and_proofs_are_not_verified(filled: Filled) -> None:
    """v2: a header that differs from the committed one in any field, or a proof that does not fold to
    the registry's history, is shown as not verified (off-chain and by verifyHeaderCommitted)."""
    import dataclasses

    from node.chain.history import RegistryHistory, Verification

    if filled.version != 2:
        pytest.skip("v2's history proof")
    hist = RegistryHistory.connect(filled.rpc_url, filled.registry)
    assert hist.version == 2
    at = hist.pin()
    recs, _ = hist.last_headers(STREAMS[0], at)
    rec = next(r for r in recs if r.status == "committed")
    assert rec.verification.ok and rec.proved_onchain is True and rec.history_proof is not None
    good = rec.history_proof

    def recheck(**change):
        r = dataclasses.replace(rec, verification=Verification(), **change)
        hist._verify([r], at)
        return r

    forged = dataclasses.replace(rec.header, state_root=b"\x42" * 32)
    r = recheck(header=forged)
    assert r.verification.hash is False and not r.verification.ok
    assert r.history_proof is None and "no history proof" in " ".join(r.verification.problems)
    # the forged header with the real header's proof: the registry itself says no
    assert hist.reg.verify_header_committed(forged, good, at) is False
    bad = dataclasses.replace(good, prev_acc=b"\x01" * 32)
    assert hist.reg.verify_header_committed(rec.header, bad, at) is False
    assert not hist._v2_state(at).verify(rec.header_hash, bad)
    # the explorer's inclusion check of the forged header: neither on-chain nor off-chain committed
    res = hist.verify_inclusion(forged, [], 0, b"\x00" * 32, block=at)
    assert res["onchain"] is False and res["offchainCommitted"] is False and res["committedBy"] == "historyProof"
    # a header of the page whose parent is not the logged one: parent False
    r = recheck(prev_hash=b"\x33" * 32)
    assert r.verification.parent is False and not r.verification.ok


def test_v2_requests_per_page_are_bounded() -> None:
    """v2: a page's RPC requests (log scans since the last page, the history views at the pin, one
    verifyHeaderCommitted per commit shown) do not grow with the chain once its logs are cached."""
    from explorer_fill import commit_next

    from node.chain.history import RegistryHistory

    with Anvil() as anvil:
        f = fill(anvil.http_url, anvil.w3(), version=2)
        hist = RegistryHistory.connect(f.rpc_url, f.registry)
        stats = hist.reg.core.rpc.stats
        s0 = STREAMS[0]
        hist.stream_page(s0, 0, 4)               # warm: every commit transaction's input read once
        used: list[int] = []
        for _ in range(5):
            commit_next(f, s0)
            before = stats.requests
            page = hist.stream_page(s0, 0, 4, hist.pin())
            used.append(stats.requests - before)
            assert page.summary["ok"] and all(r.verification.ok for r in page.records if r.status == "committed")
            assert all(r.proved_onchain for r in page.records if r.status == "committed")
        # each view at the newest block costs up to 3 requests (`settled`): about 10 views, 4 of them
        # verifyHeaderCommitted, one historyCheckpoint once a proof ends in a closed window, plus the
        # scans of the one new block
        print("requests per page of 4:", used)
        assert max(used) <= 40 and max(used) - min(used) <= 6, used
