"""The ``/v1/ingest`` WebSocket handler: a client streams audio (``protocols.ws_ingest``)
and receives the events of its stream on the same connection."""

from __future__ import annotations

import asyncio
import logging

from spoofwatch.errors import LimitExceededError, ProtocolError, SpoofwatchError
from spoofwatch.stream.engine.hub import Subscription
from spoofwatch.stream.engine.pipeline import StreamHandle
from spoofwatch.stream.net.connection import (
    MAX_ERRORS_PER_CONNECTION,
    ConnectionHost,
    close_draining,
    close_reason,
    close_refused,
    close_stream,
    send_error,
)
from spoofwatch.stream.net.limits import ConnectionGuard
from spoofwatch.stream.net.ws_connection import CloseCode, WebSocketConnection
from spoofwatch.stream.protocols.ws_ingest import GapMessage, IngestProtocol, StartMessage, StopMessage
from spoofwatch.stream.sinks.websocket import forward_events

logger = logging.getLogger(__name__)


class IngestConnection:
    """One ``/v1/ingest`` client: at most one live stream at a time, several in sequence."""

    def __init__(self, server: ConnectionHost, ws: WebSocketConnection) -> None:
        self.server = server
        self.ws = ws
        self.protocol = IngestProtocol(server.limits)
        self.guard = ConnectionGuard(server.connection_limits)
        self.handle: StreamHandle | None = None
        self.sub: Subscription | None = None
        self.forwarder: asyncio.Task[None] | None = None
        self.errors = 0
        self.close_reason: str | None = None
        self.close_code = "stream_closed"

    async def _over_limit(self, exc: LimitExceededError) -> None:
        """A connection limit broken: say so, end the stream with the reason, close (1008)."""
        logger.warning("closing ingest connection %s: %s", self.ws.remote_address, exc)
        await send_error(self.ws, self.handle.stream_id if self.handle else None, exc)
        self.close_reason, self.close_code = str(exc), "limit_exceeded"
        await close_draining(self.ws, CloseCode.POLICY_VIOLATION, close_reason(str(exc)))

    async def run(self) -> None:
        async for message in self.ws:
            try:
                self.guard.on_message()
            except LimitExceededError as exc:
                await self._over_limit(exc)
                return
            if self.handle is None:
                if not await self._start(message):
                    return
                continue
            try:
                if isinstance(message, str):
                    control = self.protocol.receive_text(message)
                    if isinstance(control, StopMessage):
                        await self._stop()
                    elif isinstance(control, GapMessage):
                        self.handle.gap(control.seconds, control.cause)
                else:
                    self.handle.feed(self.protocol.receive_binary(message))
            except SpoofwatchError as exc:
                self.errors += 1
                await send_error(self.ws, self.handle.stream_id if self.handle else None, exc)
                if self.errors > MAX_ERRORS_PER_CONNECTION:
                    self.close_reason = f"too many errors: expected at most {MAX_ERRORS_PER_CONNECTION}"
                    await self.ws.close(CloseCode.POLICY_VIOLATION, self.close_reason)
                    return

    async def _start(self, message: str | bytes) -> bool:
        """Open the stream a start message asks for; False (connection closed) otherwise."""
        try:
            if isinstance(message, bytes):
                self.protocol.receive_binary(message)  # raises: audio before start
            start = self.protocol.receive_text(message)
        except SpoofwatchError as exc:
            await send_error(self.ws, None, exc)
            await close_refused(self.ws, exc)
            return False
        if not isinstance(start, StartMessage):  # receive_text refuses a stop while idle
            return False
        try:
            self.guard.on_stream_opened()
        except LimitExceededError as exc:
            self.protocol.reset()
            await self._over_limit(exc)
            return False
        pipeline = self.server.pipeline
        sub = pipeline.hub.subscribe(start.stream, name=f"ws-ingest {start.stream}")
        try:
            self.handle = pipeline.open_stream(
                start.stream, source="ws_ingest", sample_rate=start.sample_rate
            )
        except (ProtocolError, LimitExceededError) as exc:
            pipeline.hub.unsubscribe(sub)
            self.protocol.reset()
            await send_error(self.ws, start.stream, exc)
            await close_refused(self.ws, exc)
            return False
        self.sub = sub
        self.forwarder = asyncio.create_task(
            forward_events(self.ws, pipeline.hub, sub, until_end_of=start.stream),
            name=f"ingest-forward {start.stream}",
        )
        return True

    async def _stop(self) -> None:
        """A clean stop: flush the stream, then wait until the client has its end event."""
        handle, self.handle = self.handle, None
        if handle is not None:
            await close_stream(handle, None)
        if self.forwarder is not None:
            await self.forwarder
            self.forwarder = None
        self._unsubscribe()

    def _unsubscribe(self) -> None:
        if self.sub is not None:
            self.server.pipeline.hub.unsubscribe(self.sub)
            self.sub = None

    async def cleanup(self) -> None:
        if self.forwarder is not None:
            self.forwarder.cancel()
            for result in await asyncio.gather(self.forwarder, return_exceptions=True):
                if isinstance(result, Exception):
                    logger.error("ingest event forwarder failed", exc_info=result)
        self._unsubscribe()
        if self.handle is not None:
            handle, self.handle = self.handle, None
            if self.close_reason is not None:
                await close_stream(handle, self.close_reason, self.close_code)
            else:
                await close_stream(handle, *self.server.ended_reason(self.ws))
