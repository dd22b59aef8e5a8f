"""Who may connect: the server's token, compared in constant time, from a bearer header,
HTTP Basic auth (the token as the password, jambonz ``wsAuth``) or ``?token=``; and the
1008 close that refuses a stranger."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qs, urlsplit

from spoofwatch.stream.net.ws_connection import CloseCode, WebSocketConnection

logger = logging.getLogger(__name__)

UNAUTHORIZED_REASON: Final = "unauthorized: expected a valid bearer token"

UNAUTHORIZED_INFO: Final = (
    "unauthorized: expected a valid API key (X-API-KEY, Authorization: Bearer or ?token=)"
)


def basic_auth_password(credentials: str) -> str | None:
    """The password of an HTTP Basic ``Authorization`` value, or None when malformed."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep else None


async def refuse_unauthorized(ws: WebSocketConnection, path: str) -> None:
    logger.warning("refusing unauthorized WebSocket client %s on %s", ws.remote_address, path)
    await ws.close(CloseCode.POLICY_VIOLATION, UNAUTHORIZED_REASON)


def token_matches(token: str | None, candidate: str | None) -> bool:
    """True when no token is configured or ``candidate`` equals it (constant time)."""
    if not token:
        return True
    return candidate is not None and hmac.compare_digest(candidate.encode(), token.encode())


def request_authorized(headers: Mapping[str, str], target: str, token: str | None) -> bool:
    """True when a request (``headers``; ``target``: path and query) carries ``token``, or
    none is configured."""
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    candidate = None
    if scheme == "bearer":
        candidate = credentials
    elif scheme == "basic":
        candidate = basic_auth_password(credentials)
    if token_matches(token, candidate):
        return True
    return any(token_matches(token, t) for t in parse_qs(urlsplit(target).query).get("token", []))
