"""In-process cost of the mini-pool's life per event, against a real SQLite store (WAL, synchronous FULL).

`python -m bench.pool_ops [--events 20480] [--streams 16] [--rounds 3]` runs, per round, the storage calls a
replica makes for each event, on the tree it is run from (only public `Storage` methods, so main and a
branch compare): intake (`replay_statuses` + `add_events`, batches of 256), a second copy of each batch
(gossip from another replica: all 'known'), a gossip pass (`take_due_for_gossip`), votes (`pool_hashes`
of every stream, 3 per block), the producer's `streams_with_pending`, the block's `get_events`, and
`apply_blocks` (one block of up to 256 events per stream with pending events). Prints one JSON line per
round with µs per event per step and in total.

`--rss N` instead fills a store with N pending events (payload 100 B) and prints the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from node.protocol.state import StateDelta
from node.protocol.types import Event, Header
from node.server.storage import BlockApply, Storage

BATCH = 256


def _events(n: int, streams: int, authors: int, start: int) -> list[tuple[bytes, Event, bytes]]:
    out = []
    for i in range(start, start + n):
        sid = (i % streams).to_bytes(32, "big")
        author = "0x" + f"{(i // streams) % authors + 1:040x}"
        ev = Event(sid, author, i, 0, os.urandom(100))
        out.append((os.urandom(32), ev, os.urandom(65)))
    return out


def _store(path: Path, streams: int) -> Storage:
    st = Storage(path, synchronous="FULL")
    st.upsert_streams([(i.to_bytes(32, "big"), b"\x00" * 32, [], 0, None, 0) for i in range(streams)])
    return st


def one_round(n: int, streams: int, authors: int) -> dict[str, float]:
    t: dict[str, float] = dict.fromkeys(("intake", "second_copy", "gossip", "votes", "pending", "get_events",
                                         "apply"), 0.0)
    with tempfile.TemporaryDirectory() as d:
        st = _store(Path(d) / "node.db", streams)
        evs = _events(n, streams, authors, 0)
        heads = {i.to_bytes(32, "big"): (0, b"\x00" * 32) for i in range(streams)}
        for k in range(0, n, BATCH):
            batch = evs[k:k + BATCH]
            a = time.perf_counter()
            st.replay_statuses(batch)
            st.add_events(batch)
            b = time.perf_counter()
            st.replay_statuses(batch)
            st.add_events(batch, gossiped=True)
            c = time.perf_counter()
            st.take_due_for_gossip(time.time(), 5.0)
            d_ = time.perf_counter()
            t["intake"] += b - a
            t["second_copy"] += c - b
            t["gossip"] += d_ - c
            if (k // BATCH) % 4 != 3:
                continue
            # a block per stream every 4 batches (~64 events per stream at 16 streams)
            a = time.perf_counter()
            sids = st.streams_with_pending()
            b = time.perf_counter()
            votes = {}
            for sid in sids:
                for _ in range(3):
                    votes[sid] = st.pool_hashes(sid, 30_000)
            c = time.perf_counter()
            blocks = []
            for sid, hs in votes.items():
                got = st.get_events(hs[:BATCH])
                num, prev = heads[sid]
                header = Header(sid, num + 1, prev, b"\x00" * 32, len(got), 0, 0, "0x" + "00" * 20, b"\x00" * 32,
                                b"\x00" * 32)
                hh = (num + 1).to_bytes(32, "big")
                blocks.append(BlockApply(header, hh, [(h, got[h].event, got[h].signature) for h in hs[:BATCH]],
                                         StateDelta(), None))
                heads[sid] = (num + 1, hh)
            d_ = time.perf_counter()
            st.apply_blocks(blocks)
            e = time.perf_counter()
            t["pending"] += b - a
            t["votes"] += c - b
            t["get_events"] += d_ - c
            t["apply"] += e - d_
        st.close()
    out = {k: round(v / n * 1e6, 2) for k, v in t.items()}
    out["total"] = round(sum(t.values()) / n * 1e6, 2)
    return out


def rss(n: int, streams: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        st = _store(Path(d) / "node.db", streams)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for k in range(0, n, 1024):
            st.add_events(_events(min(1024, n - k), streams, 1000, k))
        pool = st.pool_total()
        filled = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        st.close()
        del st
        t0 = time.perf_counter()
        reopened = Storage(Path(d) / "node.db")  # the start-up load of the same pool
        load_s = time.perf_counter() - t0
        reloaded = reopened.pool_total()
        reopened.close()
    return {"pool": pool, "reloaded": reloaded, "peak_rss_mb_empty_store": round(before, 1),
            "peak_rss_mb_filled": round(filled, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "open_s": round(load_s, 3)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20_480)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--authors", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rss", type=int, default=0)
    a = p.parse_args()
    if a.rss:
        print(json.dumps(rss(a.rss, a.streams)))
        return
    for _ in range(a.rounds):
        print(json.dumps(one_round(a.events, a.streams, a.authors)))


if __name__ == "__main__":
    main()
