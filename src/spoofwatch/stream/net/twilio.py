"""The Twilio Media Streams WebSocket handler (``/twilio``); the protocol itself is
``protocols.twilio`` (pure). Events go to the hub only, since Twilio ignores what it is
sent. Twilio drops the URL's query string, so the token may also come as the start
message's ``customParameters.token``."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from spoofwatch.errors import LimitExceededError, ProtocolError, SpoofwatchError
from spoofwatch.events import ErrorEvent
from spoofwatch.stream.engine.pipeline import StreamHandle
from spoofwatch.stream.net.auth import refuse_unauthorized
from spoofwatch.stream.net.connection import (
    MAX_ERRORS_PER_CONNECTION,
    ConnectionHost,
    close_draining,
    close_reason,
    close_refused,
    close_stream,
    error_code,
)
from spoofwatch.stream.net.limits import ConnectionGuard
from spoofwatch.stream.net.ws_connection import CloseCode, WebSocketConnection
from spoofwatch.stream.protocols.twilio import (
    TWILIO_SAMPLE_RATE,
    TwilioMedia,
    TwilioMediaStream,
    TwilioStart,
    TwilioStop,
)

logger = logging.getLogger(__name__)

MAX_MESSAGES_BEFORE_AUTH: Final = 4  # Twilio sends "connected", then "start" with the token


class TwilioConnection:
    """One Twilio Media Stream: one pipeline stream per announced track."""

    def __init__(self, server: ConnectionHost, ws: WebSocketConnection, authorized: bool) -> None:
        self.server = server
        self.ws = ws
        self.authorized = authorized
        self.parser = TwilioMediaStream()
        self.guard = ConnectionGuard(server.connection_limits)
        self.handles: dict[str, StreamHandle] = {}
        self.errors = 0
        self.messages = 0
        self.close_reason: str | None = None
        self.close_code = "stream_closed"

    async def _over_limit(self, exc: LimitExceededError) -> None:
        if not self.authorized:
            await refuse_unauthorized(self.ws, "/twilio")
            return
        logger.warning("closing Twilio stream %s: %s", self._sid(), exc)
        self.server.pipeline.hub.publish(
            ErrorEvent(stream=self._sid(), code="limit_exceeded", message=str(exc))
        )
        self.close_reason, self.close_code = str(exc), "limit_exceeded"
        await close_draining(self.ws, CloseCode.POLICY_VIOLATION, close_reason(str(exc)))

    async def run(self) -> None:
        async for message in self.ws:
            self.messages += 1
            if not self.authorized and self.messages > MAX_MESSAGES_BEFORE_AUTH:
                await refuse_unauthorized(self.ws, "/twilio")
                return
            try:
                self.guard.on_message()
            except LimitExceededError as exc:
                await self._over_limit(exc)
                return
            try:
                if isinstance(message, bytes):
                    raise ProtocolError(
                        f"Twilio: expected JSON text messages, found a binary frame of {len(message)} bytes"
                    )
                parsed = self.parser.receive(message)
                if isinstance(parsed, TwilioStart):
                    if not await self._open(parsed):
                        return
                elif isinstance(parsed, TwilioMedia):
                    self.handles[parsed.stream_id].feed(parsed.samples)
                elif isinstance(parsed, TwilioStop):
                    await self._close_all(None)
            except SpoofwatchError as exc:
                if not self.authorized:  # a stranger does not get to publish errors
                    await refuse_unauthorized(self.ws, "/twilio")
                    return
                # Twilio ignores what it is sent: report on the hub for dashboards and logs.
                self.errors += 1
                logger.warning("Twilio stream %s: %s", self._sid(), exc)
                self.server.pipeline.hub.publish(
                    ErrorEvent(stream=self._sid(), code=error_code(exc), message=str(exc))
                )
                if self.errors > MAX_ERRORS_PER_CONNECTION:
                    self.close_reason = f"too many errors: expected at most {MAX_ERRORS_PER_CONNECTION}"
                    await self.ws.close(CloseCode.POLICY_VIOLATION, self.close_reason)
                    return

    def _sid(self) -> str | None:
        return self.parser.start.stream_sid if self.parser.start is not None else None

    async def _open(self, start: TwilioStart) -> bool:
        if not self.authorized and not self.server.token_matches(start.custom_parameters.get("token")):
            await refuse_unauthorized(self.ws, "/twilio")
            return False
        self.authorized = True
        pipeline = self.server.pipeline
        try:
            self.guard.on_stream_opened(len(start.stream_ids))
            for stream_id in start.stream_ids.values():
                self.handles[stream_id] = pipeline.open_stream(
                    stream_id, source="twilio", sample_rate=TWILIO_SAMPLE_RATE
                )
        except (ProtocolError, LimitExceededError) as exc:
            logger.warning("refusing Twilio stream %s: %s", start.stream_sid, exc)
            self.close_reason = f"refused: {exc}"
            await self._close_all(self.close_reason)
            await close_refused(self.ws, exc)
            return False
        return True

    async def _close_all(self, reason: str | None, code: str = "stream_closed") -> None:
        handles = list(self.handles.values())
        self.handles.clear()
        await asyncio.gather(*(close_stream(h, reason, code) for h in handles))

    async def cleanup(self) -> None:
        if self.close_reason is not None:
            await self._close_all(self.close_reason, self.close_code)
        else:
            await self._close_all(*self.server.ended_reason(self.ws))
