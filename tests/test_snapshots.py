"""Snapshots and pruning (docs/node.md, "Snapshots"): the format's check (unit), then, on real Anvil with 4
node processes: 5,000 blocks of history (real headers committed straight to the registry by the elected
leaders' keys, node.chain.devtools-style, on top of real blocks the nodes made), a node restarted from an
empty data dir syncs from a peer snapshot plus the blocks after it; pruning drops old events and the
network keeps working; a snapshot with tampered policy and nonces is refused by the chain check although
every peer serves it.

Tests run in file order on one network (each leaves every node running).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from node.chain.deploy import parse_stream_id
from node.devnet.network import Network
from node.protocol import snapshot as fmt
from node.protocol.eip712 import hash_header, sign_header
from node.protocol.election import elected_leader
from node.protocol.hexutil import hx
from node.protocol.onion import HashOnion
from node.protocol.snapshot import Snapshot, SnapshotError, check_snapshot
from node.protocol.state_root import state_root_of
from node.protocol.types import ZERO32, EventKind, Header
from node.server.client import Author, NodeClient

pytestmark = [pytest.mark.timeout(900), pytest.mark.usefixtures("node_logs_on_failure")]

SID = parse_stream_id("snapshots-a")
EVERY, RETAIN = 256, 300
# sync_all_streams: every node stores the stream (this suite wipes, tampers with and reads fixed nodes); a node
# that starts storing a stream when it becomes its replica: tests/test_non_replica.py
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "log_level": "INFO", "snapshot_every": EVERY, "retain_blocks": RETAIN,
            "sync_all_streams": True}
HISTORY = int(os.environ.get("SNAPSHOT_TEST_HISTORY", "5000"))  # smaller only to debug the test
A1 = "0x" + "11" * 20
A2 = "0x" + "22" * 20


# ---- the format (no chain) -------------------------------------------------------------------------

def _snap(slots=("0x1111111111111111111111111111111111111111", None), number: int = 7) -> tuple[Snapshot, bytes]:
    from eth_utils.address import to_checksum_address

    slots = tuple(None if s is None else to_checksum_address(s) for s in slots)
    used = ((to_checksum_address(A1), 5), (to_checksum_address(A1), 2), (to_checksum_address(A2), 9))
    h = Header(SID, number, b"\x01" * 32, ZERO32, 0, 3, 0, to_checksum_address(A2), b"\x02" * 32,
               state_root_of(slots, True, used))
    return Snapshot(SID, number, h, to_checksum_address(A2), True, slots, used), hash_header(h)


def test_snapshot_round_trip_and_chain_check():
    s, hh = _snap()
    body = fmt.encode(s)
    assert fmt.decode(fmt.unpack(fmt.pack(body), 1 << 20)) == s
    check_snapshot(fmt.decode(body), stream_id=SID, header_hash=hh, creator=s.creator)
    assert json.loads(body)["nonces"] == [[0, 5], [0, 2], [1, 9]]  # commit order, over the sorted authors


def test_tampered_snapshot_is_refused():
    s, hh = _snap()
    from eth_utils.address import to_checksum_address

    extra = Snapshot(s.stream_id, s.number, s.header, s.creator, s.invite_only,
                     s.slots + (to_checksum_address(A1[:-1] + "3"),), s.used)
    policy = Snapshot(s.stream_id, s.number, s.header, s.creator, not s.invite_only, s.slots, s.used)
    nonce = Snapshot(s.stream_id, s.number, s.header, s.creator, s.invite_only, s.slots,
                     s.used[:1] + ((s.used[1][0], s.used[1][1] + 1),) + s.used[2:])
    for bad in (extra, policy, nonce):
        with pytest.raises(SnapshotError, match="stateRoot"):
            check_snapshot(bad, stream_id=SID, header_hash=hh, creator=s.creator)
    with pytest.raises(SnapshotError, match="header hash"):
        check_snapshot(s, stream_id=SID, header_hash=b"\x09" * 32, creator=s.creator)
    with pytest.raises(SnapshotError, match="creator"):
        check_snapshot(s, stream_id=SID, header_hash=hh, creator=to_checksum_address(A1))
    with pytest.raises(SnapshotError, match="another stream"):
        check_snapshot(s, stream_id=b"\x05" * 32, header_hash=hh, creator=s.creator)
    body = fmt.encode(s)
    with pytest.raises(SnapshotError, match="canonical"):
        fmt.decode(json.dumps(json.loads(body), indent=1).encode())
    with pytest.raises(SnapshotError, match="over"):
        fmt.unpack(fmt.pack(b"x" * 10_000), 1000)


# ---- the network ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("snap"), n_nodes=4, streams=[SID], leader_timeout=3,
                 settings=SETTINGS) as d:
        yield d


def wait_head(clients, idxs, head: int, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if all(clients[i].stream(SID)["head_number"] >= head for i in idxs):
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - a node just started may not know the stream yet (404)
            pass
        time.sleep(0.05)
    raise TimeoutError(f"nodes {list(idxs)} not at #{head}: {[clients[i].stream(SID)['head_number'] for i in idxs]}")


def wait_serving(c: NodeClient, timeout: float) -> float:
    """Until the node's HTTP server answers at all (healthz is 503 until its first chain scan and sync)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            c.http.get("/healthz", timeout=1.0)
            return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.05)
    raise TimeoutError(f"{c.url} does not answer")


def commit_empty_blocks(net, reg, count: int, state_root: bytes) -> int:
    """`count` empty headers on the stream's head, each built and signed as its elected leader and a quorum of
    replicas would (leader's next onion layer as reveal), 256 per commitMiniblocks. Returns the new head."""
    keys = {s.address: s.key for s in net.setups}
    onions = {}
    for s in net.setups:
        o = json.loads((Path(s.data_dir) / "onion.json").read_text())
        onions[s.address] = HashOnion(bytes.fromhex(o["secret"][2:]), int(o["depth"]))
    domain, replicas = reg.domain(), reg.replicas_of(SID)
    seed, epoch = reg.current_seed(), reg.current_epoch()
    head = reg.stream_head(SID)
    n, prev = head.number, head.header_hash
    left = count
    while left:
        k = min(256, left)
        commits = {a: reg.randao_commit_of(a) for a in replicas}
        used: Counter[str] = Counter()
        headers, sigs = [], []
        for _ in range(k):
            n += 1
            leader = elected_leader(seed, SID, n, 0, replicas)
            used[leader] += 1
            reveal = onions[leader].reveals(commits[leader], used[leader])[-1]
            h = Header(SID, n, prev, ZERO32, 0, epoch, 0, leader, reveal, state_root)
            others = [r for r in replicas if r != leader][:len(replicas) // 2]
            sigs.append([sign_header(domain, h, keys[leader])] + [sign_header(domain, h, keys[r]) for r in others])
            headers.append(h)
            prev = hash_header(h)
        res = reg.commit_miniblocks(headers, sigs, gas=29_000_000)
        assert res.status == 1 and not res.rejected and len(res.committed) == k, res.rejected[:3]
        left -= k
    assert reg.stream_head(SID).number == n
    return n


def db(net, i: int) -> sqlite3.Connection:
    return sqlite3.connect(str(Path(net.setups[i].data_dir) / "node.sqlite"), timeout=30)


def wipe_and_restart(net, i: int) -> float:
    """Stop node i, delete its SQLite (keys and onion stay), start it; returns the process start time."""
    net.cluster.stop(i)
    for p in Path(net.setups[i].data_dir).glob("node.sqlite*"):
        p.unlink()
    t0 = time.monotonic()
    net.cluster.start(i)
    return t0


def metric(c: NodeClient, name: str, label: str) -> float:
    for line in c.metrics().splitlines():
        if line.startswith(name) and f'result="{label}"' in line:
            return float(line.split()[-1])
    return 0.0


@pytest.fixture(scope="module")
def history(net, clients, domain, reg):
    """Real blocks through the nodes (JOINs, MESSAGEs), then HISTORY empty blocks committed on the chain."""
    authors = [Author(domain) for _ in range(5)]
    joins = []
    for k, a in enumerate(authors):
        h, body = a.event(SID, EventKind.JOIN)
        assert clients[k % 4].post_event(body).status_code == 202
        joins.append((h, body))
    clients[0].wait_committed([h for h, _ in joins], timeout=60)
    msgs = []
    for k, a in enumerate(authors):
        h, body = a.event(SID, EventKind.MESSAGE, f"before the history {k}".encode())
        assert clients[k % 4].post_event(body).status_code == 202
        msgs.append(h)
    clients[0].wait_committed(msgs, timeout=60)
    head = reg.stream_head(SID).number
    wait_head(clients, range(4), head, 30)
    state_root = bytes.fromhex(clients[0].block(SID, head)["header"]["state_root"][2:])
    t0 = time.monotonic()
    top = commit_empty_blocks(net, reg, HISTORY, state_root)
    print(f"\n{HISTORY} headers committed on chain in {time.monotonic() - t0:.1f}s (head #{top})")
    t0 = time.monotonic()
    wait_head(clients, range(4), top, 600)
    print(f"the 4 running nodes applied them in {time.monotonic() - t0:.1f}s")
    return {"authors": authors, "joins": joins, "top": top}


def test_restarted_empty_node_syncs_from_a_snapshot(net, clients, history, reg):
    top = history["top"]
    y = 3
    t0 = wipe_and_restart(net, y)
    wait_serving(clients[y], 120)
    synced = wait_head(clients, [y], top, 120)
    took = time.monotonic() - t0
    print(f"node {y} restarted from an empty data dir, {top} blocks of history: in sync {synced:.2f}s after its "
          f"HTTP server answered ({took:.2f}s from process start; start-up: imports, keystore, first chain scan)")
    assert synced < 30 and took < 90, "generous bounds on a shared box; see the printed figures"
    assert metric(clients[y], "node_snapshots_total", "installed") >= 1
    info = clients[y].stream(SID)
    assert info["head_number"] >= top
    assert sorted(info["members"]) == sorted(clients[0].stream(SID)["members"])
    # its history starts after the snapshot it loaded: older blocks are 410, not 404
    r = clients[y].http.get(f"/v1/streams/{hx(SID)}/blocks/1")
    assert r.status_code == 410 and r.json()["error"] == "pruned"
    # it keeps working: a MESSAGE by a member (judged with the snapshot's members) commits everywhere
    a = history["authors"][0]
    h, body = a.event(SID, EventKind.MESSAGE, b"after the snapshot sync")
    assert clients[y].post_event(body).status_code == 202
    for c in clients:
        c.wait_committed([h], timeout=60)


def test_pruned_node_drops_old_events_keeps_working_and_refuses_replays(net, clients, history, reg):
    top = reg.stream_head(SID).number
    with db(net, 0) as con:
        kept = con.execute("SELECT min(block), count(*) FROM events WHERE stream_id=? AND block IS NOT NULL",
                           (SID,)).fetchone()
        base = con.execute("SELECT base FROM history WHERE stream_id=?", (SID,)).fetchone()[0]
        used = con.execute("SELECT count(*) FROM used_nonces WHERE stream_id=?", (SID,)).fetchone()[0]
        old_blocks = con.execute("SELECT count(*) FROM blocks WHERE stream_id=? AND number<?", (SID, base)).fetchone()
    print(f"node 0: history base #{base} (head #{top}), {kept[1]} committed events kept, {used} used nonces kept")
    assert base > history["top"] - EVERY - RETAIN and old_blocks[0] == 0
    assert kept[0] is None or kept[0] >= base
    assert used >= 10  # the 5 JOINs and 5 MESSAGEs of the first blocks, now pruned
    for c in clients:
        assert c.event(history["joins"][0][0]) is None  # gone from every node
    # a replay of a pruned event (same signed JOIN) is still refused
    r = clients[1].post_event(history["joins"][0][1])
    assert r.status_code == 409 and r.json()["error"] == "replayed_nonce", r.text
    r = clients[0].http.get(f"/v1/streams/{hx(SID)}/blocks/1")
    assert r.status_code == 410 and r.json()["error"] == "pruned"
    # a subscription from a pruned cursor: a clear error
    r = clients[0].http.get("/v1/subscribe", params={"stream": f"{hx(SID)}:1"})
    assert r.status_code == 410 and r.json()["error"] == "cursor_pruned", r.text
    r = clients[0].peer("GET", f"/peer/blocks/{hx(SID)}", key=net.setups[1].key, params={"from": 1, "to": 3})
    assert r.status_code == 410
    # the network keeps working on top
    hs = []
    for k, a in enumerate(history["authors"]):
        h, body = a.event(SID, EventKind.MESSAGE, f"after pruning {k}".encode())
        assert clients[k % 4].post_event(body).status_code == 202
        hs.append(h)
    for c in clients:
        c.wait_committed(hs, timeout=60)


def test_tampered_snapshot_from_peers_is_refused(net, clients, history, reg):
    """Every peer's newest snapshot is replaced by the same forgery -- the JOIN policy flipped and one used
    nonce changed (a replay it would let through), digests recomputed, so all peers agree on it: the stateRoot
    check against the chain refuses it, and the restarted node starts from the older one."""
    y = 3
    net.cluster.stop(y)
    newest = None
    for i in range(3):
        with db(net, i) as con:
            number, blob = con.execute("SELECT number, data FROM snapshots WHERE stream_id=? ORDER BY number DESC",
                                       (SID,)).fetchone()
            newest = number if newest is None else newest
            assert number == newest
            s = fmt.decode(fmt.unpack(bytes(blob), 1 << 30))
            a, n = s.used[0]
            forged = (a, n + 2**32)  # a nonce the author never used: the real one would pass as unused
            assert forged not in s.used
            bad = Snapshot(s.stream_id, s.number, s.header, s.creator, not s.invite_only, s.slots,
                           (forged,) + s.used[1:])
            body = fmt.encode(bad)
            con.execute("UPDATE snapshots SET data=?, digest=?, size=? WHERE stream_id=? AND number=?",
                        (fmt.pack(body), fmt.digest(body), len(body), SID, number))
    t0 = wipe_and_restart(net, y)
    net.cluster.wait_healthy([y], timeout=60)
    head = reg.stream_head(SID).number
    wait_head(clients, [y], head, 120)
    print(f"node {y} synced past a tampered snapshot in {time.monotonic() - t0:.2f}s")
    assert metric(clients[y], "node_snapshots_total", "refused") >= 1
    assert metric(clients[y], "node_snapshots_total", "installed") >= 1
    with db(net, y) as con:
        base = con.execute("SELECT base FROM history WHERE stream_id=?", (SID,)).fetchone()[0]
    assert base <= newest, "the tampered newest snapshot must not have been installed"
    log = (Path(net.setups[y].data_dir) / "node.log").read_text()
    assert "stateRoot" in log and "refused" in log
    assert sorted(clients[y].stream(SID)["members"]) == sorted(clients[0].stream(SID)["members"])
    assert clients[y].stream(SID)["invite_only"] == clients[0].stream(SID)["invite_only"] is False
    for _h, body in history["joins"]:  # every used nonce came through: replays still refused on the new node
        r = clients[y].post_event(body)
        assert r.status_code == 409 and r.json()["error"] == "replayed_nonce", r.text


def test_clean_up_tampering(net):
    """Leave the network as found: drop the tampered snapshots (the next ones are taken as blocks commit)."""
    for i in range(3):
        with db(net, i) as con:
            con.execute("DELETE FROM snapshots WHERE stream_id=? AND number=(SELECT max(number) FROM snapshots"
                        " WHERE stream_id=?)", (SID, SID))
