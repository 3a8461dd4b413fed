"""`python -m node run`: start a node. Every setting from --config FILE, NODE_* env, or flags.

The flags are made from `NodeConfig`'s fields, one per setting, with the setting's comment in
node/server/config.py as its help: a new setting gets its flag, env var and documentation in one place.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import typer

from node.server import config as config_module
from node.server.config import NodeConfig

# A few settings read better with their own flag words or help than the generic ones.
FLAG_WORDS = {
    "dev": ("--dev",),
    "produce": ("--produce/--no-produce",),
    "sync_all_streams": ("--sync-all-streams/--sync-own-streams",),
}
HELP = {
    "dev": "allow a raw private key (--dev-key / NODE_DEV_KEY)",
    "keystore": "eth-account encrypted keystore; password in $NODE_KEY_PASSWORD",
    "sqlite_sync": "OFF | NORMAL | FULL | EXTRA",
}


def setting_help() -> dict[str, str]:
    """Each setting's trailing comment in config.py (`name: type = default  # help`)."""
    src = inspect.getsource(config_module)
    return {m[1]: m[2].strip() for m in re.finditer(r"^ {4}(\w+):[^#\n]*#\s*(.+)$", src, re.M)}


def _parameters() -> list[inspect.Parameter]:
    helps = setting_help() | HELP
    params = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
                                default=typer.Option(None, "--config", "-c", help="node.toml (\\[node] table)"))]
    for name, field in NodeConfig.model_fields.items():
        ann: Any = field.annotation
        base = bool if ann is bool else ann
        words = FLAG_WORDS.get(name)
        if words is None and base is bool:
            dash = name.replace("_", "-")
            words = (f"--{dash}/--no-{dash}",)
        option = typer.Option(None, *(words or ()), help=helps.get(name))
        annotation = bool if name == "dev" else base | None
        default: Any = typer.Option(False, *words, help=helps.get(name)) if name == "dev" and words else option
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default))
    return params


def main(**flags: Any) -> None:
    """Run a mini-block node."""
    from node.server.app import run
    from node.server.config import load_config

    config = flags.pop("config", None)
    if flags.get("dev") is False:
        flags["dev"] = None  # not given: the file or env decides
    cfg = load_config(config, flags)
    run(cfg)


main.__signature__ = inspect.Signature(_parameters())  # type: ignore[attr-defined]
