"""The block rules under their former names; they live in node.protocol.block_rules."""

from __future__ import annotations

from node.protocol.block_rules import check_block_events as check_block
from node.protocol.block_rules import event_order_key as order_key
from node.protocol.block_rules import order_events as order
from node.protocol.block_rules import select_events
from node.protocol.types import EventEntry


def filter_valid(members: frozenset[str], items: list[EventEntry], cap: int,
                 committed_nonces: object = None) -> tuple[list[EventEntry], list[bytes], list[bytes]]:
    """select_events as a (kept, invalid, deferred) tuple."""
    sel = select_events(members, items, cap)
    return sel.kept, sel.invalid, sel.deferred


__all__ = ["check_block", "filter_valid", "order", "order_key"]
