"""Registry v2's history as a reader of the chain alone sees it (node/chain/history.py uses it).

v2 keeps no header hash per (stream, number): one `MiniblocksCommitted` log per commit transaction
carries the accepted header hashes and the history root, the transaction's input the packed records
(docs/protocol.md, "Version 2"). Here: a stream's commits and rejections in chain order with the head
each one built on (`StreamView`), the full header of a record rebuilt and matched to its logged hash
(`rebuild`), and the history proof of a commit built from the logs (`HistoryIndex`) and checked
against the registry's history views at one block (`HistoryState`, `node.protocol.v2.verify_history`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from node.protocol import v2
from node.protocol.types import ZERO32, Header

from .logs import HeadersCommitted, MiniblockCommitted, MiniblockRejected

StreamEvent = MiniblockCommitted | MiniblockRejected
EventKey = tuple[int, int, int]  # (block, log index, position among the commit's accepted headers; -1: a rejection)


def event_key(e: StreamEvent) -> EventKey:
    """Chain order of v2 stream events: a transaction's rejections precede its commit log."""
    return (e.block_number, e.log_index, e.position if isinstance(e, MiniblockCommitted) else -1)


@dataclass
class StreamView:
    """One stream's commits and rejections up to a block, in chain order, with the full hash of the
    head each one was checked against (the genesis hash before the first commit)."""

    stream_id: bytes
    genesis: bytes
    events: list[StreamEvent]
    head_before: dict[EventKey, bytes] = field(default_factory=dict)
    hash_at: dict[int, bytes] = field(default_factory=dict)  # number -> committed header hash (0: genesis)

    @classmethod
    def of(cls, stream_id: bytes, genesis: bytes, events: Sequence[StreamEvent]) -> StreamView:
        evs = sorted(events, key=event_key)
        view = cls(stream_id, genesis, evs, hash_at={0: genesis})
        head = genesis
        for e in evs:
            view.head_before[event_key(e)] = head
            if isinstance(e, MiniblockCommitted):
                view.hash_at.setdefault(e.number, e.header_hash)
                head = e.header_hash
        return view

    @property
    def commits(self) -> list[MiniblockCommitted]:
        return [e for e in self.events if isinstance(e, MiniblockCommitted)]

    def heads_for(self, e: StreamEvent) -> list[bytes]:
        """The heads record `e` may have been checked against: the head before its transaction's commit
        log, then (a rejection) each header of the stream its transaction accepted."""
        out = [self.head_before.get(event_key(e), self.genesis)]
        if isinstance(e, MiniblockRejected):
            out += [c.header_hash for c in self.commits if c.tx_hash == e.tx_hash]
        return out


def accepted_indices(accepted: int, n: int) -> list[int]:
    """The batch indices of a commit's accepted records, by position (the log's `accepted` bitmap)."""
    return [i for i in range(n) if accepted >> i & 1]


def rebuild(rec: v2.DecodedRecord, replicas: Sequence[str], reveals: Sequence[bytes], heads: Sequence[bytes],
            header_hash: bytes, *, rejected: bool) -> Header | None:
    """The full header of a record (leader from the replica list, reveal from the table, prevHash[0:18]
    from the head), kept only if it hashes to the logged hash. A rejected record may have been hashed
    with leader and reveal 0 (not the elected position), so those are tried too."""
    leaders = [replicas[rec.leader_pos]] if rec.leader_pos < len(replicas) else []
    cands = list(reveals)
    if rejected:
        leaders.append(v2.ZERO_ADDRESS)
        cands.append(ZERO32)
    return v2.rebuild_header(rec, leaders, cands, heads, header_hash)


@dataclass
class HistoryIndex:
    """Every commit log up to one block, by commit index: what the proof of any commit needs."""

    logs: dict[int, HeadersCommitted]
    roots: list[bytes] = field(default_factory=list)  # by commit index, when complete
    complete: bool = False  # commits 0..n-1 all seen (a scan that started late or was truncated cannot prove)

    @classmethod
    def of(cls, logs: Sequence[HeadersCommitted]) -> HistoryIndex:
        by = {e.commit.commit_index: e for e in logs}
        complete = all(i in by for i in range(len(by)))
        return cls(by, [by[i].commit.history_root for i in range(len(by))] if complete else [], complete)

    def proof(self, commit_index: int, position: int) -> v2.HistoryProof | None:
        """The proof of header `position` of commit `commit_index` (to its window's checkpoint when the
        window is closed, else to the latest commit); None when the logs do not allow one."""
        if not self.complete or commit_index not in self.logs:
            return None
        try:
            return v2.history_proof(self.roots, self.logs[commit_index].commit.header_hashes, commit_index, position)
        except (IndexError, ValueError):
            return None


@dataclass
class HistoryState:
    """The registry's history views at one block: commitCount, historyAcc, and the checkpoints read so
    far (each one eth_call, read when a proof ends in its window)."""

    commit_count: int
    acc: bytes
    read_checkpoint: Callable[[int], bytes]
    checkpoints: dict[int, bytes] = field(default_factory=dict)

    def checkpoint(self, window: int) -> bytes:
        if window not in self.checkpoints:
            self.checkpoints[window] = self.read_checkpoint(window)
        return self.checkpoints[window]

    def verify(self, header_hash: bytes, proof: v2.HistoryProof) -> bool:
        """`verifyHeaderCommitted`'s rule, off-chain, against this state (node.protocol.v2.verify_history)."""
        last = proof.commit_index + len(proof.later_roots)
        w = v2.HISTORY_WINDOW
        cp = self.checkpoint(last // w) if last < self.commit_count - 1 and last % w == w - 1 else None
        return v2.verify_history(header_hash, proof, commit_count=self.commit_count, acc_now=self.acc,
                                 checkpoint=cp)
