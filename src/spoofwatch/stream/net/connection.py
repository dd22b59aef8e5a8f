"""What every connection handler shares: error codes, close frames, stream endings, and
the run-then-clean-up loop (``run_connection``).

The handlers (``ingest``, ``twilio``, ``audiohook``, ``jambonz``, ``audiosocket_server``)
report a ``SpoofwatchError`` as an error event whose code is ``error_code``'s, end their
pipeline streams through ``close_stream`` and close a WebSocket with a reason cut to fit
its close frame (``close_reason``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final, Protocol

from spoofwatch.errors import AudioError, LimitExceededError, ProtocolError, SpoofwatchError
from spoofwatch.events import ErrorEvent, to_json
from spoofwatch.stream.engine.pipeline import Pipeline, StreamHandle
from spoofwatch.stream.net.audiohook_auth import AudioHookAuthenticator
from spoofwatch.stream.net.limits import ConnectionLimits
from spoofwatch.stream.net.ws_connection import CloseCode, ConnectionClosed, WebSocketConnection
from spoofwatch.stream.protocols.ws_ingest import IngestLimits

logger = logging.getLogger(__name__)

MAX_ERRORS_PER_CONNECTION: Final = 32

MAX_CLOSE_REASON_BYTES: Final = 123  # RFC 6455: a close frame's reason fits in 123 bytes

STREAM_CLOSE_TIMEOUT_S: Final = 10.0


class ConnectionHost(Protocol):
    """What the handlers need from the WebSocket server (``SpoofwatchServer`` fits)."""

    pipeline: Pipeline
    connection_limits: ConnectionLimits
    limits: IngestLimits
    audiohook_auth: AudioHookAuthenticator | None

    def token_matches(self, candidate: str | None) -> bool: ...

    def ended_reason(self, ws: WebSocketConnection) -> tuple[str, str]:
        """Why the streams of a connection that ended without a proper end end: (reason, code)."""
        ...


def error_code(exc: SpoofwatchError) -> str:
    if isinstance(exc, LimitExceededError):
        return "limit_exceeded"
    if isinstance(exc, AudioError):
        return "audio_error"
    if isinstance(exc, ProtocolError):
        return "protocol_error"
    return "error"


def close_reason(text: str) -> str:
    """``text`` cut to fit a WebSocket close frame."""
    encoded = text.encode()
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return text
    return encoded[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


def refusal_close_code(exc: SpoofwatchError) -> int:
    return CloseCode.TRY_AGAIN_LATER if isinstance(exc, LimitExceededError) else CloseCode.POLICY_VIOLATION


async def close_stream(handle: StreamHandle, reason: str | None, code: str = "stream_closed") -> None:
    try:
        async with asyncio.timeout(STREAM_CLOSE_TIMEOUT_S):
            await handle.close(reason, code=code)
    except TimeoutError:
        logger.warning("stream %s did not flush within %.0f s", handle.stream_id, STREAM_CLOSE_TIMEOUT_S)


def publish_error(pipeline: Pipeline, stream: str | None, exc: SpoofwatchError) -> None:
    pipeline.hub.publish(ErrorEvent(stream=stream, code=error_code(exc), message=str(exc)))


async def send_error(ws: WebSocketConnection, stream: str | None, exc: SpoofwatchError) -> None:
    await ws.send(to_json(ErrorEvent(stream=stream, code=error_code(exc), message=str(exc))))


async def close_refused(ws: WebSocketConnection, exc: SpoofwatchError) -> None:
    """1013 (try again later) when the server is full, 1008 (policy) for bad requests."""
    await close_draining(ws, refusal_close_code(exc), close_reason(str(exc)))


async def close_draining(ws: WebSocketConnection, code: int, reason: str) -> None:
    """Close while discarding what the client still sends: a client that already queued
    audio frames gets to our close frame (aiohttp's close reads until the client's)."""
    await ws.close(code, reason)


async def close_over_limit(ws: WebSocketConnection, exc: LimitExceededError) -> None:
    """Close (1008) while discarding what a too-fast client still sends."""
    with contextlib.suppress(ConnectionClosed):
        await close_draining(ws, CloseCode.POLICY_VIOLATION, close_reason(str(exc)))


def clean_client_close(ws: WebSocketConnection) -> bool:
    """True when the client closed the WebSocket normally (1000/1001) on its own initiative."""
    return ws.close_received in (CloseCode.OK, CloseCode.GOING_AWAY)


class SourceConnection(Protocol):
    async def run(self) -> None: ...

    async def cleanup(self) -> None: ...


async def run_connection(connection: SourceConnection) -> None:
    """Run one client connection; a closed socket is a normal end; always clean up."""
    try:
        await connection.run()
    except ConnectionClosed:
        pass
    finally:
        await connection.cleanup()
