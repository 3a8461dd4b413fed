"""The peer wire (node/server/wire.py): what the pydantic models accept it accepts, what they refuse it refuses
(with 400 for bad JSON, 422 naming the field), and the bytes it writes are the JSON intake.to_wire describes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from node.protocol.eip712 import hash_event
from node.server import wire
from node.server.fastpath import make_event
from node.server.intake import to_wire
from node.server.models import AttestBatchIn, EventBatch, VotesBatchIn

EV = {"event": {"stream_id": "0x" + "ab" * 32, "author": "0x" + "cd" * 20, "nonce": 3, "kind": 0,
                "payload": "0x1234"}, "signature": "0x" + "ee" * 65}


def with_event(**kw: object) -> dict:
    return {"events": [{**EV, "event": {**EV["event"], **kw}}]}


BAD_GOSSIP = [
    {"events": [{**EV, "signature": "0x12"}]},
    {"events": [{**EV, "signature": "0X" + "ee" * 65}]},
    with_event(payload="0x12\n"),  # Python's `$` would match before the newline; fromhex skips it
    with_event(payload="0x123"),
    with_event(payload="1234"),
    with_event(stream_id="0x" + "zz" * 32),
    with_event(stream_id="0x" + "ab" * 31),
    with_event(author="0x" + "cd" * 19 + "c\n"),
    with_event(author=" 0x" + "cd" * 20),
    with_event(nonce=-1),
    with_event(kind=256),
    {"events": [{"event": {"stream_id": "0x" + "ab" * 32}, "signature": "0x"}]},
    {"events": "nope"},
    [],
]


@pytest.mark.parametrize("body", BAD_GOSSIP)
def test_refused_as_the_model_refuses_it(body: object) -> None:
    raw = json.dumps(body).encode()
    with pytest.raises(ValidationError):
        EventBatch.model_validate_json(raw)
    with pytest.raises(wire.BadBody) as exc:
        wire.decode(wire.GossipIn, raw)
    assert exc.value.status == 422 and exc.value.error == "invalid_request" and exc.value.detail


def test_stricter_than_the_model_for_numbers_as_strings() -> None:
    """pydantic's lax mode takes "5" for an integer; a node never sends one, and the wire refuses it."""
    raw = json.dumps(with_event(nonce="5")).encode()
    EventBatch.model_validate_json(raw)
    with pytest.raises(wire.BadBody, match=r"events\[0\]\.event\.nonce"):
        wire.decode(wire.GossipIn, raw)


def test_malformed_json_is_400() -> None:
    with pytest.raises(wire.BadBody) as exc:
        wire.decode(wire.GossipIn, b"{not json")
    assert exc.value.status == 400 and exc.value.error == "malformed_json"


def test_accepted_as_the_model_accepts_it() -> None:
    for body in ({"events": [EV, {**EV, "event": {**EV["event"], "payload": "0x"}}]}, {"events": []}):
        raw = json.dumps(body).encode()
        got = wire.decode(wire.GossipIn, raw)
        ref = EventBatch.model_validate_json(raw)
        assert [(e.event.stream_id, e.event.author, e.event.nonce, e.event.kind, e.event.payload, e.signature)
                for e in got.events] == [(e.event.stream_id, e.event.author, e.event.nonce, e.event.kind,
                                          e.event.payload, e.signature) for e in ref.events]


def test_batch_bounds_as_the_models() -> None:
    for body in ({"stream_ids": []}, {"stream_ids": ["0x" + "ab" * 32] * 257}, {"stream_ids": ["0x12"]}):
        raw = json.dumps(body).encode()
        with pytest.raises(ValidationError):
            VotesBatchIn.model_validate_json(raw)
        with pytest.raises(wire.BadBody):
            wire.decode(wire.VotesBatchIn, raw)
    with pytest.raises(ValidationError):
        AttestBatchIn.model_validate_json(b'{"proposals": []}')
    with pytest.raises(wire.BadBody):
        wire.decode(wire.AttestBatchIn, b'{"proposals": []}')


def test_event_bytes_are_to_wire_json() -> None:
    ev = make_event(bytes(range(32)), "0x" + "cd" * 20, 7, 1, b"\x00hi\xff")
    sig = bytes(range(65))
    raw = wire.event_bytes(ev, sig)
    assert json.loads(raw) == to_wire(hash_event(ev), ev, sig)
    body = wire.join_list(b"events", [raw, raw])
    assert json.loads(body) == {"events": [to_wire(hash_event(ev), ev, sig)] * 2}
    assert wire.decode(wire.GossipIn, body).events[1].event.payload == "0x" + b"\x00hi\xff".hex()
