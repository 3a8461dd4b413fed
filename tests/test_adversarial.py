"""Adversarial, end to end (real Anvil + registry + 4 node processes on loopback): what an outsider, a
client and a registered node can and cannot make a node do (docs/security.md).

Tests run in file order on one devnet and leave it running.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest
from eth_account import Account

from node.chain.deploy import parse_stream_id
from node.devnet.network import Network
from node.protocol.peer_auth import HDR_RESPONSE_SIGNATURE, HDR_SIGNATURE, recover_response
from node.protocol.types import Domain, EventKind
from node.server.client import Author, NodeClient
from node.server.models import hx

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("node_logs_on_failure")]

S1, S2, S3 = parse_stream_id("adv-a"), parse_stream_id("adv-b"), parse_stream_id("adv-quota")
QUOTA_AUTHOR, QUOTA_STREAM, MAX_BATCH = 50, 300, 400
SETTINGS = {"tick_ms": 100, "poll_ms": 150, "regossip_s": 3.0, "log_level": "INFO",
            "pool_quota_author": QUOTA_AUTHOR, "pool_quota_stream": QUOTA_STREAM, "max_batch_events": MAX_BATCH}
OUTSIDER = bytes.fromhex("aa" * 32)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("adv"), n_nodes=4, streams=[S1, S2, S3], leader_timeout=3,
                 settings=SETTINGS) as d:
        yield d


def idx(net, addr: str) -> int:
    return next(s.index for s in net.setups if s.address == addr)


def stored(net, i: int) -> dict[str, int]:
    """What node i holds (read-only look at its SQLite file)."""
    db = sqlite3.connect(f"file:{net.setups[i].data_dir / 'node.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        q = {"events": "SELECT count(*) FROM events", "proposals": "SELECT count(*) FROM proposals",
             "blocks": "SELECT count(*) FROM blocks"}
        return {k: db.execute(v).fetchone()[0] for k, v in q.items()}
    finally:
        db.close()


def forged_header(reg, sid: bytes, leader: str, attempt: int = 0) -> dict:
    head = reg.stream_head(sid)
    epoch = reg.current_epoch()
    return {"header": {"stream_id": hx(sid), "number": head.number + 1, "prev_hash": hx(head.header_hash),
                       "events_root": hx(b"\0" * 32), "event_count": 0, "epoch": epoch, "attempt": attempt,
                       "leader": leader, "randao_reveal": hx(b"\1" * 32), "state_root": hx(b"\0" * 32)},
            "event_hashes": []}


def joined(a: Author, sid: bytes, c: NodeClient) -> None:
    h, body = a.event(sid, EventKind.JOIN)
    assert c.post_event(body).status_code == 202
    c.wait_committed([h], timeout=30)


def refused(r: httpx.Response, status: int, error: str | None = None) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    if error is not None:
        assert r.json()["error"] == error, r.text[:300]


def test_outsider_gets_401_or_403_on_every_peer_endpoint_and_changes_nothing(net, clients, domain, reg):
    member = Author(domain)
    joined(member, S1, clients[0])
    # Every replica applies the JOIN's block before the counts below are taken: joined() waits on one node
    # only, and a replica applying the block later (its proposals pruned, a missing event fetched) changed
    # the counts this test compares (the flaky failure "a node applied the JOIN block during the test").
    for c in clients:
        c.wait_committed(list(member.stream_of), timeout=30, stream_of=member.stream_of)
    h, ev = member.event(S1, EventKind.MESSAGE, b"smuggled by an outsider")
    node_addr = net.setups[1].address
    leader = reg.elected_leader(S1, reg.stream_head(S1).number + 1, 0)
    reqs = [("POST", "/peer/gossip", {"events": [ev]}, None),
            ("POST", "/peer/votes", {"stream_id": hx(S1)}, None),
            ("POST", "/peer/events", {"hashes": [hx(h)]}, None),
            ("POST", "/peer/attest", forged_header(reg, S1, leader), None),
            ("POST", "/peer/commit", {"headers": [{"header": forged_header(reg, S1, leader)["header"],
                                                   "signatures": ["0x" + "00" * 65]}]}, None),
            ("GET", f"/peer/blocks/{hx(S1)}", None, {"from": 0, "to": 5})]
    before = [stored(net, i) for i in range(4)]
    for i, c in enumerate(clients):
        for method, path, body, params in reqs:
            # no proof at all
            refused(c.peer(method, path, key=None, json=body, params=params), 401, "unauthenticated")
            # the outsider's valid signature, claiming to be a registered node
            r = c.peer(method, path, key=OUTSIDER, json=body, params=params,
                       extra_headers={"x-peer-address": node_addr})
            refused(r, 401, "unauthenticated")
            # a registered node's key, but signed for another chain / another registry: not a proof here
            key = net.setups[(i + 1) % 4].key
            for dom in (Domain(1, domain.verifying_contract), Domain(domain.chain_id, "0x" + "11" * 20)):
                refused(c.peer(method, path, key=key, json=body, params=params, domain=dom,
                               ts_ms=int(time.time() * 1000)), 401, "unauthenticated")
            # garbage headers
            refused(c.peer(method, path, key=None, json=body, params=params,
                           extra_headers={"x-peer-address": node_addr, "x-peer-time": "12", "x-peer-nonce": "x",
                                          "x-peer-signature": "0x00"}), 401, "unauthenticated")
            # a valid proof by a key that is not a registered node
            refused(c.peer(method, path, key=OUTSIDER, json=body, params=params), 403, "not_a_node")
    time.sleep(1.0)
    after = [stored(net, i) for i in range(4)]
    for b, a in zip(before, after, strict=True):
        assert a["events"] == b["events"] and a["proposals"] == b["proposals"], (before, after)
    assert all(c.event(h) is None for c in clients)


def test_replayed_or_stale_request_gets_401(net, clients, reg):
    reps = reg.replicas_of(S1)
    asker = net.setups[idx(net, reps[0])]
    target = idx(net, reps[1])
    c = clients[target]
    info = c.http.get("/v1/info").json()
    dom = Domain(info["chain_id"], info["registry"])
    body = {"stream_id": hx(S1)}
    ts = int(info["chain_time"] * 1000)
    from node.protocol.peer_auth import sign_request

    hdrs = sign_request(dom, asker.key, asker.address, "POST", "/peer/votes", b'{"stream_id":"' + hx(S1).encode()
                        + b'"}', ts)
    raw = b'{"stream_id":"' + hx(S1).encode() + b'"}'
    r = c.http.post("/peer/votes", content=raw, headers={**hdrs, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    # the very same request again: refused
    r = c.http.post("/peer/votes", content=raw, headers={**hdrs, "content-type": "application/json"})
    refused(r, 401, "replayed")
    # a fresh signature but a timestamp outside the window (+-30 s of the node's chain time)
    for skew in (-60_000, 60_000):
        refused(c.peer("POST", "/peer/votes", key=asker.key, json=body, ts_ms=ts + skew, domain=dom), 401,
                "unauthenticated")
    # and a fresh one is fine, with its answer signed by the node asked, over this request's signature
    r = c.peer("POST", "/peer/votes", key=asker.key, json=body)
    assert r.status_code == 200
    req_sig = bytes.fromhex(r.request.headers[HDR_SIGNATURE][2:])
    assert recover_response(dom, req_sig, 200, r.content, r.headers.get(HDR_RESPONSE_SIGNATURE)) == \
        net.setups[target].address


def test_registered_non_replica_gets_403_for_votes_and_attest(net, clients, reg):
    reps = reg.replicas_of(S1)
    outsider_node = next(s for s in net.setups if s.address not in reps)
    target = idx(net, reps[0])
    c = clients[target]
    before = stored(net, target)
    refused(c.peer("POST", "/peer/votes", key=outsider_node.key, json={"stream_id": hx(S1)}), 403, "not_replica")
    # even a proposal naming itself as leader
    r = c.peer("POST", "/peer/attest", key=outsider_node.key, json=forged_header(reg, S1, outsider_node.address))
    refused(r, 403, "not_replica")
    # what any registered node may ask: events and blocks (sync)
    assert c.peer("POST", "/peer/events", key=outsider_node.key, json={"hashes": []}).status_code == 200
    r = c.peer("GET", f"/peer/blocks/{hx(S1)}", key=outsider_node.key, params={"from": 1, "to": 2})
    assert r.status_code == 200
    assert stored(net, target)["proposals"] == before["proposals"]


def test_proposal_from_a_replica_that_is_not_its_leader_gets_403_and_delays_nothing(net, clients, domain, reg):
    """The forged-header attack of issue 9: headers for the next block naming the elected leader, sent by
    another replica, to every other replica. Refused at the edge; the stream keeps its pace."""
    sid = S2
    reps = reg.replicas_of(sid)
    n = reg.stream_head(sid).number + 1
    leader = reg.elected_leader(sid, n, 0)
    forger = next(a for a in reps if a != leader)
    fk = net.setups[idx(net, forger)].key
    victims = [idx(net, a) for a in reps if a not in (leader, forger)]
    before = {i: stored(net, i) for i in victims}
    for i in victims:
        refused(clients[i].peer("POST", "/peer/attest", key=fk, json=forged_header(reg, sid, leader)), 403,
                "not_leader")
        # naming itself instead: passes the edge, and the attester refuses it (not the elected leader)
        if forger != leader:
            for attempt in range(3):
                own = forged_header(reg, sid, forger, attempt)
                want_leader = reg.elected_leader(sid, n, attempt)
                if want_leader != forger:
                    refused(clients[i].peer("POST", "/peer/attest", key=fk, json=own), 409, "not_elected")
    for i in victims:
        assert stored(net, i)["proposals"] == before[i]["proposals"]
    # the stream is not held up: an event posted now commits within two leader timeouts (3 s each) + slack
    a = Author(domain)
    h, body = a.event(sid, EventKind.JOIN)
    t0 = time.monotonic()
    assert clients[victims[0]].post_event(body).status_code == 202
    clients[victims[0]].wait_committed([h], timeout=20)
    assert time.monotonic() - t0 < 6.0 + 2.0


def test_oversize_peer_requests_get_413(net, clients, domain):
    c = clients[0]
    key = net.setups[1].key
    r = c.peer("POST", "/peer/events", key=key, json={"hashes": [hx(bytes([i % 256]) * 32) for i in range(1025)]})
    refused(r, 413, "too_many_hashes")
    a = Author(domain)
    bodies = [a.event(S1, EventKind.JOIN, nonce=k)[1] for k in range(MAX_BATCH + 1)]
    refused(c.gossip(bodies, key=key), 413, "batch_too_large")
    refused(c.post_batch(bodies), 413, "batch_too_large")
    # a body over max_body: refused by its length, before anything else
    r = c.http.post("/peer/gossip", content=b"x" * (33 * 1024 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert all(c2.event(hx(a.event(S1, EventKind.JOIN, nonce=0)[0])) is None for c2 in clients)


def test_gossip_is_checked_like_client_intake(net, clients, domain):
    """A non-member's MESSAGE that /v1/events refuses (422) is not stored when gossiped either."""
    c = clients[2]
    stranger = Author(domain)
    h, body = stranger.event(S1, EventKind.MESSAGE, b"not a member")
    refused(c.post_event(body), 422, "membership")
    r = c.gossip([body], key=net.setups[3].key)
    assert r.status_code == 200 and r.json()["rejected"] == 1, r.text
    assert c.event(h) is None
    # unknown stream: refused, and the answer is cached (no chain call per event)
    _h, unk = stranger.event(parse_stream_id("adv-no-such-stream"), EventKind.JOIN)
    refused(c.post_event(unk), 404, "unknown_stream")
    t0 = time.monotonic()
    for k in range(50):
        _h, unk = stranger.event(parse_stream_id("adv-no-such-stream"), EventKind.JOIN, nonce=1000 + k)
        refused(c.post_event(unk), 404, "unknown_stream")
    assert time.monotonic() - t0 < 10


def test_pool_quotas_give_429_with_retry_after(net, clients, domain):
    c = clients[1]
    # per author: one batch of QUOTA_AUTHOR + 10 JOINs (different nonces) by one author
    a = Author(domain)
    bodies = [a.event(S3, EventKind.JOIN, nonce=k)[1] for k in range(QUOTA_AUTHOR + 10)]
    r = c.post_batch(bodies)
    assert r.status_code == 200, r.text[:300]
    res = r.json()["results"]
    assert [x["status"] for x in res[:QUOTA_AUTHOR]] == [202] * QUOTA_AUTHOR
    assert all(x["status"] == 429 and x["error"] == "author_quota" for x in res[QUOTA_AUTHOR:])
    assert int(r.headers["Retry-After"]) >= 1
    # the single-event path says the same (right away, before a block drains the author's pending JOINs)
    seen_429 = False
    for attempt in range(3):
        b = Author(domain)
        c.post_batch([b.event(S3, EventKind.JOIN, nonce=k)[1] for k in range(QUOTA_AUTHOR)])
        r = c.post_event(b.event(S3, EventKind.JOIN, nonce=10_000 + attempt)[1])
        if r.status_code == 429:
            assert r.json()["error"] == "author_quota" and int(r.headers["Retry-After"]) >= 1
            seen_429 = True
            break
    assert seen_429
    # per stream: fresh authors, one JOIN each, more than the stream's quota in one batch
    bodies = [Author(domain).event(S3, EventKind.JOIN)[1] for _ in range(QUOTA_STREAM + 20)]
    r = c.post_batch(bodies)
    res = r.json()["results"]
    assert any(x["status"] == 429 and x["error"] == "stream_quota" for x in res)
    assert sum(1 for x in res if x["status"] == 202) <= QUOTA_STREAM
    assert int(r.headers["Retry-After"]) >= 1


def test_concurrency_bound_gives_503_with_retry_after():
    """The in-flight bound (node.server.peer_auth.Concurrency), in process: one slot, two requests."""
    from node.server.peer_auth import Concurrency

    gate = asyncio.Event()

    async def slow(scope, receive, send):
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = Concurrency(slow, client=1, peer=1)

    async def main() -> tuple[int, str | None, int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as cl:
            first = asyncio.create_task(cl.get("/v1/info"))
            await asyncio.sleep(0.05)
            second = await cl.get("/v1/info")
            peer = asyncio.create_task(cl.get("/peer/votes"))  # its own bound: not starved by clients
            await asyncio.sleep(0.05)
            gate.set()
            r1, rp = await first, await peer
            assert r1.status_code == 200
            return second.status_code, second.headers.get("retry-after"), rp.status_code

    status, retry, peer_status = asyncio.run(main())
    assert status == 503 and retry == "1" and peer_status == 200


def test_nodes_still_commit_everything_with_auth_on(net, clients, domain, reg):
    """Gossip, votes, attestations, fetches and sync all run signed: events posted to different nodes
    commit, and every node applies every block."""
    a = Author(domain)
    joined(a, S1, clients[3])
    hs = []
    for k in range(12):
        h, b = a.event(S1, EventKind.MESSAGE, f"auth on {k}".encode())
        assert clients[k % 4].post_event(b).status_code == 202
        hs.append(h)
    for c in clients:
        c.wait_committed(hs, timeout=40, stream_of=a.stream_of)  # a node not storing S1 asks a replica
    head = reg.stream_head(S1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(c.stream(S1)["head_hash"] != hx(head.header_hash) for c in clients):
        time.sleep(0.2)
    assert all(c.stream(S1)["head_hash"] == hx(head.header_hash) for c in clients)
    for c in clients:
        assert "node_peer_refused_total" in c.metrics()
    assert Account.from_key(OUTSIDER).address not in reg.replicas_of(S1)
