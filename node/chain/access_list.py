"""EIP-2930 access lists: which to attach to a transaction, and when one pays.

A storage key in a transaction's access list costs 1,900 gas up front; the transaction then reads it
warm (100) instead of cold (2,100) the first time: 100 saved per listed key the call touches. Each
address entry costs 2,400, even the transaction's own `to` (which is warm anyway). So a list pays
only from 25 touched keys of one contract on: for registry v2 a commit of about 14 or more headers
(one stream head slot each, plus the transaction's own: the leaders' node words and onions, the
epoch, mix and accumulator words). Precompiles (ecrecover) are warm already and never pay.

The list comes from the endpoint (`eth_createAccessList` simulates the call once), not from a copy
of the contract's storage layout here; what the call touches at send time may differ from the
simulation (another transaction mined first): a listed key left untouched wastes 1,900, an unlisted
one costs the usual cold read, so the list only moves the price, never the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ADDRESS_COST = 2_400
KEY_COST = 1_900
KEY_SAVING = 100  # 2,100 cold − (1,900 listed + 100 warm)

AccessList = list[dict[str, Any]]


def saving(entry_keys: int) -> int:
    """Gas one address entry with this many touched keys saves (negative: it costs)."""
    return KEY_SAVING * entry_keys - ADDRESS_COST


def worthwhile(entries: Sequence[dict[str, Any]]) -> AccessList:
    """The entries of an `eth_createAccessList` answer that save gas (each address on its own)."""
    return [
        {"address": e["address"], "storageKeys": list(e.get("storageKeys") or [])}
        for e in entries
        if saving(len(e.get("storageKeys") or [])) > 0
    ]


def intrinsic(entries: Sequence[dict[str, Any]]) -> int:
    """The access list's own intrinsic gas (to add to a fixed gas budget)."""
    return sum(ADDRESS_COST + KEY_COST * len(e.get("storageKeys") or []) for e in entries)
