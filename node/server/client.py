"""A small HTTP client of the node API (tests, load generator, examples): sign, post, read, wait."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from node.protocol.eip712 import hash_event, sign_event
from node.protocol.types import Domain, Event

from .models import hx


def signed_event_json(domain: Domain, ev: Event, key: bytes) -> dict[str, Any]:
    sig = sign_event(domain, ev, key)
    return {"event": {"stream_id": hx(ev.stream_id), "author": ev.author, "nonce": ev.nonce, "kind": ev.kind,
                      "payload": hx(ev.payload)}, "signature": hx(sig)}


class NodeClient:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def post_event(self, body: dict[str, Any]) -> httpx.Response:
        return self.http.post("/v1/events", json=body)

    def post_batch(self, bodies: list[dict[str, Any]]) -> httpx.Response:
        return self.http.post("/v1/events/batch", json={"events": bodies})

    def gossip(self, bodies: list[dict[str, Any]], key: bytes | None = None) -> httpx.Response:
        """POST /peer/gossip, signed as the node whose key is `key` (unsigned without: 401)."""
        return self.peer("POST", "/peer/gossip", key=key, json={"events": bodies})

    def peer(self, method: str, path: str, *, key: bytes | None, json: Any = None,
             params: dict[str, Any] | None = None, ts_ms: int | None = None, domain: Domain | None = None,
             extra_headers: dict[str, str] | None = None) -> httpx.Response:
        """A /peer/* request as a node sends it: body bytes, path and query signed with `key` under the
        node's registry domain at the node's chain time (both read from /v1/info unless given)."""
        import json as jsonlib
        from urllib.parse import urlencode

        from eth_account import Account

        from node.protocol.peer_auth import sign_request

        target = path + ("?" + urlencode(params) if params else "")
        body = b"" if json is None else jsonlib.dumps(json, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"} if json is not None else {}
        if key is not None:
            if domain is None or ts_ms is None:
                info = self.http.get("/v1/info").json()
                domain = domain or Domain(info["chain_id"], info["registry"],
                                          version=str(info.get("domain_version", "1")))
                ts_ms = ts_ms if ts_ms is not None else int(info["chain_time"] * 1000)
            headers.update(sign_request(domain, key, Account.from_key(key).address, method, target, body, ts_ms))
        headers.update(extra_headers or {})
        return self.http.request(method, target, content=body or None, headers=headers)

    def event(self, h: bytes | str, stream: bytes | None = None) -> dict | None:
        """GET /v1/events/{h}; with its `stream`, a node that does not store the stream asks a replica."""
        params = {"stream": hx(stream)} if stream is not None else None
        r = self.http.get(f"/v1/events/{h if isinstance(h, str) else hx(h)}", params=params)
        return r.json() if r.status_code == 200 else None

    def stream(self, sid: bytes) -> dict:
        return self.http.get(f"/v1/streams/{hx(sid)}").raise_for_status().json()

    def block(self, sid: bytes, number: int) -> dict | None:
        r = self.http.get(f"/v1/streams/{hx(sid)}/blocks/{number}")
        return r.json() if r.status_code == 200 else None

    def health(self) -> dict:
        return self.http.get("/healthz").json()

    def metrics(self) -> str:
        return self.http.get("/metrics").text

    def wait_committed(self, hashes: list[bytes], timeout: float = 30.0, interval: float = 0.2,
                       stream_of: Mapping[bytes, bytes] | None = None) -> dict[bytes, dict]:
        """Poll until every event is committed here (`stream_of`: event -> its stream, for a node that does not
        store it: it asks a replica); returns their statuses. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        done: dict[bytes, dict] = {}
        while time.monotonic() < deadline:
            for h in hashes:
                if h in done:
                    continue
                st = self.event(h, stream_of.get(h) if stream_of else None)
                if st and st["status"] == "committed":
                    done[h] = st
            if len(done) == len(hashes):
                return done
            time.sleep(interval)
        raise TimeoutError(f"{len(hashes) - len(done)} of {len(hashes)} events not committed at {self.url}")


class Author:
    """A client key that signs events for one domain, with its own nonce counter per stream."""

    def __init__(self, domain: Domain, key: bytes | None = None) -> None:
        from eth_account import Account

        acct = Account.from_key(key) if key else Account.create()
        self.key = bytes(acct.key)
        self.address = acct.address
        self.domain = domain
        self.nonces: dict[bytes, int] = {}
        self.stream_of: dict[bytes, bytes] = {}  # every event made here -> its stream (NodeClient.wait_committed)

    def event(self, sid: bytes, kind: int = 0, payload: bytes = b"", nonce: int | None = None) -> tuple[bytes, dict]:
        if nonce is None:
            nonce = self.nonces.get(sid, 0)
            self.nonces[sid] = nonce + 1
        ev = Event(sid, self.address, nonce, kind, payload)
        h = hash_event(ev)
        self.stream_of[h] = sid
        return h, signed_event_json(self.domain, ev, self.key)
