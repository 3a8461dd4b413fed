"""The JSON-RPC transport of node/chain: one async request function, and the private event loop that
lets synchronous callers (CLIs, deploy, tests, devnet, bench) run the async client.

Everything else in node/chain speaks to the chain through `Rpc.request`, with its own ABI encoding
(node.chain.abi): web3's contract machinery costs about ten times the request, and one transport
means one place for timeouts and error decoding.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

from web3 import AsyncHTTPProvider, Web3
from web3.types import RPCEndpoint

if TYPE_CHECKING:
    from web3.types import RPCResponse

T = TypeVar("T")

BlockId = int | str  # a block number, or "latest" / "pending" / "earliest"


class RegistryError(RuntimeError):
    """A call or transaction failed; ``error`` is the contract's custom error name if known."""

    def __init__(self, message: str, error: str | None = None, args: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.error = error
        self.error_args = args


class RpcError(RegistryError):
    """The endpoint answered a JSON-RPC error; ``data`` is the revert data when there is some."""

    def __init__(self, method: str, code: int | None, message: str, data: bytes | None = None) -> None:
        super().__init__(f"{method}: {message}" + (f" (code {code})" if code is not None else ""))
        self.method = method
        self.code = code
        self.rpc_message = message
        self.data = data


def block_param(block: BlockId) -> str:
    return hex(block) if isinstance(block, int) else block


def hex_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return bytes.fromhex(value[2:] if value.startswith(("0x", "0X")) else value)


def hex_int(value: str | int | None, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, int):
        return value
    return int(value, 16)


def _revert_data(err: dict[str, Any]) -> bytes | None:
    data = err.get("data")
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None


class Rpc:
    """One HTTP JSON-RPC endpoint (aiohttp through web3's AsyncHTTPProvider), used from one event loop."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        self.provider = AsyncHTTPProvider(url, request_kwargs={"timeout": timeout})

    async def request(self, method: str, params: list[Any]) -> Any:
        resp: RPCResponse = await self.provider.make_request(RPCEndpoint(method), params)
        err = resp.get("error")
        if err:
            if isinstance(err, dict):
                e = cast(dict[str, Any], err)
                raise RpcError(method, e.get("code"), str(e.get("message", "")), _revert_data(e))
            raise RpcError(method, None, str(err))
        return resp.get("result")

    async def close(self) -> None:
        """Close the HTTP session(s) of this endpoint (before the event loop ends)."""
        await self.provider.disconnect()


def http_web3(url: str, timeout: float = 30.0) -> Web3:
    """A synchronous Web3 on `url`, for code outside node/chain that needs raw chain access (tests, bench)."""
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}))


def url_of(w3_or_url: Any) -> str:
    """The endpoint URL of a sync Web3 (its HTTPProvider) or the URL itself."""
    if isinstance(w3_or_url, str):
        return w3_or_url
    uri = getattr(getattr(w3_or_url, "provider", None), "endpoint_uri", None)
    if not uri:
        raise ValueError(f"cannot tell the HTTP endpoint of {w3_or_url!r}")
    return str(uri)


# ---- the private event loop of the synchronous wrappers ----------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="node.chain-sync", daemon=True).start()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the private loop thread and wait for it (safe from any thread but that one)."""
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("a synchronous node.chain wrapper was called from its own event loop")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()
