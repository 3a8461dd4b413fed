"""`python -m node`: the command-line entry point.

Thin on purpose: each subcommand's body lives in its own module (node/commands/,
or the owning package) and is imported lazily, so `python -m node build` does not
pay for web3 and a teammate's new subcommand is one `add` line here.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Mini-block node tools.")


@app.callback()
def _root() -> None:
    """Mini-block node tools."""


def _register() -> None:
    from node.commands import build as build_cmd
    from node.commands import deploy as deploy_cmd

    app.command("build", help="Compile contracts/src into build/contracts (cached).")(build_cmd.main)
    app.command("deploy", help="Deploy the registry, allow operators, register nodes, create streams.")(
        deploy_cmd.main
    )

    from node.commands import explorer as explorer_cmd
    from node.commands import headers as headers_cmd

    app.command("headers", help="The committed headers of a registry, verified from the chain alone.")(headers_cmd.main)
    app.command("explorer", help="Serve the header explorer web page for a registry.")(explorer_cmd.main)

    from node.commands import devnet as devnet_cmd

    app.command("devnet", help="A local devnet: Anvil, registry, N node processes, a load generator, live figures.")(
        devnet_cmd.main
    )
    from node.commands import status as status_cmd
    from node.commands import submit as submit_cmd

    app.command("submit", help="Sign an event (keystore, or a raw key with --dev) and post it to a node.")(
        submit_cmd.main
    )
    app.command("status", help="A node's streams: heads, members, mini-pool sizes (--json).")(status_cmd.main)
    from node.commands import watch as watch_cmd

    app.command("watch", help="Print a stream's blocks and events as they commit (WebSocket subscription).")(
        watch_cmd.main
    )
    from node.commands import register as register_cmd

    app.command("register", help="Register a node (its RANDAO onion made in its data dir) as its operator.")(
        register_cmd.register
    )
    app.command("evict", help="Evict a node at the next epoch boundary (registry owner).")(register_cmd.evict)
    app.command("renew-onion", help="Give a node a fresh RANDAO onion (its operator).")(register_cmd.renew_onion)
    app.command("create-stream", help="Create streams; the registry picks their replicas.")(
        register_cmd.create_stream
    )

    from node.commands import bench as bench_cmd

    app.command("bench", help="Benchmarks: throughput, latency, gas, node cost, scale, ceilings (JSON lines + PNG).")(
        bench_cmd.main
    )

    from node.commands import chaos as chaos_cmd

    app.command("chaos", help="A devnet under load and random faults, then checks: nothing lost, nodes = chain.")(
        chaos_cmd.main
    )

    from node.server import runcmd as run_cmd

    app.command("run", help="Run a mini-block node (--config node.toml; flags; NODE_* env).")(run_cmd.main)


_register()


def main() -> None:
    app()
