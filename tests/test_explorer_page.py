"""The explorer web page in a real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from explorer_fill import STREAMS, Filled, fill, proof_for

from node.chain.anvil import Anvil
from node.netutil import free_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("/tmp/explorer_header.png")

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is not installed (./dev test installs it when run as root)")


@pytest.fixture(scope="module")
def filled():
    with Anvil() as anvil:
        yield fill(anvil.http_url, anvil.w3())


@pytest.fixture(scope="module")
def explorer(filled: Filled):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "explorer", "--rpc-url", filled.rpc_url, "--registry", filled.registry,
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/overview", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"explorer did not start:\n{out}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_overview_stream_header_and_inclusion_proof(filled: Filled, explorer: str, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # ---- overview
    page.goto(explorer + "/")
    assert page.locator("[data-field=chainId]").inner_text() == str(filled.chain_id)
    assert page.locator("[data-field=epoch]").inner_text().startswith("1 ")
    assert page.locator("[data-field=seed]").inner_text().startswith("0x")
    nodes = page.locator("#nodes tr")
    assert nodes.count() == 1 + len(filled.node_addresses)
    text = page.locator("#nodes").inner_text()
    for addr in filled.node_addresses:
        assert addr in text
    assert text.count("Active") == len(filled.node_addresses)
    streams = page.locator("#streams tr")
    assert streams.count() == 1 + len(STREAMS)
    s0 = "0x" + STREAMS[0].hex()
    row = page.locator("#streams tr", has_text=s0)
    assert row.locator("td[data-head]").inner_text() == "3"

    # ---- a stream: its headers with verification marks
    page.click(f"#streams a:has-text('{s0}')")
    page.wait_for_url(f"**/stream/{s0}")
    assert "unbroken from genesis to head #3" in page.locator("#chain-ok").inner_text()
    rows = page.locator("#headers tr")
    assert rows.count() == 1 + 4
    committed = page.locator("#headers tr.committed")
    assert committed.count() == 3
    assert page.locator("#headers tr.committed [data-check=all][data-ok=true]").count() == 3
    assert page.locator("#headers tr.rejected").inner_text().count("BAD_PARENT") == 1
    assert [committed.nth(i).locator("td[data-att]").inner_text() for i in range(3)] == ["3/3", "2/3", "3/3"]

    # ---- one header (block 2: three events, the minimal attestation set)
    sent = next(s for s in filled.sent if s.header.stream_id == STREAMS[0] and s.header.number == 2)
    page.click("#headers tr.committed >> nth=1 >> a")
    page.wait_for_url("**/header/0x*")
    h = sent.header
    assert page.locator("[data-field=headerHash]").inner_text() == "0x" + sent.header_hash.hex()
    assert page.locator("[data-field=number]").inner_text() == "2"
    assert page.locator("[data-field=eventCount]").inner_text() == "3"
    assert page.locator("[data-field=leader]").inner_text() == h.leader
    assert page.locator("[data-field=prevHash]").inner_text() == "0x" + h.prev_hash.hex()
    assert page.locator("[data-field=eventsRoot]").inner_text() == "0x" + h.events_root.hex()
    assert page.locator("[data-field=stateRoot]").inner_text() == "0x" + h.state_root.hex()
    assert page.locator("[data-field=randaoReveal]").inner_text() == "0x" + h.randao_reveal.hex()
    assert page.locator("[data-field=attestations]").inner_text() == "2"
    signers = page.locator("#signers").inner_text()
    assert all(s in signers for s in sent.signers) and "leader" in signers
    header_url = page.url

    # ---- a valid inclusion proof: both checks say yes
    idx = 1
    proof = proof_for(sent, idx)
    page.fill("#eventHash", "0x" + sent.event_hashes[idx].hex())
    page.fill("#index", str(idx))
    page.fill("#proof", "\n".join("0x" + p.hex() for p in proof))
    page.click("#check")
    page.wait_for_selector("#result")
    assert page.locator("#onchain [data-ok]").get_attribute("data-ok") == "true"
    assert page.locator("#offchain [data-ok]").get_attribute("data-ok") == "true"
    assert page.locator("#verdict").inner_text() == "included"
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # ---- tampered: one proof hash changed, then the right proof at the wrong index
    bad = bytearray(proof[0])
    bad[5] ^= 0xFF
    page.fill("#proof", "\n".join("0x" + p.hex() for p in [bytes(bad), *proof[1:]]))
    page.click("#check")
    page.wait_for_selector("#result")
    assert page.locator("#onchain [data-ok]").get_attribute("data-ok") == "false"
    assert page.locator("#offchain [data-ok]").get_attribute("data-ok") == "false"
    assert page.locator("#verdict").inner_text() == "NOT included"
    page.fill("#proof", "\n".join("0x" + p.hex() for p in proof))
    page.fill("#index", "0")
    page.click("#check")
    page.wait_for_selector("#result")
    assert page.locator("#verdict").inner_text() == "NOT included"
    # a malformed proof is answered with a message, not a crash
    page.fill("#proof", "0x1234")
    page.click("#check")
    assert "bad proof" in page.locator("#result").inner_text()
    page.goto(header_url)
    assert page.locator("#result").count() == 0


def test_rejected_header_page_and_json_api(filled: Filled, explorer: str, browser) -> None:
    rej = next(s for s in filled.sent if s.status == "rejected" and s.reason.name == "NO_QUORUM")
    page = browser.new_page()
    page.goto(f"{explorer}/header/0x{rej.header_hash.hex()}")
    assert page.locator("#status").inner_text() == "rejected"
    assert "NO_QUORUM" in page.locator("#header").inner_text()
    assert page.locator("[data-field=attestations]").inner_text() == "1"
    r = httpx.get(f"{explorer}/api/headers/0x{rej.header_hash.hex()}", timeout=30)
    assert r.status_code == 200 and r.json()["reasonName"] == "NO_QUORUM"
    assert httpx.get(f"{explorer}/api/headers/0x{'00' * 32}", timeout=30).status_code == 404
    r = httpx.get(f"{explorer}/stream/0x{'cd' * 32}", timeout=30)
    assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "no stream" in r.text
    page.goto(f"{explorer}/header/0x{'00' * 32}")
    assert "was not committed" in page.locator("#error").inner_text()
