"""`python -m node headers`: the committed headers of a registry, read from the chain alone.

Everything of one run is read at one pinned chain block (the latest when the run starts, or
`--to-block`): the logs up to it and every view at it, so a chain that grows while the command
runs cannot make the headers and the head it reports disagree. By default each stream shows its
newest 20 headers (`--last N`, `--all`), in a table that fits an 80-column terminal.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from node.chain.history import HeaderRecord

DEFAULT_LAST = 20


def _short(h: str | None, n: int = 6) -> str:
    """0x1234…abcd: enough to tell hashes apart on screen; the JSON output has them whole."""
    if not h:
        return "-"
    return h if len(h) <= n + 6 else f"{h[: n]}…{h[-4:]}"


def _checks(r: HeaderRecord) -> str:
    """✓ when every check holds, else ✗ and the names of the checks that failed (or the reject reason)."""
    v = r.verification
    if r.status == "rejected":
        return f"[red]rejected {r.reason_name}[/]"
    if v is None:
        return "-"
    if v.ok:
        return "[green]✓[/]"
    failed = [name for name, val in (("hash", v.hash), ("parent", v.parent), ("leader", v.leader_signature),
                                     ("att", v.attestations), ("quorum", v.quorum)) if val is not True]
    return "[red]✗ " + " ".join(failed) + "[/]"


def main(
    rpc_url: str = typer.Option(..., "--rpc-url", help="JSON-RPC endpoint of the chain."),
    registry: str = typer.Option(..., "--registry", help="Address of the MiniblockRegistry."),
    stream: str | None = typer.Option(None, "--stream", help="Only this stream: 0x + 64 hex digits, or a name "
                                      "(keccak256 of it, as deploy does)."),
    last: int = typer.Option(DEFAULT_LAST, "--last", min=1, help="Show the newest N headers of each stream."),
    show_all: bool = typer.Option(False, "--all", help="Show every header of each stream (overrides --last)."),
    from_number: int = typer.Option(0, "--from", min=0, help="Only headers with number >= N."),
    from_block: int | None = typer.Option(None, "--from-block", min=0, help="Only headers committed from this "
                                          "chain block on."),
    to_block: int | None = typer.Option(None, "--to-block", min=0, help="Read the chain as of this block "
                                        "(default: the latest when the run starts)."),
    no_rejected: bool = typer.Option(False, "--no-rejected", help="Leave out MiniblockRejected headers."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines: one object per header, then one per stream."),
) -> None:
    from node.chain.deploy import parse_stream_id
    from node.chain.history import HistoryError, RegistryHistory

    try:
        stream_id = parse_stream_id(stream) if stream else None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    per_stream: list[tuple[bytes, list[HeaderRecord], int, dict[str, Any]]] = []
    try:
        hist = RegistryHistory.connect(rpc_url, registry)
        latest = hist.pin()
        if to_block is not None and to_block > latest:
            typer.echo(f"error: --to-block {to_block} is past the latest block {latest}", err=True)
            raise typer.Exit(2)
        at = latest if to_block is None else to_block
        if stream_id is not None and not hist.stream_exists(stream_id, at):
            typer.echo(f"error: no stream 0x{stream_id.hex()} in the registry {hist.address} at block {at}",
                       err=True)
            raise typer.Exit(2)
        streams = [stream_id] if stream_id is not None else hist.stream_ids(at)
        for s in streams:
            recs, total = hist.last_headers(s, at, count=None if show_all else last,
                                            include_rejected=not no_rejected, from_number=from_number,
                                            from_block=from_block)
            per_stream.append((s, recs, total, hist.chain_summary(s, recs, at=at)))
    except HistoryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - an RPC that breaks mid-way: any error, reported as such
        typer.echo(f"error: reading the chain failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None

    if as_json:
        out = sys.stdout
        records = sorted((r for _, recs, _, _ in per_stream for r in recs),
                         key=lambda r: (r.block_number, r.log_index))
        for r in records:
            out.write(json.dumps({"type": "header", **r.to_json()}) + "\n")
        for _, recs, total, summ in per_stream:
            out.write(json.dumps({"type": "stream", **summ, "shown": len(recs), "total": total}) + "\n")
        if hist.truncated:
            out.write(json.dumps({"type": "truncated", "maxLogs": hist.max_logs}) + "\n")
        return
    _print_tables(hist, at, per_stream, show_all, last)


def _print_tables(hist: Any, at: int, per_stream: list[tuple[bytes, list[HeaderRecord], int, dict[str, Any]]],
                  show_all: bool, last: int) -> None:
    """One small table per stream, newest first, 8 columns that fit 80 characters."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    d = hist.domain
    console.print(f"registry [bold]{hist.address}[/] on chain {hist.chain_id} "
                  f"(EIP-712 {d.name} v{d.version}), read at block {at}")
    more = False
    for _sid, recs, total, s in per_stream:
        mark = ("[green]✓ unbroken from genesis[/]" if s["ok"]
                else "[red]✗ " + "; ".join(s["problems"] or ["a header fails"]) + "[/]")
        console.print()
        console.print(f"stream [bold]{_short(s['stream'], 10)}[/]: head #{s['headNumber']} "
                      f"{_short(s['headHash'])}, {s['commits']} commits, {mark}")
        if not recs:
            console.print("  no headers")
            continue
        more = more or len(recs) < total
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True, header_style="bold",
                      caption=f"{len(recs)} of {total} headers, newest first", caption_justify="left")
        for col in ("#", "header", "leader", "att", "ev", "block", "gas", "checks"):
            table.add_column(col, justify="right" if col in {"#", "att", "ev", "block", "gas"} else "left",
                             no_wrap=col != "checks")
        for r in recs:
            j = r.to_json()
            table.add_row(str(r.number), _short(j["headerHash"]), _short(r.leader),
                          f"{r.attestations}/{len(r.replicas)}", "-" if r.event_count is None else str(r.event_count),
                          str(r.block_number), f"{r.gas_share:,}", _checks(r))
        console.print(table)
    if more and not show_all:
        console.print(f"[dim]the newest {last} per stream; --last N or --all for more, --json for every field[/]")
    if hist.truncated:
        console.print(f"[yellow]stopped after {hist.max_logs} logs: narrow with --stream / --from-block[/]")
