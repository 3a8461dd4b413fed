#!/usr/bin/env python3
"""Deploy the MiniblockRegistry and set it up; the same as `python -m node deploy`.

    python deploy_scripts/deploy.py --rpc-url http://127.0.0.1:8545 --dev --key 0xac09... \
        --epoch-length 60 --leader-timeout 10 --replication 3 \
        --node 0xNODE=http://127.0.0.1:8001=0xCOMMIT --stream general --out deployment.json

    MINIBLOCK_KEYSTORE_PASSWORD=... python deploy_scripts/deploy.py --keystore key.json ...

Compiles contracts/src through py-solc-x first (node.build, cached), unless --artifact.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import typer

from node.commands.deploy import main as deploy_main


def run() -> None:
    typer.run(deploy_main)


if __name__ == "__main__":
    run()
