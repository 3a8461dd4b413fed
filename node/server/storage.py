"""SQLite storage of one node (WAL): events (mini-pool = not yet in a block), blocks, stream heads,
on-chain commits seen, local proposals, and cursors.

Every write that matters is one transaction: an accepted event is committed before the HTTP answer,
and a block is stored together with the removal of its events from the mini-pool. The mini-pool is also
held in memory (node/server/pool.py, written only here, after each transaction commits): SQLite is its
journal, loaded back in one query at start.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.protocol.member_tree import MemberTree
from node.protocol.snapshot import Snapshot
from node.protocol.state import StateDelta
from node.protocol.state_root import NonceFrontier, block_leaves, nonce_leaf
from node.protocol.types import Event, EventKind, Header

from .bounded import MAP_BOUND, BoundedDict
from .fastpath import trusted_event
from .pool import PendingPool
from .records import StoredEvent

# events: the pool index (stream_id, author) WHERE block IS NULL serves the start-up load of the in-memory pool
# (every other pool read is from memory; dropping it measured no faster), so an insert maintains four B-trees
# (rowid table, hash, replay key, pool). Not WITHOUT ROWID: rows of ~300 B would
# sit whole in the interior pages of the table's B-tree (measured: inserts and reads by hash got slower).
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    hash       BLOB PRIMARY KEY,
    stream_id  BLOB NOT NULL,
    author     TEXT NOT NULL,
    nonce      INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    payload    BLOB NOT NULL,
    signature  BLOB NOT NULL,
    received   REAL NOT NULL,
    gossiped   REAL NOT NULL DEFAULT 0,
    block      INTEGER,
    idx        INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS events_replay ON events(stream_id, author, nonce);
CREATE INDEX IF NOT EXISTS events_pool_author ON events(stream_id, author) WHERE block IS NULL;
DROP INDEX IF EXISTS events_pool;
CREATE TABLE IF NOT EXISTS blocks (
    stream_id     BLOB NOT NULL,
    number        INTEGER NOT NULL,
    header_hash   BLOB NOT NULL,
    prev_hash     BLOB NOT NULL,
    events_root   BLOB NOT NULL,
    event_count   INTEGER NOT NULL,
    epoch         INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    leader        TEXT NOT NULL,
    randao_reveal BLOB NOT NULL,
    state_root    BLOB NOT NULL,
    event_hashes  BLOB NOT NULL,
    tx_hash       BLOB,
    applied_at    REAL NOT NULL,
    PRIMARY KEY (stream_id, number)
);
CREATE TABLE IF NOT EXISTS streams (
    stream_id    BLOB PRIMARY KEY,
    genesis_hash BLOB NOT NULL,
    replicas     TEXT NOT NULL,
    head_number  INTEGER NOT NULL DEFAULT 0,
    head_hash    BLOB NOT NULL,
    created_block INTEGER NOT NULL DEFAULT 0,
    creator      TEXT,
    invite_only  INTEGER NOT NULL DEFAULT 0,
    created_ts   INTEGER NOT NULL DEFAULT 0
);
-- A stream's member slots (docs/protocol.md, "Stream state"): slot i is its i-th JOIN applied; left_at is
-- the block of that member's LEAVE (the slot is then empty). One row per JOIN: a block writes only its own.
CREATE TABLE IF NOT EXISTS members (
    stream_id  BLOB NOT NULL,
    slot       INTEGER NOT NULL,
    member     TEXT NOT NULL,
    joined_at  INTEGER NOT NULL,
    left_at    INTEGER,
    PRIMARY KEY (stream_id, slot)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_present ON members(stream_id, member) WHERE left_at IS NULL;
CREATE TABLE IF NOT EXISTS commits (
    stream_id    BLOB NOT NULL,
    number       INTEGER NOT NULL,
    header_hash  BLOB NOT NULL,
    prev_hash    BLOB NOT NULL,
    events_root  BLOB NOT NULL,
    event_count  INTEGER NOT NULL,
    leader       TEXT NOT NULL,
    tx_hash      BLOB NOT NULL,
    chain_block  INTEGER NOT NULL,
    block_hash   BLOB NOT NULL DEFAULT x'',
    chain_ts     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream_id, number)
);
CREATE TABLE IF NOT EXISTS proposals (
    header_hash  BLOB PRIMARY KEY,
    stream_id    BLOB NOT NULL,
    number       INTEGER NOT NULL,
    header       TEXT NOT NULL,
    event_hashes BLOB NOT NULL,
    created      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chain_blocks (number INTEGER PRIMARY KEY, hash BLOB NOT NULL);
"""

# Snapshots and pruning (docs/node.md, "Snapshots"). `history.base`: the first block whose block row and
# events are stored here (older ones were pruned, or came before the snapshot this node started from);
# no row = 1. `used_nonces`: the (author, nonce) of committed events no longer in `events` (pruned, or
# carried by a snapshot): the replay rule still needs them; `seq` is the leaf index in the nonce accumulator
# (commit order: these are exactly blocks 1..base-1, so they precede every stored event). `snapshots`:
# zlib(body), newest few per stream. `state_frontier` (docs/node.md, "Stream state on disk"): the nonce
# accumulator and the policy after block `number`, a row per block that had events (and at a snapshot), the
# newest at or below head - STATE_HISTORY_DEPTH and every later one kept: start-up reads the newest, a
# rollback to any block of the last STATE_HISTORY_DEPTH reads the newest at or below it.
SNAPSHOT_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (stream_id BLOB PRIMARY KEY, base INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS used_nonces (
    stream_id BLOB NOT NULL,
    author    TEXT NOT NULL,
    nonce     INTEGER NOT NULL,
    seq       INTEGER,
    PRIMARY KEY (stream_id, author, nonce)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_frontier (
    stream_id   BLOB NOT NULL,
    number      INTEGER NOT NULL,
    invite_only INTEGER NOT NULL,
    leaves      INTEGER NOT NULL,
    peaks       BLOB NOT NULL,
    PRIMARY KEY (stream_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id   BLOB NOT NULL,
    number      INTEGER NOT NULL,
    header_hash BLOB NOT NULL,
    digest      BLOB NOT NULL,
    size        INTEGER NOT NULL,
    data        BLOB NOT NULL,
    created     REAL NOT NULL,
    PRIMARY KEY (stream_id, number)
);
"""
CURSOR_KEY = "chain_cursor"
CHAIN_BLOCKS_KEPT = 512  # chain block hashes kept below the cursor (deepest reorg that rolls back exactly)

STATE_HISTORY_DEPTH = 64  # blocks of state_frontier rows kept behind the head (rollback without recomputing)


@dataclass(slots=True)
class StreamRow:
    stream_id: bytes
    genesis_hash: bytes
    replicas: list[str]
    head_number: int
    head_hash: bytes


@dataclass(slots=True)
class StreamState:
    """A stream's state after block `number`: its member tree, creator, JOIN policy and nonce accumulator
    (the three parts of stateRoot, node/protocol/state_root.py).

    Loaded once from the member rows and the newest `state_frontier` row, then kept in step by
    `apply_block` (never rebuilt per block)."""

    number: int
    members: MemberTree
    creator: str | None
    invite_only: bool
    nonces: NonceFrontier = NonceFrontier()


@dataclass(slots=True)
class BlockRow:
    header: Header
    header_hash: bytes
    event_hashes: list[bytes]
    tx_hash: bytes | None


@dataclass(slots=True)
class CommitRow:
    stream_id: bytes
    number: int
    header_hash: bytes
    prev_hash: bytes
    events_root: bytes
    event_count: int
    leader: str
    tx_hash: bytes
    chain_block: int
    block_hash: bytes = b""  # the hash of chain block `chain_block` when the commit was seen there
    timestamp: int = 0  # that chain block's timestamp (the head's timestamp; 0: not recorded, an older store)


@dataclass(slots=True)
class StoredHead:
    """What the store knows of a stream's chain head, for a start without per-stream chain reads: the newest
    commit seen (else the genesis), its chain block's timestamp (0: not recorded, an older store) and the
    replica list."""

    stream_id: bytes
    replicas: list[str]
    number: int
    header_hash: bytes
    timestamp: int
    local_head: int


@dataclass(slots=True)
class Rollback:
    """Blocks a stream gave back: its head went back to `head_number`; the events of the blocks after it
    are in the mini-pool again."""

    stream_id: bytes
    head_number: int
    blocks: int
    events: int


@dataclass(slots=True)
class BlockApply:
    """One committed block to store (`Storage.apply_blocks`): its header, hash, ordered events, the state
    change it makes and the commit transaction."""

    header: Header
    header_hash: bytes
    events: Sequence[tuple[bytes, Event, bytes]]
    delta: StateDelta
    tx_hash: bytes | None


class ParentMismatch(RuntimeError):
    """A block does not build on the local head (its prev_hash is not the head's hash)."""


def split_hashes(blob: bytes) -> list[bytes]:
    return [bytes(blob[i:i + 32]) for i in range(0, len(blob), 32)]


def header_to_json(h: Header) -> str:
    return json.dumps([h.stream_id.hex(), h.number, h.prev_hash.hex(), h.events_root.hex(), h.event_count,
                       h.epoch, h.attempt, h.leader, h.randao_reveal.hex(), h.state_root.hex()])


def header_from_json(s: str) -> Header:
    a = json.loads(s)
    return Header(bytes.fromhex(a[0]), a[1], bytes.fromhex(a[2]), bytes.fromhex(a[3]), a[4], a[5], a[6], a[7],
                  bytes.fromhex(a[8]), bytes.fromhex(a[9]))


class ReplayError(ValueError):
    """Another event of this (stream, author, nonce) is already known."""


class Storage:
    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self._migrate()
        self.db.executescript(SCHEMA)
        self.db.executescript(SNAPSHOT_SCHEMA)
        self._migrate_commits()
        self._streams: dict[bytes, StreamRow | None] = {}  # cache of stream rows (this class is the only writer)
        # stream states (member trees) in step with the head: this class is the only writer
        self._states: dict[bytes, StreamState] = BoundedDict(MAP_BOUND["per_stream"])
        # told, right after the commit, of each applied block and of newly stored events (node/server/feed.py)
        self.listeners: list[Any] = []
        # history.base per stream with a row (pruned or started from a snapshot); only those have used_nonces
        self._bases: dict[bytes, int] = {bytes(r[0]): r[1]
                                         for r in self.db.execute("SELECT stream_id, base FROM history")}
        # the mini-pool in memory (this class is the only writer): loaded once, then changed after each commit
        self.pool = PendingPool()
        self.pool.add(StoredEvent(bytes(r[0]), trusted_event(bytes(r[1]), r[2], r[3], r[4], bytes(r[5])), bytes(r[6]),
                                  None, None, r[7], r[8]) for r in self.db.execute(
            "SELECT hash, stream_id, author, nonce, kind, payload, signature, received, gossiped FROM events"
            " WHERE block IS NULL ORDER BY received, rowid"))

    def _migrate(self) -> None:
        """Columns added since a data dir was created (the member set moved to the members table)."""
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(streams)")}
        if cols and "creator" not in cols:
            self.db.execute("ALTER TABLE streams ADD COLUMN creator TEXT")
            self.db.execute("ALTER TABLE streams ADD COLUMN invite_only INTEGER NOT NULL DEFAULT 0")
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(used_nonces)")}
        if cols and "seq" not in cols:  # rows from before: their order is unknown (rebuild gives up on them)
            self.db.execute("ALTER TABLE used_nonces ADD COLUMN seq INTEGER")

    def _notify(self, what: str, *args: Any) -> None:
        for lst in self.listeners:
            try:
                getattr(lst, what)(*args)
            except Exception:  # noqa: BLE001 - a listener's bug must not undo or block a committed write
                logging.getLogger("node.storage").exception("storage listener %s failed", what)

    def close(self) -> None:
        self.db.close()

    def _migrate_commits(self) -> None:
        """Columns that older stores lack (block hashes: reorg handling; timestamps: start from the store)."""
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(commits)")}
        if "block_hash" not in cols:
            self.db.execute("ALTER TABLE commits ADD COLUMN block_hash BLOB NOT NULL DEFAULT x''")
        if "chain_ts" not in cols:  # the head's timestamp, so a restart needs no chain read per stream
            self.db.execute("ALTER TABLE commits ADD COLUMN chain_ts INTEGER NOT NULL DEFAULT 0")
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(streams)")}
        if "created_ts" not in cols:
            self.db.execute("ALTER TABLE streams ADD COLUMN created_ts INTEGER NOT NULL DEFAULT 0")

    # ---- kv / cursors -------------------------------------------------------------------------
    def get_kv(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_kv(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, value))

    # ---- events / mini-pool -------------------------------------------------------------------
    def add_events(self, items: Sequence[tuple[bytes, Event, bytes]], now: float | None = None,
                   gossiped: bool = False) -> list[str]:
        """Insert pending events in one transaction. Per item: 'new', 'known' (same hash) or 'replay'.

        One lookup of the batch's keys and one `executemany` of the new rows (not a lookup and an insert
        per event); the unique keys still decide, inside the transaction."""
        now = time.time() if now is None else now
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            out = self.replay_statuses(items, cur)
            first: dict[tuple[bytes, str, int], int] = {}
            rows: list[tuple] = []
            sent = now if gossiped else 0
            for i, ((h, ev, sig), st) in enumerate(zip(items, out, strict=True)):
                if st is not None:
                    continue
                key = (ev.stream_id, ev.author, ev.nonce)
                j = first.get(key)
                if j is not None:  # the same key earlier in this batch
                    out[i] = "known" if items[j][0] == h else "replay"
                    continue
                first[key] = i
                out[i] = "new"
                rows.append((ev.stream_id, ev.author, ev.nonce, h, ev.kind, ev.payload, sig, now, sent))
            if rows:
                cur.executemany("INSERT INTO events(stream_id, author, nonce, hash, kind, payload, signature, received,"
                                " gossiped) VALUES(?,?,?,?,?,?,?,?,?)", rows)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if rows:
            self.pool.add(StoredEvent(items[i][0], items[i][1], items[i][2], None, None, now, sent)
                          for i in first.values())
        res = [st or "replay" for st in out]
        if self.listeners:
            self._notify("events_added", [it for it, st in zip(items, res, strict=True) if st == "new"])
        return res

    def replay_status(self, ev: Event, h: bytes) -> str | None:
        return self.replay_statuses([(h, ev, b"")])[0]

    def replay_statuses(self, items: Sequence[tuple[bytes, Event, bytes]],
                        cur: sqlite3.Cursor | None = None) -> list[str | None]:
        """Per item: 'known' (this event is stored), 'replay' (its nonce is used by another event) or None.
        Pending events are looked up in the pool in memory; the other keys (only committed rows can hold
        them) with one primary-key lookup per 300."""
        db = cur or self.db
        stored: dict[tuple[bytes, str, int], bytes] = {}
        pool_keys = self.pool.key_hash
        keys: list[tuple[bytes, str, int]] = []
        for key in {(ev.stream_id, ev.author, ev.nonce) for _h, ev, _s in items}:
            got = pool_keys(*key)
            if got is None:
                keys.append(key)
            else:
                stored[key] = got
        for k in range(0, len(keys), 300):
            chunk = keys[k:k + 300]
            # a join on the VALUES (not a row-value IN, which SQLite 3.40 plans as a scan): a key lookup each
            q = (f"SELECT e.stream_id, e.author, e.nonce, e.hash FROM (VALUES {','.join(['(?,?,?)'] * len(chunk))})"
                 " AS k CROSS JOIN events e ON e.stream_id=k.column1 AND e.author=k.column2 AND e.nonce=k.column3")
            for sid, a, n, h in db.execute(q, [x for key in chunk for x in key]):
                stored[(bytes(sid), a, n)] = bytes(h)
        out: list[str | None] = []
        for h, ev, _s in items:
            got = stored.get((ev.stream_id, ev.author, ev.nonce))
            if got is not None:
                out.append("known" if got == h else "replay")
            elif ev.stream_id in self._bases and self._nonce_used(ev):
                out.append("replay")
            else:
                out.append(None)
        return out

    def committed_with_nonce(self, ev: Event, h: bytes) -> bytes | None:
        """The hash of another event of the same (stream, author, nonce) already in a block, if any
        (bytes32(0) when only the nonce is known here: that event was pruned or predates our snapshot)."""
        row = self.db.execute("SELECT hash FROM events WHERE stream_id=? AND author=? AND nonce=? AND hash<>?"
                              " AND block IS NOT NULL", (ev.stream_id, ev.author, ev.nonce, h)).fetchone()
        if row is None and ev.stream_id in self._bases and self._nonce_used(ev):
            return bytes(32)
        return None if row is None else bytes(row[0])

    def _nonce_used(self, ev: Event) -> bool:
        """(stream, author, nonce) of a committed event that is no longer in `events`."""
        return self.db.execute("SELECT 1 FROM used_nonces WHERE stream_id=? AND author=? AND nonce=?",
                               (ev.stream_id, ev.author, ev.nonce)).fetchone() is not None

    def _row_event(self, r) -> StoredEvent:
        h, sid, author, nonce, kind, payload, sig, block, idx, received = r
        return StoredEvent(bytes(h), trusted_event(bytes(sid), author, nonce, kind, bytes(payload)), bytes(sig), block,
                           idx, received)

    _EV_COLS = "hash, stream_id, author, nonce, kind, payload, signature, block, idx, received"

    def get_event(self, h: bytes) -> StoredEvent | None:
        se = self.pool.get(h)
        if se is not None:
            return se
        r = self.db.execute(f"SELECT {self._EV_COLS} FROM events WHERE hash=?", (h,)).fetchone()
        return self._row_event(r) if r else None

    def get_events(self, hashes: Iterable[bytes]) -> dict[bytes, StoredEvent]:
        """The stored events of these hashes: pending ones from the pool in memory, the rest from the rows."""
        out: dict[bytes, StoredEvent] = {}
        hs: list[bytes] = []
        pool = self.pool
        for h in hashes:
            se = pool.get(h)
            if se is None:
                hs.append(h)
            else:
                out[h] = se
        for i in range(0, len(hs), 500):
            chunk = hs[i:i + 500]
            q = f"SELECT {self._EV_COLS} FROM events WHERE hash IN ({','.join('?' * len(chunk))})"
            for r in self.db.execute(q, chunk):
                se = self._row_event(r)
                out[se.hash] = se
        return out

    # Pool reads come from memory (self.pool): the rows are its journal.
    def pool_hashes(self, stream_id: bytes, limit: int | None = None) -> list[bytes]:
        """The stream's pending hashes, oldest received first (ties: as stored); with `limit`, at most that many."""
        return self.pool.hashes(stream_id, limit)

    def pool_oldest(self, stream_id: bytes, limit: int) -> list[bytes]:
        """At most `limit` of the stream's pending hashes, oldest received first (ties: as stored)."""
        return self.pool.hashes(stream_id, max(0, limit))

    def pool_count(self, stream_id: bytes, author: str | None = None) -> int:
        return self.pool.count(stream_id, author)

    def pool_size(self, stream_id: bytes) -> int:
        return self.pool.count(stream_id)

    def pool_total(self) -> int:
        return len(self.pool)

    def streams_with_pending(self) -> set[bytes]:
        return self.pool.streams()

    def drop_pool_events(self, hashes: Iterable[bytes]) -> None:
        hs = [h for h in hashes if h in self.pool]
        if hs:
            self.db.execute("BEGIN")
            try:
                self.db.executemany("DELETE FROM events WHERE hash=? AND block IS NULL", [(h,) for h in hs])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.pool.remove(hs)

    def prune_pool(self, stream_id: bytes, members: Container[str]) -> int:
        """Drop pending events that the members after the last block make invalid for good: a MESSAGE or
        LEAVE by a non-member, a JOIN by a member (unless the author has a pending event that could
        change that: a pending JOIN, resp. LEAVE)."""
        rows = [(se.hash, se.event.author, se.event.kind) for se in self.pool.of_stream(stream_id)]
        kinds: dict[str, set[int]] = {}
        for _h, a, k in rows:
            kinds.setdefault(a, set()).add(k)
        drop = []
        for h, a, k in rows:
            if k in (0, 2) and a not in members and 1 not in kinds[a]:
                drop.append(h)
            elif k == 1 and a in members and 2 not in kinds[a]:
                drop.append(h)
        self.drop_pool_events(drop)
        return len(drop)

    # Forwarding times live in the pool only (a hint: a restart forwards the pool again, from the
    # `gossiped` column written at insert, by mark_gossiped and by a rollback).
    def due_for_gossip(self, older_than: float, limit: int = 5000) -> list[StoredEvent]:
        """Pending events never forwarded or whose next forward is before `older_than`, oldest received first."""
        return self.pool.due(older_than, limit)

    def take_due_for_gossip(self, now: float, regossip_s: float, limit: int = 5000) -> list[StoredEvent]:
        """`due_for_gossip(now - regossip_s)` (at most `limit`, the earliest due first) with their next forward
        set to after `now + max(0, now - received - regossip_s)` (back-off: about as long again as it has been
        pending); in memory, no statement. Oldest (received) first."""
        return self.pool.take_due(now, regossip_s, limit)

    def mark_gossiped(self, hashes: Iterable[bytes], when: float | Sequence[float]) -> None:
        """Set the forwarded time: one for all, or one per hash (a time in the future delays the next forward).
        Written to the rows too (the hand-off's 'done' marks outlive a restart)."""
        hs = list(hashes)
        whens = [float(w) for w in when] if isinstance(when, Sequence) else [float(when)] * len(hs)
        self.db.execute("BEGIN")
        self.db.executemany("UPDATE events SET gossiped=? WHERE hash=?", list(zip(whens, hs, strict=False)))
        self.db.execute("COMMIT")
        self.pool.set_gossip_at(hs, whens)

    # ---- streams ------------------------------------------------------------------------------
    def upsert_stream(self, stream_id: bytes, genesis_hash: bytes, replicas: list[str], created_block: int,
                      creator: str | None = None, created_ts: int = 0) -> None:
        self.upsert_streams([(stream_id, genesis_hash, replicas, created_block, creator, created_ts)])

    _UPSERT_STREAM = ("INSERT INTO streams(stream_id, genesis_hash, replicas, head_number, head_hash, created_block,"
                      " creator, created_ts) VALUES(?,?,?,0,?,?,?,?) ON CONFLICT(stream_id) DO UPDATE SET"
                      " creator=coalesce(creator, excluded.creator), created_ts=max(created_ts, excluded.created_ts)")

    def upsert_streams(self, rows: Sequence[tuple[bytes, bytes, list[str], int, str | None, int]]) -> None:
        """Record created streams (id, genesis hash, replicas, created block, creator, block timestamp) in one
        transaction: a log range can create thousands (one fsync for all, not one each)."""
        for r in rows:
            self._streams.pop(r[0], None)
            self._states.pop(r[0], None)
        self.db.execute("BEGIN")
        try:
            self.db.executemany(self._UPSERT_STREAM, [(sid, gh, json.dumps(reps), gh, blk, creator, ts)
                                                      for sid, gh, reps, blk, creator, ts in rows])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    _STREAM_TABLES = ("blocks", "commits", "proposals", "members", "state_frontier", "used_nonces", "snapshots",
                      "history", "streams")

    def forget_stream(self, stream_id: bytes) -> bool:
        """Drop a stream the chain no longer has (a reorg removed its creation), in one transaction; False if
        it still holds blocks (not forgotten: a rollback must come first). Its pending events stay in the
        pool: if the creation is mined again, they are committed as before; the pool bounds hold them."""
        if self.db.execute("SELECT 1 FROM blocks WHERE stream_id=? LIMIT 1", (stream_id,)).fetchone():
            return False
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for table in self._STREAM_TABLES:
                self.db.execute(f"DELETE FROM {table} WHERE stream_id=?", (stream_id,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        finally:
            self._streams.pop(stream_id, None)
            self._states.pop(stream_id, None)
        self._bases.pop(stream_id, None)
        return True

    def set_replicas(self, stream_id: bytes, replicas: list[str]) -> None:
        self._streams.pop(stream_id, None)
        self.db.execute("UPDATE streams SET replicas=? WHERE stream_id=?", (json.dumps(replicas), stream_id))

    def _row_stream(self, r) -> StreamRow:
        return StreamRow(bytes(r[0]), bytes(r[1]), json.loads(r[2]), r[3], bytes(r[4]))

    def state(self, stream_id: bytes) -> StreamState | None:
        """The stream's state after its head (members, creator, policy); built from the rows once."""
        st = self._states.get(stream_id)
        if st is not None:
            return st
        r = self.db.execute("SELECT head_number, creator, invite_only FROM streams WHERE stream_id=?",
                            (stream_id,)).fetchone()
        if r is None:
            return None
        slots: list[str | None] = [m if left is None else None for m, left in self.db.execute(
            "SELECT member, left_at FROM members WHERE stream_id=? ORDER BY slot", (stream_id,))]
        f = self.db.execute("SELECT leaves, peaks FROM state_frontier WHERE stream_id=? ORDER BY number DESC LIMIT 1",
                            (stream_id,)).fetchone()
        nonces = NonceFrontier.from_stored(f[0], bytes(f[1])) if f else self.rebuild_nonces(stream_id, r[0])
        st = StreamState(r[0], MemberTree.from_slots(slots), r[1], bool(r[2]), nonces)
        self._states[stream_id] = st
        return st

    def rebuild_nonces(self, stream_id: bytes, number: int) -> NonceFrontier:
        """The nonce accumulator after block `number` from scratch: `used_nonces` in `seq` order, then the
        stored committed events of blocks base..number in (block, idx) order. O(nonces); for a data dir
        without `state_frontier` rows, and a rollback deeper than STATE_HISTORY_DEPTH (only to a block at or
        after base - 1: older blocks are gone)."""
        return NonceFrontier.of(nonce_leaf(a, n) for a, n in self.used_nonces_up_to(stream_id, number))

    def state_at(self, stream_id: bytes, number: int) -> tuple[bool, NonceFrontier] | None:
        """(policy, nonce accumulator) after block `number`, for a rollback to it: the newest `state_frontier`
        row at or below it (blocks without events write none: they change neither). None if the rows kept
        no longer reach back that far; then the nonces come from `rebuild_nonces` and the policy from the
        POLICY events of the blocks held (or a snapshot). A rollback to b also deletes the rows above b.
        The members need no history: their rows carry joined_at / left_at."""
        if number == 0:
            return False, NonceFrontier()
        r = self.db.execute("SELECT invite_only, leaves, peaks FROM state_frontier WHERE stream_id=? AND number<=?"
                            " ORDER BY number DESC LIMIT 1", (stream_id, number)).fetchone()
        return None if r is None else (bool(r[0]), NonceFrontier.from_stored(r[1], bytes(r[2])))

    def get_stream(self, stream_id: bytes) -> StreamRow | None:
        if stream_id in self._streams:
            return self._streams[stream_id]
        row = self._load_stream(stream_id)
        if row is not None:
            self._streams[stream_id] = row
        return row

    def _load_stream(self, stream_id: bytes) -> StreamRow | None:
        r = self.db.execute("SELECT stream_id, genesis_hash, replicas, head_number, head_hash FROM streams"
                            " WHERE stream_id=?", (stream_id,)).fetchone()
        return self._row_stream(r) if r else None

    def stored_heads(self) -> list[StoredHead]:
        """Every stream's chain head as recorded here (newest commit seen, else the genesis), in one query:
        a restart loads these instead of reading two views per stream from the chain."""
        q = ("SELECT s.stream_id, s.replicas, s.genesis_hash, s.created_ts, s.head_number, c.number, c.header_hash,"
             " c.chain_ts FROM streams s LEFT JOIN (SELECT stream_id, max(number) AS number, header_hash, chain_ts"
             " FROM commits GROUP BY stream_id) c ON c.stream_id = s.stream_id")
        out = []
        for sid, reps, gh, cts, local, n, hh, ts in self.db.execute(q):
            if n is None:
                out.append(StoredHead(bytes(sid), json.loads(reps), 0, bytes(gh), cts, local))
            else:
                out.append(StoredHead(bytes(sid), json.loads(reps), n, bytes(hh), ts, local))
        return out

    def all_streams(self) -> list[StreamRow]:
        return [self._row_stream(r) for r in self.db.execute(
            "SELECT stream_id, genesis_hash, replicas, head_number, head_hash FROM streams"
            " ORDER BY created_block, stream_id")]

    # ---- on-chain commits seen ----------------------------------------------------------------
    def add_commits(self, rows: Sequence[CommitRow]) -> list[Rollback]:
        """Record commits seen on chain. The same header seen again (its transaction mined again in another
        chain block) updates where it is; a different header for a number already recorded replaces it,
        after rolling the stream back below that number (the chain holds the new one now)."""
        out: list[Rollback] = []
        for c in rows:
            old = self.get_commit(c.stream_id, c.number)
            if old is not None and old.header_hash != c.header_hash:
                rb = self.rollback_stream(c.stream_id, c.number - 1)
                if rb is not None:
                    out.append(rb)
        self.db.execute("BEGIN")
        try:
            self.db.executemany(
                "INSERT INTO commits(stream_id, number, header_hash, prev_hash, events_root, event_count,"
                " leader, tx_hash, chain_block, block_hash, chain_ts) VALUES(?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(stream_id, number) DO UPDATE SET header_hash=excluded.header_hash,"
                " prev_hash=excluded.prev_hash, events_root=excluded.events_root, event_count=excluded.event_count,"
                " leader=excluded.leader, tx_hash=excluded.tx_hash, chain_block=excluded.chain_block,"
                " block_hash=excluded.block_hash, chain_ts=excluded.chain_ts",
                [(c.stream_id, c.number, c.header_hash, c.prev_hash, c.events_root, c.event_count, c.leader,
                  c.tx_hash, c.chain_block, c.block_hash, c.timestamp) for c in rows])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return out

    _CM_COLS = ("stream_id, number, header_hash, prev_hash, events_root, event_count, leader, tx_hash, chain_block,"
                " block_hash, chain_ts")

    @staticmethod
    def _row_commit(r: Sequence) -> CommitRow:
        return CommitRow(bytes(r[0]), r[1], bytes(r[2]), bytes(r[3]), bytes(r[4]), r[5], r[6], bytes(r[7]), r[8],
                         bytes(r[9] or b""), r[10] or 0)

    def get_commit(self, stream_id: bytes, number: int) -> CommitRow | None:
        r = self.db.execute(f"SELECT {self._CM_COLS} FROM commits WHERE stream_id=? AND number=?",
                            (stream_id, number)).fetchone()
        return None if r is None else self._row_commit(r)

    def commits_after_block(self, chain_block: int) -> list[CommitRow]:
        """Commits seen in chain blocks after `chain_block` (not yet covered by the watcher's cursor)."""
        return [self._row_commit(r) for r in self.db.execute(
            f"SELECT {self._CM_COLS} FROM commits WHERE chain_block>? ORDER BY stream_id, number", (chain_block,))]

    def rollback_after_block(self, chain_block: int) -> list[Rollback]:
        """Roll back every stream to below its first commit seen after chain block `chain_block`."""
        firsts = self.db.execute("SELECT stream_id, min(number) FROM commits WHERE chain_block>? GROUP BY stream_id",
                                 (chain_block,)).fetchall()
        out = []
        for sid, first in firsts:
            rb = self.rollback_stream(bytes(sid), first - 1)
            if rb is not None:
                out.append(rb)
        return out

    def rollback_stream(self, stream_id: bytes, keep: int) -> Rollback | None:
        """Undo the stream's blocks and commits after number `keep`, atomically: their events return to the
        mini-pool (to be forwarded again), the head and the members go back to block `keep`'s. The undone
        blocks stay as local proposals, so a re-mined commit of the same header is applied again at once.
        None if there was nothing after `keep`."""
        self._streams.pop(stream_id, None)
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            r = cur.execute("SELECT head_number, genesis_hash FROM streams WHERE stream_id=?", (stream_id,)).fetchone()
            n_commits = cur.execute("SELECT count(*) FROM commits WHERE stream_id=? AND number>?",
                                    (stream_id, keep)).fetchone()[0]
            if r is None or (r[0] <= keep and n_commits == 0):
                cur.execute("COMMIT")
                return None
            head, genesis = r[0], bytes(r[1])
            undone = cur.execute(f"SELECT {self._BL_COLS} FROM blocks WHERE stream_id=? AND number>?",
                                 (stream_id, keep)).fetchall()
            now = time.time()
            for row in undone:
                b = self._row_block(row)
                cur.execute("INSERT OR IGNORE INTO proposals(header_hash, stream_id, number, header, event_hashes,"
                            " created) VALUES(?,?,?,?,?,?)", (b.header_hash, stream_id, b.header.number,
                                                              header_to_json(b.header), b"".join(b.event_hashes), now))
            back = [self._row_event(r) for r in cur.execute(
                f"UPDATE events SET block=NULL, idx=NULL, gossiped=0 WHERE stream_id=? AND block>? RETURNING"
                f" {self._EV_COLS}", (stream_id, keep))]
            n_events = len(back)
            cur.execute("DELETE FROM blocks WHERE stream_id=? AND number>?", (stream_id, keep))
            cur.execute("DELETE FROM commits WHERE stream_id=? AND number>?", (stream_id, keep))
            cur.execute("DELETE FROM snapshots WHERE stream_id=? AND number>?", (stream_id, keep))
            if head > keep:
                hb = cur.execute("SELECT header_hash FROM blocks WHERE stream_id=? AND number=?",
                                 (stream_id, keep)).fetchone()
                head_hash = genesis if keep == 0 or hb is None else bytes(hb[0])
                # The state after block `keep` (docs/node.md, "Stream state on disk"): member rows joined
                # later go and later leaves are undone; the policy and the nonce accumulator are those of the
                # newest state_frontier row at or below `keep` (the rows above it go). Deeper than the rows
                # kept: the nonces are rebuilt from the events on next use and the policy is the last POLICY
                # event applied up to `keep` (open if none).
                at = self.state_at(stream_id, keep)
                cur.execute("DELETE FROM members WHERE stream_id=? AND joined_at>?", (stream_id, keep))
                cur.execute("UPDATE members SET left_at=NULL WHERE stream_id=? AND left_at>?", (stream_id, keep))
                cur.execute("DELETE FROM state_frontier WHERE stream_id=? AND number>?", (stream_id, keep))
                if at is not None:
                    invite_only = at[0]
                else:
                    pol = cur.execute("SELECT payload FROM events WHERE stream_id=? AND kind=? AND block IS NOT NULL"
                                      " AND block<=? ORDER BY block DESC, idx DESC LIMIT 1",
                                      (stream_id, int(EventKind.POLICY), keep)).fetchone()
                    invite_only = pol is not None and bytes(pol[0])[:1] == b"\x01"
                cur.execute("UPDATE streams SET invite_only=? WHERE stream_id=?", (int(invite_only), stream_id))
                cur.execute("UPDATE streams SET head_number=?, head_hash=? WHERE stream_id=?",
                            (keep, head_hash, stream_id))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            self._states.pop(stream_id, None)  # the member tree is rebuilt from the rows on next use
        self.pool.add(back)  # back in the pool, to be forwarded again (gossip_at 0)
        return Rollback(stream_id, min(head, keep), len(undone), n_events)

    # ---- the chain cursor and the block hashes under it -----------------------------------------
    def cursor(self) -> tuple[int | None, bytes | None]:
        """The last chain block scanned, and its hash (None before the first scan, or from an older store)."""
        v = self.get_kv(CURSOR_KEY)
        if v is None:
            return None, None
        n = int(v)
        r = self.db.execute("SELECT hash FROM chain_blocks WHERE number=?", (n,)).fetchone()
        return n, (bytes(r[0]) if r else None)

    def set_cursor(self, number: int, block_hash: bytes | None, seen: Mapping[int, bytes] | None = None) -> None:
        """Move the cursor (and record its hash and those of the blocks logs came from) in one transaction;
        hashes above the cursor (an orphaned branch) and far below it are dropped."""
        rows = dict(seen or {})
        if block_hash:
            rows[number] = block_hash
        self.db.execute("BEGIN")
        try:
            self.db.execute("DELETE FROM chain_blocks WHERE number>? OR number<?", (number, number - CHAIN_BLOCKS_KEPT))
            self.db.executemany("INSERT INTO chain_blocks(number, hash) VALUES(?,?) ON CONFLICT(number) DO UPDATE"
                                " SET hash=excluded.hash", [(n, h) for n, h in rows.items() if n <= number])
            self.set_kv(CURSOR_KEY, str(number))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def chain_block_hashes(self) -> list[tuple[int, bytes]]:
        """The recorded (number, hash) of chain blocks at or below the cursor, newest first."""
        rows = self.db.execute("SELECT number, hash FROM chain_blocks ORDER BY number DESC")
        return [(r[0], bytes(r[1])) for r in rows]

    def chain_heads(self) -> dict[bytes, int]:
        """Highest committed number seen on-chain per stream."""
        rows = self.db.execute("SELECT stream_id, max(number) FROM commits GROUP BY stream_id")
        return {bytes(r[0]): r[1] for r in rows}

    # ---- proposals (headers this node built or attested) -----------------------------------------
    def add_proposal(self, header_hash: bytes, header: Header, event_hashes: Sequence[bytes]) -> None:
        self.add_proposals([(header_hash, header, event_hashes)])

    def add_proposals(self, items: Sequence[tuple[bytes, Header, Sequence[bytes]]]) -> None:
        """Store headers built or attested here, in one transaction (a leader's or attester's whole tick)."""
        if not items:
            return
        now = time.time()
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT OR IGNORE INTO proposals(header_hash, stream_id, number, header, event_hashes,"
                                " created) VALUES(?,?,?,?,?,?)",
                                [(hh, h.stream_id, h.number, header_to_json(h), b"".join(ehs), now)
                                 for hh, h, ehs in items])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def get_proposal(self, header_hash: bytes) -> tuple[Header, list[bytes]] | None:
        r = self.db.execute("SELECT header, event_hashes FROM proposals WHERE header_hash=?", (header_hash,)).fetchone()
        return (header_from_json(r[0]), split_hashes(bytes(r[1]))) if r else None

    def prune_proposals(self, stream_id: bytes, up_to: int) -> None:
        self.db.execute("DELETE FROM proposals WHERE stream_id=? AND number<=?", (stream_id, up_to))

    # ---- blocks -------------------------------------------------------------------------------
    def apply_block(self, header: Header, header_hash: bytes, events: Sequence[tuple[bytes, Event, bytes]],
                    delta: StateDelta, tx_hash: bytes | None) -> None:
        """Store a committed block, move its events out of the mini-pool, advance the head and apply the
        block's state delta (member rows, policy, the member tree) and its nonces (the accumulator and its
        `state_frontier` row): atomically.

        Pending events that conflict (same author and nonce, other hash) with a committed one are dropped.
        """
        self.apply_blocks([BlockApply(header, header_hash, events, delta, tx_hash)])

    def apply_blocks(self, blocks: Sequence[BlockApply]) -> None:
        """`apply_block` for several blocks of distinct streams in ONE transaction:
        all of them or none (one fsync for a leader's tick or a sync pass instead of one per block)."""
        if not blocks:
            return
        if len({b.header.stream_id for b in blocks}) != len(blocks):
            raise ValueError("apply_blocks: at most one block per stream per call")
        plans = []
        for b in blocks:
            self._streams.pop(b.header.stream_id, None)
            state = self.state(b.header.stream_id)
            nonces = state.nonces.appended(block_leaves(ev for _h, ev, _s in b.events)) if state is not None else None
            plans.append((b, state, nonces))
        cur = self.db.cursor()
        gone: list[bytes] = []  # pending events leaving the pool (into a block, or conflicting with one)
        cur.execute("BEGIN IMMEDIATE")
        try:
            for b, state, nonces in plans:
                self._apply_in(cur, b, state, nonces, gone)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            for b in blocks:
                self._states.pop(b.header.stream_id, None)  # reloaded from the rows on next use
                self._streams.pop(b.header.stream_id, None)
            raise
        self.pool.remove(gone)
        for b, state, nonces in plans:
            if state is not None and nonces is not None:
                state.members.apply(b.delta.members)
                state.number = b.header.number
                state.nonces = nonces
                if b.delta.invite_only is not None:
                    state.invite_only = b.delta.invite_only
        if self.listeners:
            for b in blocks:
                self._notify("block_applied", b.header, b.header_hash, b.events, b.tx_hash)

    def _apply_in(self, cur: sqlite3.Cursor, b: BlockApply, state: StreamState | None,
                  nonces: NonceFrontier | None, gone: list[bytes]) -> None:
        """One block's rows (inside apply_blocks' transaction); the pool hashes it takes out go to `gone`,
        removed from memory once the transaction commits."""
        header, header_hash, events, delta, tx_hash = b.header, b.header_hash, b.events, b.delta, b.tx_hash
        r = cur.execute("SELECT head_number, head_hash FROM streams WHERE stream_id=?",
                        (header.stream_id,)).fetchone()
        if r is None or r[0] != header.number - 1:
            raise RuntimeError(f"apply out of order: head {r and r[0]}, block {header.number}")
        if bytes(r[1]) != header.prev_hash:
            raise ParentMismatch(f"block {header.number} builds on {header.prev_hash.hex()[:12]}, the head here is"
                                 f" {bytes(r[1]).hex()[:12]}")
        now = time.time()
        # Events held here: just mark them (the unique (stream, author, nonce) index guarantees no other
        # event of theirs exists). Others: drop a conflicting pending event, then insert. Pending ones are
        # known from the pool; only the rest are looked up (a stored row outside the pool is committed).
        pool = self.pool
        hs = [h for h, _, _ in events]
        present: set[bytes] = {h for h in hs if h in pool}
        gone.extend(present)
        rest = [h for h in hs if h not in present]
        for k in range(0, len(rest), 500):
            chunk = rest[k:k + 500]
            present.update(bytes(r[0]) for r in cur.execute(
                f"SELECT hash FROM events WHERE hash IN ({','.join('?' * len(chunk))})", chunk))
        cur.executemany("UPDATE events SET block=?, idx=? WHERE hash=?",
                        [(header.number, i, h) for i, h in enumerate(hs) if h in present])
        for i, (h, ev, sig) in enumerate(events):
            if h in present:
                continue
            other = pool.key_hash(ev.stream_id, ev.author, ev.nonce)
            if other is not None:
                gone.append(other)
            cur.execute("DELETE FROM events WHERE stream_id=? AND author=? AND nonce=? AND block IS NULL",
                        (ev.stream_id, ev.author, ev.nonce))
            cur.execute(
                "INSERT INTO events(hash, stream_id, author, nonce, kind, payload, signature, received, gossiped,"
                " block, idx) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                (h, ev.stream_id, ev.author, ev.nonce, ev.kind, ev.payload, sig, now, now, header.number, i))
        cur.execute(
            "INSERT INTO blocks(stream_id, number, header_hash, prev_hash, events_root, event_count, epoch,"
            " attempt, leader, randao_reveal, state_root, event_hashes, tx_hash, applied_at)"
            " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (header.stream_id, header.number, header_hash, header.prev_hash, header.events_root,
             header.event_count, header.epoch, header.attempt, header.leader, header.randao_reveal,
             header.state_root, b"".join(h for h, _, _ in events), tx_hash, now))
        cur.execute("UPDATE streams SET head_number=?, head_hash=? WHERE stream_id=?",
                    (header.number, header_hash, header.stream_id))
        if state is not None and delta:
            self._write_delta(cur, header, state, delta)
        if state is not None and nonces is not None and events:
            policy = state.invite_only if delta.invite_only is None else delta.invite_only
            self._write_frontier(cur, header.stream_id, header.number, policy, nonces)
        cur.execute("DELETE FROM proposals WHERE stream_id=? AND number<=?", (header.stream_id, header.number))

    @staticmethod
    def _write_delta(cur: sqlite3.Cursor, header: Header, state: StreamState, delta: StateDelta) -> None:
        """The member rows of one block: a row per JOIN (the next slots), left_at for each LEAVE."""
        sid, tree = header.stream_id, state.members
        cur.executemany("UPDATE members SET left_at=? WHERE stream_id=? AND slot=?",
                        [(header.number, sid, tree.index[a]) for a in delta.members.left])
        first = len(tree.slots)
        cur.executemany("INSERT INTO members(stream_id, slot, member, joined_at) VALUES(?,?,?,?)",
                        [(sid, first + i, a, header.number) for i, a in enumerate(delta.members.joined)])
        if delta.invite_only is not None:
            cur.execute("UPDATE streams SET invite_only=? WHERE stream_id=?", (int(delta.invite_only), sid))

    @staticmethod
    def _write_frontier(cur: sqlite3.Cursor, sid: bytes, number: int, invite_only: bool,
                        nonces: NonceFrontier) -> None:
        """The state_frontier row of block `number`, and the trim to STATE_HISTORY_DEPTH (SNAPSHOT_SCHEMA)."""
        cur.execute("INSERT OR REPLACE INTO state_frontier(stream_id, number, invite_only, leaves, peaks)"
                    " VALUES(?,?,?,?,?)", (sid, number, int(invite_only), nonces.count, nonces.peaks_blob()))
        cur.execute("DELETE FROM state_frontier WHERE stream_id=? AND number < (SELECT max(number) FROM"
                    " state_frontier WHERE stream_id=? AND number<=?)", (sid, sid, number - STATE_HISTORY_DEPTH))

    def _row_block(self, r) -> BlockRow:
        (sid, number, hh, prev, root, count, epoch, attempt, leader, reveal, state, ehs, tx) = r
        header = Header(bytes(sid), number, bytes(prev), bytes(root), count, epoch, attempt, leader, bytes(reveal),
                        bytes(state))
        return BlockRow(header, bytes(hh), split_hashes(bytes(ehs)), bytes(tx) if tx else None)

    _BL_COLS = ("stream_id, number, header_hash, prev_hash, events_root, event_count, epoch, attempt, leader,"
                " randao_reveal, state_root, event_hashes, tx_hash")

    def get_block(self, stream_id: bytes, number: int) -> BlockRow | None:
        r = self.db.execute(f"SELECT {self._BL_COLS} FROM blocks WHERE stream_id=? AND number=?",
                            (stream_id, number)).fetchone()
        return self._row_block(r) if r else None

    def get_blocks(self, stream_id: bytes, first: int, last: int) -> list[BlockRow]:
        return [self._row_block(r) for r in self.db.execute(
            f"SELECT {self._BL_COLS} FROM blocks WHERE stream_id=? AND number BETWEEN ? AND ? ORDER BY number",
            (stream_id, first, last))]

    # ---- snapshots and pruning (docs/node.md, "Snapshots"; node/server/snapshots.py) -------------------
    def history_base(self, stream_id: bytes) -> int:
        """The first block number whose block and events are stored here (1 unless pruned or snapshot-started)."""
        return self._bases.get(stream_id, 1)

    def used_nonces_up_to(self, stream_id: bytes, number: int) -> list[tuple[str, int]]:
        """Every (author, nonce) committed in blocks 1..number in commit order (the nonce accumulator's leaves):
        the `used_nonces` (blocks before the history base) by `seq`, then the stored events by (block, idx).
        `number` must be at or after base - 1."""
        old = self.db.execute("SELECT author, nonce FROM used_nonces WHERE stream_id=? ORDER BY seq", (stream_id,))
        out = [(a, n) for a, n in old]
        out += [(a, n) for a, n in self.db.execute(
            "SELECT author, nonce FROM events WHERE stream_id=? AND block IS NOT NULL AND block<=?"
            " ORDER BY block, idx", (stream_id, number))]
        return out

    def save_snapshot(self, stream_id: bytes, number: int, header_hash: bytes, digest: bytes, size: int,
                      data: bytes, keep: int) -> None:
        """Store a snapshot (zlib form, `size` = body bytes) and keep only the newest `keep` of the stream."""
        self.db.execute("BEGIN")
        self.db.execute("INSERT OR REPLACE INTO snapshots(stream_id, number, header_hash, digest, size, data, created)"
                        " VALUES(?,?,?,?,?,?,?)", (stream_id, number, header_hash, digest, size, data, time.time()))
        self.db.execute("DELETE FROM snapshots WHERE stream_id=? AND number NOT IN (SELECT number FROM snapshots"
                        " WHERE stream_id=? ORDER BY number DESC LIMIT ?)", (stream_id, stream_id, max(1, keep)))
        self.db.execute("COMMIT")

    def snapshots_of(self, stream_id: bytes) -> list[tuple[int, bytes, bytes, int, int]]:
        """(number, header_hash, digest, body size, stored bytes) of the stream's snapshots, newest first."""
        return [(r[0], bytes(r[1]), bytes(r[2]), r[3], r[4]) for r in self.db.execute(
            "SELECT number, header_hash, digest, size, length(data) FROM snapshots WHERE stream_id=?"
            " ORDER BY number DESC", (stream_id,))]

    def snapshot_data(self, stream_id: bytes, number: int, offset: int = 0, length: int | None = None) -> bytes | None:
        """Bytes [offset, offset+length) of a stored snapshot's zlib form; None if not stored."""
        n = -1 if length is None else length
        r = self.db.execute("SELECT substr(data, ?, ?) FROM snapshots WHERE stream_id=? AND number=?",
                            (offset + 1, n, stream_id, number)).fetchone()
        return None if r is None else bytes(r[0])

    def install_snapshot(self, snap: Snapshot, header_hash: bytes, digest: bytes, size: int, data: bytes,
                         nonces: NonceFrontier | None = None) -> None:
        """Start the stream from a checked snapshot (node/protocol/snapshot.check_snapshot, which returns
        `nonces`, its accumulator; rebuilt if not given), atomically: the head moves to its block, the member
        rows, policy, used nonces (in commit order) and accumulator become its, older blocks and committed
        events of the stream are dropped (history base = number + 1), and pending events whose nonce it says
        is used leave the pool. Only for a head behind the snapshot."""
        nonces = snap.frontier() if nonces is None else nonces
        sid, number = snap.stream_id, snap.number
        self._streams.pop(sid, None)
        self._states.pop(sid, None)
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            r = cur.execute("SELECT head_number FROM streams WHERE stream_id=?", (sid,)).fetchone()
            if r is None or r[0] >= number:
                raise RuntimeError(f"snapshot #{number} is not ahead of the head {r and r[0]}")
            cur.execute("DELETE FROM blocks WHERE stream_id=?", (sid,))
            cur.execute("DELETE FROM events WHERE stream_id=? AND block IS NOT NULL", (sid,))
            cur.execute("DELETE FROM members WHERE stream_id=?", (sid,))
            # A slot whose member left holds bytes32(0): its address is not in the snapshot ('' here).
            cur.executemany("INSERT INTO members(stream_id, slot, member, joined_at, left_at) VALUES(?,?,?,?,?)",
                            [(sid, i, m or "", number, None if m else number) for i, m in enumerate(snap.slots)])
            cur.execute("DELETE FROM used_nonces WHERE stream_id=?", (sid,))
            cur.executemany("INSERT INTO used_nonces(stream_id, author, nonce, seq) VALUES(?,?,?,?)",
                            [(sid, a, n, i) for i, (a, n) in enumerate(snap.used)])
            cur.execute("DELETE FROM state_frontier WHERE stream_id=?", (sid,))
            self._write_frontier(cur, sid, number, snap.invite_only, nonces)
            used = [bytes(r[0]) for r in cur.execute(
                "DELETE FROM events WHERE stream_id=? AND block IS NULL AND EXISTS (SELECT 1 FROM used_nonces u"
                " WHERE u.stream_id=events.stream_id AND u.author=events.author AND u.nonce=events.nonce)"
                " RETURNING hash", (sid,))]
            cur.execute("UPDATE streams SET head_number=?, head_hash=?, invite_only=? WHERE stream_id=?",
                        (number, header_hash, int(snap.invite_only), sid))
            cur.execute("INSERT OR REPLACE INTO history(stream_id, base) VALUES(?,?)", (sid, number + 1))
            cur.execute("INSERT OR REPLACE INTO snapshots(stream_id, number, header_hash, digest, size, data, created)"
                        " VALUES(?,?,?,?,?,?,?)", (sid, number, header_hash, digest, size, data, time.time()))
            cur.execute("DELETE FROM proposals WHERE stream_id=? AND number<=?", (sid, number))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            self._streams.pop(sid, None)
            self._states.pop(sid, None)
        self.pool.remove(used)
        self._bases[sid] = number + 1

    def prune_history(self, stream_id: bytes, up_to: int, chunk: int = 64) -> int:
        """Drop the block rows and committed events of blocks base..up_to, keeping their (author, nonce) in
        `used_nonces` (the replay rule), `chunk` blocks per transaction. Returns the events dropped."""
        base, dropped = self.history_base(stream_id), 0
        while base <= up_to:
            last = min(up_to, base + chunk - 1)
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                # seq continues the accumulator's leaf order: used_nonces hold exactly the blocks before base
                seq = cur.execute("SELECT coalesce(max(seq), -1) + 1 FROM used_nonces WHERE stream_id=?",
                                  (stream_id,)).fetchone()[0]
                cur.execute("INSERT OR IGNORE INTO used_nonces(stream_id, author, nonce, seq) SELECT stream_id,"
                            " author, nonce, ? + row_number() OVER (ORDER BY block, idx) - 1 FROM events"
                            " WHERE stream_id=? AND block BETWEEN ? AND ?", (seq, stream_id, base, last))
                dropped += cur.execute("DELETE FROM events WHERE stream_id=? AND block BETWEEN ? AND ?",
                                       (stream_id, base, last)).rowcount
                cur.execute("DELETE FROM blocks WHERE stream_id=? AND number BETWEEN ? AND ?", (stream_id, base, last))
                cur.execute("INSERT OR REPLACE INTO history(stream_id, base) VALUES(?,?)", (stream_id, last + 1))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._bases[stream_id] = base = last + 1
        return dropped
