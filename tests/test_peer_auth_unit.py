"""Unit tests of the peer authentication rule (node/protocol/peer_auth.py) and of the bounded maps."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from node.protocol.eip712 import digest
from node.protocol.hashing import keccak
from node.protocol.limits import MAX_BLOCK_BYTES, block_within_limits, event_size
from node.protocol.peer_auth import (
    HDR_SIGNATURE,
    HDR_TIME,
    PeerAuthError,
    check_fresh,
    parse_proof,
    recover_response,
    request_digest,
    request_hash,
    response_digest,
    sign_request,
    sign_response,
    typed_data_request,
    typed_data_response,
    verify_request,
)
from node.protocol.types import Domain, Event

KEY = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
ADDR = Account.from_key(KEY).address
DOM = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
BODY = b'{"stream_id":"0x' + b"ab" * 32 + b'"}'


def test_digest_equals_eth_account_typed_data():
    td = typed_data_request(DOM, "post", "/peer/votes?x=1", BODY, 1_700_000_000_123, 42)
    assert bytes(encode_typed_data(full_message=td).body) == request_hash("POST", "/peer/votes?x=1", keccak(BODY),
                                                                          1_700_000_000_123, 42)
    signed = Account.sign_message(encode_typed_data(full_message=td), KEY)
    hdrs = sign_request(DOM, KEY, ADDR, "POST", "/peer/votes?x=1", BODY, 1_700_000_000_123, nonce=42)
    assert bytes.fromhex(hdrs[HDR_SIGNATURE][2:]) == bytes(signed.signature)
    rs = bytes(signed.signature)
    tr = typed_data_response(DOM, rs, 200, b"{}")
    assert digest(DOM, bytes(encode_typed_data(full_message=tr).body)) == response_digest(DOM, rs, 200, b"{}")


def test_valid_request_verifies_and_every_field_is_bound():
    hdrs = sign_request(DOM, KEY, ADDR, "POST", "/peer/votes", BODY, 1000)
    proof = parse_proof(hdrs)
    assert verify_request(DOM, proof, "POST", "/peer/votes", BODY) == ADDR
    bad = [
        (DOM, "GET", "/peer/votes", BODY),  # method
        (DOM, "POST", "/peer/events", BODY),  # path
        (DOM, "POST", "/peer/votes?from=1", BODY),  # query
        (DOM, "POST", "/peer/votes", BODY + b" "),  # body
        (Domain(1, DOM.verifying_contract), "POST", "/peer/votes", BODY),  # another chain
        (Domain(DOM.chain_id, "0x" + "11" * 20), "POST", "/peer/votes", BODY),  # another registry
    ]
    for dom, m, p, b in bad:
        with pytest.raises(PeerAuthError):
            verify_request(dom, proof, m, p, b)
    for field, value in ((HDR_TIME, "1001"), ("x-peer-nonce", "7"), ("x-peer-address", "0x" + "22" * 20)):
        with pytest.raises(PeerAuthError):
            verify_request(DOM, parse_proof({**hdrs, field: value}), "POST", "/peer/votes", BODY)


def test_malformed_or_missing_proofs_are_refused():
    hdrs = sign_request(DOM, KEY, ADDR, "GET", "/peer/blocks/0x00", b"", 5)
    for k in list(hdrs):
        with pytest.raises(PeerAuthError):
            parse_proof({x: v for x, v in hdrs.items() if x != k})
    for k, v in ((HDR_TIME, "-1"), (HDR_TIME, "1e3"), (HDR_TIME, str(2**64)), (HDR_SIGNATURE, "0x1234"),
                 (HDR_SIGNATURE, "0x" + "zz" * 65), ("x-peer-address", "nope")):
        with pytest.raises(PeerAuthError):
            parse_proof({**hdrs, k: v})
    # high-s twin of a valid signature (malleable) is refused
    sig = bytes.fromhex(hdrs[HDR_SIGNATURE][2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + (n - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(PeerAuthError):
        verify_request(DOM, parse_proof({**hdrs, HDR_SIGNATURE: "0x" + twin.hex()}), "GET", "/peer/blocks/0x00", b"")


def test_freshness_window():
    p = parse_proof(sign_request(DOM, KEY, ADDR, "GET", "/x", b"", 100_000))
    check_fresh(p, 100.0 + 29.9, 30)
    check_fresh(p, 100.0 - 29.9, 30)
    for now in (130.1, 69.9):
        with pytest.raises(PeerAuthError):
            check_fresh(p, now, 30)


def test_two_identical_requests_differ_by_nonce():
    a = sign_request(DOM, KEY, ADDR, "POST", "/peer/votes", BODY, 1)
    b = sign_request(DOM, KEY, ADDR, "POST", "/peer/votes", BODY, 1)
    assert a[HDR_SIGNATURE] != b[HDR_SIGNATURE]
    assert request_digest(DOM, "POST", "/a", b"", 1, 2) != request_digest(DOM, "POST", "/a", b"", 1, 3)


def test_response_signature_binds_request_status_and_body():
    req_sig = bytes.fromhex(sign_request(DOM, KEY, ADDR, "POST", "/peer/attest", BODY, 1)[HDR_SIGNATURE][2:])
    h = sign_response(DOM, KEY, req_sig, 200, b'{"ok":1}')
    assert recover_response(DOM, req_sig, 200, b'{"ok":1}', h) == ADDR
    other = bytes.fromhex(sign_request(DOM, KEY, ADDR, "POST", "/peer/attest", BODY, 2)[HDR_SIGNATURE][2:])
    assert recover_response(DOM, other, 200, b'{"ok":1}', h) != ADDR
    assert recover_response(DOM, req_sig, 409, b'{"ok":1}', h) != ADDR
    assert recover_response(DOM, req_sig, 200, b'{"ok":2}', h) != ADDR
    for bad in (None, "0x12", "0x" + "00" * 65):
        with pytest.raises(PeerAuthError):
            recover_response(DOM, req_sig, 200, b"", bad)


def test_block_limits():
    ev = Event(b"\x01" * 32, ADDR, 0, 0, b"x" * 1000)
    assert event_size(ev) == 1126
    assert block_within_limits([ev] * 10) is None
    assert "events" in (block_within_limits([ev] * 11, max_events=10) or "")
    n = MAX_BLOCK_BYTES // 1126 + 1
    assert "bytes" in (block_within_limits([ev] * n, max_events=10**6) or "")


def test_bounded_dict_and_ttl_cache():
    from node.server.bounded import BoundedDict, TTLCache

    d: BoundedDict[int, int] = BoundedDict(3)
    for i in range(10):
        d[i] = i
    assert list(d) == [7, 8, 9]
    d.setdefault(11, 0)
    assert len(d) == 3 and 11 in d
    d.update({20: 1, 21: 2})
    assert len(d) == 3
    t = TTLCache(2, ttl=10.0)
    t.put("a", True, now=0.0)
    assert t.get("a", now=5.0) is True and t.get("a", now=11.0) is None
    for k in "bcd":
        t.put(k, True, now=1.0)
    assert len(t) == 2


def test_fetch_events_asks_in_chunks_and_follows_next():
    """Peers.fetch_events: at most 1,024 hashes per request; a server that stops early (byte cap) says
    where (`next`) and the rest is asked again."""
    import asyncio
    import json

    import httpx

    from node.server.peers import FETCH_CHUNK, Peers

    asked: list[list[str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        hashes = json.loads(req.content)["hashes"]
        asked.append(hashes)
        assert len(hashes) <= FETCH_CHUNK
        served = hashes[:300]  # serve 300 per answer, as a byte-capped server would
        body = {"events": [{"h": h} for h in served]}
        if len(served) < len(hashes):
            body["next"] = len(served)
        return httpx.Response(200, json=body)

    p = Peers(1.0)
    p.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    want = [f"0x{i:064x}" for i in range(2500)]
    got = asyncio.run(p.fetch_events("http://peer", want))
    assert [e["h"] for e in got["events"]] == want
    assert all(len(a) <= FETCH_CHUNK for a in asked) and len(asked) == 9
