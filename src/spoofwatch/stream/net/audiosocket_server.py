"""The Asterisk AudioSocket TCP server (``spoofwatch serve --audiosocket-port P``).

Each connection is one call (protocol in ``protocols.audiosocket``): the stream, named by
the call's UUID, opens at the first audio frame through the shared call admission
(``admission.Admission``), so it counts against ``max_streams`` like every other stream
and its start, end and the server's load appear as events. A refused call gets an error
frame with the reason, a hangup frame and the socket closed. A hangup frame or a socket
closed between frames ends the call normally; a socket closed mid-frame, a reset, an
Asterisk error frame or ``idle_timeout_s`` without data end it with a reason.
AudioSocket has no authentication: bind it to a private address. The connection limits
(``ServerConfig.max_messages_per_s`` and ``max_message_burst``, counted per frame) apply:
a faster client is refused and its stream ends with ``limit_exceeded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from spoofwatch.config import ServerConfig
from spoofwatch.errors import AudioError, ConfigError, LimitExceededError, ProtocolError, SpoofwatchError
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.admission import CallStreams, StreamRequest, settle_admission
from spoofwatch.stream.net.connection import MAX_ERRORS_PER_CONNECTION, publish_error
from spoofwatch.stream.net.limits import ConnectionGuard, ConnectionLimits
from spoofwatch.stream.protocols.audiosocket import (
    AudioSocketAudio,
    AudioSocketCall,
    AudioSocketError,
    AudioSocketHangup,
    AudioSocketId,
    AudioSocketMessage,
    AudioSocketReader,
    error_frame,
    hangup_frame,
)

logger = logging.getLogger(__name__)

READ_BYTES: Final = 64 * 1024
DEFAULT_IDLE_TIMEOUT_S: Final = 10.0  # Asterisk sends a frame every 20 ms while a call is up
SHUTDOWN_TIMEOUT_S: Final = 15.0
REFUSAL_GRACE_S: Final = 2.0  # how long a refused client has to close its side


class AudioSocketConnection:
    """One Asterisk call over one TCP connection."""

    def __init__(
        self,
        pipeline: Pipeline,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        idle_timeout_s: float,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.reader = reader
        self.writer = writer
        self.idle_timeout_s = idle_timeout_s
        self.guard = ConnectionGuard(limits or ConnectionLimits())
        self.frames = AudioSocketReader()
        self.call = AudioSocketCall()
        self.streams: CallStreams | None = None
        self.admitting: asyncio.Task[None] | None = None
        self.errors = 0
        self.end_reason: str | None = None
        self.end_code = "stream_closed"
        self.refused = False
        self.stopping = False

    @property
    def stream_id(self) -> str | None:
        return self.call.call_id

    async def run(self) -> None:
        """Read until hangup, EOF or a fatal error; ``end_reason`` says why when not normal."""
        while True:
            try:
                async with asyncio.timeout(REFUSAL_GRACE_S if self.refused else self.idle_timeout_s):
                    data = await self.reader.read(READ_BYTES)
            except TimeoutError:
                if self.refused:
                    return
                await self._refuse(ProtocolError(f"no AudioSocket data for {self.idle_timeout_s:g} s"))
                continue
            except ConnectionError as exc:
                if self.end_reason is None:
                    self.end_reason = f"AudioSocket connection lost: {exc.__class__.__name__}"
                return
            if not data:
                if self.end_reason is not None:
                    return
                if self.stopping:
                    self.end_reason = "server shutting down"
                elif self.frames.pending_bytes:
                    self.end_reason = (
                        f"AudioSocket connection closed mid-frame ({self.frames.pending_bytes} bytes pending)"
                    )
                return
            if not self.refused and not await self._on_data(data):
                return

    async def _on_data(self, data: bytes) -> bool:
        """Act on the frames ``data`` completes; False when the call is over."""
        for frame in self.frames.feed(data):
            try:
                self.guard.on_message()
                if not await self._on_frame(self.call.receive(frame)):
                    return False
            except AudioError as exc:
                await self._count_error(exc)
            except SpoofwatchError as exc:
                await self._refuse(exc)
            if self.refused:
                break
        return True

    async def _on_frame(self, message: AudioSocketMessage) -> bool:
        """Act on one message; False when the call is over."""
        if isinstance(message, AudioSocketAudio):
            if self.streams is None:
                self._start(message.sample_rate)
            assert self.streams is not None
            self.streams.feed(self.streams.stream_ids[0], message.samples)
        elif isinstance(message, AudioSocketId):
            logger.info("AudioSocket call %s connected from %s", message.call_id, self._peer())
        elif isinstance(message, AudioSocketHangup):
            return False
        elif isinstance(message, AudioSocketError):
            self.end_reason = f"Asterisk reported an error: {message.description}"
            logger.warning("AudioSocket call %s: %s", self.stream_id, self.end_reason)
            publish_error(self.pipeline, self.stream_id, ProtocolError(self.end_reason))
            return False
        return True

    def _start(self, sample_rate: int) -> None:
        assert self.call.call_id is not None  # the call refuses audio before the UUID
        request = StreamRequest(self.call.call_id, "audiosocket", sample_rate)
        queue_s = self.pipeline.engine_config.queue_timeout_s
        self.streams = CallStreams(self.pipeline, [request], max_pending_s=queue_s + 1.0)
        self.admitting = asyncio.create_task(
            self._admit(self.streams), name=f"audiosocket-admit {request.stream_id}"
        )

    async def _admit(self, streams: CallStreams) -> None:
        try:
            await streams.admit()
        except SpoofwatchError as exc:  # full, a duplicate id, or a bad admission setting
            streams.closed = True
            await self._refuse(exc)

    async def _refuse(self, exc: SpoofwatchError) -> None:
        """Error frame with the reason, hangup frame, end of our side of the socket.

        The socket closes once the client closes its side (or after a grace period):
        closing at once, with the client's audio unread, would reset the connection and
        could destroy the error frame before the client reads it.
        """
        if self.refused:
            return
        self.refused = True
        logger.warning("refusing AudioSocket call %s from %s: %s", self.stream_id, self._peer(), exc)
        if self.end_reason is None:
            self.end_reason = str(exc)
            if isinstance(exc, LimitExceededError):
                self.end_code = "limit_exceeded"
        publish_error(self.pipeline, self.stream_id, exc)
        with contextlib.suppress(ConnectionError):
            self.writer.write(error_frame(str(exc)) + hangup_frame())
            if self.writer.can_write_eof():
                self.writer.write_eof()
            await self.writer.drain()

    async def _count_error(self, exc: SpoofwatchError) -> None:
        self.errors += 1
        logger.warning("AudioSocket call %s: %s", self.stream_id, exc)
        publish_error(self.pipeline, self.stream_id, exc)
        if self.errors > MAX_ERRORS_PER_CONNECTION:
            await self._refuse(
                ProtocolError(f"too many errors: expected at most {MAX_ERRORS_PER_CONNECTION}")
            )

    def _peer(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    async def cleanup(self) -> None:
        await settle_admission(self.admitting)
        if self.streams is not None:
            await self.streams.close(self.end_reason, self.end_code)
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class AudioSocketServer:
    """TCP listener; one ``AudioSocketConnection`` per accepted socket."""

    def __init__(
        self,
        pipeline: Pipeline,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        limits: ConnectionLimits | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"AudioSocket port: expected 0..65535, found {port}")
        self.pipeline = pipeline
        self.limits = limits or ConnectionLimits()
        self.host = host
        self.requested_port = port
        self.idle_timeout_s = idle_timeout_s
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], AudioSocketConnection] = {}

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("AudioSocketServer.port: expected a started server, found none")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.requested_port)
        logger.info("AudioSocket server listening on tcp://%s:%d", self.host, self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = AudioSocketConnection(self.pipeline, reader, writer, self.idle_timeout_s, self.limits)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = connection
        try:
            await connection.run()
        finally:
            await connection.cleanup()
            self._connections.pop(task, None)

    async def stop(self) -> None:
        """Stop listening, end every call (its stream flushes), wait for the handlers."""
        if self._server is None:
            return
        self._server.close()
        for connection in self._connections.values():
            connection.stopping = True
            connection.writer.close()
        tasks = list(self._connections)
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT_S)
        await self._server.wait_closed()
        self._server = None
        logger.info("AudioSocket server stopped")


async def run_audiosocket_server(
    pipeline: Pipeline, config: ServerConfig, ready: asyncio.Event | None = None
) -> None:
    """Serve AudioSocket on ``config.host``:``config.audiosocket_port`` until cancelled."""
    if config.audiosocket_port is None:
        raise ConfigError("server.audiosocket_port: expected a port number, found None")
    server = AudioSocketServer(
        pipeline, config.host, config.audiosocket_port, limits=ConnectionLimits.from_config(config)
    )
    await server.start()
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await server.stop()
