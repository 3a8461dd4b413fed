"""node.chain transport and sender against a real Anvil: fee ceiling, stuck transactions replaced with a
bumped fee, nonces after a restart with transactions in flight, a nonce gap after a reorg, retries with
back-off and failover over several RPC URLs, and endpoints that answer garbage or hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from bad_endpoints import bad_endpoints
from eth_account import Account

from node.chain import access_list
from node.chain.anvil import DEV_KEYS, Anvil, free_port
from node.chain.rpc import Rpc, RpcUnavailable
from node.chain.tx import GWEI, FeePolicy, TxSender

pytestmark = pytest.mark.timeout(120)

KEY = DEV_KEYS[7]
TO = Account.from_key(DEV_KEYS[8]).address


@pytest.fixture
def manual() -> Iterator[Anvil]:
    """An Anvil that mines only when told (evm_mine): transactions stay pending."""
    with Anvil(extra_args=["--no-mining"]) as a:
        yield a


@pytest.fixture
def auto() -> Iterator[Anvil]:
    with Anvil() as a:
        yield a


def sender(url: str | list[str], **policy) -> TxSender:
    return TxSender(Rpc(url, timeout=5.0, retries=2, backoff=0.05), Account.from_key(KEY),
                    fees=FeePolicy(**policy), receipt_timeout=20.0)


def test_fee_ceiling_caps_max_fee(auto):
    async def go():
        s = sender(auto.http_url, max_fee_wei=2 * GWEI)
        h = await s.send(TO, b"", gas=21_000, value=1, wait=False)
        tx = await s.rpc.request("eth_getTransactionByHash", ["0x" + h.hex()])
        await s.rpc.close()
        return int(tx["maxFeePerGas"], 16), s.stats.fee_capped

    fee, capped = asyncio.run(go())
    assert fee <= 2 * GWEI and capped >= 1


def test_stuck_transaction_is_replaced_with_a_bumped_fee(manual):
    async def go():
        s = sender(manual.http_url, replace_after_s=0.3)
        task = asyncio.create_task(s.send(TO, b"", gas=21_000, value=1))
        deadline = time.monotonic() + 10
        while s.stats.replaced == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        first = (await s.rpc.request("eth_getTransactionCount", [s.address, "latest"]))
        await asyncio.to_thread(manual.rpc, "evm_mine")
        receipt = await asyncio.wait_for(task, 15)
        tx = await s.rpc.request("eth_getTransactionByHash", ["0x" + receipt.tx_hash.hex()])
        await s.rpc.close()
        return s.stats, first, receipt, tx

    stats, first, receipt, tx = asyncio.run(go())
    assert stats.replaced >= 1
    assert receipt.status == 1 and int(tx["nonce"], 16) == int(first, 16)
    # The mined version is a replacement: its tip is at least 10 % over the first one's (1 gwei default tip).
    assert int(tx["maxPriorityFeePerGas"], 16) >= int(1.1 * GWEI)


def test_restart_with_a_transaction_in_flight_takes_the_next_nonce(manual):
    async def go():
        a = sender(manual.http_url)
        h1 = await a.send(TO, b"", gas=21_000, value=1, wait=False)  # then the process "dies"
        await a.rpc.close()
        b = sender(manual.http_url, replace_after_s=30)
        task = asyncio.create_task(b.send(TO, b"", gas=21_000, value=2))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(manual.rpc, "evm_mine")
        r2 = await asyncio.wait_for(task, 15)
        r1 = await b.wait_receipt(h1, 5)
        await b.rpc.close()
        return b.stats, r1, r2

    stats, r1, r2 = asyncio.run(go())
    assert stats.in_flight_at_start == 1
    assert r1.status == 1 and r2.status == 1 and r1.tx_hash != r2.tx_hash


def test_nonce_gap_after_a_reorg_is_filled(auto):
    async def go():
        s = sender(auto.http_url, replace_after_s=0.3)
        r1 = await s.send(TO, b"", gas=21_000, value=1)
        assert r1.status == 1
        await asyncio.to_thread(auto.rpc, "anvil_reorg", [1, []])  # the block with r1 is replaced: r1 is gone
        r2 = await asyncio.wait_for(s.send(TO, b"", gas=21_000, value=2), 15)
        r3 = await asyncio.wait_for(s.send(TO, b"", gas=21_000, value=3), 15)
        latest = int(await s.rpc.request("eth_getTransactionCount", [s.address, "latest"]), 16)
        await s.rpc.close()
        return s.stats, r2, r3, latest

    stats, r2, r3, latest = asyncio.run(go())
    assert stats.gaps >= 1
    assert r2.status == 1 and r3.status == 1
    assert latest >= 2


def test_failover_to_the_next_url(auto):
    dead = f"http://127.0.0.1:{free_port()}"

    async def go():
        rpc = Rpc([dead, auto.http_url], timeout=2.0, retries=3, backoff=0.01)
        cid = await rpc.request("eth_chainId", [])
        await rpc.close()
        return cid, rpc.stats

    cid, stats = asyncio.run(go())
    assert int(cid, 16) == 31337 and stats.failovers == 1 and stats.retries.get("connection") == 1


def test_garbage_and_hanging_endpoints_raise_a_clear_error_after_bounded_retries():
    async def go(url: str) -> str:
        rpc = Rpc(url, timeout=0.5, retries=2, backoff=0.01)
        try:
            await rpc.request("eth_chainId", [])
        except RpcUnavailable as e:
            return str(e)
        finally:
            await rpc.close()
        return "answered"

    with bad_endpoints() as (garbage, hanging):
        t0 = time.monotonic()
        g = asyncio.run(go(garbage))
        h = asyncio.run(go(hanging))
        assert time.monotonic() - t0 < 10
        assert "not a JSON-RPC answer" in g and "3 tries" in g
        assert "no answer within" in h


# runtime: for i in 0..29: SLOAD(i); initcode copies it out (12 bytes, then the 17-byte runtime)
READS_30 = bytes.fromhex("6011600c60003960116000f3" + "60005b80545060010180601e11600257" + "00")


def test_access_list_from_the_endpoint_saves_100_gas_per_touched_slot(auto):
    async def go():
        s = sender(auto.http_url)
        rc = await s.send(None, READS_30, gas=200_000)
        target = rc.contract_address
        assert target
        entries = await s.create_access_list(target, b"")
        plain = await s.send(target, b"", gas=100_000)
        listed = await s.send(target, b"", gas=100_000 + access_list.intrinsic(entries), access=entries)
        await s.rpc.close()
        return entries, plain.gas_used, listed.gas_used

    entries, plain, listed = asyncio.run(go())
    assert len(entries) == 1 and len(entries[0]["storageKeys"]) == 30
    assert plain - listed == 30 * access_list.KEY_SAVING - access_list.ADDRESS_COST  # 600
    # too few keys to pay for the address entry: dropped
    few = [{"address": entries[0]["address"], "storageKeys": entries[0]["storageKeys"][:24]}]
    assert access_list.worthwhile(few) == [] and access_list.worthwhile(entries) == entries
