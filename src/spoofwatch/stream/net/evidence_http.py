"""HTTP handlers: ``GET /v1/streams`` (live snapshot), ``GET /v1/evidence`` (list) and
``GET /v1/evidence/{id}.wav`` / ``.json`` (docs/protocol.md, "Alarm evidence").

Mounted on the server's aiohttp application (its token applies). Errors are JSON
``{"error": "..."}`` with a 4xx status: 400 for a malformed id or query, 404 for evidence
that does not exist (or evidence recording being off).
"""

from __future__ import annotations

import json

from aiohttp import web

from spoofwatch.stream.engine.snapshot import StreamTracker
from spoofwatch.stream.evidence.store import BadEvidenceId, EvidenceNotFound, EvidenceStore

MAX_LIST = 500
CONTENT_TYPES = {"wav": "audio/wav", "json": "application/json"}


def _error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json")


def streams_routes(tracker: StreamTracker) -> list[web.RouteDef]:
    async def streams(_request: web.Request) -> web.Response:
        return web.json_response(tracker.snapshot(), headers={"Cache-Control": "no-store"})

    return [web.get("/v1/streams", streams)]


def evidence_routes(store: EvidenceStore | None) -> list[web.RouteDef]:
    def need_store() -> EvidenceStore:
        if store is None:
            raise _error(
                web.HTTPNotFound, "evidence recording is off; start the server with --evidence-dir DIR"
            )
        return store

    async def listing(request: web.Request) -> web.Response:
        folder = need_store()
        text = request.query.get("limit", "100")
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIST:
            raise _error(web.HTTPBadRequest, f"limit: expected an integer 1..{MAX_LIST}, found {text[:20]!r}")
        stream = request.query.get("stream") or None
        entries = folder.entries(stream=stream, limit=int(text))
        return web.json_response({"evidence": entries}, headers={"Cache-Control": "no-store"})

    async def item(request: web.Request) -> web.StreamResponse:
        folder = need_store()
        name = request.match_info["name"]
        evidence_id, dot, kind = name.rpartition(".")
        if not dot or kind not in CONTENT_TYPES:
            raise _error(web.HTTPBadRequest, f"expected /v1/evidence/ID.wav or ID.json, found {name[:80]!r}")
        try:
            path = folder.path(evidence_id, "wav" if kind == "wav" else "json")
        except BadEvidenceId as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        except EvidenceNotFound as exc:
            raise _error(web.HTTPNotFound, str(exc)) from None
        return web.FileResponse(
            path,
            headers={
                "Content-Type": CONTENT_TYPES[kind],
                "Cache-Control": "private, no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return [web.get("/v1/evidence", listing), web.get("/v1/evidence/{name}", item)]
