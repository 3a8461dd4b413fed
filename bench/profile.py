"""Where the node CPU goes under the 16-stream load: py-spy on every node process, summed.

    python -m bench.profile [--events 8000] [--streams 16] [--out DIR]

Starts a 4-node network (bench.scenarios.start_net), runs one load (bench.scenarios.run_load) while
`py-spy record --nonblocking -f raw` samples every node for the MESSAGE phase, then prints the share of
the busy samples per category (the leaf-most frame that matches a category decides) and the bench row
of the load (events/s, CPU per event, the floor). Profiles of two trees compare only as interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

# (category, substrings of a frame "function (file:line)"): first match from the leaf up wins
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("signature recovery", ("recover_digest_raw", "from_signature_and_message", "coincurve", "verify_event_sig")),
    ("keccak", ("keccak",)),
    ("sqlite", ("sqlite3", "storage.py", "pool.py")),
    ("parse/serialise", ("pydantic", "json", "orjson", "model_validate", "parse_wire", "to_wire", "decode (",
                         "models.py", "wire.py")),
    ("peer HTTP client", ("httpx", "httpcore", "peers.py")),
    ("HTTP server", ("uvicorn", "starlette", "fastapi", "h11", "httptools")),
    ("chain RPC", ("web3", "node/chain/", "aiohttp")),
    ("event loop", ("asyncio", "selectors", "uvloop")),
]


def categorise(raw: Path) -> Counter[str]:
    c: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        cat = "node logic"
        for f in reversed(frames):
            hit = next((name for name, subs in CATEGORIES if any(s in f for s in subs)), None)
            if hit:
                cat = hit
                break
        c[cat] += int(n)
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=8000)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    from bench.scenarios import run_load, start_net

    out = a.out or Path(tempfile.mkdtemp(prefix="profile-"))
    out.mkdir(parents=True, exist_ok=True)

    def log(s: str) -> None:
        print(f"profile: {s}", file=sys.stderr, flush=True)

    net = start_net(out / "net", 4, a.streams, log)
    spies: list[subprocess.Popen[bytes]] = []
    try:
        pids = net.network.pids()
        spy = str(Path(sys.executable).parent / "py-spy")

        def start_spies() -> None:
            for i, pid in enumerate(pids):
                spies.append(subprocess.Popen([spy, "record", "--nonblocking", "-r", "50", "-f", "raw", "-d", "60",
                                               "-o", str(out / f"node{i}.raw"), "-p", str(pid)],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        start_spies()  # the JOIN phase (one block per stream) is sampled too: a few % of the samples
        row = run_load(net, net.streams, clients=max(1, 16 // a.streams), total=a.events, timeout=60.0, log=log)
    finally:
        for p in spies:
            p.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        net.stop()
        for p in spies:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    total: Counter[str] = Counter()
    for f in sorted(out.glob("node*.raw")):
        total += categorise(f)
    n = sum(total.values()) or 1
    from bench.calibrate import annotate, measure

    row = annotate(row, measure(5))
    print(json.dumps({"profile_shares": {k: round(100 * v / n, 1) for k, v in total.most_common()},
                      "samples": n, **{k: row.get(k) for k in (
                          "committed", "events_per_s", "latency_ms", "cpu_us_per_event_all_nodes",
                          "floor_us_per_event", "calib_recover_us", "cpu_ratio_to_floor", "headers_rejected")}}))


if __name__ == "__main__":
    main()
