"""The batched peer endpoints of a leader's tick, end to end (real Anvil + registry + 4 node processes):
/peer/votes/batch and /peer/attest/batch answer or refuse every stream on its own, with the same rules as
the one-stream endpoints (votes only to replicas; attestations only to the header's leader, a replica),
answers signed by the node, bounded by count and bytes; nothing is stored for a refused proposal.
"""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from node.chain.deploy import parse_stream_id
from node.devnet.network import Network
from node.protocol.peer_auth import HDR_RESPONSE_SIGNATURE, HDR_SIGNATURE, recover_response
from node.protocol.types import EventKind
from node.server.client import Author
from node.server.models import hx

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("node_logs_on_failure")]

STREAMS = [parse_stream_id(f"batch-{i}") for i in range(8)]
HASH_CAP = 100
OUTSIDER = bytes.fromhex("ab" * 32)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Network(tmp_path_factory.mktemp("batch"), n_nodes=4, streams=STREAMS, leader_timeout=3,
                 settings={"tick_ms": 100, "poll_ms": 150, "max_attest_batch_hashes": HASH_CAP}) as d:
        yield d


def proposals(net, i: int) -> int:
    db = sqlite3.connect(f"file:{net.setups[i].data_dir / 'node.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT count(*) FROM proposals").fetchone()[0]
    finally:
        db.close()


def proposal(reg, sid: bytes, leader: str, attempt: int = 0, hashes: int = 0) -> dict:
    head = reg.stream_head(sid)
    return {"header": {"stream_id": hx(sid), "number": head.number + 1, "prev_hash": hx(head.header_hash),
                       "events_root": hx(b"\0" * 32), "event_count": hashes, "epoch": reg.current_epoch(),
                       "attempt": attempt, "leader": leader, "randao_reveal": hx(b"\1" * 32),
                       "state_root": hx(b"\0" * 32)},
            "event_hashes": [hx(bytes([k % 256]) * 32) for k in range(hashes)]}


def pick(net, reg):
    """(asker setup, target index, a stream both replicate, a stream the asker does not replicate)."""
    reps = {s: reg.replicas_of(s) for s in STREAMS}
    for asker in net.setups[:4]:
        mine = [s for s in STREAMS if asker.address in reps[s]]
        other = [s for s in STREAMS if asker.address not in reps[s]]
        for s in mine:
            for o in other:
                both = [a for a in reps[s] if a != asker.address and a in reps[o]]
                if both:
                    return asker, next(x.index for x in net.setups if x.address == both[0]), s, o
    pytest.skip("no node pair with a shared and an unshared stream (registry's choice)")


def signed_by(r: httpx.Response, domain, addr: str) -> bool:
    req_sig = bytes.fromhex(r.request.headers[HDR_SIGNATURE][2:])
    return recover_response(domain, req_sig, r.status_code, r.content, r.headers.get(HDR_RESPONSE_SIGNATURE)) == addr


def test_votes_batch_answers_replicas_per_stream_and_signs(net, clients, domain, reg):
    asker, target, shared, unshared = pick(net, reg)
    a = Author(domain)
    h, body = a.event(shared, EventKind.JOIN)
    assert clients[target].post_event(body).status_code == 202
    r = clients[target].peer("POST", "/peer/votes/batch", key=asker.key,
                             json={"stream_ids": [hx(shared), hx(unshared)]})
    assert r.status_code == 200, r.text
    assert signed_by(r, domain, net.setups[target].address)
    v_shared, v_unshared = r.json()["votes"]
    assert v_shared["stream_id"] == hx(shared) and v_shared["status"] == 200 and v_shared["head_number"] >= 0
    assert v_unshared == {"stream_id": hx(unshared), "status": 403, "error": "not_replica",
                          "detail": v_unshared["detail"]}
    assert "hashes" not in v_unshared
    clients[target].wait_committed([h], timeout=30)  # the network commits with batched calls


def test_votes_batch_bounds_and_auth(net, clients, domain, reg):
    asker, target, shared, _ = pick(net, reg)
    c = clients[target]
    r = c.peer("POST", "/peer/votes/batch", key=asker.key, json={"stream_ids": [hx(shared)] * 2})
    assert r.status_code == 422 and r.json()["error"] == "duplicate_stream"
    r = c.peer("POST", "/peer/votes/batch", key=asker.key,
               json={"stream_ids": [hx(bytes([k % 256, k // 256]) * 16) for k in range(257)]})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = c.peer("POST", "/peer/votes/batch", key=asker.key, json={"stream_ids": ["0x12"]})
    assert r.status_code == 422
    for key, status in ((None, 401), (OUTSIDER, 403)):
        r = c.peer("POST", "/peer/votes/batch", key=key, json={"stream_ids": [hx(shared)]})
        assert r.status_code == status, r.text


def test_attest_batch_refuses_per_proposal_and_stores_nothing_refused(net, clients, domain, reg):
    asker, target, shared, unshared = pick(net, reg)
    c = clients[target]
    before = proposals(net, target)
    others = [x.address for x in net.setups[:4] if x.address != asker.address]
    n = reg.stream_head(shared).number + 1
    not_elected = next((k for k in range(6) if reg.elected_leader(shared, n, k) != asker.address), None)
    body = {"proposals": [proposal(reg, shared, others[0]),  # names another leader: not the sender's to ask
                          proposal(reg, unshared, asker.address),  # a stream the sender does not replicate
                          *([proposal(reg, shared, asker.address, not_elected)] if not_elected is not None else [])]}
    r = c.peer("POST", "/peer/attest/batch", key=asker.key, json=body)
    assert r.status_code == 200, r.text
    assert signed_by(r, domain, net.setups[target].address)
    res = r.json()["results"]
    assert [(x["status"], x["error"]) for x in res[:2]] == [(403, "not_leader"), (403, "not_replica")]
    if not_elected is not None:
        assert (res[2]["status"], res[2]["error"]) == (409, "not_elected")
    assert all(x.get("signature") is None for x in res)
    assert proposals(net, target) <= before  # nothing refused was stored (applied blocks may prune some)


def test_attest_batch_bounds(net, clients, reg):
    asker, target, shared, _ = pick(net, reg)
    c = clients[target]
    big = [proposal(reg, shared, asker.address, hashes=HASH_CAP // 2 + 1) for _ in range(2)]
    r = c.peer("POST", "/peer/attest/batch", key=asker.key, json={"proposals": big})
    assert r.status_code == 413 and r.json()["error"] == "too_many_events"
    r = c.peer("POST", "/peer/attest/batch", key=asker.key, json={"proposals": []})
    assert r.status_code == 422
    for key, status in ((None, 401), (OUTSIDER, 403)):
        r = c.peer("POST", "/peer/attest/batch", key=key, json={"proposals": [proposal(reg, shared, asker.address)]})
        assert r.status_code == status, r.text
