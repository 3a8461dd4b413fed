"""The HTTP API (FastAPI): client, peer and operator endpoints. OpenAPI at /openapi.json."""

from __future__ import annotations

import logging
from collections import OrderedDict
from itertools import islice
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from node.protocol.limits import MAX_BLOCK_EVENTS, event_size
from node.protocol.merkle import merkle_levels, proof_from_levels

from . import forward, wire
from .aggregate import install_routes as install_aggregate
from .attest import AttestRefused, attest, attest_many
from .core import Node
from .handoff import refusing_clients
from .intake import RETRY_AFTER_S, Rejected, accept, decode, parse_batch, to_wire
from .models import (
    Accepted,
    AttestBatchIn,
    AttestBatchOut,
    AttestIn,
    AttestOut,
    BatchItemResult,
    BatchResult,
    BlockList,
    BlockOut,
    ErrorOut,
    EventBatch,
    EventIn,
    EventStatus,
    FetchIn,
    FetchOut,
    GossipOut,
    HeaderOut,
    Health,
    NodeInfoOut,
    SignedEvent,
    StreamList,
    StreamOut,
    VotesBatchIn,
    VotesBatchOut,
    VotesIn,
    VotesOut,
    hx,
    unhex,
)
from .snapshots import install_routes as install_snapshots
from .subscribe import install as install_subscriptions
from .sync import behind_count

log = logging.getLogger("node.api")

MEMBERS_SHOWN = 1000  # members listed by GET /v1/streams/{id} (member_count has the total)

ERR: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 421, 422, 429, 503)}


def err(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail}, headers=headers)


def _hash_param(s: str, what: str = "hash") -> bytes:
    try:
        b = unhex(s)
    except ValueError:
        raise Rejected(400, f"bad_{what}", f"{what} must be 0x-hex") from None
    if len(b) != 32:
        raise Rejected(400, f"bad_{what}", f"{what} must be 32 bytes")
    return b


async def peer_body(request: Request, kind: type[wire.T]) -> wire.T:
    """A /peer/* body parsed on the peer wire (node/server/wire.py); 400/422 as for a client body."""
    try:
        return wire.decode(kind, await request.body())
    except wire.BadBody as exc:
        raise Rejected(exc.status, exc.error, exc.detail) from None


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra naming `model` as the JSON request body (the endpoint parses it with wire.decode)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


PEER_BODIES: tuple[type[BaseModel], ...] = (EventBatch, VotesIn, VotesBatchIn, FetchIn, AttestIn, AttestBatchIn)


def with_peer_schemas(app: FastAPI) -> None:
    """The peer bodies' pydantic models in the OpenAPI components (no route declares them as parameters)."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = default()
            _, defs = models_json_schema([(m, "validation") for m in PEER_BODIES],
                                         ref_template="#/components/schemas/{model}")
            comps = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in defs.get("$defs", {}).items():
                comps.setdefault(name, schema)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes (413), by header or while streaming."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                resp = err(413, "body_too_large", f"request body over {self.limit} bytes")
                return await resp(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise Rejected(413, "body_too_large", f"request body over {self.limit} bytes")
            return msg

        try:
            return await self.app(scope, limited, send)
        except Rejected as rej:
            resp = err(rej.status, rej.error, rej.detail)
            return await resp(scope, receive, send)


_LEVELS: OrderedDict[tuple[bytes, int], list[list[bytes]]] = OrderedDict()


def proof_of(sid: bytes, number: int, hashes: list[bytes], index: int) -> list[bytes]:
    """merkle_proof(hashes, index), from the block's tree levels cached across requests (LRU)."""
    key = (sid, number)
    levels = _LEVELS.get(key)
    if levels is None:
        levels = merkle_levels(hashes)
        _LEVELS[key] = levels
        if len(_LEVELS) > 64:
            _LEVELS.popitem(last=False)
    else:
        _LEVELS.move_to_end(key)
    return proof_from_levels(levels, index)


def build_api(node: Node) -> FastAPI:
    app = FastAPI(title="Mini-block node", version="1",
                  description="Client, peer and operator API of a mini-block node (docs/protocol.md).")

    @app.exception_handler(Rejected)
    async def _rejected(_req: Request, exc: Rejected):
        return err(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(AttestRefused)
    async def _refused(_req: Request, exc: AttestRefused):
        return err(exc.status, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        errs = exc.errors()
        parts = []
        for e in errs[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg')}")
        error = "malformed_json" if any(e.get("type") == "json_invalid" for e in errs) else "invalid_request"
        return err(400 if error == "malformed_json" else 422, error, "; ".join(parts))

    # ---- client ---------------------------------------------------------------------------------
    @app.get("/v1/info", response_model=NodeInfoOut, tags=["client"])
    async def info():
        """This node's address and the EIP-712 domain (chain id, registry) events must be signed for."""
        d = node.domain
        return NodeInfoOut(address=node.me, chain_id=d.chain_id, registry=d.verifying_contract, domain_name=d.name,
                           domain_version=d.version, epoch=node.current_epoch() if node.params else None,
                           public_url=node.cfg.public_url, chain_time=node.chain_now())

    def serving() -> None:
        """A node on its way out takes no client events (node.server.handoff): 503, post elsewhere."""
        why = refusing_clients(node)
        if why is not None:
            raise Rejected(503, "leaving", why, {"Retry-After": "1"})

    @app.post("/v1/events", response_model=Accepted, status_code=202, responses=ERR, tags=["client"])
    async def post_event(body: SignedEvent, request: Request):
        """Post one signed event. It is stored durably before the answer and forwarded to the replicas (by a node
        that does not store the stream: passed on to a replica, whose answer this is)."""
        serving()
        item = decode(body, node.cfg.max_payload)
        sid = item[1].stream_id
        if forward.elsewhere(node, sid) and not forward.forwarded(request):
            return await forward.relay_event(node, request, body, item[0], sid)
        [(st, rej)] = await accept(node, [item], "client", client=True)
        if rej is not None:
            raise rej
        se = node.storage.get_event(item[0])
        return Accepted(hash=hx(item[0]), status="committed" if se and se.block is not None else "pending",
                        known=(st == "known"))

    @app.post("/v1/events/batch", response_model=BatchResult, responses=ERR, tags=["client"],
              openapi_extra=documented(EventBatch))
    async def post_batch(request: Request):
        """Post many signed events; each gets its own result (invalid ones change nothing). Events of streams
        this node does not store are passed on to their replicas, and their results are the replicas'."""
        serving()
        # pydantic-core straight from the bytes (model_validate_json): the same EventBatch model and errors
        # as a declared body parameter, without FastAPI's json.loads + validate_python
        try:
            body = EventBatch.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        if len(body.events) > node.cfg.max_batch_events:
            raise Rejected(413, "batch_too_large", f"at most {node.cfg.max_batch_events} events per batch")
        items, errs = parse_batch(node, body.events)
        relay = not forward.forwarded(request)
        away = [i for i, (it, e) in enumerate(zip(items, errs, strict=True))
                if e is None and relay and forward.elsewhere(node, it[1].stream_id)]
        far = set(away)
        good = [it for i, (it, e) in enumerate(zip(items, errs, strict=True)) if e is None and i not in far]
        res = iter(await accept(node, good, "client", client=True) if good else [])
        passed = dict(zip(away, await forward.relay_batch(
            node, [body.events[i] for i in away], [(items[i][0], items[i][1].stream_id) for i in away]),
            strict=True)) if away else {}
        out, n_ok = [], 0
        for i, (it, e) in enumerate(zip(items, errs, strict=False)):
            if i in passed:
                r = passed[i]
                n_ok += r.ok
                out.append(r)
                continue
            if e is None:
                _st, e = next(res)
            if e is None:
                n_ok += 1
                out.append(BatchItemResult(hash=hx(it[0]), ok=True, status=202))
            else:
                out.append(BatchItemResult(hash=hx(it[0]) if it else None, ok=False, status=e.status,
                                           error=e.error, detail=e.detail))
        retry = {"Retry-After": str(RETRY_AFTER_S)} if any(r.status == 429 for r in out) else None
        result = BatchResult(accepted=n_ok, rejected=len(out) - n_ok, results=out)
        # written by pydantic-core (FastAPI would validate the model again and encode it with the stdlib)
        return Response(result.model_dump_json(), media_type="application/json", headers=retry)

    @app.get("/v1/events/{event_hash}", response_model=EventStatus, responses=ERR, tags=["client"])
    async def get_event(event_hash: str, request: Request, stream: str | None = Query(
            None, description="the event's stream: a node that does not store it asks a replica")):
        """An event's status: pending, or committed with block, index, Merkle proof and header hash. Of a
        stream this node does not store (named by `stream`, or an event this node passed on): a replica's
        answer."""
        h = _hash_param(event_hash)
        se = node.storage.get_event(h)
        if se is None:
            sid = _hash_param(stream, "stream_id") if stream is not None else node.forwarded.get(h)
            if sid is not None and forward.elsewhere(node, sid):
                return await forward.relay_read(node, request, sid)
            raise Rejected(404, "unknown_event", f"event {event_hash} is not known here" + (
                "" if node.cfg.sync_all_streams else " (a node stores only the streams it replicates: add "
                                                     "?stream=0x… to have it asked of a replica)"))
        out = EventStatus(hash=hx(h), status="pending", event=EventIn.of(se.event), signature=hx(se.signature),
                          stream_id=hx(se.event.stream_id))
        if se.block is not None:
            b = node.storage.get_block(se.event.stream_id, se.block)
            if b is not None:
                out.status = "committed"
                out.block, out.index = se.block, se.idx
                out.header_hash = hx(b.header_hash)
                out.header = HeaderOut.of(b.header)
                assert se.idx is not None, "a committed event has an index"
                out.proof = [hx(p) for p in proof_of(se.event.stream_id, se.block, b.event_hashes, se.idx)]
                out.chain_block, out.final = finality(se.event.stream_id, se.block)
        return out

    def members_of(sid: bytes) -> list[str]:
        """The members after the head (at most MEMBERS_SHOWN of them: a stream may have millions)."""
        st = node.storage.state(sid)
        return [] if st is None else list(islice(st.members, MEMBERS_SHOWN))
    def finality(sid: bytes, number: int) -> tuple[int | None, bool]:
        """Where a block's commit is on chain, and whether it is final (node.server.reorg)."""
        c = node.storage.get_commit(sid, number)
        if c is None:
            return None, False
        return c.chain_block, node.is_final(c.chain_block)

    def stream_out(sid: bytes) -> StreamOut:
        row = node.storage.get_stream(sid)
        if row is None:
            raise Rejected(404, "unknown_stream", f"stream {hx(sid)} is not known here")
        ch = node.view.head(sid)
        st = node.storage.state(sid)
        return StreamOut(stream_id=hx(sid), head_number=row.head_number, head_hash=hx(row.head_hash),
                         chain_head_number=ch.number if ch else None, members=sorted(members_of(sid)),
                         member_count=len(st.members) if st else 0, creator=st.creator if st else None,
                         invite_only=st.invite_only if st else False,
                         replicas=node.replicas_of(sid), pool_size=node.storage.pool_size(sid),
                         replicated_here=node.replicates(sid), diverged_at=node.diverged.get(sid))

    @app.get("/v1/streams", response_model=StreamList, tags=["client"])
    async def list_streams():
        """The streams this node stores (those it replicates, or every stream with sync_all_streams)."""
        return StreamList(streams=[stream_out(r.stream_id) for r in node.storage.all_streams()
                                   if node.follows(r.stream_id)])

    @app.get("/v1/streams/{stream_id}", response_model=StreamOut, responses=ERR, tags=["client"])
    async def get_stream(stream_id: str, request: Request):
        """A stream's head (here and on-chain), members after the head, replicas and mini-pool size (of a
        stream this node does not store: a replica's answer)."""
        sid = _hash_param(stream_id, "stream_id")
        if forward.elsewhere(node, sid):
            return await forward.relay_read(node, request, sid)
        return stream_out(sid)

    def block_out(sid: bytes, number: int, with_events: bool) -> dict | None:
        """A BlockOut as plain JSON data (built directly: blocks can hold thousands of events)."""
        b = node.storage.get_block(sid, number)
        if b is None:
            return None
        evs = None
        if with_events:
            got = node.storage.get_events(b.event_hashes)
            evs = [to_wire(h, got[h].event, got[h].signature) for h in b.event_hashes if h in got]
        chain_block, final = finality(sid, number)
        return {"header": HeaderOut.of(b.header).model_dump(), "header_hash": hx(b.header_hash),
                "event_hashes": [hx(h) for h in b.event_hashes], "events": evs,
                "tx_hash": hx(b.tx_hash) if b.tx_hash else None, "chain_block": chain_block, "final": final}

    @app.get("/v1/streams/{stream_id}/blocks/{number}", response_model=BlockOut, responses=ERR, tags=["client"])
    async def get_block(stream_id: str, number: int, request: Request, events: bool = True):
        """A committed block with its events, in block order (of a stream this node does not store: a
        replica's answer)."""
        sid = _hash_param(stream_id, "stream_id")
        if forward.elsewhere(node, sid):
            return await forward.relay_read(node, request, sid)
        b = block_out(sid, number, events)
        if b is None:
            pruned_check(sid, number)
            raise Rejected(404, "unknown_block", f"block {number} of {stream_id} is not stored here")
        return JSONResponse(b)

    def pruned_check(sid: bytes, number: int) -> None:
        """410 `pruned` for a block older than this node's history base (retain_blocks, or a snapshot start)."""
        base = node.storage.history_base(sid)
        if 1 <= number < base:
            raise Rejected(410, "pruned", f"block {number} of {hx(sid)} is older than the history kept here "
                                          f"(from #{base}; its state is in the snapshots: /peer/snapshot)")

    # ---- peer -----------------------------------------------------------------------------------
    # Every /peer/* request was authenticated by node.server.peer_auth.PeerAuth: request.state.peer is the
    # sending node (registered, active in the current epoch).
    def sender(request: Request) -> str:
        peer = getattr(request.state, "peer", None)
        if peer is None:  # only without the middleware (never in a running node)
            raise Rejected(401, "unauthenticated", "peer request without proof")
        return str(peer)

    def replica_only(peer: str, sid: bytes) -> None:
        if peer not in node.replicas_of(sid):
            raise Rejected(403, "not_replica", f"{peer} is not a replica of stream {hx(sid)}")

    @app.post("/peer/gossip", response_model=GossipOut, tags=["peer"], openapi_extra=documented(EventBatch))
    async def gossip(request: Request):
        """Events forwarded by a node: limited like client intake (count cap, payload cap, quotas, and the
        membership check for streams known here)."""
        sender(request)
        body = await peer_body(request, wire.GossipIn)
        if len(body.events) > node.cfg.max_batch_events:
            raise Rejected(413, "batch_too_large", f"at most {node.cfg.max_batch_events} events per gossip")
        items, errs = parse_batch(node, body.events)
        good = [it for it, e in zip(items, errs, strict=False) if e is None]
        # A node that forwards an event it accepted may have applied a block (a JOIN) this node has not yet:
        # accept catches up once (bounded) and judges those again (intake.read_your_writes).
        res = await accept(node, good, "gossip", client=False, membership=True) if good else []
        new = sum(1 for st, r in res if r is None and st == "new")
        known = sum(1 for st, r in res if r is None and st == "known")
        quota = any(r is not None and r.status == 429 for _st, r in res)
        retry = {"Retry-After": str(RETRY_AFTER_S)} if quota else None
        return wire.JSONBytes({"accepted": new, "known": known, "rejected": len(body.events) - new - known},
                              headers=retry)

    def vote_of(sid: bytes, limit: int) -> dict[str, Any]:
        row = node.storage.get_stream(sid)
        return {"head_number": row.head_number if row else -1,
                "hashes": [hx(h) for h in node.storage.pool_hashes(sid, limit)]}

    @app.post("/peer/votes", response_model=VotesOut, responses=ERR, tags=["peer"], openapi_extra=documented(VotesIn))
    async def votes(request: Request):
        """This node's mini-pool hashes for a stream (its vote), oldest first, at most max_vote_hashes.
        Only for the stream's replicas."""
        peer = sender(request)
        body = await peer_body(request, wire.VotesIn)
        sid = unhex(body.stream_id)
        replica_only(peer, sid)
        return wire.JSONBytes(vote_of(sid, node.cfg.max_vote_hashes))

    @app.post("/peer/votes/batch", response_model=VotesBatchOut, responses=ERR, tags=["peer"],
              openapi_extra=documented(VotesBatchIn))
    async def votes_batch(request: Request):
        """The votes of /peer/votes for every stream a leader drafts with this node in one tick, in request
        order, each answered or refused on its own (403 `not_replica` for a stream the sender does not
        replicate). At most max_vote_hashes per stream and max_vote_batch_hashes in all: a stream past the
        total gets the hashes left (`truncated`); its other events wait for a later block, as with one vote."""
        peer = sender(request)
        body = await peer_body(request, wire.VotesBatchIn)
        if len(set(body.stream_ids)) != len(body.stream_ids):
            raise Rejected(422, "duplicate_stream", "a stream is listed twice")
        budget = node.cfg.max_vote_batch_hashes
        out: list[dict[str, Any]] = []
        for s in body.stream_ids:
            sid = unhex(s)
            if peer not in node.replicas_of(sid):
                out.append({"stream_id": s, "status": 403, "error": "not_replica",
                            "detail": f"{peer} is not a replica of stream {s}"})
                continue
            v = vote_of(sid, max(0, min(node.cfg.max_vote_hashes, budget)))
            budget -= len(v["hashes"])
            out.append({"stream_id": s, "status": 200, **v})
        return wire.JSONBytes({"votes": out})

    @app.post("/peer/events", response_model=FetchOut, responses=ERR, tags=["peer"], openapi_extra=documented(FetchIn))
    async def fetch(request: Request):
        """Events by hash (pending or committed) that this node holds: at most max_fetch_hashes hashes; the
        answer stops after about max_fetch_bytes, and `next` is then the index of the first hash not served."""
        sender(request)
        body = await peer_body(request, wire.FetchIn)
        if len(body.hashes) > node.cfg.max_fetch_hashes:
            raise Rejected(413, "too_many_hashes", f"at most {node.cfg.max_fetch_hashes} hashes per request")
        hashes = []
        for s in body.hashes:
            try:
                hashes.append(_hash_param(s))
            except Rejected:
                hashes.append(b"")
        got = node.storage.get_events([h for h in hashes if h])
        out: list[bytes] = []
        size, nxt = 0, None
        for i, h in enumerate(hashes):
            se = got.get(h)
            if se is None:
                continue
            if out and size + event_size(se.event) * 2 > node.cfg.max_fetch_bytes:
                nxt = i
                break
            out.append(wire.event_bytes(se.event, se.signature))
            size += event_size(se.event) * 2  # hex on the wire
        answer = wire.join_list(b"events", out)
        return wire.JSONBytes(answer if nxt is None else answer[:-1] + b',"next":%d}' % nxt)

    @app.post("/peer/attest", response_model=AttestOut, responses=ERR, tags=["peer"],
              openapi_extra=documented(AttestIn))
    async def attest_ep(request: Request):
        """Check a leader's proposal and sign its header (EIP-712). Only the header's leader may ask, and it
        must be a replica of the stream: a proposal sent by anyone else changes nothing here."""
        peer = sender(request)
        body = await peer_body(request, wire.AttestIn)
        try:
            sid, leader = unhex(body.header.stream_id), body.header.leader
        except ValueError as exc:
            raise Rejected(422, "malformed", str(exc)) from None
        replica_only(peer, sid)
        if peer.lower() != leader.lower():
            raise Rejected(403, "not_leader", f"the proposal names {leader} as leader; {peer} sent it")
        if len(body.event_hashes) > MAX_BLOCK_EVENTS:
            raise Rejected(413, "too_many_events", f"at most {MAX_BLOCK_EVENTS} events per block")
        sig, hh = await attest(node, body)
        return wire.JSONBytes({"signature": hx(sig), "header_hash": hx(hh)})

    def may_propose(peer: str, p: wire.AttestIn) -> Rejected | None:
        """/peer/attest's refusals before the checks, for one proposal of a batch."""
        try:
            sid, leader = unhex(p.header.stream_id), p.header.leader
        except ValueError as exc:
            return Rejected(422, "malformed", str(exc))
        if peer not in node.replicas_of(sid):
            return Rejected(403, "not_replica", f"{peer} is not a replica of stream {hx(sid)}")
        if peer.lower() != leader.lower():
            return Rejected(403, "not_leader", f"the proposal names {leader} as leader; {peer} sent it")
        if len(p.event_hashes) > MAX_BLOCK_EVENTS:
            return Rejected(413, "too_many_events", f"at most {MAX_BLOCK_EVENTS} events per block")
        return None

    @app.post("/peer/attest/batch", response_model=AttestBatchOut, responses=ERR, tags=["peer"],
              openapi_extra=documented(AttestBatchIn))
    async def attest_batch(request: Request):
        """/peer/attest for every proposal a leader asks this node to attest in one tick: each is refused or
        checked (attest.CHECKS) and signed on its own, in request order; the sender must be the header's
        leader and a replica of its stream, per proposal. At most max_attest_batch_hashes event hashes in
        all (413); a proposal not checked within peer_timeout_s is answered 503 `attest_timeout`."""
        peer = sender(request)
        body = await peer_body(request, wire.AttestBatchIn)
        if sum(len(p.event_hashes) for p in body.proposals) > node.cfg.max_attest_batch_hashes:
            raise Rejected(413, "too_many_events", f"at most {node.cfg.max_attest_batch_hashes} event hashes per "
                                                   "batch; send fewer proposals per request")
        early = [may_propose(peer, p) for p in body.proposals]
        todo = [p for p, e in zip(body.proposals, early, strict=True) if e is None]
        done = iter(await attest_many(node, todo, node.cfg.peer_timeout_s) if todo else [])
        out: list[dict[str, Any]] = []
        for e in early:
            r = e if e is not None else next(done)
            if isinstance(r, tuple):
                out.append({"status": 200, "signature": hx(r[0]), "header_hash": hx(r[1])})
            else:
                out.append({"status": r.status, "error": r.error, "detail": r.detail})
        return wire.JSONBytes({"results": out})

    @app.get("/peer/blocks/{stream_id}", response_model=BlockList, tags=["peer"])
    async def blocks(request: Request, stream_id: str, first: int = Query(0, alias="from", ge=0),
                     last: int = Query(0, alias="to", ge=0)):
        """Committed blocks first..last (at most 64) with their events; the answer stops after the block that
        passes about max_blocks_bytes (at least one block)."""
        sender(request)
        sid = _hash_param(stream_id, "stream_id")
        pruned_check(sid, first)
        last = min(last, first + 63)
        out: list[Any] = []
        size = 0
        for n in range(first, last + 1):
            b = node.storage.get_block(sid, n)
            if b is None:
                break
            got = node.storage.get_events(b.event_hashes)
            bsize = sum(event_size(se.event) * 2 for se in got.values()) + 70 * len(b.event_hashes) + 1024
            if out and size + bsize > node.cfg.max_blocks_bytes:
                break
            out.append(block_out(sid, n, True))
            size += bsize
        return wire.JSONBytes({"blocks": out})

    # ---- operator -------------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["operator"])
    async def healthz():
        # Counts kept by the chain view and sync's work list: no scan of the streams (100,000 of them cost a
        # second per request when this counted them here).
        e = node.current_epoch() if node.params else None
        h = Health(ok=node.ready, address=node.me, active=node.is_active(node.me), epoch=e,
                   streams=len(node.view.heads), replicated=len(node.view.replicated),
                   behind=behind_count(node), pool=node.storage.pool_total(), chain_block=node.chain_block)
        return JSONResponse(status_code=200 if node.ready else 503, content=h.model_dump())

    @app.get("/metrics", tags=["operator"])
    async def metrics():
        node.metrics.pool_size.set(node.storage.pool_total())
        node.metrics.peers_reachable.set(node.peers.reachable())
        return Response(node.metrics.render(), media_type="text/plain; version=0.0.4")

    with_peer_schemas(app)
    install_subscriptions(app, node)  # /v1/subscribe: WebSocket + SSE (node/server/subscribe.py)
    install_snapshots(app, node)  # /peer/snapshot (node/server/snapshots.py)
    install_aggregate(app, node)  # /peer/commit (node/server/aggregate.py)
    return app
