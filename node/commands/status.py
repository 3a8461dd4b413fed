"""`python -m node status --node URL`: a node's identity, health, and per stream its head, members and mini-pool.

Reads only the node's HTTP API: GET /v1/info, /healthz, /v1/streams.
"""

from __future__ import annotations

import json
from typing import Any

import typer


def fetch(node: str, timeout: float = 5.0) -> dict[str, Any]:
    import httpx

    with httpx.Client(base_url=node.rstrip("/"), timeout=timeout, trust_env=False) as c:
        info = c.get("/v1/info").raise_for_status().json()
        h = c.get("/healthz")  # 503 while the node is not ready, still with a JSON body
        health = h.json()
        streams = c.get("/v1/streams").raise_for_status().json()["streams"]
    return {"node": node, "info": info, "health": health, "streams": streams}


def main(
    node: str = typer.Option(..., "--node", help="Node URL, e.g. http://127.0.0.1:8600"),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    all_streams: bool = typer.Option(True, "--all/--replicated", help="Every stream the node knows, or only "
                                     "those it replicates."),
) -> None:
    """Show a node's streams: local and on-chain heads, members, mini-pool sizes, replicas."""
    import httpx

    try:
        st = fetch(node)
    except (httpx.HTTPError, ValueError, KeyError) as e:
        if json_out:
            typer.echo(json.dumps({"node": node, "error": str(e)}))
        else:
            typer.echo(f"cannot read {node}: {e}", err=True)
        raise typer.Exit(2) from None
    if not all_streams:
        st["streams"] = [s for s in st["streams"] if s["replicated_here"]]
    if json_out:
        typer.echo(json.dumps(st))
        return

    from rich.console import Console
    from rich.table import Table

    info, h = st["info"], st["health"]
    con = Console(highlight=False)
    ok = "[green]ready[/green]" if h.get("ok") else "[red]not ready[/red]"
    con.print(f"[bold]{node}[/bold]  node {info['address']}  {ok}  "
              f"{'active' if h.get('active') else 'not active'}  epoch {h.get('epoch')}  "
              f"chain block {h.get('chain_block')}")
    con.print(f"chain id {info['chain_id']}  registry {info['registry']}  streams {h.get('streams')} "
              f"(replicated here {h.get('replicated')}, behind {h.get('behind')})  mini-pool {h.get('pool')}")
    t = Table(show_lines=False)
    t.add_column("stream")
    t.add_column("here", justify="center")
    t.add_column("head", justify="right")
    t.add_column("chain head", justify="right")
    t.add_column("members", justify="right")
    t.add_column("mini-pool", justify="right")
    t.add_column("replicas")
    for s in st["streams"]:
        t.add_row(s["stream_id"][:14] + "…", "yes" if s["replicated_here"] else "-", str(s["head_number"]),
                  "-" if s["chain_head_number"] is None else str(s["chain_head_number"]), str(len(s["members"])),
                  str(s["pool_size"]), ", ".join(r[:8] + "…" for r in s["replicas"]))
    con.print(t)
