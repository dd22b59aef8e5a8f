"""``POST /v1/admin/reload``: swap the running server to a card (stream.engine.reload).

The body is empty (reload the current card directory) or a JSON object
``{"detector": "DIR"}`` naming another one. Answers 200 with the card now serving,
400 for a body that is not that, 409 when the card could not be loaded or used (the old
one keeps serving; the reason is in ``error``). Token-protected by the server's auth.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from spoofwatch.stream.engine.reload import CardReloader, ReloadError

RELOAD_PATH = "/v1/admin/reload"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body_directory(request: web.Request) -> str | None:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        body: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"expected an empty body or a JSON object, found invalid JSON ({exc})") from None
    if not isinstance(body, dict) or set(body) - {"detector"}:
        raise ValueError(f'expected an empty body or {{"detector": "DIR"}}, found {raw[:200]!r}')
    directory = body.get("detector")
    if directory is not None and (not isinstance(directory, str) or not directory):
        raise ValueError(f"detector: expected a card directory (a non-empty string), found {directory!r}")
    return directory


def reload_routes(reloader: CardReloader) -> list[web.RouteDef]:
    async def reload(request: web.Request) -> web.Response:
        try:
            directory = await _body_directory(request)
        except ValueError as exc:
            return _error(400, str(exc))
        previous = reloader.pipeline.card
        try:
            card = await reloader.reload(directory, why=f"{RELOAD_PATH} from {request.remote}")
        except ReloadError as exc:
            return _error(409, str(exc))
        return web.json_response({"detector": card.to_dict(), "previous": previous.to_dict()})

    return [web.post(RELOAD_PATH, reload)]
