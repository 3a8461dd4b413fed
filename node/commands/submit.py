"""`python -m node submit`: sign one event (EIP-712) and post it to a node; print its hash and status.

    python -m node submit --node http://127.0.0.1:8600 --stream general --keystore me.json --kind join
    python -m node submit --node URL --stream 0x… --key 0xRAW… --dev --payload "hello"

The signing key comes from an eth-account encrypted keystore (password in the environment variable named
by --password-env), or, only with --dev, from a raw hex key on the command line. The EIP-712 domain
(chain id, registry) is read from the node (GET /v1/info), or given with --chain-id/--registry.
The nonce defaults to the current time in microseconds (unique per author and stream in practice).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NoReturn

import typer

from node.commands.deploy import DEFAULT_PASSWORD_ENV

KINDS = {"message": 0, "join": 1, "leave": 2}


def load_client_key(key: str | None, keystore: Path | None, password_env: str, dev: bool) -> bytes:

    from node.keystore import KeystoreError, decrypt_keystore

    if key and not keystore and Path(key).is_file():
        keystore, key = Path(key), None  # --key FILE: a keystore
    if keystore and key:
        raise typer.BadParameter("give either --keystore or --key, not both")
    if keystore:
        try:
            return decrypt_keystore(keystore, password_env)
        except KeystoreError as e:
            raise typer.BadParameter(str(e)) from None
    if not key:
        raise typer.BadParameter(f"no key: give --keystore FILE (password in ${password_env}), or --key HEX with --dev")
    if not dev:
        raise typer.BadParameter("a raw --key is only accepted with --dev; use --keystore")
    try:
        raw = bytes.fromhex(key.removeprefix("0x"))
    except ValueError:
        raise typer.BadParameter("--key: 32-byte hex private key (or a keystore file)") from None
    if len(raw) != 32:
        raise typer.BadParameter("--key: 32-byte hex private key")
    return raw


def main(
    node: str = typer.Option(..., "--node", help="Node URL, e.g. http://127.0.0.1:8600"),
    stream: str = typer.Option(..., "--stream", help="Stream id: 0x + 64 hex, or a name (keccak256 of it)."),
    key: str | None = typer.Option(None, "--key", help="Raw hex key (only with --dev), or a keystore file."),
    keystore: Path | None = typer.Option(None, "--keystore", help="eth-account encrypted JSON keystore."),
    password_env: str = typer.Option(DEFAULT_PASSWORD_ENV, "--password-env",
                                     help="Env var holding the keystore password."),
    dev: bool = typer.Option(False, "--dev", help="Allow a raw private key on the command line."),
    kind: str = typer.Option("message", "--kind", help="message | join | leave"),
    payload: str = typer.Option("", "--payload", help="Text payload (UTF-8); 0x… is taken as hex bytes."),
    nonce: int | None = typer.Option(None, "--nonce", min=0, help="Default: time in microseconds."),
    wait: float = typer.Option(30.0, "--wait", help="Seconds to wait for the commit (0: do not wait)."),
    chain_id: int | None = typer.Option(None, "--chain-id", help="EIP-712 domain (default: from the node)."),
    registry: str | None = typer.Option(None, "--registry", help="EIP-712 domain (default: from the node)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Sign one event and post it to a node; print its hash and status."""
    import httpx

    from node.chain.deploy import parse_stream_id
    from node.protocol.eip712 import address_of, hash_event
    from node.protocol.types import Domain, Event
    from node.server.client import NodeClient, signed_event_json

    if kind.lower() not in KINDS:
        raise typer.BadParameter(f"--kind must be one of {', '.join(KINDS)}")
    try:
        sid = parse_stream_id(stream)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if payload.startswith("0x"):
        try:
            data = bytes.fromhex(payload[2:])
        except ValueError:
            raise typer.BadParameter("--payload 0x… must be hex") from None
    else:
        data = payload.encode()
    priv = load_client_key(key, keystore, password_env, dev)
    author = address_of(priv)

    client = NodeClient(node, timeout=10.0)
    try:
        version = "1"
        try:  # the node's registry domain (its version: "1" or "2")
            info = client.http.get("/v1/info").raise_for_status().json()
        except httpx.HTTPError as e:
            if chain_id is None or registry is None:
                _fail(json_out, f"cannot read {node}/v1/info: {e}", 2)
            info = {}
        chain_id = chain_id or info["chain_id"]
        registry = registry or info["registry"]
        if info.get("registry", "").lower() == str(registry).lower():
            version = str(info.get("domain_version", "1"))
        domain = Domain(chain_id, registry, version=version)
        ev = Event(sid, author, time.time_ns() // 1000 if nonce is None else nonce, KINDS[kind.lower()], data)
        h = hash_event(ev)
        try:
            r = client.post_event(signed_event_json(domain, ev, priv))
        except httpx.HTTPError as e:
            _fail(json_out, f"cannot post to {node}: {e}", 2)
        out = {"hash": "0x" + h.hex(), "author": author, "stream_id": "0x" + sid.hex(), "nonce": ev.nonce,
               "kind": kind.lower(), "node": node}
        if r.status_code != 202:
            try:
                j = r.json()
                reason = f"{j.get('error')}: {j.get('detail')}"
            except ValueError:
                reason = r.text[:200]
            out.update(status="refused", http_status=r.status_code, error=reason)
            _print(out, json_out)
            raise typer.Exit(1)
        out["status"] = r.json()["status"]
        deadline = time.monotonic() + wait
        while out["status"] != "committed" and time.monotonic() < deadline:
            time.sleep(0.2)
            st = client.event(h)
            if st and st["status"] == "committed":
                out.update(status="committed", block=st["block"], index=st["index"], header_hash=st["header_hash"])
        if out["status"] == "committed" and "block" not in out:
            st = client.event(h) or {}
            out.update(block=st.get("block"), index=st.get("index"), header_hash=st.get("header_hash"))
        _print(out, json_out)
    finally:
        client.close()


def _print(out: dict[str, Any], json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(out))
        return
    typer.echo(out["hash"])
    line = f"status: {out['status']}"
    if out.get("block") is not None:
        line += f" in block {out['block']} (index {out['index']}, header {out['header_hash']})"
    if out.get("error"):
        line += f" (HTTP {out['http_status']}: {out['error']})"
    typer.echo(line)


def _fail(json_out: bool, msg: str, code: int) -> NoReturn:
    if json_out:
        typer.echo(json.dumps({"status": "error", "error": msg}))
    else:
        typer.echo(msg, err=True)
    raise typer.Exit(code)
