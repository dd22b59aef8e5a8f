"""``POST /v1/feedback``: an analyst's verdict on a stream (feedback.desk), over HTTP.

Answers 201 with the ``feedback`` event, 400 for a malformed message, 404 when the stream
(or the range or alarm named) has no kept windows, 413 for a body over 64 KiB, 503 when the
node does not record feedback (no ``--feedback-dir``). Token-protected by the server's auth.
"""

from __future__ import annotations

import json

from aiohttp import web

from spoofwatch.events import event_to_dict
from spoofwatch.feedback.desk import FeedbackDesk, FeedbackError, parse_feedback

FEEDBACK_PATH = "/v1/feedback"
MAX_BODY_BYTES = 64 * 1024


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def feedback_routes(desk: FeedbackDesk | None) -> list[web.RouteDef]:
    async def feedback(request: web.Request) -> web.Response:
        if desk is None:
            return _error(503, "feedback is not recorded on this node; start it with --feedback-dir DIR")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _error(413, f"expected a feedback message of at most {MAX_BODY_BYTES} bytes")
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, f"expected a feedback message of at most {MAX_BODY_BYTES} bytes")
        try:
            message = parse_feedback(json.loads(raw))
            event = await desk.record(message, "rest")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"expected a JSON feedback object, found invalid JSON ({exc})")
        except FeedbackError as exc:
            return _error(exc.status, str(exc))
        return web.json_response(event_to_dict(event), status=201)

    return [web.post(FEEDBACK_PATH, feedback)]
