"""The explorer web page in a real headless Chromium (Debian's, driven by Playwright), on registry v1 and
on v2 (every test on both: the same headers, on v2 proved committed by their history proofs)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from browser import needs_chromium, run_explorer
from explorer_fill import STREAMS, Filled, commit_next, fill, proof_for

from node.chain.anvil import Anvil

SCREENSHOT = Path("/tmp/explorer_header.png")

pytestmark = needs_chromium


@pytest.fixture(scope="module", params=[2], ids=["v2"])  # the default registry (v1: test_headers_cli)
def filled(request):
    with Anvil() as anvil:
        yield fill(anvil.http_url, anvil.w3(), version=request.param)


@pytest.fixture(scope="module")
def explorer(filled: Filled):
    with run_explorer(filled.rpc_url, filled.registry) as url:
        yield url


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

    # ---- a stream: its headers with verification marks, newest first
    page.click(f"#streams a:has-text('{s0}')")
    page.wait_for_url(f"**/stream/{s0}")
    assert "unbroken from genesis to head #3" in page.locator("#chain-ok").inner_text()
    rows = page.locator("#headers tr")
    assert rows.count() == 1 + 4
    assert [r.get_attribute("data-number") for r in page.locator("#rows tr").all()] == ["4", "3", "2", "1"]
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
    if filled.version == 2:   # the history proof that made it count as committed, and the registry's word
        assert "history proof" in page.locator("#result").inner_text()
        assert page.locator("[data-field=provedOnChain] [data-ok]").get_attribute("data-ok") == "true"
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
    # a valid Merkle proof against a header that was never committed: not included, on either version
    r = httpx.get(f"{explorer}/api/headers/0x{rej.header_hash.hex()}/inclusion", timeout=30,
                  params={"eventHash": "0x" + rej.event_hashes[0].hex(), "index": 0,
                          "proof": "\n".join("0x" + p.hex() for p in proof_for(rej, 0))})
    j = r.json()
    assert r.status_code == 200 and j["offchain"] is True, j
    assert j["onchain"] is False and j["offchainCommitted"] is False and j["offchainValid"] is False
    assert j["committedBy"] == ("historyProof" if filled.version == 2 else "headerHashAt")
    assert httpx.get(f"{explorer}/api/headers/0x{'00' * 32}", timeout=30).status_code == 404
    r = httpx.get(f"{explorer}/stream/0x{'cd' * 32}", timeout=30)
    assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "no stream" in r.text
    page.goto(f"{explorer}/header/0x{'00' * 32}")
    assert "was not committed" in page.locator("#error").inner_text()


def numbers(page) -> list[str]:
    return [r.get_attribute("data-number") or "" for r in page.locator("#rows tr").all()]


def test_paging_newest_first_html_and_json(filled: Filled, explorer: str, browser) -> None:
    s0 = "0x" + STREAMS[0].hex()
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(f"{explorer}/stream/{s0}?size=2")
    assert numbers(page) == ["4", "3"]
    assert page.locator("#rows tr.rejected").count() == 1
    assert "page 1 of 2" in page.locator("#page-info").inner_text()
    assert page.locator("#newer").count() == 0 and page.locator("#newer-off").count() == 1
    at = page.locator("#pinned").inner_text()
    page.click("#older")
    page.wait_for_url("**page=1**")
    assert numbers(page) == ["2", "1"] and f"at={at}" in page.url        # the older page keeps the pinned block
    assert "headers 3–4 of 4" in page.locator("#page-info").inner_text()
    assert page.locator("#older").count() == 0
    page.click("#newer")
    page.wait_for_url("**page=0**")
    assert numbers(page) == ["4", "3"]
    # the JSON the page is made of: same pages, same links
    api = f"{explorer}/api/streams/{s0}/headers"
    j = httpx.get(api, params={"size": 2, "page": 1, "at": at}, timeout=30).json()
    assert [h["number"] for h in j["headers"]] == [2, 1] and j["at"] == int(at)
    assert (j["total"], j["pages"], j["hasOlder"], j["hasNewer"]) == (4, 2, False, True)
    assert j["links"]["newer"] == f"/api/streams/{s0}/headers?page=0&size=2&at={at}" and j["links"]["older"] is None
    assert j["summary"]["chainOk"] and j["summary"]["headNumber"] == 3
    assert [p["number"] for p in j["plot"]] == [1, 2, 3] and [p["eventCount"] for p in j["plot"]] == [2, 3, 0]
    # the plot: one dot (gas) and one bar (events) per committed header
    page.goto(f"{explorer}/stream/{s0}")
    assert page.locator("svg#plot").get_attribute("data-points") == "3"
    assert page.locator("svg#plot circle.gas").count() == 3 and page.locator("svg#plot rect.ev").count() == 3
    page.screenshot(path="/tmp/explorer_stream.png", full_page=True)


def test_bad_input_is_a_clear_4xx(filled: Filled, explorer: str, browser) -> None:
    """Each bad input, as a page (HTML) and through the JSON API: a 4xx with a sentence, never a 500."""
    s0 = "0x" + STREAMS[0].hex()
    cd, cc = "0x" + "cd" * 32, "0x" + "cc" * 32
    cases = [  # (page, api, status, text)
        (f"/stream/{cd}", f"/api/streams/{cd}/headers", 404, "no stream"),
        ("/stream/0x12", "/api/streams/0x12/headers", 400, "malformed stream id"),
        (f"/stream/{s0}?page=2&size=2", f"/api/streams/{s0}/headers?page=2&size=2", 404, "past the last page"),
        (f"/stream/{s0}?page=-1", f"/api/streams/{s0}/headers?page=-1", 400, "bad parameter"),
        (f"/stream/{s0}?size=abc", f"/api/streams/{s0}/headers?size=abc", 400, "bad parameter"),
        (f"/stream/{s0}?size=100000", f"/api/streams/{s0}/headers?size=100000", 400, "bad parameter"),
        (f"/stream/{s0}?at=999999999", f"/api/streams/{s0}/headers?at=999999999", 400, "not mined yet"),
        ("/header/0xnothex", "/api/headers/0xnothex", 400, "malformed header hash"),
        (f"/header/0x{'00' * 32}", f"/api/headers/0x{'00' * 32}", 404, "was not committed"),
        ("/event/0x12", "/api/events/0x12", 400, "malformed event hash"),
        (f"/event/{cc}", f"/api/events/{cc}", 404, "--node URL"),
        ("/search?q=0x12", "/api/search?q=0x12", 400, "malformed search"),
        ("/search?q=", "/api/search?q=", 400, "empty search"),
        ("/search?q=no-such-stream", "/api/search?q=no-such-stream", 404, "no stream named"),
        (f"/search?q={cc}", f"/api/search?q={cc}", 404, "no stream and no header"),
    ]
    for html_path, api_path, status, text in cases:
        r = httpx.get(explorer + html_path, timeout=30)
        assert r.status_code == status and "text/html" in r.headers["content-type"], (html_path, r.status_code)
        assert text in r.text, (html_path, r.text[-600:])
        r = httpx.get(explorer + api_path, timeout=30)
        assert r.status_code == status and text in r.json()["detail"], (api_path, r.status_code, r.text[:300])
    page = browser.new_page()
    page.goto(f"{explorer}/stream/{s0}?page=7")
    assert "past the last page" in page.locator("#error").inner_text()


def test_search_by_stream_and_header_hash(filled: Filled, explorer: str, browser) -> None:
    s0 = "0x" + STREAMS[0].hex()
    page = browser.new_page()
    page.goto(explorer + "/")
    page.fill("#q", s0)
    page.click("#go")
    page.wait_for_url(f"**/stream/{s0}")
    assert page.locator("#head-number").inner_text() == "3"
    sent = next(s for s in filled.sent if s.header.stream_id == STREAMS[1] and s.status == "committed")
    page.fill("#q", "0x" + sent.header_hash.hex())
    page.click("#go")
    page.wait_for_url("**/header/0x*")
    assert page.locator("[data-field=headerHash]").inner_text() == "0x" + sent.header_hash.hex()
    rej = next(s for s in filled.sent if s.status == "rejected")
    j = httpx.get(f"{explorer}/api/search", params={"q": "0x" + rej.header_hash.hex()}, timeout=30).json()
    assert j["kind"] == "header" and j["number"] == rej.header.number
    page.fill("#q", "0x1234")
    page.click("#go")
    assert "malformed search" in page.locator("#error").inner_text()


def test_the_page_refreshes_as_a_block_commits(filled: Filled, explorer: str, browser) -> None:
    """Last in this module: it commits one more header of stream 0 while the page is open."""
    s0 = "0x" + STREAMS[0].hex()
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(f"{explorer}/stream/{s0}?size=3")
    pinned_old = browser.new_page()
    pinned_old.goto(f"{explorer}/stream/{s0}?size=3&page=1")     # an older page: stays, says what is newer
    assert numbers(page) == ["4", "3", "2"] and page.locator("svg#plot").get_attribute("data-points") == "3"
    page.evaluate("window.__sameDocument = 'yes'")
    before = int(page.locator("#pinned").inner_text())

    res = commit_next(filled, STREAMS[0])
    assert len(res.committed) == 1 and res.committed[0].number == 4

    page.wait_for_selector("#rows tr.committed[data-number='4']", timeout=20_000)
    assert numbers(page) == ["4", "4", "3"]                      # the new #4 first, then the rejected #4
    assert page.evaluate("window.__sameDocument") == "yes"         # swapped in place, not reloaded
    assert page.locator("#head-number").inner_text() == "4"
    assert "unbroken from genesis to head #4" in page.locator("#chain-ok").inner_text()
    assert int(page.locator("#pinned").inner_text()) == res.block_number > before
    assert page.locator("svg#plot").get_attribute("data-points") == "4"
    assert page.locator("#rows tr.fresh").count() == 1
    pinned_old.wait_for_selector("#newer-note:not([hidden])", timeout=20_000)
    assert "1 header committed since block" in pinned_old.locator("#newer-note").inner_text()
    assert numbers(pinned_old) == ["1"]
