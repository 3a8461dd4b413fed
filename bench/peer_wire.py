"""In-process A/B of the peer wire: one gossip batch sent to 2 peers and received by each, per event.

`python -m bench.peer_wire [--events 256] [--payload 100] [--rounds 7]` prints one JSON line per path:

- `stdlib+pydantic` (main before node/server/wire.py): per peer the events as dicts, json.dumps of the
  body, the request signed; per receiver EventBatch.model_validate_json + intake.parse_batch;
- `wire` (node/server/wire.py): each event's bytes built once (wire.event_bytes), joined per peer, the
  request signed; per receiver wire.decode(GossipIn) + intake.parse_batch.

`us_per_event` is the whole path per event (2 peers), with the per-request signature (sign_request) and
its check (verify_request), the same in both, also printed alone (`sign_verify_us_per_event`);
`encode_decode_us_per_event` only the bodies built and parsed into the models (no parse_batch, no
signature). Best of `rounds`, the paths interleaved (the box's speed swings).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from node.protocol.eip712 import hash_event, sign_event
from node.protocol.hashing import keccak
from node.protocol.peer_auth import parse_proof, sign_request, verify_request
from node.protocol.types import Domain, Event
from node.server import wire
from node.server.intake import parse_batch, to_wire
from node.server.models import EventBatch

PEERS = 2  # r = 3: a replica gossips to the 2 others
_DOMAIN = Domain(31337, "0x" + "11" * 20)
_KEY = keccak(b"bench peer wire key")
_ADDR = "0x" + "00" * 20


def _events(n: int, payload: int) -> list[tuple[Event, bytes]]:
    from eth_account import Account

    acct = Account.from_key(keccak(b"bench peer wire author"))
    sid = keccak(b"bench stream")
    out = []
    for i in range(n):
        ev = Event(sid, acct.address, i, 0, bytes([i % 256]) * payload)
        out.append((ev, sign_event(_DOMAIN, ev, bytes(acct.key))))
    return out


def _sign_check(body: bytes, addr: str) -> None:
    hdrs = sign_request(_DOMAIN, _KEY, addr, "POST", "/peer/gossip", body, 1_000)
    verify_request(_DOMAIN, parse_proof(hdrs), "POST", "/peer/gossip", body)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=256)
    ap.add_argument("--payload", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    from eth_account import Account

    addr = Account.from_key(_KEY).address
    evs = _events(args.events, args.payload)
    stored = [(hash_event(ev), ev, sig) for ev, sig in evs]
    node = SimpleNamespace(cfg=SimpleNamespace(max_payload=64 * 1024))

    def old() -> None:
        for _ in range(PEERS):
            body = json.dumps({"events": [to_wire(h, ev, sig) for h, ev, sig in stored]},
                              separators=(",", ":")).encode()
            _sign_check(body, addr)
            batch = EventBatch.model_validate_json(body)
            items, _errs = parse_batch(node, batch.events)  # type: ignore[arg-type]
            assert len(items) == len(stored)

    def new() -> None:
        parts = [wire.event_bytes(ev, sig) for _h, ev, sig in stored]
        for _ in range(PEERS):
            body = wire.join_list(b"events", parts)
            _sign_check(body, addr)
            batch = wire.decode(wire.GossipIn, body)
            items, _errs = parse_batch(node, batch.events)  # type: ignore[arg-type]
            assert len(items) == len(stored)

    def old_codec() -> None:
        for _ in range(PEERS):
            body = json.dumps({"events": [to_wire(h, ev, sig) for h, ev, sig in stored]},
                              separators=(",", ":")).encode()
            assert len(EventBatch.model_validate_json(body).events) == n

    def new_codec() -> None:
        parts = [wire.event_bytes(ev, sig) for _h, ev, sig in stored]
        for _ in range(PEERS):
            assert len(wire.decode(wire.GossipIn, wire.join_list(b"events", parts)).events) == n

    def sign_only() -> None:
        body = wire.join_list(b"events", [wire.event_bytes(ev, sig) for _h, ev, sig in stored])
        for _ in range(PEERS):
            _sign_check(body, addr)

    n = args.events
    paths: dict[str, Callable[[], None]] = {"stdlib+pydantic": old, "wire": new, "sign_verify": sign_only,
                                            "codec:stdlib+pydantic": old_codec, "codec:wire": new_codec}
    best: dict[str, float] = {k: float("inf") for k in paths}
    for _ in range(args.rounds):
        for name, fn in paths.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    sv = best["sign_verify"] / n * 1e6
    for name in ("stdlib+pydantic", "wire"):
        row: dict[str, Any] = {"path": name, "events": n, "payload_bytes": args.payload, "peers": PEERS,
                               "us_per_event": round(best[name] / n * 1e6, 2),
                               "encode_decode_us_per_event": round(best["codec:" + name] / n * 1e6, 2),
                               "sign_verify_us_per_event": round(sv, 2)}
        print(json.dumps(row))


if __name__ == "__main__":
    main()
