"""The header explorer's routes: server-rendered HTML and the JSON it is made of, over RegistryHistory.

Pages: `/` (registry overview), `/stream/{id}` (newest headers first, paged, with the chain verdict,
a plot of gas per header and events per block, refreshing live as blocks commit), `/header/{hash}`
(every field, the signers, an inclusion-proof form), `/event/{hash}` (an event found through the
`--node` URLs and proven on-chain), `/search?q=` (stream id or name, header hash, event hash).
The same data as JSON under `/api/...`.

Every request reads the chain at one pinned block (`?at=N`, default the latest when the request
starts): logs up to it and every view at it, so what one page shows is one consistent state.
Bad input is a 4xx with a sentence, as HTML for pages and `{"detail": ...}` for `/api/`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from node.chain.history import HeaderRecord, PageOutOfRange, RegistryHistory, StreamPage, parse_stream_id
from node.protocol.hexutil import hx

from . import pages
from .lookup import find_event
from .plot import plot_svg

HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")
MAX_PAGE_SIZE = 200
PLOT_WINDOW = 150


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


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def create_app(hist: RegistryHistory, nodes: Sequence[str] = (), *, refresh_ms: int = 2000,
               plot_window: int = PLOT_WINDOW) -> FastAPI:
    """The explorer for one registry; `nodes` are the URLs asked where an event hash's block is."""
    app = FastAPI(title="mini-block header explorer", docs_url=None, redoc_url=None)
    node_urls = [u.rstrip("/") for u in nodes]

    def html_page(title: str, body: str, status: int = 200, q: str = "", scripts: str = "") -> HTMLResponse:
        return HTMLResponse(pages.shell(title, body, hist.address, hist.chain_id, q, scripts), status_code=status)

    def error(request: Request, status: int, detail: str) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": detail}, status_code=status)
        return html_page(f"error {status}", pages.error_body(status, detail), status)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    def bad_params(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return error(request, 400, "bad parameter: " + "; ".join(parts))

    @app.exception_handler(Exception)
    def chain_error(request: Request, exc: Exception) -> Response:
        return error(request, 502, f"reading the chain failed: {type(exc).__name__}: {exc}")

    # ---- arguments ---------------------------------------------------------------------------

    def pinned(at: int | None) -> int:
        latest = hist.pin()
        if at is None:
            return latest
        if at > latest:
            raise HTTPException(400, f"block {at} is not mined yet (the latest is {latest})")
        return at

    def stream_arg(sid: str) -> bytes:
        if sid.startswith(("0x", "0X")) and not HEX32.fullmatch(sid):
            raise HTTPException(400, f"malformed stream id {sid!r}: 0x + 64 hex digits, or a stream name")
        try:
            return parse_stream_id(sid)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc

    def hash_arg(h: str, what: str) -> bytes:
        if not HEX32.fullmatch(h.strip()):
            raise HTTPException(400, f"malformed {what} {h!r}: 0x + 64 hex digits")
        return bytes.fromhex(h.strip()[2:])

    def existing_stream(sid: str, at: int) -> bytes:
        s = stream_arg(sid)
        if not hist.stream_exists(s, at):
            raise HTTPException(404, f"no stream {sid} in this registry at block {at}")
        return s

    def stream_page(sid: str, page: int, size: int, at: int | None) -> StreamPage:
        blk = pinned(at)
        s = existing_stream(sid, blk)
        try:
            return hist.stream_page(s, page, size, blk)
        except PageOutOfRange as exc:
            raise HTTPException(404, str(exc)) from exc

    def fragments(sp: StreamPage) -> dict[str, str]:
        return pages.stream_fragments(sp, plot_svg(hist.plot_points(sp.stream_id, sp.at, plot_window), plot_window))

    def find(header_hash: str, stream: str | None, number: int | None, at: int | None) -> tuple[HeaderRecord, int]:
        h = hash_arg(header_hash, "header hash")
        blk = pinned(at)
        rec = hist.find_header(h, stream_arg(stream) if stream else None, number, at=blk)
        if rec is None:
            raise HTTPException(404, f"header {header_hash} was not committed (nor rejected) by this registry "
                                     f"up to block {blk}")
        return rec, blk

    def check(rec: HeaderRecord, event_hash: str, index: int, proof: str, at: int) -> dict[str, Any]:
        if rec.header is None:
            raise HTTPException(409, "the full header is not known (calldata not decoded)")
        eh = hash_arg(event_hash, "eventHash")
        try:
            proof_b = parse_proof(proof)
        except (ValueError, json.JSONDecodeError) as exc:
            raise HTTPException(400, f"bad proof: {exc}") from exc
        if index < 0:
            raise HTTPException(400, "index must be >= 0")
        res = hist.verify_inclusion(rec.header, proof_b, index, eh, block=at)
        return {"eventHash": hx(eh), "index": index, "proof": ["0x" + p.hex() for p in proof_b], **res}

    def resolve(q: str, at: int) -> dict[str, Any]:
        """What a search box entry is: a stream (id or name), a header hash, or an event hash (via nodes)."""
        q = q.strip()
        if not q:
            raise HTTPException(400, "empty search: give a stream id or name, a header hash or an event hash")
        if q.startswith(("0x", "0X")):
            if not HEX32.fullmatch(q):
                raise HTTPException(400, f"malformed search {q!r}: a stream id, header hash or event hash is "
                                         "0x + 64 hex digits (anything else is taken as a stream name)")
            b = bytes.fromhex(q[2:])
            qh = hx(b)
            if hist.stream_exists(b, at):
                return {"kind": "stream", "id": qh, "url": f"/stream/{qh}"}
            rec = hist.find_header(b, at=at, verify=False)
            if rec is not None:
                return {"kind": "header", "id": qh, "stream": hx(rec.stream_id), "number": rec.number,
                        "url": f"/header/{qh}?stream={hx(rec.stream_id)}&number={rec.number}"}
            res = find_event(hist, node_urls, b, at)
            if res["status"] in ("unknown", "no-nodes"):
                asked = (f"no node of {len(node_urls)} given knows it as an event" if node_urls
                         else "give the explorer --node URL to look up event hashes")
                raise HTTPException(404, f"{qh} is no stream and no header of this registry at block {at}; {asked}")
            return {"kind": "event", "id": qh, "status": res["status"], "url": f"/event/{qh}"}
        s = parse_stream_id(q)
        if hist.stream_exists(s, at):
            return {"kind": "stream", "id": hx(s), "name": q, "url": f"/stream/{hx(s)}"}
        raise HTTPException(404, f"no stream named {q!r} (id keccak256 = {hx(s)}) at block {at}")

    # ---- JSON --------------------------------------------------------------------------------

    @app.get("/api/overview")
    def api_overview(at: int | None = Query(None, ge=0)) -> JSONResponse:
        blk = pinned(at)
        ov = hist.overview(blk)
        ov["streams"] = [s.to_json() for s in hist.streams(blk)]
        return JSONResponse(ov)

    @app.get("/api/streams/{sid}/headers")
    def api_stream(sid: str, page: int = Query(0, ge=0), size: int = Query(20, ge=1, le=MAX_PAGE_SIZE),
                   at: int | None = Query(None, ge=0), html: bool = False) -> JSONResponse:
        sp = stream_page(sid, page, size, at)
        out = sp.to_json()
        out["links"] = pages.pager_links(sp, api=True)
        out["plot"] = [p.to_json() for p in hist.plot_points(sp.stream_id, sp.at, plot_window)]
        if html:
            out["html"] = fragments(sp)
        return JSONResponse(out)

    @app.get("/api/streams/{sid}/head")
    def api_head(sid: str) -> JSONResponse:
        """The cheap poll of the live page: the stream's head and header count at the latest block."""
        blk = pinned(None)
        s = existing_stream(sid, blk)
        number, h, ts = hist.head_of(s, blk)
        return JSONResponse({"stream": hx(s), "at": blk, "headNumber": number, "headHash": hx(h),
                             "headTimestamp": ts, "total": hist.header_count(s, blk)})

    @app.get("/api/headers/{header_hash}")
    def api_header(header_hash: str, stream: str | None = None, number: int | None = Query(None, ge=0),
                   at: int | None = Query(None, ge=0)) -> JSONResponse:
        rec, blk = find(header_hash, stream, number, at)
        return JSONResponse({**rec.to_json(), "at": blk})

    @app.get("/api/headers/{header_hash}/inclusion")
    def api_inclusion(header_hash: str, event_hash: str = Query(..., alias="eventHash"), index: int = 0,
                      proof: str = "", stream: str | None = None, number: int | None = Query(None, ge=0),
                      at: int | None = Query(None, ge=0)) -> JSONResponse:
        rec, blk = find(header_hash, stream, number, at)
        return JSONResponse({**check(rec, event_hash, index, proof, blk), "at": blk})

    @app.get("/api/search")
    def api_search(q: str = "", at: int | None = Query(None, ge=0)) -> JSONResponse:
        blk = pinned(at)
        return JSONResponse({**resolve(q, blk), "at": blk})

    def event_result(event_hash: str, at: int | None) -> dict[str, Any]:
        eh = hash_arg(event_hash, "event hash")
        res = find_event(hist, node_urls, eh, pinned(at))
        if res["status"] == "no-nodes":
            raise HTTPException(404, pages.STATUS_TEXT["no-nodes"])
        if res["status"] == "unknown":
            raise HTTPException(404, f"no node of the {len(node_urls)} given knows event {hx(eh)}: "
                                + "; ".join(f"{a['url']}: {a['status']} {a['detail']}".strip() for a in res["nodes"]))
        return res

    @app.get("/api/events/{event_hash}")
    def api_event(event_hash: str, at: int | None = Query(None, ge=0)) -> JSONResponse:
        return JSONResponse(event_result(event_hash, at))

    # ---- HTML --------------------------------------------------------------------------------

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)   # no icon: the browser stops asking, and no 404 in its console

    @app.get("/", response_class=HTMLResponse)
    def overview() -> HTMLResponse:
        blk = pinned(None)
        return html_page("overview", pages.overview_body(hist.overview(blk), hist.streams(blk)))

    @app.get("/stream/{sid}", response_class=HTMLResponse)
    def stream_html(sid: str, page: int = Query(0, ge=0), size: int = Query(20, ge=1, le=MAX_PAGE_SIZE),
                    at: int | None = Query(None, ge=0)) -> HTMLResponse:
        sp = stream_page(sid, page, size, at)
        live = page == 0 and at is None
        body = pages.stream_body(sp, hist.replicas_of(sp.stream_id, sp.at), fragments(sp), live=live,
                                 refresh_ms=refresh_ms)
        return html_page(f"stream {pages.short(hx(sp.stream_id))}", body, scripts=f"<script>{pages.LIVE_JS}</script>")

    @app.get("/header/{header_hash}", response_class=HTMLResponse)
    def header_html(header_hash: str, stream: str | None = None, number: int | None = Query(None, ge=0),
                    at: int | None = Query(None, ge=0), eventHash: str | None = None,  # noqa: N803
                    index: str = "0", proof: str = "") -> HTMLResponse:
        rec, blk = find(header_hash, stream, number, at)
        result = None
        form = {"eventHash": eventHash or "", "index": index, "proof": proof}
        if eventHash:
            try:
                result = check(rec, eventHash, int(index), proof, blk)
            except ValueError:
                result = {"error_msg": "index must be a whole number"}
            except HTTPException as exc:
                result = {"error_msg": exc.detail}
        return html_page(f"header #{rec.number}", pages.header_body(rec, blk, result, form))

    @app.get("/search")
    def search_html(q: str = "") -> Response:
        blk = pinned(None)
        try:
            hit = resolve(q, blk)
        except HTTPException as exc:
            return html_page("search", pages.error_body(exc.status_code, str(exc.detail)), exc.status_code, q=q)
        return RedirectResponse(hit["url"], status_code=303)

    @app.get("/event/{event_hash}", response_class=HTMLResponse)
    def event_html(event_hash: str, at: int | None = Query(None, ge=0)) -> HTMLResponse:
        res = event_result(event_hash, at)
        return html_page("event", pages.event_body(res), q=event_hash)

    return app
