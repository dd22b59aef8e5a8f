"""The OpenAPI 3.1 description of the HTTP endpoints, served at ``GET /v1/openapi.json``.

Hand-written: the HTTP surface is small, and the WebSocket paths (which OpenAPI cannot
describe) are listed in ``info.description`` with a pointer to docs/protocol.md.
"""

from __future__ import annotations

import copy
import http
import importlib.metadata
import json
from typing import Any, Final

from aiohttp import web

from spoofwatch.audio.sniff import ACCEPTED_DESCRIPTION

OPENAPI_PATH: Final = "/v1/openapi.json"

AUDIO_TYPES: Final = (
    "application/octet-stream",
    "audio/wav",
    "audio/x-wav",
    "audio/flac",
    "audio/ogg",
    "audio/opus",
    "audio/mpeg",
)


def _version() -> str:
    try:
        return importlib.metadata.version("spoofwatch")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "0+unknown"


_WEBSOCKETS: Final = (
    "WebSocket paths on the same port (see docs/protocol.md): "
    "`/v1/scores[?stream=ID]` (subscribe to events: a status snapshot, then every event), "
    "`/v1/ingest` (stream your own audio; its events come back on the connection), "
    "`/twilio` (Twilio Media Streams), `/audiohook` (Genesys Cloud AudioHook), "
    "`/jambonz` (jambonz listen and FreeSWITCH mod_audio_fork). "
    "The dashboard is at `/`."
)

_WINDOW: Final = {
    "type": "object",
    "required": ["t_start", "t_end", "score", "p_spoof"],
    "properties": {
        "t_start": {"type": "number", "description": "seconds from the start of the file"},
        "t_end": {"type": "number"},
        "score": {"type": "number", "description": "the window's calibrated log-likelihood ratio"},
        "p_spoof": {"type": "number", "minimum": 0, "maximum": 1},
    },
}

_SCHEMAS: Final[dict[str, Any]] = {
    "ClipScore": {
        "type": "object",
        "description": "What `spoofwatch score --json` prints for one file.",
        "required": ["path", "duration_s", "score", "p_spoof", "label", "windows"],
        "properties": {
            "path": {"type": "string", "description": "the `name` query parameter (default `upload`)"},
            "duration_s": {"type": "number"},
            "score": {"type": "number", "description": "mean of the window log-likelihood ratios"},
            "p_spoof": {"type": "number", "minimum": 0, "maximum": 1},
            "label": {"type": "string", "enum": ["spoof", "bonafide"]},
            "windows": {"type": "array", "items": {"$ref": "#/components/schemas/WindowScore"}},
        },
    },
    "WindowScore": _WINDOW,
    "ClipError": {
        "type": "object",
        "description": "What `spoofwatch score --json` prints for a file it cannot score.",
        "required": ["path", "error"],
        "properties": {
            "path": {"type": "string"},
            "error": {"type": "string", "description": "what was expected and what was found"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "node", "streams", "max_streams", "connections"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "node": {"type": "string"},
            "streams": {"type": "integer"},
            "max_streams": {"type": "integer"},
            "queued_windows": {"type": "integer"},
            "dropped_windows": {"type": "integer"},
            "subscribers": {"type": "integer"},
            "connections": {"type": "integer", "description": "open WebSocket connections"},
            "detector": {"type": ["string", "null"]},
            "threshold": {"type": "number"},
            "alarm_on": {"type": ["number", "null"]},
            "alarm_off": {"type": ["number", "null"]},
        },
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ClipError"}}},
    }


_UNAUTHORIZED: Final = {"description": "no valid token (with a token configured)"}

_DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "spoofwatch",
        "version": _version(),
        "description": "Real-time detection of synthetic speech. " + _WEBSOCKETS,
    },
    "security": [{"bearer": []}, {"query": []}, {"basic": []}],
    "paths": {
        "/v1/score": {
            "post": {
                "operationId": "score",
                "summary": "Score one audio file",
                "description": (
                    f"The body is one audio file: {ACCEPTED_DESCRIPTION}, told by its first bytes "
                    "(Content-Type is optional). Limits: `score_max_bytes` of body, "
                    "`score_max_duration_s` of audio. Windows are cut as the detector's card says, "
                    "so the answer equals `spoofwatch score --json` on the same file."
                ),
                "parameters": [
                    {
                        "name": "name",
                        "in": "query",
                        "required": False,
                        "description": "the `path` of the answer (default `upload`)",
                        "schema": {"type": "string", "maxLength": 200},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in AUDIO_TYPES},
                },
                "responses": {
                    "200": {
                        "description": "the file's score and its window timeline",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ClipScore"}}
                        },
                    },
                    "400": _error("undecodable or too short to score"),
                    "401": _UNAUTHORIZED,
                    "413": _error("over the body size or duration limit"),
                    "415": _error(f"not {ACCEPTED_DESCRIPTION}"),
                    "503": _error("too many scores waiting; retry later"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and load",
                "responses": {
                    "200": {
                        "description": "the server is up",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                    },
                    "401": _UNAUTHORIZED,
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This description",
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}},
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/": {
            "get": {
                "operationId": "dashboard",
                "summary": "The live dashboard (HTML)",
                "responses": {
                    "200": {"description": "the page", "content": {"text/html": {}}},
                    "401": _UNAUTHORIZED,
                },
            }
        },
    },
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "query": {"type": "apiKey", "in": "query", "name": "token"},
            "basic": {"type": "http", "scheme": "basic", "description": "the token as the password"},
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the description."""
    return copy.deepcopy(_DOCUMENT)


async def _get_openapi(request: web.Request) -> web.Response:
    body = json.dumps(_DOCUMENT, indent=1).encode()
    return web.Response(status=http.HTTPStatus.OK, body=body, headers={"Content-Type": "application/json"})


def openapi_routes() -> list[web.RouteDef]:
    return [web.get(OPENAPI_PATH, _get_openapi)]
