"""The Genesys AudioHook WebSocket handler (``/audiohook``); the protocol itself is
``protocols.audiohook`` (pure).

AudioHook checks the token itself (also as ``X-API-KEY``). Refusals are a ``disconnect``
with reason ``error`` (full, bad media) or ``unauthorized``, then ``closed`` once the
client sends ``close``; the WebSocket then closes with 1013 (full), 1008 (unauthorized)
or 1000. With AudioHook clients configured the upgrade request's message signature is
verified (``net.audiohook_auth``) and the organization id header must match ``open``; an
``unauthorized`` disconnect's info names the check that failed. Connection limits
(``limits.ConnectionGuard``: message rate, streams per connection) apply as on every
other path: breaking one publishes a ``limit_exceeded`` error event, ends the call's
streams with that code and closes the WebSocket with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from spoofwatch.errors import LimitExceededError, ProtocolError, SpoofwatchError
from spoofwatch.stream.net.admission import CallStreams, StreamRequest
from spoofwatch.stream.net.audiohook_auth import VerifyResult, check_organization
from spoofwatch.stream.net.auth import UNAUTHORIZED_INFO
from spoofwatch.stream.net.connection import (
    ConnectionHost,
    close_over_limit,
    close_reason,
    publish_error,
    refusal_close_code,
    run_connection,
)
from spoofwatch.stream.net.limits import ConnectionGuard
from spoofwatch.stream.net.ws_connection import CloseCode, ConnectionClosed, WebSocketConnection
from spoofwatch.stream.protocols.audiohook import (
    AUDIOHOOK_SAMPLE_RATE,
    AudioHookClientError,
    AudioHookClose,
    AudioHookGap,
    AudioHookItem,
    AudioHookOpen,
    AudioHookPing,
    AudioHookSession,
    AudioHookTimelineGap,
    PartyAudio,
)

logger = logging.getLogger(__name__)

DISCONNECT_GRACE_S: Final = 5.0  # how long a disconnected AudioHook client has to send close

AUDIOHOOK_OPEN_WAIT_S: Final = 4.0  # Genesys gives up on an open after about 5 s

# A refused signature is answered no sooner than this after the connection opened, as
# the reference server does, so the time taken says nothing about what failed.
SIGNATURE_FAILURE_DELAY_S: Final = 0.5


class AudioHookConnection:
    """One Genesys AudioHook session over one WebSocket."""

    def __init__(self, host: ConnectionHost, ws: WebSocketConnection, authorized: bool) -> None:
        self.host = host
        self.ws = ws
        self.started = asyncio.get_running_loop().time()
        request = ws.request
        self.verification: VerifyResult | None = None
        self.organization_header: str | None = None
        if host.audiohook_auth is None:
            self.authorized = authorized or host.token_matches(request.headers.get("X-API-KEY"))
        else:  # signatures configured: the server token is no way in
            headers: dict[str, list[str]] = {}
            for name, value in request.header_items():
                headers.setdefault(name.lower(), []).append(value)
            self.verification = host.audiohook_auth.verify(headers, request.path)
            self.authorized = self.verification.ok
            organization = headers.get("audiohook-organization-id")
            self.organization_header = ", ".join(v.strip() for v in organization) if organization else None
        self.session = AudioHookSession()
        self.guard = ConnectionGuard(host.connection_limits)
        self.streams: CallStreams | None = None
        self.refusal: SpoofwatchError | None = None
        self.close_reason: str | None = None
        self.close_code = "stream_closed"
        self.ended_cleanly = False

    async def run(self) -> None:
        while True:
            waiting = self.session.state == "disconnecting"
            try:
                async with asyncio.timeout(DISCONNECT_GRACE_S if waiting else None):
                    message = await self.ws.recv()
            except TimeoutError:
                await self._finish("client did not close after disconnect")
                return
            try:
                self.guard.on_message()
            except LimitExceededError as exc:
                await self._over_limit(exc)
                return
            try:
                if isinstance(message, bytes):
                    for part in self.session.receive_binary(message):
                        self._feed(part)
                    continue
                for item in self.session.receive_text(message):
                    if not await self._on_item(item):
                        return
            except SpoofwatchError as exc:
                await self._fail(exc)

    def _feed(self, part: PartyAudio) -> None:
        if self.streams is not None:
            self.streams.feed(part.stream_id, part.samples)

    async def _on_item(self, item: AudioHookItem) -> bool:
        """Act on one item; False once the session is over."""
        if isinstance(item, PartyAudio):
            self._feed(item)
        elif isinstance(item, AudioHookTimelineGap):
            if self.streams is not None:
                self.streams.gap(item.seconds, item.cause)
        elif isinstance(item, AudioHookOpen):
            await self._open(item)
        elif isinstance(item, AudioHookPing):
            await self.ws.send(self.session.pong_message())
        elif isinstance(item, AudioHookClose):
            await self._close(item)
            return False
        elif isinstance(item, AudioHookClientError):
            logger.warning(
                "AudioHook session %s: client error %s: %s", self.session.session_id, item.code, item.message
            )
            self._publish(ProtocolError(f"AudioHook client error {item.code}: {item.message}"))
        elif isinstance(item, AudioHookGap):
            logger.info(
                "AudioHook session %s: %s %.3f s at %.3f s",
                self.session.session_id,
                item.kind,
                item.discarded_s,
                item.start_s,
            )
        return True

    def _publish(self, exc: SpoofwatchError) -> None:
        streams = self.streams.stream_ids if self.streams is not None else [None]
        for stream in streams:
            publish_error(self.host.pipeline, stream, exc)

    async def _over_limit(self, exc: LimitExceededError) -> None:
        """Report, disconnect (best effort) and close at once: the client is not heeding us."""
        logger.warning("AudioHook session %s: %s", self.session.session_id, exc)
        self._publish(exc)
        self.close_reason, self.close_code = str(exc), "limit_exceeded"
        if self.session.state not in ("disconnecting", "closing", "closed"):
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(self.session.disconnect_message("error", str(exc)))
        await close_over_limit(self.ws, exc)

    async def _open(self, opened: AudioHookOpen) -> None:
        refused = self._unauthorized(opened)
        if refused is not None:
            logger.warning("refusing unauthorized AudioHook client %s: %s", self.ws.remote_address, refused)
            self.refusal = ProtocolError(refused)
            if self.verification is not None:
                delay = self.started + SIGNATURE_FAILURE_DELAY_S - asyncio.get_running_loop().time()
                await asyncio.sleep(max(0.0, delay))
            await self.ws.send(self.session.disconnect_message("unauthorized", refused))
            return
        if opened.probe:
            await self.ws.send(self.session.opened_message())
            return
        requests = [
            StreamRequest(sid, "audiohook", AUDIOHOOK_SAMPLE_RATE) for sid in opened.stream_ids.values()
        ]
        streams = CallStreams(self.host.pipeline, requests, max_pending_s=0.0)
        try:
            self.guard.on_stream_opened(len(requests))
            await streams.admit(max_wait_s=AUDIOHOOK_OPEN_WAIT_S)
        except (LimitExceededError, ProtocolError) as exc:
            logger.warning("refusing AudioHook session %s: %s", opened.session_id, exc)
            self.refusal = exc
            for sid in opened.stream_ids.values():
                publish_error(self.host.pipeline, sid, exc)
            await self.ws.send(self.session.disconnect_message("error", str(exc)))
            return
        self.streams = streams
        await self.ws.send(self.session.opened_message())

    def _unauthorized(self, opened: AudioHookOpen) -> str | None:
        """Why this client may not open a session (secrets never named), or None."""
        if self.verification is None:
            return None if self.authorized else UNAUTHORIZED_INFO
        if not self.verification.ok:
            return f"unauthorized: {self.verification}"
        organization = check_organization(self.organization_header, opened.organization_id)
        return None if organization.ok else f"unauthorized: {organization}"

    async def _fail(self, exc: SpoofwatchError) -> None:
        """A protocol error: report it and disconnect (once; later errors are only logged)."""
        if self.session.state in ("disconnecting", "closing", "closed"):
            logger.info("AudioHook session %s after disconnect: %s", self.session.session_id, exc)
            return
        logger.warning("AudioHook session %s: %s", self.session.session_id, exc)
        self._publish(exc)
        if self.streams is None:
            self.refusal = exc
        else:
            self.close_reason = f"AudioHook protocol error: {exc}"
        await self.ws.send(self.session.disconnect_message("error", str(exc)))

    async def _close(self, close: AudioHookClose) -> None:
        """The client's close: flush the streams, then confirm with closed."""
        if self.refusal is None and self.close_reason is None:
            self.close_reason = None if close.reason == "end" else f"AudioHook close: {close.reason}"
            self.ended_cleanly = True
        if self.streams is not None:
            await self.streams.close(self.close_reason)
        await self.ws.send(self.session.closed_message())
        await self._finish(None)

    async def _finish(self, timeout_reason: str | None) -> None:
        if timeout_reason is not None:
            self.close_reason = self.close_reason or timeout_reason
        if self.refusal is not None:
            await self.ws.close(refusal_close_code(self.refusal), close_reason(str(self.refusal)))
        elif self.close_reason is not None and not self.ended_cleanly:
            await self.ws.close(CloseCode.POLICY_VIOLATION, close_reason(self.close_reason))
        else:
            await self.ws.close()

    async def cleanup(self) -> None:
        if self.streams is None:
            return
        if self.ended_cleanly:
            await self.streams.close(None)
        elif self.close_reason is not None:
            await self.streams.close(self.close_reason, self.close_code)
        else:
            await self.streams.close(*self.host.ended_reason(self.ws))


async def serve_audiohook(host: ConnectionHost, ws: WebSocketConnection, authorized: bool) -> None:
    await run_connection(AudioHookConnection(host, ws, authorized))
