"""The header explorer web page: server-rendered HTML over RegistryHistory (chain only, no node).

Pages: `/` (registry overview: chain, epoch, seed, nodes, streams with heads), `/stream/{id}`
(its headers with verification marks), `/header/{hash}` (every field, the signers, and a form
that checks an event's inclusion proof on-chain with verifyInclusion and off-chain with
node/protocol/merkle.verify_proof). The same data as JSON under `/api/...`.
No script or style is fetched from elsewhere: the page works offline.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from node.chain.history import HeaderRecord, RegistryHistory, parse_stream_id
from node.protocol.hexutil import hx

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}
header.top{background:#1f2937;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:baseline}
header.top a{color:#fff;text-decoration:none;font-weight:600}
header.top .sub{color:#cbd5e1;font-size:13px}
main{padding:16px 24px;max-width:1400px}
h1{font-size:22px;margin:8px 0 12px} h2{font-size:17px;margin:20px 0 8px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001;margin-bottom:8px}
th,td{padding:5px 10px;border-bottom:1px solid #e5e7eb;text-align:left;font-size:13.5px;vertical-align:top}
th{background:#f1f5f9;font-weight:600}
td.num{text-align:right}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.ok{color:#15803d;font-weight:700} .bad{color:#b91c1c;font-weight:700} .unk{color:#a16207;font-weight:700}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.pill.Active{background:#dcfce7;color:#166534} .pill.Pending{background:#fef9c3;color:#854d0e}
.pill.Leaving{background:#ffedd5;color:#9a3412} .pill.Left,.pill.None{background:#e5e7eb;color:#374151}
.pill.committed{background:#dcfce7;color:#166534} .pill.rejected{background:#fee2e2;color:#991b1b}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:4px 16px;background:#fff;padding:10px 14px;
 box-shadow:0 1px 2px #0001;margin:0 0 8px}
dl.kv dt{font-weight:600;font-size:13.5px} dl.kv dd{margin:0;font-size:13.5px;word-break:break-all}
form.proof{background:#fff;padding:12px 14px;box-shadow:0 1px 2px #0001;max-width:900px}
form.proof label{display:block;font-weight:600;font-size:13.5px;margin:8px 0 3px}
form.proof input,form.proof textarea{width:100%;box-sizing:border-box;font-family:ui-monospace,monospace;font-size:12.5px;padding:5px}
form.proof button{margin-top:10px;padding:6px 16px;font-weight:600;cursor:pointer}
.result{margin-top:12px;padding:10px 14px;background:#fff;box-shadow:0 1px 2px #0001;max-width:900px}
.problems{color:#b91c1c;font-size:12.5px;margin:2px 0 0;padding-left:18px}
.note{color:#4b5563;font-size:13px}
"""

HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def short(h: str | None, n: int = 10) -> str:
    if not h:
        return "-"
    return h if len(h) <= n + 6 else f"{h[:n]}…{h[-4:]}"


def mark(v: bool | None, label: str = "") -> str:
    cls, sym = ("ok", "✓") if v is True else ("bad", "✗") if v is False else ("unk", "?")
    title = f' title="{esc(label)}"' if label else ""
    return f'<span class="{cls}"{title} data-check="{esc(label)}" data-ok="{str(v).lower()}">{sym}</span>'


def page(title: str, body: str, hist: RegistryHistory) -> HTMLResponse:
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{esc(title)} · mini-block explorer</title><style>{CSS}</style></head>
<body><header class="top"><a href="/">mini-block explorer</a>
<span class="sub">registry <code>{esc(hist.address)}</code> · chain {hist.chain_id}</span></header>
<main>{body}</main></body></html>"""
    return HTMLResponse(doc)


def parse_proof(text: str) -> list[bytes]:
    """A pasted proof: a JSON array of 0x-hashes, or hashes separated by commas, spaces or lines."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        items = json.loads(text)
    else:
        items = [t for t in re.split(r"[\s,]+", text) if t]
    out = []
    for it in items:
        if not isinstance(it, str) or not HEX32.fullmatch(it.strip()):
            raise ValueError(f"not a 32-byte 0x-hash: {it!r}")
        out.append(bytes.fromhex(it.strip()[2:]))
    return out


def _verif_cell(r: HeaderRecord) -> str:
    if r.status == "rejected":
        return f'<span class="pill rejected">rejected: {esc(r.reason_name)}</span>'
    v = r.verification
    if v is None:
        return "-"
    overall = mark(v.ok, "all")
    parts = " ".join(
        f"{name} {mark(val, name)}"
        for name, val in (("hash", v.hash), ("parent", v.parent), ("leader sig", v.leader_signature),
                          ("attestations", v.attestations), ("quorum", v.quorum))
    )
    probs = "".join(f"<li>{esc(p)}</li>" for p in v.problems)
    return f'{overall} <span class="note">{parts}</span>' + (f'<ul class="problems">{probs}</ul>' if probs else "")


def create_app(hist: RegistryHistory) -> FastAPI:
    app = FastAPI(title="mini-block header explorer", docs_url=None, redoc_url=None)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException):  # noqa: ANN202
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        body = f'<h1>{exc.status_code}</h1><p class="bad" id="error">{esc(exc.detail)}</p><p><a href="/">← overview</a></p>'
        resp = page(f"error {exc.status_code}", body, hist)
        resp.status_code = exc.status_code
        return resp

    @app.exception_handler(Exception)
    def chain_error(request: Request, exc: Exception):  # noqa: ANN202
        msg = f"reading the chain failed: {type(exc).__name__}: {exc}"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": msg}, status_code=502)
        resp = page("chain error", f'<h1>502</h1><p class="bad" id="error">{esc(msg)}</p>', hist)
        resp.status_code = 502
        return resp

    def stream_arg(sid: str) -> bytes:
        try:
            return parse_stream_id(sid)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc

    def find(header_hash: str, stream: str | None, number: int | None) -> HeaderRecord:
        if not HEX32.fullmatch(header_hash):
            raise HTTPException(400, "a header hash is 0x + 64 hex digits")
        rec = hist.find_header(bytes.fromhex(header_hash[2:]), stream_arg(stream) if stream else None, number)
        if rec is None:
            raise HTTPException(404, f"header {header_hash} was not committed (nor rejected) by this registry")
        return rec

    # ---- JSON --------------------------------------------------------------------------------

    @app.get("/api/overview")
    def api_overview() -> JSONResponse:
        ov = hist.overview()
        ov["streams"] = [s.to_json() for s in hist.streams()]
        return JSONResponse(ov)

    @app.get("/api/streams/{sid}/headers")
    def api_stream(sid: str) -> JSONResponse:
        s = stream_arg(sid)
        recs = hist.headers(s)
        return JSONResponse({"summary": hist.chain_summary(s, recs), "headers": [r.to_json() for r in recs]})

    @app.get("/api/headers/{header_hash}")
    def api_header(header_hash: str, stream: str | None = None, number: int | None = None) -> JSONResponse:
        return JSONResponse(find(header_hash, stream, number).to_json())

    @app.get("/api/headers/{header_hash}/inclusion")
    def api_inclusion(header_hash: str, event_hash: str = Query(..., alias="eventHash"), index: int = 0,
                      proof: str = "", stream: str | None = None, number: int | None = None) -> JSONResponse:
        rec = find(header_hash, stream, number)
        return JSONResponse(_check(rec, event_hash, index, proof))

    def _check(rec: HeaderRecord, event_hash: str, index: int, proof: str) -> dict[str, Any]:
        if rec.header is None:
            raise HTTPException(409, "the full header is not known (calldata not decoded)")
        if not HEX32.fullmatch(event_hash.strip()):
            raise HTTPException(400, "eventHash must be 0x + 64 hex digits")
        try:
            proof_b = parse_proof(proof)
        except (ValueError, json.JSONDecodeError) as exc:
            raise HTTPException(400, f"bad proof: {exc}") from exc
        if index < 0:
            raise HTTPException(400, "index must be >= 0")
        res = hist.verify_inclusion(rec.header, proof_b, index, bytes.fromhex(event_hash.strip()[2:]))
        return {"eventHash": event_hash.strip(), "index": index, "proof": ["0x" + p.hex() for p in proof_b], **res}

    # ---- HTML --------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def overview() -> HTMLResponse:
        ov = hist.overview()
        streams = hist.streams()
        node_rows = "".join(
            f"<tr><td><code>{esc(n['node'])}</code></td><td><code>{esc(n['operator'])}</code></td>"
            f"<td>{esc(n['url'])}</td><td><span class=\"pill {esc(n['status'])}\">{esc(n['status'])}</span></td>"
            f"<td class=num>{n['joinEpoch']}</td>"
            f"<td class=num>{'never' if n['leaveEpoch'] >= 2**64 - 1 else n['leaveEpoch']}</td></tr>"
            for n in ov["nodes"]
        ) or '<tr><td colspan=6 class="note">no nodes registered</td></tr>'
        stream_rows = "".join(
            f"<tr><td><a class=mono href=\"/stream/{hx(s.stream_id)}\">{esc(hx(s.stream_id))}</a></td>"
            f"<td class=num data-head>{s.head_number}</td><td><code>{esc(short(hx(s.head_hash), 14))}</code></td>"
            f"<td class=num>{len(s.replicas)}</td><td class=num>{s.created_epoch if s.created_epoch is not None else '-'}</td></tr>"
            for s in streams
        ) or '<tr><td colspan=5 class="note">no streams yet</td></tr>'
        body = f"""<h1>Registry overview</h1>
<dl class="kv" id="overview">
<dt>chain id</dt><dd data-field="chainId">{ov['chainId']}</dd>
<dt>registry</dt><dd><code>{esc(ov['registry'])}</code></dd>
<dt>chain block</dt><dd>{ov['blockNumber']}</dd>
<dt>epoch</dt><dd data-field="epoch">{ov['epoch']} <span class="note">(length {ov['epochLength']} s, leader timeout {ov['leaderTimeout']} s)</span></dd>
<dt>seed</dt><dd><code data-field="seed">{esc(ov['seed'])}</code></dd>
<dt>RANDAO mix</dt><dd><code>{esc(ov['randaoMix'])}</code></dd>
<dt>replication factor</dt><dd>{ov['replicationFactor']}</dd>
<dt>EIP-712 domain</dt><dd>{esc(ov['domain']['name'])} v{esc(ov['domain']['version'])}</dd>
</dl>
<h2>Nodes ({len(ov['nodes'])})</h2>
<table id="nodes"><tr><th>node</th><th>operator</th><th>url</th><th>status</th><th>join epoch</th><th>leave epoch</th></tr>{node_rows}</table>
<h2>Streams ({len(streams)})</h2>
<table id="streams"><tr><th>stream</th><th>head #</th><th>head hash</th><th>replicas</th><th>created in epoch</th></tr>{stream_rows}</table>"""
        return page("overview", body, hist)

    @app.get("/stream/{sid}", response_class=HTMLResponse)
    def stream_page(sid: str) -> HTMLResponse:
        s = stream_arg(sid)
        if not hist.stream_exists(s):
            raise HTTPException(404, f"no stream {sid}")
        recs = hist.headers(s)
        summ = hist.chain_summary(s, recs)
        reps = hist.replicas_of(s)
        rows = "".join(
            f"<tr class=\"{r.status}\"><td class=num>{r.number}</td>"
            f"<td><a class=mono href=\"/header/{hx(r.header_hash)}?stream={hx(r.stream_id)}&number={r.number}\">"
            f"{esc(short(hx(r.header_hash), 14))}</a></td>"
            f"<td><code>{esc(short(r.leader))}</code></td><td class=num data-att>{r.attestations}/{len(r.replicas)}</td>"
            f"<td class=num>{'-' if r.event_count is None else r.event_count}</td><td class=num>{r.block_number}</td>"
            f"<td class=num>{r.gas_share:,}</td><td>{_verif_cell(r)}</td></tr>"
            for r in recs
        ) or '<tr><td colspan=8 class="note">no headers committed yet</td></tr>'
        chain = (f'<span class="ok" id="chain-ok">✓ parent hashes unbroken from genesis to head #{summ["headNumber"]}</span>'
                 if summ["chainOk"] else
                 f'<span class="bad" id="chain-ok">✗ {esc("; ".join(summ["problems"]))}</span>')
        body = f"""<h1>Stream <code>{esc(hx(s))}</code></h1>
<dl class="kv"><dt>head</dt><dd>#{summ['headNumber']} <code>{esc(summ['headHash'])}</code></dd>
<dt>genesis hash</dt><dd><code>{esc(summ['genesisHash'])}</code> {mark(summ['genesisOk'], 'genesis')}</dd>
<dt>replicas</dt><dd>{'<br>'.join(f'<code>{esc(r)}</code>' for r in reps)}</dd>
<dt>parent chain</dt><dd>{chain}</dd>
<dt>headers</dt><dd>{summ['commits']} committed, {sum(1 for r in recs if r.status == 'rejected')} rejected</dd></dl>
<h2>Headers</h2>
<table id="headers"><tr><th>#</th><th>header hash</th><th>leader</th><th>attestations</th><th>events</th>
<th>block</th><th>gas share</th><th>verification</th></tr>{rows}</table>
<p><a href="/">← overview</a></p>"""
        return page(f"stream {short(hx(s))}", body, hist)

    def header_body(rec: HeaderRecord, result: dict[str, Any] | None, form: dict[str, str]) -> str:
        j = rec.to_json()
        fields = [("status", f'<span class="pill {rec.status}" id="status">{esc(rec.status)}</span>'
                   + (f" reason {rec.reason} {esc(rec.reason_name)}" if rec.reason is not None else ""))]
        for k in ("stream", "number", "headerHash", "prevHash", "eventsRoot", "eventCount", "epoch", "attempt",
                  "leader", "randaoReveal", "stateRoot"):
            val = j[k]
            if k == "stream":
                cell = f'<a class=mono href="/stream/{esc(val)}">{esc(val)}</a>'
            else:
                cell = f'<code data-field="{k}">{esc("-" if val is None else val)}</code>'
            fields.append((k, cell))
        fields += [
            ("attestations", f'<span data-field="attestations">{rec.attestations}</span> distinct replica signers '
                             f'of {len(rec.signatures)} signatures; quorum {rec.quorum} of {len(rec.replicas)} replicas'),
            ("transaction", f"<code>{esc(j['txHash'])}</code>"),
            ("chain block", f"{rec.block_number} (log {rec.log_index}, time {rec.block_timestamp})"),
            ("batch", f"header {'-' if rec.batch_index is None else rec.batch_index} of {rec.batch_size}; "
                      f"tx gas {rec.tx_gas_used:,}, share {rec.gas_share:,}"),
            ("verification", _verif_cell(rec)),
        ]
        kv = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in fields)
        sig_rows = "".join(
            f"<tr><td class=num>{s.index}</td><td><code>{esc(s.address or '-')}</code></td>"
            f"<td>{'leader' if s.is_leader else ''}</td><td>{mark(s.is_replica, 'replica')}</td>"
            f"<td>{mark(s.counted, 'counted')}</td><td class=note>{esc(s.error or ('duplicate' if s.duplicate else ''))}</td></tr>"
            for s in rec.signers
        ) or '<tr><td colspan=6 class="note">no signatures decoded</td></tr>'
        res_html = ""
        if result is not None:
            if "error_msg" in result:
                res_html = f'<div class="result" id="result"><span class="bad">✗ {esc(result["error_msg"])}</span></div>'
            else:
                on, off = result["onchain"], result["offchainValid"]
                res_html = f"""<div class="result" id="result">
<div>on-chain <code>verifyInclusion</code> (eth_call): <span id="onchain">{mark(on, 'onchain')} {'included' if on else 'not proven' if on is False else 'call failed: ' + esc(result.get('error'))}</span></div>
<div>off-chain <code>merkle.verify_proof</code> against eventsRoot: <span id="offchain">{mark(result['offchain'], 'offchain')} {'proof holds' if result['offchain'] else 'proof fails'}</span>
 · header hash stored on-chain at #{rec.number}: {mark(result['offchainCommitted'], 'committed')}</div>
<div class="note">verdict: <b id="verdict">{'included' if on and off else 'NOT included'}</b></div></div>"""
        return f"""<h1>Header #{rec.number} of stream <code>{esc(short(j['stream'], 14))}</code></h1>
<dl class="kv" id="header">{kv}</dl>
<h2>Signatures</h2>
<table id="signers"><tr><th>#</th><th>recovers to</th><th>role</th><th>replica</th><th>counted</th><th></th></tr>{sig_rows}</table>
<h2>Check an event's inclusion</h2>
<form class="proof" method="get" action="/header/{esc(j['headerHash'])}">
<input type="hidden" name="stream" value="{esc(j['stream'])}"><input type="hidden" name="number" value="{rec.number}">
<label for="eventHash">event hash</label><input id="eventHash" name="eventHash" placeholder="0x…" value="{esc(form.get('eventHash', ''))}">
<label for="index">index in the block</label><input id="index" name="index" value="{esc(form.get('index', '0'))}">
<label for="proof">proof (sibling hashes bottom-up; one per line, or a JSON array)</label>
<textarea id="proof" name="proof" rows="5">{esc(form.get('proof', ''))}</textarea>
<button type="submit" id="check">check inclusion</button></form>{res_html}
<p><a href="/stream/{esc(j['stream'])}">← stream</a> · <a href="/">overview</a></p>"""

    @app.get("/header/{header_hash}", response_class=HTMLResponse)
    def header_page(header_hash: str, stream: str | None = None, number: int | None = None,
                    eventHash: str | None = None, index: str = "0", proof: str = "") -> HTMLResponse:  # noqa: N803
        rec = find(header_hash, stream, number)
        result = None
        form = {"eventHash": eventHash or "", "index": index, "proof": proof}
        if eventHash:
            try:
                result = _check(rec, eventHash, int(index), proof)
            except ValueError:
                result = {"error_msg": "index must be a whole number"}
            except HTTPException as exc:
                result = {"error_msg": exc.detail}
        return page(f"header #{rec.number}", header_body(rec, result, form), hist)

    return app
