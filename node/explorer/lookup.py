"""Find an event's block through the nodes given to the explorer, then prove it with the chain alone.

The chain stores headers, not events, so only a node can say which block an event is in: the
explorer asks each `--node URL` in turn (`GET /v1/events/{hash}`: block, index, header hash,
Merkle proof). Nothing a node says is trusted: the answer counts only when the chain confirms it,
at the page's pinned block -- the header is committed (its log, calldata and `headerHashAt` agree,
on v2 its history proof holds, and its signatures verify), the contract's `verifyInclusion` accepts
the proof, the Merkle proof holds against the header's eventsRoot off-chain too, and the event the
node returns hashes to the hash asked for. A node that lies or is down is reported and the next one is asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from node.chain.history import RegistryHistory
from node.protocol.eip712 import hash_event
from node.protocol.hexutil import hx, unhex
from node.protocol.types import Event


@dataclass
class NodeAnswer:
    """What one node said about the event (status: committed, pending, unknown or error)."""

    url: str
    status: str
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status, "detail": self.detail}


def ask_node(url: str, event_hash: bytes, timeout: float = 5.0) -> NodeAnswer:
    """One node's answer to `GET /v1/events/{hash}`; never raises (a failure is an "error" answer)."""
    try:
        r = httpx.get(f"{url.rstrip('/')}/v1/events/{hx(event_hash)}", timeout=timeout)
    except httpx.HTTPError as exc:
        return NodeAnswer(url, "error", f"unreachable: {type(exc).__name__}: {exc}")
    if r.status_code == 404:
        return NodeAnswer(url, "unknown", "the node does not know this event")
    if r.status_code != 200:
        return NodeAnswer(url, "error", f"HTTP {r.status_code}: {r.text[:200]}")
    try:
        data = r.json()
        status = str(data["status"])
    except (ValueError, KeyError, TypeError) as exc:
        return NodeAnswer(url, "error", f"not an event status: {exc}")
    if status not in ("committed", "pending"):
        return NodeAnswer(url, "error", f"unexpected status {status!r}")
    return NodeAnswer(url, status, "", data)


def _check(hist: RegistryHistory, event_hash: bytes, ans: NodeAnswer, at: int) -> dict[str, Any]:
    """The chain's verdict on one node's "committed" answer."""
    d = ans.data
    out: dict[str, Any] = {"node": ans.url, "problems": []}
    problems: list[str] = out["problems"]
    try:
        stream_id = unhex(d["stream_id"])
        number, index = int(d["block"]), int(d["index"])
        header_hash = unhex(d["header_hash"])
        proof = [unhex(p) for p in d["proof"]]
        ev = d["event"]
        event = Event(unhex(ev["stream_id"]), str(ev["author"]), int(ev["nonce"]), int(ev["kind"]),
                      unhex(ev["payload"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problems.append(f"the node's answer is malformed: {type(exc).__name__}: {exc}")
        out["ok"] = False
        return out
    if len(stream_id) != 32 or len(header_hash) != 32 or any(len(p) != 32 for p in proof):
        problems.append("the node's answer has hashes that are not 32 bytes")
        out["ok"] = False
        return out
    out.update({"stream": hx(stream_id), "number": number, "index": index, "headerHash": hx(header_hash),
                "proof": [hx(p) for p in proof]})
    checks: dict[str, bool | None] = {}
    try:
        checks["eventHash"] = hash_event(event) == event_hash and event.stream_id == stream_id
    except Exception as exc:  # noqa: BLE001 -- whatever the node sent: a bad address, a huge nonce, ...
        checks["eventHash"] = False
        problems.append(f"the node's event does not hash: {exc}")
    if not checks["eventHash"]:
        problems.append("the event the node returned does not hash to the hash asked for")
    rec = hist.find_header(header_hash, stream_id, number, at=at, include_rejected=False)
    checks["headerCommitted"] = rec is not None and rec.header is not None
    if rec is None or rec.header is None:
        problems.append(f"header {hx(header_hash)} is not committed as #{number} of the stream at block {at}")
        out.update({"checks": checks, "ok": False})
        return out
    v = rec.verification
    checks["headerVerified"] = v is not None and v.ok
    if v is not None and not v.ok:
        problems += [f"header: {p}" for p in v.problems]
    res = hist.verify_inclusion(rec.header, proof, index, event_hash, block=at)
    checks["onchainInclusion"] = res["onchain"]
    checks["offchainInclusion"] = res["offchain"]
    checks[res["committedBy"]] = res["offchainCommitted"]
    if res["onchain"] is not True:
        problems.append("the contract's verifyInclusion does not accept the proof"
                        + (f": {res['error']}" if res.get("error") else ""))
    if not res["offchain"]:
        problems.append("the Merkle proof does not hold against the header's eventsRoot")
    out.update({"checks": checks, "ok": all(c is True for c in checks.values())})
    return out


def find_event(hist: RegistryHistory, nodes: list[str], event_hash: bytes, at: int,
               timeout: float = 5.0) -> dict[str, Any]:
    """Ask the nodes in turn until one's "committed" answer is proven on-chain.

    `status`: proven (a node's answer holds on-chain), disproven (nodes answered, none held), pending
    (a node has the event, not yet in a block), unknown (no node knows it), or no-nodes."""
    answers: list[NodeAnswer] = []
    checked: list[dict[str, Any]] = []
    for url in nodes:
        ans = ask_node(url, event_hash, timeout)
        answers.append(ans)
        if ans.status != "committed":
            continue
        res = _check(hist, event_hash, ans, at)
        checked.append(res)
        if res["ok"]:
            break
    proven = next((c for c in checked if c["ok"]), None)
    if not nodes:
        status = "no-nodes"
    elif proven is not None:
        status = "proven"
    elif checked:
        status = "disproven"
    elif any(a.status == "pending" for a in answers):
        status = "pending"
    else:
        status = "unknown"
    return {"eventHash": hx(event_hash), "at": at, "status": status,
            "nodes": [a.to_json() for a in answers], "result": proven or (checked[-1] if checked else None)}
