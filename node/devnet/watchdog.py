"""A tiny process that outlives its parent only if the parent is killed without its clean-up (SIGKILL,
OOM): it then stops the process groups listed in a file (Anvil, the nodes: each leads its own group)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

SCRIPT = r"""
import os, signal, sys, time
parent, listing = os.getppid(), sys.argv[1]
while os.getppid() == parent:
    time.sleep(0.5)
try:
    groups = [int(x) for x in open(listing).read().split()]
except (OSError, ValueError):
    groups = []
for sig, pause in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
    for g in groups:
        try:
            os.killpg(g, sig)
        except OSError:
            pass
    time.sleep(pause)
"""


class Watchdog:
    def __init__(self, listing: Path) -> None:
        self.listing = listing
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Watchdog:
        self.proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(self.listing)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def record(self, groups: Iterable[int]) -> None:
        """The process groups to stop (replaces the previous list, atomically)."""
        tmp = self.listing.with_name(self.listing.name + ".tmp")
        tmp.write_text(" ".join(map(str, groups)))
        os.replace(tmp, self.listing)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None
