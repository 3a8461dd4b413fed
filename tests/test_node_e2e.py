"""End to end: a real Anvil, the real registry, 4 node processes over loopback HTTP.

One devnet for the module (two streams, r = 3, leader timeout 3 s); tests run in file order and
leave the cluster running for the next one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from node.chain.deploy import parse_stream_id
from node.devnet.network import Network
from node.protocol.eip712 import hash_header
from node.protocol.hexutil import hx, unhex
from node.protocol.merkle import merkle_root
from node.protocol.types import Domain, EventKind, Header
from node.server.client import Author, signed_event_json

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("node_logs_on_failure")]

S1, S2 = parse_stream_id("e2e-general"), parse_stream_id("e2e-random")
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 6.0, "log_level": "INFO"}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("e2e"), n_nodes=4, streams=[S1, S2], leader_timeout=3,
                 settings=SETTINGS) as d:
        yield d


def joined(author: Author, sid: bytes, clients, via: int = 0) -> None:
    """Make `author` a member of `sid` (JOIN committed)."""
    h, body = author.event(sid, EventKind.JOIN)
    assert clients[via].post_event(body).status_code == 202
    clients[via].wait_committed([h], timeout=30, stream_of=author.stream_of)


def snapshot(clients, sid: bytes) -> list[tuple[int, int]]:
    return [(c.stream(sid)["head_number"], c.stream(sid)["pool_size"]) for c in clients]


def test_events_posted_to_different_nodes_are_all_committed_identically(net, clients, domain, reg):
    authors = [Author(domain) for _ in range(3)]
    for a in authors:
        for sid in (S1, S2):
            joined(a, sid, clients, via=authors.index(a) % 4)
    hashes = []
    for k in range(24):
        a = authors[k % 3]
        sid = (S1, S2)[k % 2]
        h, body = a.event(sid, EventKind.MESSAGE, f"msg {k}".encode())
        r = clients[k % 4].post_event(body)
        assert r.status_code == 202, r.text
        hashes.append(h)
    # A batch too, to a fourth node.
    batch = [authors[0].event(S1, EventKind.MESSAGE, f"batch {k}".encode()) for k in range(20)]
    r = clients[3].post_batch([b for _, b in batch])
    assert r.status_code == 200 and r.json()["accepted"] == 20, r.text
    hashes += [h for h, _ in batch]
    stream_of = {k: v for a in authors for k, v in a.stream_of.items()}  # a node not storing a stream asks a replica
    for c in clients:
        c.wait_committed(hashes, timeout=40, stream_of=stream_of)

    for sid in (S1, S2):
        chain_head = reg.stream_head(sid).number
        deadline = time.monotonic() + 40
        while any(c.stream(sid)["head_number"] < chain_head for c in clients) and time.monotonic() < deadline:
            time.sleep(0.2)
        replicas = reg.replicas_of(sid)
        for n in range(1, chain_head + 1):
            blocks = [c.block(sid, n) for c in clients]
            assert all(b is not None for b in blocks), f"block {n} missing on some node"
            assert len({json.dumps(b, sort_keys=True) for b in blocks}) == 1, f"block {n} differs between nodes"
            b = blocks[0]
            header = Header(**{k: (unhex(v) if isinstance(v, str) and k != "leader" else v)
                               for k, v in b["header"].items()})
            hh = hash_header(header)
            assert hx(hh) == b["header_hash"]
            assert reg.header_hash_at(sid, n) == hh, "stored header differs from the chain's"
            assert merkle_root([unhex(x) for x in b["event_hashes"]]) == header.events_root
            assert header.leader in replicas
    # An event's inclusion proof verifies on-chain.
    st = clients[2].event(hashes[0], stream_of[hashes[0]])
    header = Header(**{k: (unhex(v) if isinstance(v, str) and k != "leader" else v) for k, v in st["header"].items()})
    ok = reg.verify_inclusion(header, [unhex(p) for p in st["proof"]], st["index"], hashes[0])
    assert ok
    m = clients[0].metrics()
    assert "node_events_accepted_total" in m and "node_commit_latency_seconds_bucket" in m
    # The fallback a syncing node uses when no proposal or peer has a header: the commit tx's calldata.
    import asyncio

    from node.chain.client import RegistryClient

    dep = json.loads(Path(net.deployment_path).read_text())
    chain = RegistryClient(net.anvil.http_url, dep["registry"], reg.abi)
    logs = reg.committed_logs(dep["deploy_block"], stream_id=S1)
    headers = asyncio.run(chain.headers_of_tx(logs[-1].tx_hash))
    assert logs[-1].header_hash in {hash_header(h) for h in headers}


def test_bad_events_get_4xx_and_change_nothing(net, clients, domain):
    c = clients[1]
    good = Author(domain)
    joined(good, S1, clients, via=1)
    before = snapshot(clients, S1)

    def refused(resp, status, error):
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert body["error"] == error and body["detail"], body

    # bad signature (signed by another key)
    other = Author(domain)
    h, body = good.event(S1, EventKind.MESSAGE, b"x")
    body["signature"] = signed_event_json(domain, __import__("node.protocol.types", fromlist=["Event"]).Event(
        S1, good.address, body["event"]["nonce"], 0, b"x"), other.key)["signature"]
    refused(c.post_event(body), 400, "bad_signature")
    assert c.event(h) is None
    # wrong chain domain (chain id 1)
    wrong = Author(Domain(1, domain.verifying_contract), good.key)
    h2, body = wrong.event(S1, EventKind.MESSAGE, b"y", nonce=99)
    refused(c.post_event(body), 400, "bad_signature")
    # wrong registry
    wrong2 = Author(Domain(domain.chain_id, "0x" + "11" * 20), good.key)
    _, body = wrong2.event(S1, EventKind.MESSAGE, b"y", nonce=98)
    refused(c.post_event(body), 400, "bad_signature")
    # unknown stream
    _, body = good.event(parse_stream_id("no-such-stream"), EventKind.JOIN)
    refused(c.post_event(body), 404, "unknown_stream")
    # oversized payload
    _, body = good.event(S1, EventKind.MESSAGE, b"z" * (64 * 1024 + 1), nonce=97)
    refused(c.post_event(body), 413, "payload_too_large")
    # malformed JSON, and a body that is not an event
    r = c.http.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"})
    refused(r, 400, "malformed_json")
    r = c.http.post("/v1/events", json={"event": {"stream_id": "0x12"}, "signature": "0x"})
    refused(r, 422, "invalid_request")
    # body over the server limit
    r = c.http.post("/v1/events", content=b"x" * (33 * 1024 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413
    # MESSAGE from a non-member
    _, body = Author(domain).event(S1, EventKind.MESSAGE, b"hello")
    refused(c.post_event(body), 422, "membership")
    # replayed nonce: same (author, nonce), another payload
    h3, body = good.event(S1, EventKind.MESSAGE, b"first", nonce=500)
    assert c.post_event(body).status_code == 202
    _, body2 = good.event(S1, EventKind.MESSAGE, b"second", nonce=500)
    refused(c.post_event(body2), 409, "replayed_nonce")
    # posting the very same event again is idempotent
    r = c.post_event(body)
    assert r.status_code == 202 and r.json()["known"] is True
    c.wait_committed([h3], timeout=30)
    refused(c.post_event(body2), 409, "replayed_nonce")
    # batch: per-event verdicts; the bad ones change nothing
    hb, okb = good.event(S1, EventKind.MESSAGE, b"ok in batch", nonce=501)
    _, badb = good.event(S1, EventKind.MESSAGE, b"bad", nonce=502)
    badb["signature"] = okb["signature"]
    r = c.post_batch([okb, badb])
    assert r.status_code == 200
    res = r.json()
    assert res["accepted"] == 1 and res["results"][1]["error"] == "bad_signature"
    c.wait_committed([hb], timeout=30)
    # nothing of the refused events reached any node
    for cl in clients:
        assert cl.event(h) is None and cl.event(h2) is None
    after = snapshot(clients, S1)
    assert all(p == 0 for _, p in after), after
    assert all(a[0] >= b[0] for a, b in zip(after, before, strict=False))


def test_join_then_message_follows_the_block_boundary(net, clients, domain, reg):
    a = Author(domain)
    hj, join = a.event(S2, EventKind.JOIN)
    hm, msg = a.event(S2, EventKind.MESSAGE, b"too early")
    assert clients[0].post_event(join).status_code == 202
    r = clients[0].post_event(msg)  # JOIN not committed yet: refused at intake
    assert r.status_code == 422 and r.json()["error"] == "membership"
    j = clients[0].wait_committed([hj], timeout=30, stream_of=a.stream_of)[hj]
    r = clients[0].post_event(msg)
    assert r.status_code == 202, r.text
    m = clients[0].wait_committed([hm], timeout=30, stream_of=a.stream_of)[hm]
    assert m["block"] > j["block"]

    # Same block race: JOIN and MESSAGE reach every replica together by gossip (signed as a node; gossip
    # checks membership like intake, so a node takes the MESSAGE only once it has applied the JOIN's block);
    # the leader's filter must never put the MESSAGE in the JOIN's block or before it.
    b = Author(domain)
    hj2, join2 = b.event(S2, EventKind.JOIN)
    hm2, msg2 = b.event(S2, EventKind.MESSAGE, b"same batch")
    for i, c in enumerate(clients):
        assert c.gossip([join2, msg2], key=net.setups[i].key).status_code == 200
    # read at a replica of S2: a node that does not store the stream holds neither event
    rep = clients[{s.address: s.index for s in net.setups}[reg.replicas_of(S2)[0]]]
    j2 = rep.wait_committed([hj2], timeout=30)[hj2]
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        st = rep.event(hm2)
        if st and st["status"] == "committed":
            assert st["block"] > j2["block"]
            break
        time.sleep(0.2)
    blk = rep.block(S2, j2["block"])
    assert hx(hm2) not in blk["event_hashes"]

    # LEAVE: committed, then the author's MESSAGEs are refused again.
    hl, leave = a.event(S2, EventKind.LEAVE)
    assert clients[2].post_event(leave).status_code == 202
    clients[2].wait_committed([hl], timeout=30, stream_of=a.stream_of)
    _, late = a.event(S2, EventKind.MESSAGE, b"after leave")
    r = clients[2].post_event(late)
    assert r.status_code == 422 and r.json()["error"] == "membership"
    assert a.address not in clients[2].stream(S2)["members"]
    # Big payloads travel too (64 KiB each, gossip chunks stay under the body limit).
    c = Author(domain)
    joined(c, S2, clients, via=3)
    big = [c.event(S2, EventKind.MESSAGE, bytes([k]) * (64 * 1024)) for k in range(6)]
    r = clients[3].post_batch([b for _, b in big])
    assert r.status_code == 200 and r.json()["accepted"] == 6, r.text[:300]
    clients[0].wait_committed([h for h, _ in big], timeout=40, stream_of=c.stream_of)


def test_event_held_by_a_minority_waits_until_it_spreads(net, clients, domain, reg):
    sid = S1
    replicas = reg.replicas_of(sid)
    idx = {s.address: s.index for s in net.setups}
    holder = idx[replicas[0]]
    a = Author(domain)
    joined(a, sid, clients, via=holder)
    hmin, body = a.event(sid, EventKind.MESSAGE, b"minority")
    # Only one replica holds it (peer gossip is not forwarded again before regossip_s = 6 s).
    assert clients[holder].gossip([body], key=net.setups[holder].key).status_code == 200
    # Meanwhile other events commit without it.
    other = Author(domain)
    joined(other, sid, clients, via=(holder + 1) % 4)
    hs = []
    for k in range(3):
        h, b = other.event(sid, EventKind.MESSAGE, f"m{k}".encode())
        clients[(holder + 1) % 4].post_event(b)
        hs.append(h)
    clients[holder].wait_committed(hs, timeout=20)
    st = clients[holder].event(hmin)
    assert st["status"] == "pending", "an event held by one replica of three was committed"
    # After the re-gossip it reaches a majority and commits.
    done = clients[holder].wait_committed([hmin], timeout=30)
    assert done[hmin]["status"] == "committed"


def test_under_concurrent_load_no_parent_mismatch_and_every_node_applies_every_block(net, clients, domain, reg):
    """Concurrent batches to every node for both streams: every event commits, no header is ever rejected
    for a wrong parent (a leader only builds on the chain's head), and every node ends on the chain's
    head with the chain's hash chain (no registered block left unapplied)."""
    import threading

    authors = [Author(domain) for _ in range(4)]
    for i, a in enumerate(authors):
        r = clients[i].post_batch([a.event(s, EventKind.JOIN)[1] for s in (S1, S2)])
        assert r.json()["accepted"] == 2
    time.sleep(0.5)
    joins_done = time.monotonic() + 30
    while time.monotonic() < joins_done and any(
            a.address not in clients[0].stream(s)["members"] for a in authors for s in (S1, S2)):
        time.sleep(0.2)
    all_hashes: list[bytes] = []
    errors: list[str] = []

    def poster(i: int) -> None:
        a = authors[i]
        for k in range(6):
            batch = [a.event((S1, S2)[j % 2], EventKind.MESSAGE, f"load {i} {k} {j}".encode()) for j in range(100)]
            r = clients[i].post_batch([b for _, b in batch])
            if r.status_code != 200 or r.json()["accepted"] != 100:
                errors.append(r.text[:200])
            all_hashes.extend(h for h, _ in batch)

    threads = [threading.Thread(target=poster, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    stream_of = {k: v for a in authors for k, v in a.stream_of.items()}  # a node not storing a stream asks a replica
    clients[2].wait_committed(all_hashes[::25] + all_hashes[-4:], timeout=60, stream_of=stream_of)
    dep = json.loads(Path(net.deployment_path).read_text())
    rejected = reg.rejected_logs(dep["deploy_block"])
    assert not [r for r in rejected if r.reason_name == "BAD_PARENT"], rejected
    for sid in (S1, S2):
        head = reg.stream_head(sid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(c.stream(sid)["head_hash"] != hx(head.header_hash) for c in clients):
            time.sleep(0.2)
        for c in clients:
            st = c.stream(sid)
            assert st["head_number"] == head.number and st["head_hash"] == hx(head.header_hash), (c.url, st)
        commits = {c.number: c for c in reg.committed_logs(dep["deploy_block"], stream_id=sid)}
        for n in range(1, head.number + 1):
            assert commits[n].prev_hash == (commits[n - 1].header_hash if n > 1 else reg.header_hash_at(sid, 0))
    assert all(c.event(h, stream_of[h])["status"] == "committed" for c in clients[:1] for h in all_hashes[::10])
