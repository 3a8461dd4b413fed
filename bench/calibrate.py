"""CPU calibration and the physical floor, measured in the bench's own process next to every row.

This box's CPU speed changes about 2x over time and it is shared, so a figure in µs means little
alone. Every bench row therefore carries, measured right before it is printed:

- `calib_recover_us`: one EIP-712 signature recovery (coincurve + keccak), a fixed loop of 256,
  best of 3 — how fast the box was then;
- `floor_us_per_event`: the floor of one committed event with replication 3 — each of the 3 replicas
  checks the event's signature once and inserts it once into SQLite (WAL, synchronous=FULL, one
  transaction per batch of 256, as a node stores an intake batch), in-process, best of 3;
- and, for rows with node CPU figures, `cpu_us_per_event_all_nodes` (the nodes' CPU seconds over the
  load, summed over all nodes, per committed event) and `cpu_ratio_to_floor` (that / the floor).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from node.protocol.eip712 import digest, hash_event, recover_digest_raw, sign_digest
from node.protocol.hashing import keccak
from node.protocol.types import Domain, Event

N = 256
REPLICAS = 3
_DOMAIN = Domain(31337, "0x" + "11" * 20)
_KEY = keccak(b"bench calibration key")


def _events() -> list[tuple[bytes, Event, bytes]]:
    from node.protocol.eip712 import address_of

    author = address_of(_KEY)
    sid = keccak(b"calibration stream")
    out = []
    for i in range(N):
        ev = Event(sid, author, i, 0, bytes(64))
        h = hash_event(ev)
        out.append((h, ev, sign_digest(digest(_DOMAIN, h), _KEY)))
    return out


_EVENTS: list[tuple[bytes, Event, bytes]] | None = None


def _recover_loop(evs: list[tuple[bytes, Event, bytes]]) -> float:
    t = time.perf_counter()
    for h, _ev, sig in evs:
        recover_digest_raw(digest(_DOMAIN, h), sig)
    return time.perf_counter() - t


def _insert_batch(db: sqlite3.Connection, evs: list[tuple[bytes, Event, bytes]], now: float) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO events(hash, stream_id, author, nonce, kind, payload, signature, received)"
                   " VALUES(?,?,?,?,?,?,?,?)",
                   [(h, e.stream_id, e.author, e.nonce, e.kind, e.payload, s, now) for h, e, s in evs])
    db.execute("COMMIT")


def measure(rounds: int = 3) -> dict[str, Any]:
    """The calibration and the floor (µs), best of `rounds`: about 0.1-0.3 s in all."""
    global _EVENTS
    if _EVENTS is None:
        _EVENTS = _events()
    evs = _EVENTS
    calib = min(_recover_loop(evs) for _ in range(rounds)) / N
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as d:
        dbs = []
        for r in range(REPLICAS):
            db = sqlite3.connect(str(Path(d) / f"r{r}.sqlite"), isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE events (hash BLOB PRIMARY KEY, stream_id BLOB NOT NULL, author TEXT NOT NULL,"
                       " nonce INTEGER NOT NULL, kind INTEGER NOT NULL, payload BLOB NOT NULL, signature BLOB NOT NULL,"
                       " received REAL NOT NULL)")
            db.execute("CREATE UNIQUE INDEX events_replay ON events(stream_id, author, nonce)")
            dbs.append(db)
        best = float("inf")
        for k in range(rounds):
            for db in dbs:
                db.execute("DELETE FROM events")
            t = time.perf_counter()
            for db in dbs:  # each replica: check every signature once, insert the batch once
                _recover_loop(evs)
                _insert_batch(db, evs, float(k))
            best = min(best, time.perf_counter() - t)
        for db in dbs:
            db.close()
    return {"calib_recover_us": round(calib * 1e6, 1), "floor_us_per_event": round(best / N * 1e6, 1)}


def annotate(row: dict[str, Any], cal: dict[str, Any]) -> dict[str, Any]:
    """`row` with the calibration, the floor and, if it has node CPU figures, the ratio to the floor."""
    out = {**row, **cal}
    cpu = row.get("cpu_s_per_node")
    n = row.get("committed") or row.get("accepted") or row.get("events_committed")
    if cpu and n:
        us = sum(c for c in cpu if c == c) / n * 1e6  # c == c: skip NaN (a node that exited)
        out["cpu_us_per_event_all_nodes"] = round(us, 1)
        out["cpu_ratio_to_floor"] = round(us / cal["floor_us_per_event"], 2)
    return out
