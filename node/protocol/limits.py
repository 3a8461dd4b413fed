"""Hard limits of the protocol that every node applies alike (docs/node.md, "Limits").

`MAX_BLOCK_EVENTS` is also the contract's `MAX_EVENTS_PER_BLOCK`; the byte cap is checked by the
nodes only (the contract never sees the events). A block's size is the sum of `event_size` over its
events: the payload plus the fixed fields of the signed event (stream id, author, nonce, kind,
signature), so a block within the cap is at most that many bytes of event data in any encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

from .types import MAX_EVENTS_PER_BLOCK, Event

MAX_BLOCK_EVENTS = MAX_EVENTS_PER_BLOCK  # 15,000
MAX_BLOCK_BYTES = 10 * 1024 * 1024  # 10 MiB
# An author's events in one block at most (fair blocks: docs/protocol.md, "Ordering rule"): attesters check it.
MAX_AUTHOR_EVENTS_PER_BLOCK = 1024
EVENT_FIXED_BYTES = 32 + 20 + 8 + 1 + 65  # streamId, author, nonce, kind, signature


def event_size(event: Event) -> int:
    """The bytes an event counts for against MAX_BLOCK_BYTES."""
    return EVENT_FIXED_BYTES + len(event.payload)


def block_within_limits(events: Sequence[Event], max_events: int = MAX_BLOCK_EVENTS,
                        max_bytes: int = MAX_BLOCK_BYTES) -> str | None:
    """None if the event list fits both caps, else why not."""
    if len(events) > max_events:
        return f"{len(events)} events, the limit is {max_events}"
    size = sum(event_size(e) for e in events)
    if size > max_bytes:
        return f"{size} bytes of events, the limit is {max_bytes}"
    return None
