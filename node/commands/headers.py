"""`python -m node headers`: the committed headers of a registry, read from the chain alone."""

from __future__ import annotations

import json
import sys

import typer


def _short(h: str | None, n: int = 10) -> str:
    if not h:
        return "-"
    return h if len(h) <= n + 2 else f"{h[: n]}…{h[-4:]}"


def _mark(v: bool | None) -> str:
    return "[green]✓[/]" if v is True else "[red]✗[/]" if v is False else "[yellow]?[/]"


def main(
    rpc_url: str = typer.Option(..., "--rpc-url", help="JSON-RPC endpoint of the chain."),
    registry: str = typer.Option(..., "--registry", help="Address of the MiniblockRegistry."),
    stream: str | None = typer.Option(None, "--stream", help="Only this stream: 0x + 64 hex digits, or a name "
                                      "(keccak256 of it, as deploy does)."),
    from_number: int = typer.Option(0, "--from", min=0, help="Only headers with number >= N."),
    from_block: int | None = typer.Option(None, "--from-block", min=0, help="First chain block to scan."),
    to_block: int | None = typer.Option(None, "--to-block", min=0, help="Last chain block to scan."),
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
    try:
        hist = RegistryHistory.connect(rpc_url, registry)
        if stream_id is not None and not hist.stream_exists(stream_id):
            typer.echo(f"error: no stream 0x{stream_id.hex()} in the registry {hist.address}", err=True)
            raise typer.Exit(2)
        records = hist.headers(stream_id, from_number, from_block=from_block, to_block=to_block,
                               include_rejected=not no_rejected)
        streams = [stream_id] if stream_id is not None else hist.stream_ids()
        summaries = []
        if from_number == 0 and from_block is None and to_block is None:
            summaries = [hist.chain_summary(s, records) for s in streams]
    except HistoryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - an RPC that breaks mid-way: any error, reported as such
        typer.echo(f"error: reading the chain failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None

    if as_json:
        out = sys.stdout
        for r in records:
            out.write(json.dumps({"type": "header", **r.to_json()}) + "\n")
        for s in summaries:
            out.write(json.dumps({"type": "stream", **s}) + "\n")
        if hist.truncated:
            out.write(json.dumps({"type": "truncated", "maxLogs": hist.max_logs}) + "\n")
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    d = hist.domain
    console.print(f"registry [bold]{hist.address}[/] on chain {hist.chain_id} "
                  f"(EIP-712 {d.name} v{d.version}), {len(records)} headers")
    table = Table(show_lines=False, header_style="bold")
    right = {"#", "att.", "events", "block", "gas share"}
    for col in ("stream", "#", "header hash", "leader", "att.", "events", "block", "tx", "gas share", "verified"):
        table.add_column(col, justify="right" if col in right else "left")
    for r in records:
        j = r.to_json()
        v = r.verification
        if r.status == "rejected":
            verdict = f"[red]rejected {r.reason_name}[/]"
        elif v is not None:
            verdict = ("[green]✓[/]" if v.ok else "[red]✗[/]") + (
                f" hash{_mark(v.hash)} parent{_mark(v.parent)} leader{_mark(v.leader_signature)}"
                f" att{_mark(v.attestations)} quorum{_mark(v.quorum)}")
        else:
            verdict = "-"
        table.add_row(
            _short(j["stream"]), str(r.number), _short(j["headerHash"]), _short(r.leader),
            f"{r.attestations}/{len(r.replicas)}", "-" if r.event_count is None else str(r.event_count),
            str(r.block_number), _short(j["txHash"]), f"{r.gas_share:,}", verdict,
        )
    console.print(table)
    for s in summaries:
        mark = ("[green]✓ unbroken from genesis[/]" if s["ok"]
                else "[red]✗ " + "; ".join(s["problems"] or ["a header fails"]) + "[/]")
        console.print(f"stream {_short(s['stream'])}: head #{s['headNumber']} {_short(s['headHash'])}, "
                      f"{s['commits']} commits seen, {mark}")
    if hist.truncated:
        console.print(f"[yellow]stopped after {hist.max_logs} logs: narrow with --stream / --from-block[/]")
