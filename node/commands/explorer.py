"""`python -m node explorer`: serve the header explorer web page for one registry."""

from __future__ import annotations

import typer


def main(
    rpc_url: str = typer.Option(..., "--rpc-url", help="JSON-RPC endpoint of the chain."),
    registry: str = typer.Option(..., "--registry", help="Address of the MiniblockRegistry."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8600, "--port", min=0, max=65535, help="Port to listen on."),
    node: list[str] = typer.Option([], "--node", help="A node URL to ask where an event hash is (repeatable); "
                                   "its answer is checked against the chain."),
    refresh_ms: int = typer.Option(2000, "--refresh-ms", min=0, help="How often the stream page polls the "
                                   "chain for new headers (0: never)."),
) -> None:
    from node.chain.history import HistoryError, RegistryHistory
    from node.explorer.app import create_app

    try:
        hist = RegistryHistory.connect(rpc_url, registry)
    except HistoryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    import uvicorn

    typer.echo(f"explorer for {hist.address} (chain {hist.chain_id}) on http://{host}:{port}/"
               + (f", event lookups through {', '.join(node)}" if node else ""), err=True)
    uvicorn.run(create_app(hist, node, refresh_ms=refresh_ms), host=host, port=port, log_level="warning")
