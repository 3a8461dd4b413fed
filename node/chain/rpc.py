"""The JSON-RPC transport of node/chain: one async request function, and the private event loop that
lets synchronous callers (CLIs, deploy, tests, devnet, bench) run the async client.

Everything else in node/chain speaks to the chain through `Rpc.request`, with its own ABI encoding
(node.chain.abi): web3's contract machinery costs about ten times the request, and one transport
means one place for timeouts, retries with back-off, endpoint failover and error decoding.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import aiohttp
from web3 import Web3

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


class RpcUnavailable(RegistryError, ConnectionError):
    """No endpoint gave a JSON-RPC answer (timeouts, refused connections, HTTP errors, garbage) within the
    retries. A ConnectionError, so callers that retry on transport failures retry on it too."""


@dataclass
class RpcStats:
    """What the transport went through (plain counters: node/server/metrics.py exports them)."""

    requests: int = 0
    retries: dict[str, int] = field(default_factory=dict)  # by kind: timeout, connection, http, garbage
    failovers: int = 0  # switches to the next endpoint
    unavailable: int = 0  # requests that failed after every retry
    rpc_errors: int = 0  # JSON-RPC error answers (not retried: they are answers)

    def retried(self, kind: str) -> None:
        self.retries[kind] = self.retries.get(kind, 0) + 1


class _Transient(Exception):
    """One try failed at the transport level (worth another try, maybe on another endpoint)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}


class Rpc:
    """HTTP JSON-RPC over one or more endpoints (aiohttp), used from one event loop at a time.

    Why retries live here: every caller (views, log scans, the sender) needs the same answer to a flaky
    endpoint. A try that times out, cannot connect, gets a retryable HTTP status or an answer that is
    not JSON-RPC is retried with exponential back-off (with jitter), moving to the next URL of `urls`
    each time (failover); after `retries` more tries the request raises RpcUnavailable. A JSON-RPC
    error answer is raised at once as RpcError (the endpoint works; the request is what failed).
    Re-sending eth_sendRawTransaction is safe: the same signed bytes are the same transaction."""

    def __init__(self, url: str | Sequence[str], timeout: float = 30.0, *, retries: int = 4,
                 backoff: float = 0.25, max_backoff: float = 5.0, stats: RpcStats | None = None) -> None:
        urls = [url] if isinstance(url, str) else [u for u in url if u]
        if not urls:
            raise ValueError("no RPC URL")
        self.urls = urls
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stats = stats if stats is not None else RpcStats()
        self._current = 0
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._id = 0

    @property
    def url(self) -> str:
        """The endpoint in use now."""
        return self.urls[self._current]

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._session_loop = loop
        return self._session

    async def _once(self, url: str, method: str, params: list[Any]) -> Any:
        self._id += 1
        body = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": params}
        try:
            async with self._session_here().post(url, json=body) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError as e:
            raise _Transient("timeout", f"{url}: no answer within {self.timeout:g}s") from e
        except (aiohttp.ClientError, OSError) as e:
            raise _Transient("connection", f"{url}: {type(e).__name__}: {e}") from e
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or ("result" not in doc and "error" not in doc):
            if status in RETRY_HTTP or status >= 500:
                raise _Transient("http", f"{url}: HTTP {status}")
            raise _Transient("garbage", f"{url}: HTTP {status}, not a JSON-RPC answer: {raw[:80]!r}")
        err = doc.get("error")
        if err:
            self.stats.rpc_errors += 1
            if isinstance(err, dict):
                d = cast(dict[str, Any], err)
                raise RpcError(method, d.get("code"), str(d.get("message", "")), _revert_data(d))
            raise RpcError(method, None, str(err))
        return doc.get("result")

    async def request(self, method: str, params: list[Any]) -> Any:
        self.stats.requests += 1
        last = ""
        for attempt in range(self.retries + 1):
            url = self.url
            try:
                return await self._once(url, method, params)
            except _Transient as t:
                last = str(t)
                if attempt == self.retries:
                    break
                self.stats.retried(t.kind)
                if len(self.urls) > 1:
                    self._current = (self._current + 1) % len(self.urls)
                    self.stats.failovers += 1
                delay = min(self.max_backoff, self.backoff * 2 ** attempt)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
        self.stats.unavailable += 1
        raise RpcUnavailable(f"{method}: no JSON-RPC answer after {self.retries + 1} tries ({last})")

    async def close(self) -> None:
        """Close the HTTP session (before the event loop ends)."""
        s, self._session = self._session, None
        if s is not None and not s.closed:
            await s.close()


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
