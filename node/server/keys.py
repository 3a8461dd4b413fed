"""The node's signing key (encrypted keystore, or a raw key in dev mode) and its RANDAO hash onion."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from eth_account import Account

from node.keystore import KeystoreError, decrypt_keystore
from node.protocol.eip712 import address_of
from node.protocol.onion import HashOnion

from .config import NodeConfig


class KeyError_(RuntimeError):
    pass


def load_private_key(cfg: NodeConfig) -> bytes:
    if cfg.keystore is not None:
        try:
            return decrypt_keystore(cfg.keystore, cfg.password_env)
        except KeystoreError as exc:
            raise KeyError_(str(exc)) from None
    if cfg.dev_key:
        if not cfg.dev:
            raise KeyError_("a raw key (dev_key) is only accepted with --dev; use an encrypted keystore")
        return bytes.fromhex(cfg.dev_key.removeprefix("0x"))
    raise KeyError_("no signing key: give --keystore (password in $NODE_KEY_PASSWORD) or --dev --dev-key")


def write_keystore(private_key: bytes, path: Path, password: str) -> None:
    """Helper for launchers and tests: an eth-account encrypted keystore file (scrypt, light params)."""
    blob = Account.encrypt(private_key, password, kdf="scrypt", iterations=2**12)
    path.write_text(json.dumps(blob))


ONION_FILE = "onion.json"


def onion_path(data_dir: Path) -> Path:
    return Path(data_dir) / ONION_FILE


def write_onion(data_dir: Path, secret: bytes, depth: int) -> HashOnion:
    """Store the onion secret in the data dir (0600); returns the onion (its commitment to register)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    p = onion_path(data_dir)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"secret": "0x" + secret.hex(), "depth": depth}))
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)
    return HashOnion(secret, depth)


def new_onion(data_dir: Path, depth: int) -> HashOnion:
    return write_onion(data_dir, secrets.token_bytes(32), depth)


def load_onion(cfg: NodeConfig) -> HashOnion:
    """From data_dir/onion.json; else from cfg.onion_secret (then stored); else a fresh one is created."""
    p = onion_path(cfg.data_dir)
    if p.exists():
        blob = json.loads(p.read_text())
        return HashOnion(bytes.fromhex(blob["secret"].removeprefix("0x")), int(blob["depth"]))
    if cfg.onion_secret:
        return write_onion(Path(cfg.data_dir), bytes.fromhex(cfg.onion_secret.removeprefix("0x")), cfg.onion_depth)
    return new_onion(Path(cfg.data_dir), cfg.onion_depth)


__all__ = ["load_private_key", "write_keystore", "load_onion", "write_onion", "new_onion", "address_of"]
