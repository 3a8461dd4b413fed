"""The one transaction sender of node/chain: nonce, EIP-1559 fees, gas, retries, receipt, reverts.

`TxSender` signs locally with an eth-account LocalAccount and keeps the account's nonce: it starts
at the chain's pending count, is re-read after any failure (a restarted process, or a transaction
sent elsewhere, is picked up), and a send refused for its nonce is retried once with the chain's
count. A connection error or timeout while sending is retried with the same signed transaction
(an "already known" answer then means the first try got through). A revert at gas estimation is
raised as RegistryError with the contract's custom error decoded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from .logs import Receipt
from .rpc import BlockId, RegistryError, Rpc, RpcError, block_param, hex_int

ErrorDecoder = Callable[[bytes | None], tuple[str | None, tuple[Any, ...]]]

# Failures of the transport itself (worth another try), as opposed to an answer from the node.
TRANSIENT = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)
SEND_TRIES = 3
DEFAULT_TIP = 10**9


def _no_errors(_data: bytes | None) -> tuple[str | None, tuple[Any, ...]]:
    return None, ()


def revert_error(e: RpcError, what: str, decode: ErrorDecoder) -> RegistryError:
    """A RegistryError naming the contract's custom error of a reverted call/estimate, if decodable."""
    name, args = decode(e.data)
    if name:
        return RegistryError(f"{what}: reverted {name}{args}", name, args)
    return RegistryError(f"{what}: {e.rpc_message}")


class TxSender:
    """Signs and sends transactions for one LocalAccount, keeping its nonce locally (one event loop)."""

    def __init__(
        self,
        rpc: Rpc,
        account: LocalAccount,
        *,
        gas_margin: float = 1.25,
        gas_extra: int = 20_000,
        receipt_timeout: float = 120.0,
        poll_latency: float = 0.05,
        estimate_block: BlockId = "pending",
        cap_to_block_limit: bool = True,
    ) -> None:
        self.rpc = rpc
        self.account = account
        self.gas_margin = gas_margin
        self.gas_extra = gas_extra
        self.receipt_timeout = receipt_timeout
        self.poll_latency = poll_latency
        self.estimate_block = estimate_block
        self.cap_to_block_limit = cap_to_block_limit
        self._lock = asyncio.Lock()
        self._nonce: int | None = None
        self._chain_id: int | None = None

    @property
    def address(self) -> str:
        return str(self.account.address)

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = hex_int(await self.rpc.request("eth_chainId", []))
        return self._chain_id

    def reset_nonce(self) -> None:
        self._nonce = None

    async def chain_nonce(self) -> int:
        return hex_int(await self.rpc.request("eth_getTransactionCount", [self.address, "pending"]))

    async def fees(self) -> dict[str, int]:
        """EIP-1559 fees (twice the base fee plus the node's suggested tip), or a legacy gas price."""
        latest = await self.rpc.request("eth_getBlockByNumber", ["latest", False])
        base = latest.get("baseFeePerGas") if latest else None
        if base is None:
            return {"gasPrice": hex_int(await self.rpc.request("eth_gasPrice", []))}
        try:
            tip = hex_int(await self.rpc.request("eth_maxPriorityFeePerGas", []))
        except RpcError:  # not every endpoint has it
            tip = DEFAULT_TIP
        return {"maxFeePerGas": 2 * hex_int(base) + tip, "maxPriorityFeePerGas": tip}

    async def estimate_gas(self, to: str | None, data: bytes, value: int = 0, *,
                           decode_error: ErrorDecoder = _no_errors, what: str = "transaction") -> int:
        call: dict[str, Any] = {"from": self.address, "data": "0x" + data.hex(), "value": hex(value)}
        if to is not None:
            call["to"] = to_checksum_address(to)
        try:
            return hex_int(await self.rpc.request("eth_estimateGas", [call, block_param(self.estimate_block)]))
        except RpcError as e:
            raise revert_error(e, what, decode_error) from e

    async def _gas(self, to: str | None, data: bytes, value: int, decode_error: ErrorDecoder, what: str) -> int:
        est = await self.estimate_gas(to, data, value, decode_error=decode_error, what=what)
        gas = int(est * self.gas_margin) + self.gas_extra
        if self.cap_to_block_limit:
            latest = await self.rpc.request("eth_getBlockByNumber", ["latest", False])
            gas = min(gas, hex_int(latest["gasLimit"]))
        return gas

    async def send(
        self, to: str | None, data: bytes, *, gas: int | None = None, value: int = 0, wait: bool = True,
        decode_error: ErrorDecoder = _no_errors, what: str = "transaction",
    ) -> Receipt | bytes:
        """Sign and send a call of `to` with `data` (`to=None`: a contract creation).

        Returns the receipt (``wait=True``) or the tx hash. Raises RegistryError on a revert at
        estimation (with the custom error decoded) and RpcError on a refused send."""
        async with self._lock:
            try:
                if self._nonce is None:
                    self._nonce = await self.chain_nonce()
                tx: dict[str, Any] = {"nonce": self._nonce, "chainId": await self.chain_id(), "value": value,
                                      "data": data, **(await self.fees())}
                if to is not None:
                    tx["to"] = to_checksum_address(to)
                tx["gas"] = gas if gas is not None else await self._gas(to, data, value, decode_error, what)
                tx_hash = await self._send_signed(tx)
            except BaseException:
                self._nonce = None  # resync from the chain next time
                raise
            self._nonce = tx["nonce"] + 1
        if not wait:
            return tx_hash
        return await self.wait_receipt(tx_hash)

    async def _send_signed(self, tx: dict[str, Any]) -> bytes:
        resynced = False
        attempt = 0
        while True:
            raw = bytes(self.account.sign_transaction(tx).raw_transaction)
            tx_hash = keccak(raw)
            try:
                await self.rpc.request("eth_sendRawTransaction", ["0x" + raw.hex()])
                return tx_hash
            except TRANSIENT:
                attempt += 1
                if attempt >= SEND_TRIES:
                    raise
                await asyncio.sleep(0.2 * attempt)
            except RpcError as e:
                msg = e.rpc_message.lower()
                if attempt > 0 and ("already known" in msg or "already imported" in msg):
                    return tx_hash  # an earlier try that timed out did get through
                if not resynced and "nonce" in msg:
                    # Someone else used this account: take the chain's count, once.
                    resynced = True
                    tx["nonce"] = await self.chain_nonce()
                    continue
                raise

    async def wait_receipt(self, tx_hash: bytes, timeout: float | None = None) -> Receipt:
        deadline = time.monotonic() + (self.receipt_timeout if timeout is None else timeout)
        while True:
            try:
                r = await self.rpc.request("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
            except TRANSIENT:
                r = None
            if r and r.get("blockNumber") is not None:
                return Receipt.from_rpc(r)
            if time.monotonic() > deadline:
                raise TimeoutError(f"transaction 0x{tx_hash.hex()} not mined within the timeout")
            await asyncio.sleep(self.poll_latency)
