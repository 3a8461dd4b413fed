"""The one transaction sender of node/chain: nonce, EIP-1559 fees, gas, replacement, receipt, reverts.

`TxSender` signs locally with an eth-account LocalAccount and keeps the account's nonce:

- **Nonce.** It starts at the chain's `pending` count (a restarted process does not reuse the nonce of a
  transaction it sent before dying that is still in flight). A send refused for its nonce re-reads the
  count once. A transaction that waits while the chain's `latest` count is below its nonce has a gap
  under it (earlier transactions were dropped: a reorg, or an in-flight transaction of a previous run
  that the pool evicted): it is re-sent at the `latest` count, and the next nonces follow from there.
- **Fees.** EIP-1559: `maxFeePerGas = 2 x base fee + tip`, never above the policy's ceiling
  (`FeePolicy.max_fee_wei`); a legacy gas price where the chain has no base fee.
- **Stuck transactions.** Not mined after `FeePolicy.replace_after_s`: re-sent if the endpoint forgot it,
  else replaced (same nonce, same call) with tip and fee raised by `bump` (>= 1.10, the pools' rule),
  within the ceiling. The receipt of whichever version was mined is returned.
- **Transport.** Timeouts and connection errors are retried by node.chain.rpc (with back-off and
  failover); "already known" for the same signed bytes means an earlier try got through.

A revert at gas estimation is raised as RegistryError with the contract's custom error decoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from . import access_list
from .logs import Receipt
from .rpc import BlockId, RegistryError, Rpc, RpcError, RpcUnavailable, block_param, hex_int

log = logging.getLogger("node.chain.tx")

ErrorDecoder = Callable[[bytes | None], tuple[str | None, tuple[Any, ...]]]

# Failures of the transport itself (worth another try), as opposed to an answer from the node.
TRANSIENT = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, RpcUnavailable)
SEND_TRIES = 3
UNDERPRICED_TRIES = 6
DEFAULT_TIP = 10**9
GWEI = 10**9


@dataclass(frozen=True)
class FeePolicy:
    """How much a sender may pay, and when it replaces a transaction that does not get mined."""

    max_fee_wei: int | None = None  # ceiling on maxFeePerGas (and on a legacy gas price); None: none
    tip_wei: int | None = None  # None: the endpoint's eth_maxPriorityFeePerGas (DEFAULT_TIP without it)
    replace_after_s: float = 15.0  # not mined this long: re-send or replace with a bumped fee
    bump: float = 1.125  # fee factor of a replacement (pools want at least +10 %)

    @classmethod
    def gwei(cls, max_fee_gwei: float | None = None, **kw: Any) -> FeePolicy:
        return cls(max_fee_wei=None if max_fee_gwei is None else int(max_fee_gwei * GWEI), **kw)


@dataclass
class TxStats:
    """What the sender went through (plain counters: node/server/metrics.py exports them)."""

    sent: int = 0
    replaced: int = 0  # same nonce, bumped fee
    resent: int = 0  # same transaction again (the endpoint had dropped it)
    gaps: int = 0  # re-sent at a lower nonce: transactions under it were dropped
    nonce_resyncs: int = 0  # the local nonce re-read from the chain after a refusal or failure
    underpriced: int = 0  # a send refused as an underpriced replacement (fee bumped and retried)
    fee_capped: int = 0  # fees cut to the ceiling
    in_flight_at_start: int = 0  # pending - latest when the nonce was first read
    receipt_timeouts: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def _no_errors(_data: bytes | None) -> tuple[str | None, tuple[Any, ...]]:
    return None, ()


def revert_error(e: RpcError, what: str, decode: ErrorDecoder) -> RegistryError:
    """A RegistryError naming the contract's custom error of a reverted call/estimate, if decodable."""
    name, args = decode(e.data)
    if name:
        return RegistryError(f"{what}: reverted {name}{args}", name, args)
    return RegistryError(f"{what}: {e.rpc_message}")


class NonceTaken(RegistryError):
    """Another transaction (not one of this sender's versions) was mined with this nonce."""


def _bumped(tx: dict[str, Any], factor: float, cap: int | None) -> bool:
    """Raise the fees of `tx` in place by `factor` (at least +1 wei), within `cap`. False if at the cap."""
    keys = ("maxFeePerGas", "maxPriorityFeePerGas") if "maxFeePerGas" in tx else ("gasPrice",)
    changed = False
    for k in keys:
        new = max(int(tx[k] * factor), tx[k] + 1)
        if cap is not None:
            new = min(new, cap)
        if new > tx[k]:
            tx[k] = new
            changed = True
    if "maxFeePerGas" in tx and tx["maxPriorityFeePerGas"] > tx["maxFeePerGas"]:
        tx["maxPriorityFeePerGas"] = tx["maxFeePerGas"]
    return changed


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
        fees: FeePolicy | None = None,
    ) -> None:
        self.rpc = rpc
        self.account = account
        self.gas_margin = gas_margin
        self.gas_extra = gas_extra
        self.receipt_timeout = receipt_timeout
        self.poll_latency = poll_latency
        self.estimate_block = estimate_block
        self.cap_to_block_limit = cap_to_block_limit
        self.policy = fees or FeePolicy()
        self.stats = TxStats()
        self._lock = asyncio.Lock()
        self._nonce: int | None = None
        self._chain_id: int | None = None
        self._started = False
        self._no_access_lists = False  # the endpoint has no eth_createAccessList

    @property
    def address(self) -> str:
        return str(self.account.address)

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = hex_int(await self.rpc.request("eth_chainId", []))
        return self._chain_id

    def reset_nonce(self) -> None:
        self._nonce = None

    async def chain_nonce(self, block: str = "pending") -> int:
        return hex_int(await self.rpc.request("eth_getTransactionCount", [self.address, block]))

    async def _first_nonce(self) -> int:
        pending = await self.chain_nonce("pending")
        if not self._started:
            self._started = True
            latest = await self.chain_nonce("latest")
            self.stats.in_flight_at_start = max(0, pending - latest)
            if pending > latest:
                log.info("%s: %d transaction(s) in flight from before (nonces %d..%d); continuing at %d",
                         self.address, pending - latest, latest, pending - 1, pending)
        return pending

    async def fees(self) -> dict[str, int]:
        """EIP-1559 fees (twice the base fee plus the tip), or a legacy gas price; within the ceiling."""
        cap = self.policy.max_fee_wei
        latest = await self.rpc.request("eth_getBlockByNumber", ["latest", False])
        base = latest.get("baseFeePerGas") if latest else None
        if base is None:
            price = hex_int(await self.rpc.request("eth_gasPrice", []))
            if cap is not None and price > cap:
                self.stats.fee_capped += 1
                price = cap
            return {"gasPrice": price}
        tip = self.policy.tip_wei
        if tip is None:
            try:
                tip = hex_int(await self.rpc.request("eth_maxPriorityFeePerGas", []))
            except RpcError:  # not every endpoint has it
                tip = DEFAULT_TIP
        fee = 2 * hex_int(base) + tip
        if cap is not None and fee > cap:
            self.stats.fee_capped += 1
            fee = cap
            tip = min(tip, cap)
        return {"maxFeePerGas": fee, "maxPriorityFeePerGas": tip}

    async def estimate_gas(self, to: str | None, data: bytes, value: int = 0, *,
                           decode_error: ErrorDecoder = _no_errors, what: str = "transaction") -> int:
        call: dict[str, Any] = {"from": self.address, "data": "0x" + data.hex(), "value": hex(value)}
        if to is not None:
            call["to"] = to_checksum_address(to)
        try:
            return hex_int(await self.rpc.request("eth_estimateGas", [call, block_param(self.estimate_block)]))
        except RpcError as e:
            raise revert_error(e, what, decode_error) from e

    async def create_access_list(self, to: str, data: bytes) -> access_list.AccessList:
        """The part of the endpoint's `eth_createAccessList` for this call that saves gas ([] when none
        does, the call reverts in simulation, the endpoint cannot be reached, or it lacks the method: then
        never asked again)."""
        if self._no_access_lists:
            return []
        call = {"from": self.address, "to": to_checksum_address(to), "data": "0x" + data.hex()}
        try:
            res = await self.rpc.request("eth_createAccessList", [call, block_param(self.estimate_block)])
        except RpcError as e:
            if e.code == -32601 or "not found" in e.rpc_message.lower() or "not supported" in e.rpc_message.lower():
                self._no_access_lists = True
                log.info("the endpoint has no eth_createAccessList: transactions go without access lists")
            return []
        except TRANSIENT:  # the list is optional: a transport failure must not fail the send it would serve
            return []
        if not isinstance(res, dict) or res.get("error"):
            return []
        return access_list.worthwhile(res.get("accessList") or [])

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
        access: access_list.AccessList | None = None,
    ) -> Receipt | bytes:
        """Sign and send a call of `to` with `data` (`to=None`: a contract creation).

        Returns the receipt (``wait=True``: replacing the transaction while it is stuck) or the tx hash.
        Raises RegistryError on a revert at estimation (with the custom error decoded) and RpcError on a
        refused send. ``access``: an EIP-2930 access list to attach (its intrinsic gas is then part of
        ``gas``; an estimate is made without it and the list's cost added)."""
        async with self._lock:
            try:
                if self._nonce is None:
                    self._nonce = await self._first_nonce()
                tx: dict[str, Any] = {"nonce": self._nonce, "chainId": await self.chain_id(), "value": value,
                                      "data": data, **(await self.fees())}
                if to is not None:
                    tx["to"] = to_checksum_address(to)
                if access:
                    tx["accessList"] = access
                tx["gas"] = gas if gas is not None else (
                    await self._gas(to, data, value, decode_error, what) + access_list.intrinsic(access or []))
                tx_hash = await self._send_signed(tx)
            except BaseException:
                self._nonce = None  # resync from the chain next time
                raise
            self._nonce = tx["nonce"] + 1
        if not wait:
            return tx_hash
        return await self._wait_replacing(tx, [tx_hash])

    async def _send_signed(self, tx: dict[str, Any]) -> bytes:
        resynced = False
        attempt = 0
        underpriced = 0
        while True:
            raw = bytes(self.account.sign_transaction(tx).raw_transaction)
            tx_hash = keccak(raw)
            try:
                await self.rpc.request("eth_sendRawTransaction", ["0x" + raw.hex()])
                self.stats.sent += 1
                return tx_hash
            except TRANSIENT:
                attempt += 1
                if attempt >= SEND_TRIES:
                    raise
                await asyncio.sleep(0.2 * attempt)
            except RpcError as e:
                msg = e.rpc_message.lower()
                if "already known" in msg or "already imported" in msg:
                    return tx_hash  # these very bytes are in the pool: an earlier try got through
                if "underpriced" in msg or "replacement" in msg:
                    # An older transaction of ours holds this nonce in the pool (a stuck one, or one left
                    # queued above a gap): outbid it.
                    self.stats.underpriced += 1
                    underpriced += 1
                    if underpriced > UNDERPRICED_TRIES or not _bumped(tx, self.policy.bump, self.policy.max_fee_wei):
                        raise
                    continue
                if not resynced and "nonce" in msg:
                    if await self._known(tx_hash):
                        return tx_hash  # a timed-out try went through and was mined
                    # Someone else used this account: take the chain's count, once.
                    resynced = True
                    self.stats.nonce_resyncs += 1
                    tx["nonce"] = await self.chain_nonce("pending")
                    continue
                raise

    async def _known(self, tx_hash: bytes) -> bool:
        try:
            return await self.rpc.request("eth_getTransactionByHash", ["0x" + tx_hash.hex()]) is not None
        except (RpcError, *TRANSIENT):
            return False

    async def _receipt(self, tx_hash: bytes) -> Receipt | None:
        try:
            r = await self.rpc.request("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
        except TRANSIENT:
            return None
        if r and r.get("blockNumber") is not None:
            return Receipt.from_rpc(r)
        return None

    async def _wait_replacing(self, tx: dict[str, Any], hashes: list[bytes]) -> Receipt:
        """The receipt of one of `hashes` (versions of `tx`); re-sends or replaces `tx` while it is stuck."""
        deadline = time.monotonic() + self.receipt_timeout
        next_check = time.monotonic() + self.policy.replace_after_s
        taken_seen = False
        while True:
            for h in reversed(hashes):
                r = await self._receipt(h)
                if r is not None:
                    return r
            now = time.monotonic()
            if now > deadline:
                self.stats.receipt_timeouts += 1
                raise TimeoutError(f"transaction 0x{hashes[-1].hex()} (nonce {tx['nonce']}) not mined within "
                                   f"{self.receipt_timeout:g}s")
            if now >= next_check:
                next_check = now + self.policy.replace_after_s
                try:
                    new = await self._unstick(tx, hashes, taken_seen)
                except NonceTaken:
                    raise
                except (RpcError, *TRANSIENT) as e:  # the endpoint is in trouble: keep waiting, try later
                    log.warning("could not re-send stuck transaction nonce %d: %s", tx["nonce"], e)
                    new = None
                if new == b"taken":
                    taken_seen = True
                elif new is not None:
                    hashes.append(new)
            await asyncio.sleep(self.poll_latency)

    async def _unstick(self, tx: dict[str, Any], hashes: list[bytes], taken_seen: bool) -> bytes | None:
        latest = await self.chain_nonce("latest")
        if latest > tx["nonce"]:
            # The nonce is used. By one of our versions (its receipt shows up in the next round), or not.
            if taken_seen:
                self._nonce = None
                raise NonceTaken(f"nonce {tx['nonce']} of {self.address} was used by another transaction")
            return b"taken"
        async with self._lock:
            if latest < tx["nonce"]:
                # A gap under us: earlier transactions were dropped. Fill it with this call.
                self.stats.gaps += 1
                log.warning("%s: nonce gap (chain at %d, tx at %d): re-sending at %d", self.address, latest,
                            tx["nonce"], latest)
                tx["nonce"] = latest
                h = await self._send_signed(tx)
                self._nonce = tx["nonce"] + 1  # the nonces above were the dropped ones'
                return h
            if not any([await self._known(h) for h in hashes]):
                self.stats.resent += 1
                log.info("%s: nonce %d dropped by the endpoint; sending it again", self.address, tx["nonce"])
                return await self._send_signed(tx)
            if not _bumped(tx, self.policy.bump, self.policy.max_fee_wei):
                log.warning("%s: nonce %d stuck at the fee ceiling (%s wei)", self.address, tx["nonce"],
                            self.policy.max_fee_wei)
                return None
            fresh = await self.fees()
            for k, v in fresh.items():  # never below what the chain asks now
                if k in tx and v > tx[k]:
                    tx[k] = v
            self.stats.replaced += 1
            log.info("%s: replacing stuck nonce %d (fee %s)", self.address, tx["nonce"],
                     tx.get("maxFeePerGas", tx.get("gasPrice")))
            return await self._send_signed(tx)

    async def wait_receipt(self, tx_hash: bytes, timeout: float | None = None) -> Receipt:
        deadline = time.monotonic() + (self.receipt_timeout if timeout is None else timeout)
        while True:
            r = await self._receipt(tx_hash)
            if r is not None:
                return r
            if time.monotonic() > deadline:
                self.stats.receipt_timeouts += 1
                raise TimeoutError(f"transaction 0x{tx_hash.hex()} not mined within the timeout")
            await asyncio.sleep(self.poll_latency)
