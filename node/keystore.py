"""Encrypted keystore files (eth-account's Web3 Secret Storage) with the password from the environment.

One place for the rule every command and the node follow: a key is read from a keystore whose
password is in an environment variable, never from a flag or a file beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account


class KeystoreError(ValueError):
    """A keystore that cannot be read or decrypted, or whose password is not set."""


def decrypt_keystore(path: Path | str, password_env: str) -> bytes:
    """The private key in `path`, decrypted with the password in $`password_env`."""
    password = os.environ.get(password_env)
    if password is None:
        raise KeystoreError(f"keystore {path}: set the environment variable {password_env} to its password")
    try:
        blob = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc}") from None
    try:
        return bytes(Account.decrypt(blob, password))
    except ValueError as exc:
        raise KeystoreError(f"cannot decrypt keystore {path}: {exc}") from None
