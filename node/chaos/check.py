"""End checks of a network, from the chain and from every node (used by the chaos run and the reorg tests).

- every node's blocks 1..head of each stream are the chain's headers (those it keeps: a node that started
  the stream from a snapshot answers 410 below it) (v1 `headerHashAt`; v2, which keeps
  no hash per number, the commit logs' hashes, the last one confirmed by `isHead`), and its head is the
  chain's head;
- every event the clients got a 2xx for is in exactly one block of the canonical chain.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from node.protocol.hexutil import hx, unhex

if TYPE_CHECKING:
    from node.chain.registry import Registry


@dataclass
class CheckResult:
    ok: bool = True
    heads: dict[str, int] = field(default_factory=dict)  # stream -> chain head
    committed: int = 0  # accepted events found in the canonical blocks
    lost: list[str] = field(default_factory=list)  # accepted, in no canonical block
    doubled: list[str] = field(default_factory=list)  # in more than one canonical block (or twice in one)
    mismatches: list[str] = field(default_factory=list)  # a node's block that is not the chain's

    def fail(self, why: str) -> None:
        self.ok = False
        if len(self.mismatches) < 50:
            self.mismatches.append(why)


PRUNED: dict = {}  # a 410: the block predates the history this node keeps (a snapshot start, retain_blocks)


def _block(http: httpx.Client, url: str, sid: bytes, n: int) -> dict | None:
    try:
        r = http.get(f"{url}/v1/streams/{hx(sid)}/blocks/{n}", params={"events": "false"})
    except httpx.HTTPError:
        return None
    if r.status_code == 410:
        return PRUNED
    return r.json() if r.status_code == 200 else None


def check_network(reg: Registry, urls: Sequence[str], streams: Iterable[bytes], accepted: Iterable[bytes],
                  *, settle_s: float = 60.0) -> CheckResult:
    """Wait up to `settle_s` for every node to reach the chain's heads, then compare. Every node's blocks
    must equal the chain's headers; each accepted event must be in exactly one canonical block."""
    res = CheckResult()
    want = set(accepted)
    seen: Counter[bytes] = Counter()
    with httpx.Client(timeout=10.0, trust_env=False) as http:
        for sid in streams:
            # The chain's head and every node's, read together until they agree (or the deadline): a node can
            # become a replica during the wait (replaceReplica after the faults) and then sync the stream.
            deadline = time.monotonic() + settle_s
            if not reg.replicas_of(sid):  # not on chain (a reorg orphaned its creation): no node may serve it
                while (served := [u for u in urls if _head(http, u, sid) != -1]) and time.monotonic() < deadline:
                    time.sleep(0.5)
                for u in served:
                    res.fail(f"{u}: serves {hx(sid)[:10]}, which is not on chain")
                continue
            while True:
                at = reg.block_number()  # the head and the hashes below read at one block
                head = reg.stream_head(sid, at).number
                heads = {u: _head(http, u, sid) for u in urls}
                if all(h == head for h in heads.values()) or time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
            res.heads[hx(sid)] = head
            chain = chain_hashes(reg, sid, head, at)
            if head and chain.get(head) is None:
                res.fail(f"the chain's logs of {hx(sid)[:10]} do not reach its head {head}")
            for u, h in heads.items():
                if h != head:
                    res.fail(f"{u}: head of {hx(sid)[:10]} is {h}, the chain's is {head}")
            for n in range(1, head + 1):
                blocks = [_block(http, u, sid, n) for u in urls]
                for u, b in zip(urls, blocks, strict=True):
                    if b is PRUNED:  # this node keeps the stream from a later snapshot; the others hold block n
                        continue
                    if b is None or unhex(b["header_hash"]) != chain.get(n):
                        expect = chain.get(n)
                        res.fail(f"{u}: block {n} of {hx(sid)[:10]} is {None if b is None else b['header_hash'][:12]}, "
                                 f"the chain's is {None if expect is None else hx(expect)[:12]}")
                ref = next((b for b in blocks if b and unhex(b["header_hash"]) == chain.get(n)), None)
                if ref is not None:
                    seen.update(unhex(x) for x in ref["event_hashes"])
    res.committed = sum(1 for h in want if seen[h] >= 1)
    res.lost = [hx(h) for h in want if seen[h] == 0]
    res.doubled = [hx(h) for h, k in seen.items() if k > 1]
    if res.lost or res.doubled:
        res.ok = False
    return res


def chain_hashes(reg: Registry, sid: bytes, head: int, at: int) -> dict[int, bytes]:
    """The committed header hash of each number 1..head of a stream as of block `at`: v1's headerHashAt;
    v2's commit logs (the canonical chain's, one per number), the head's kept only if `isHead` confirms it."""
    if reg.version != 2:
        return {n: reg.header_hash_at(sid, n, at) for n in range(1, head + 1)}
    out = {c.number: c.header_hash for c in reg.committed_logs(0, at, stream_id=sid)}
    if head and (head not in out or not reg.is_head(sid, head, out[head], at)):
        out.pop(head, None)
    return out


def _head(http: httpx.Client, url: str, sid: bytes) -> int:
    try:
        r = http.get(f"{url}/v1/streams/{hx(sid)}")
    except httpx.HTTPError:
        return -1
    return int(r.json()["head_number"]) if r.status_code == 200 else -1
