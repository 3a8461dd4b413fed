"""The explorer's HTML: page shell, stream page fragments, header and event pages, the live script.

Pure functions from RegistryHistory records to HTML strings, so the routes (node/explorer/app.py)
stay short and the stream page's fragments are the same whether the server renders the page or the
live script swaps them in. No script or style is fetched from elsewhere: the page works offline.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import urlencode

from node.chain.history import HeaderRecord, StreamPage
from node.protocol.hexutil import hx

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}
header.top{background:#1f2937;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center;flex-wrap:wrap}
header.top a{color:#fff;text-decoration:none;font-weight:600}
header.top .sub{color:#cbd5e1;font-size:13px}
header.top form{margin-left:auto;display:flex;gap:6px}
header.top input{width:420px;max-width:50vw;font-family:ui-monospace,monospace;font-size:12.5px;padding:4px 6px;border-radius:4px;border:0}
header.top button{padding:4px 12px;font-weight:600;cursor:pointer}
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
.pager{display:flex;gap:14px;align-items:center;margin:6px 0;font-size:13.5px}
.pager a{font-weight:600} .pager .off{color:#9ca3af}
.live{font-size:12.5px;color:#4b5563} .live.on::before{content:"● ";color:#16a34a}
.banner{background:#fef9c3;padding:6px 12px;margin:6px 0;font-size:13.5px;max-width:900px}
tr.fresh td{animation:fresh 2s ease-out}
@keyframes fresh{from{background:#dcfce7}to{background:transparent}}
"""

# The stream page's live refresh: poll the cheap head endpoint (the chain's state at its latest block),
# and only when the stream has new headers fetch the newest page's fragments and swap them in place
# (no reload, no flicker). A pinned or older page is left as it is and says how many are newer.
LIVE_JS = """
(() => {
  const cfg = JSON.parse(document.getElementById("live-cfg").textContent);
  if (!cfg.refreshMs) return;
  const st = document.getElementById("live-status");
  const slots = {summary: "summary", rows: "rows", pager: "pager", plot: "plot-box"};
  let total = cfg.total, fails = 0;
  async function getJSON(u) {
    const r = await fetch(u, {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  }
  async function tick() {
    try {
      const h = await getJSON(`/api/streams/${cfg.stream}/head`);
      let seenAt = h.at;
      if (h.total !== total) {
        if (cfg.live) {
          const p = await getJSON(`/api/streams/${cfg.stream}/headers?size=${cfg.size}&html=1`);
          const seen = new Set([...document.querySelectorAll("#rows tr[data-key]")].map(r => r.dataset.key));
          for (const [k, id] of Object.entries(slots)) document.getElementById(id).innerHTML = p.html[k];
          for (const r of document.querySelectorAll("#rows tr[data-key]")) if (!seen.has(r.dataset.key)) r.classList.add("fresh");
          document.getElementById("pinned").textContent = p.at;
          total = p.total;
          seenAt = Math.max(seenAt, p.at);
        } else {
          const n = h.total - cfg.total, el = document.getElementById("newer-note");
          el.querySelector("span").textContent = n + " header" + (n === 1 ? "" : "s") + " committed since block " + cfg.at;
          el.hidden = n <= 0;
        }
      }
      st.textContent = (cfg.live ? "live · chain block " : "pinned · chain now at block ") + seenAt;
      fails = 0;
    } catch (e) {
      fails++;
      st.textContent = "refresh failed (" + e.message + "), retrying";
    } finally {
      setTimeout(tick, cfg.refreshMs * Math.min(8, 2 ** fails));
    }
  }
  setTimeout(tick, cfg.refreshMs);
})();
"""


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


def shell(title: str, body: str, address: str, chain_id: int, q: str = "", scripts: str = "") -> str:
    """Every page: the top bar (with the search box) and the body."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{esc(title)} · mini-block explorer</title><style>{CSS}</style></head>
<body><header class="top"><a href="/">mini-block explorer</a>
<span class="sub">registry <code>{esc(address)}</code> · chain {chain_id}</span>
<form id="search" method="get" action="/search"><input id="q" name="q" value="{esc(q)}" autocomplete="off"
 placeholder="stream id or name, header hash, event hash"><button type="submit" id="go">search</button></form></header>
<main>{body}</main>{scripts}</body></html>"""


def verif_cell(r: HeaderRecord) -> str:
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


def stream_url(sid: str, page: int, size: int, at: int | None, *, api: bool = False) -> str:
    """A page of a stream: `at` pins the chain block (None: the latest, which the live page follows)."""
    q: dict[str, Any] = {"page": page, "size": size}
    if at is not None:
        q["at"] = at
    return (f"/api/streams/{sid}/headers?" if api else f"/stream/{sid}?") + urlencode(q)


def pager_links(sp: StreamPage, *, api: bool = False) -> dict[str, str | None]:
    sid = hx(sp.stream_id)
    return {
        "newer": stream_url(sid, sp.page - 1, sp.size, sp.at, api=api) if sp.has_newer else None,
        "older": stream_url(sid, sp.page + 1, sp.size, sp.at, api=api) if sp.has_older else None,
        "newest": stream_url(sid, 0, sp.size, None, api=api),
    }


def stream_fragments(sp: StreamPage, plot: str) -> dict[str, str]:
    """The parts of the stream page that change as blocks commit (the live script swaps them in)."""
    summ = sp.summary
    sid = hx(sp.stream_id)
    rows = "".join(
        f"<tr class=\"{r.status}\" data-number=\"{r.number}\" data-key=\"{r.block_number}:{r.log_index}\">"
        f"<td class=num>{r.number}</td>"
        f"<td><a class=mono href=\"/header/{hx(r.header_hash)}?stream={sid}&number={r.number}\">"
        f"{esc(short(hx(r.header_hash), 14))}</a></td>"
        f"<td><code>{esc(short(r.leader))}</code></td><td class=num data-att>{r.attestations}/{len(r.replicas)}</td>"
        f"<td class=num>{'-' if r.event_count is None else r.event_count}</td><td class=num>{r.block_number}</td>"
        f"<td class=num>{r.gas_share:,}</td><td>{verif_cell(r)}</td></tr>"
        for r in sp.records
    ) or '<tr><td colspan=8 class="note">no headers committed yet</td></tr>'
    chain = (f'<span class="ok" id="chain-ok">✓ parent hashes unbroken from genesis to head #{summ["headNumber"]}</span>'
             if summ["chainOk"] else
             f'<span class="bad" id="chain-ok">✗ {esc("; ".join(summ["problems"]))}</span>')
    n_rej = sp.total - summ["commits"]
    summary = f"""<dt>head</dt><dd>#<span id="head-number">{summ['headNumber']}</span> <code>{esc(summ['headHash'])}</code></dd>
<dt>genesis hash</dt><dd><code>{esc(summ['genesisHash'])}</code> {mark(summ['genesisOk'], 'genesis')}</dd>
<dt>parent chain</dt><dd>{chain}</dd>
<dt>headers</dt><dd><span id="total">{sp.total}</span> ({summ['commits']} committed, {n_rej} rejected)</dd>"""
    links = pager_links(sp)
    first, last = sp.page * sp.size + 1, sp.page * sp.size + len(sp.records)

    def link(key: str, label: str) -> str:
        url = links[key]
        return f'<a id="{key}" href="{esc(url)}">{label}</a>' if url else f'<span class="off" id="{key}-off">{label}</span>'

    pager = (f'{link("newer", "← newer")} <span id="page-info">page {sp.page + 1} of {sp.pages} · '
             f'headers {first if sp.records else 0}–{last} of {sp.total}, newest first</span> {link("older", "older →")}'
             f' <a id="newest-link" href="{esc(links["newest"])}">newest (live)</a>')
    return {"summary": summary, "rows": rows, "pager": pager, "plot": plot}


def stream_body(sp: StreamPage, replicas: list[str], frags: dict[str, str], *, live: bool, refresh_ms: int) -> str:
    sid = hx(sp.stream_id)
    cfg = {"stream": sid, "size": sp.size, "page": sp.page, "at": sp.at, "total": sp.total, "live": live,
           "refreshMs": refresh_ms}
    cfg_json = json.dumps(cfg).replace("</", "<\\/")
    status = ("live · refreshes as blocks commit" if live else
              "pinned: this page stays as of its block; “newest (live)” follows the chain")
    sizes = " ".join(
        f'<a href="{esc(stream_url(sid, 0, n, None))}">{n}</a>' if n != sp.size else f"<b>{n}</b>"
        for n in (10, 20, 50, 100))
    return f"""<h1>Stream <code>{esc(sid)}</code></h1>
<p class="note">read at chain block <b id="pinned">{sp.at}</b> (logs up to it and every view at it) ·
<span id="live-status" class="live{' on' if live and refresh_ms else ''}">{status if refresh_ms else 'refresh off'}</span></p>
<div class="banner" id="newer-note" hidden><span></span> · <a href="{esc(stream_url(sid, 0, sp.size, None))}">show the newest</a></div>
<dl class="kv" id="summary">{frags['summary']}</dl>
<dl class="kv"><dt>replicas</dt><dd>{'<br>'.join(f'<code>{esc(r)}</code>' for r in replicas)}</dd></dl>
<h2>Gas and events over time</h2>
<div id="plot-box">{frags['plot']}</div>
<h2>Headers</h2>
<div class="pager" id="pager">{frags['pager']}</div>
<table id="headers"><thead><tr><th>#</th><th>header hash</th><th>leader</th><th>attestations</th><th>events</th>
<th>block</th><th>gas share</th><th>verification</th></tr></thead><tbody id="rows">{frags['rows']}</tbody></table>
<p class="note">page size: {sizes}</p>
<p><a href="/">← overview</a></p>
<script type="application/json" id="live-cfg">{cfg_json}</script>"""


def error_body(status: int, detail: str) -> str:
    return f'<h1>{status}</h1><p class="bad" id="error">{esc(detail)}</p><p><a href="/">← overview</a></p>'


def overview_body(ov: dict[str, Any], streams: list[Any]) -> str:
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
    return f"""<h1>Registry overview</h1>
<dl class="kv" id="overview">
<dt>chain id</dt><dd data-field="chainId">{ov['chainId']}</dd>
<dt>registry</dt><dd><code>{esc(ov['registry'])}</code></dd>
<dt>chain block</dt><dd data-field="blockNumber">{ov['blockNumber']} <span class="note">(every figure on this page is read at it)</span></dd>
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


def header_body(rec: HeaderRecord, at: int, result: dict[str, Any] | None, form: dict[str, str]) -> str:
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
        ("verification", verif_cell(rec) + f' <span class="note">(checked at chain block {at})</span>'),
    ]
    if rec.history_proof is not None:   # v2: what proved the header committed
        p = rec.history_proof
        fields.append(("history proof", f'commit <span data-field="commitIndex">{p.commit_index}</span>, '
                       f'position {p.position} of {len(p.header_hashes)}, {len(p.later_roots)} later roots; '
                       f'<code>verifyHeaderCommitted</code> (eth_call) '
                       f'<span data-field="provedOnChain">{mark(rec.proved_onchain, "proved")}</span>'))
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
 · {committed_text(result, rec.number)}: {mark(result['offchainCommitted'], 'committed')}</div>
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


def committed_text(result: dict[str, Any], number: int) -> str:
    """What made the header count as committed off-chain: v1's stored hash, v2's history proof."""
    if result.get("committedBy") == "historyProof":
        return "header proved committed (history proof against historyAcc / historyCheckpoint)"
    return f"header hash stored on-chain at #{number}"


CHECK_NAMES = {
    "eventHash": "the event the node returned hashes to this hash",
    "headerCommitted": "the header is committed on chain at that number",
    "headerVerified": "the header's own checks hold (hash, parent, leader signature, attestations, quorum)",
    "onchainInclusion": "the contract's verifyInclusion accepts the proof (eth_call)",
    "offchainInclusion": "the Merkle proof holds against the header's eventsRoot (off-chain)",
    "headerHashAt": "headerHashAt(stream, number) on chain is this header's hash",
    "historyProof": "the header's history proof (from the commit logs) holds against the registry's history (v2)",
}

STATUS_TEXT = {
    "proven": "found through a node, and proven on-chain",
    "disproven": "a node answered, but the chain does not confirm its answer",
    "pending": "known to a node but not in a committed block yet",
    "unknown": "no node given knows this event",
    "no-nodes": "no node URL was given to the explorer (--node URL), so event hashes cannot be looked up",
}


def event_body(res: dict[str, Any]) -> str:
    """An event hash looked up through the nodes, with the chain's verdict on each answer."""
    status = res["status"]
    node_rows = "".join(
        f"<tr><td>{esc(a['url'])}</td><td data-status>{esc(a['status'])}</td><td class=note>{esc(a['detail'])}</td></tr>"
        for a in res["nodes"]) or '<tr><td colspan=3 class="note">no nodes asked</td></tr>'
    verdict_cls = "ok" if status == "proven" else "bad" if status in ("disproven", "unknown") else "unk"
    out = f"""<h1>Event <code>{esc(short(res['eventHash'], 18))}</code></h1>
<p class="note">event hash <code>{esc(res['eventHash'])}</code> · checked at chain block {res['at']}</p>
<p><b class="{verdict_cls}" id="event-status" data-status="{esc(status)}">{esc(STATUS_TEXT.get(status, status))}</b></p>"""
    r = res.get("result")
    if r is not None:
        checks = r.get("checks", {})
        rows = "".join(f"<tr><td>{mark(v, k)}</td><td>{esc(CHECK_NAMES.get(k, k))}</td></tr>" for k, v in checks.items())
        probs = "".join(f"<li>{esc(p)}</li>" for p in r.get("problems", []))
        link = ""
        if "headerHash" in r:
            link = (f'<a id="header-link" href="/header/{esc(r["headerHash"])}?stream={esc(r["stream"])}&number={r["number"]}">'
                    f'header #{r["number"]}</a> of stream <a class=mono href="/stream/{esc(r["stream"])}">{esc(short(r["stream"], 14))}</a>')
        out += f"""<dl class="kv" id="event">
<dt>answered by</dt><dd>{esc(r['node'])}</dd>
<dt>in block</dt><dd>{link or '-'}</dd>
<dt>index</dt><dd data-field="index">{esc(r.get('index', '-'))}</dd>
<dt>proof</dt><dd>{'<br>'.join(f'<code>{esc(p)}</code>' for p in r.get('proof', [])) or '(none: the only event of its block)'}</dd>
</dl>
<h2>Checked against the chain</h2>
<table id="checks">{rows}</table>{f'<ul class="problems">{probs}</ul>' if probs else ''}"""
    out += f"""<h2>Nodes asked</h2>
<table id="event-nodes"><tr><th>node</th><th>answer</th><th></th></tr>{node_rows}</table>
<p><a href="/">← overview</a></p>"""
    return out
