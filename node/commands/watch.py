"""`python -m node watch --node URL --stream NAME`: print a stream's blocks and events as they commit.

    python -m node watch --node http://127.0.0.1:8600 --stream general            # new blocks from now
    python -m node watch --node URL --stream general --stream 0x… --from 1 --json  # from block 1, JSON lines
    python -m node watch --node URL --stream general --pending                    # also events as accepted

Reads the node's subscription WebSocket (/v1/subscribe) and resumes by itself after a disconnect, from
the last block printed (nothing missed, nothing printed twice). `--json`: one JSON object per line per
event (`"type": "event"` for a committed event, with its block, index, header hash, commit tx and chain
block; `"type": "pending"` for an accepted one with --pending). Exit 0 after --count events or on Ctrl-C;
exit 1 on a fatal subscription error (unknown stream, cursor past the head, ...), with the node's reason.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

KIND_NAMES = {0: "MESSAGE", 1: "JOIN", 2: "LEAVE"}


def _payload_text(payload_hex: str) -> str | None:
    try:
        return bytes.fromhex(payload_hex[2:]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def event_line(msg: dict[str, Any], index: int | None, e: dict[str, Any]) -> dict[str, Any]:
    ev = e["event"]
    out: dict[str, Any] = {"type": "event" if msg["type"] == "block" else "pending", "stream_id": msg["stream_id"]}
    if msg["type"] == "block":
        out.update(block=msg["number"], index=index, header_hash=msg["header_hash"], tx_hash=msg.get("tx_hash"),
                   chain_block=msg.get("chain_block"))
    out.update(hash=e["hash"], author=ev["author"], nonce=ev["nonce"], kind=KIND_NAMES.get(ev["kind"], ev["kind"]),
               payload=ev["payload"], text=_payload_text(ev["payload"]), signature=e["signature"])
    return out


def main(
    node: str = typer.Option(..., "--node", help="Node URL, e.g. http://127.0.0.1:8600"),
    stream: list[str] = typer.Option(..., "--stream", help="Stream id (0x + 64 hex) or name; repeat for more."),
    from_block: int | None = typer.Option(None, "--from", min=0, help="First block number (default: only new "
                                          "blocks, from now)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line per event."),
    pending: bool = typer.Option(False, "--pending", help="Also print events as the node accepts them."),
    count: int | None = typer.Option(None, "--count", min=1, help="Exit after this many committed events."),
) -> None:
    """Print a stream's committed blocks and their events as they commit (and pending events with --pending)."""
    from node.chain.deploy import parse_stream_id
    from node.client.subscribe import Subscription, SubscriptionError

    sids = []
    for s in stream:
        try:
            sids.append("0x" + parse_stream_id(s).hex())
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    names = dict(zip(sids, stream, strict=True))
    sub = Subscription(node, {s: from_block for s in sids}, pending=pending)
    seen = 0

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        for msg in sub:
            t = msg["type"]
            if t == "subscribed" and not json_out:
                parts = [f"{names.get(x['stream_id'], x['stream_id'])} (head #{x['head']}, from #{x['from']})"
                         for x in msg["streams"]]
                typer.echo(f"watching {', '.join(parts)} at {sub.node}", err=True)
            elif t == "block":
                evs = msg["events"]
                if not json_out:
                    emit(f"{names.get(msg['stream_id'], msg['stream_id'][:12])} #{msg['number']}  {len(evs)} events  "
                         f"header {msg['header_hash']}  tx {msg.get('tx_hash')} (chain block {msg.get('chain_block')})")
                for i, item in enumerate(evs):
                    line = event_line(msg, i, item)
                    if json_out:
                        emit(json.dumps(line))
                    else:
                        text = line["text"] if line["text"] is not None else line["payload"]
                        emit(f"  [{i}] {line['kind']:<7} {line['author']} nonce {line['nonce']}: {text}")
                    seen += 1
                    if count is not None and seen >= count:
                        return
            elif t == "pending":
                for item in msg["events"]:
                    line = event_line(msg, None, item)
                    if json_out:
                        emit(json.dumps(line))
                    else:
                        text = line["text"] if line["text"] is not None else line["payload"]
                        emit(f"  pending {line['kind']:<7} {line['author']} nonce {line['nonce']}: {text}")
            elif t == "error" and not json_out:
                then = f"moving to {msg['location']}" if msg.get("location") else "resuming"
                typer.echo(f"node: {msg.get('error')}: {msg.get('detail')} ({then})", err=True)
    except SubscriptionError as exc:
        if json_out:
            emit(json.dumps({"type": "error", "error": exc.error, "code": exc.code, "detail": exc.detail}))
        else:
            typer.echo(f"subscription refused: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
