from __future__ import annotations

import typer


def main(
    force: bool = typer.Option(False, "--force", help="Recompile even if the cache is fresh."),
) -> None:
    from node.build import BuildError, build

    try:
        arts = build(force=force)
    except BuildError as e:
        typer.echo(f"build failed: {e}", err=True)
        raise typer.Exit(1) from None
    for name, path in sorted(arts.items()):
        typer.echo(f"{name}: {path}")
