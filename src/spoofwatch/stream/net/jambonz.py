"""The jambonz ``listen`` / mod_audio_fork WebSocket handler (``/jambonz``); the protocol
itself is ``protocols.jambonz`` (pure).

Refusals are a mod_audio_fork ``{"type":"error","data":{...}}`` text frame and a close
with 1013 (full) or 1008. A call's audio waits (bounded) while it is queued for admission.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence

from spoofwatch.errors import LimitExceededError, SpoofwatchError
from spoofwatch.stream.net.admission import CallStreams, StreamRequest, settle_admission
from spoofwatch.stream.net.connection import (
    MAX_ERRORS_PER_CONNECTION,
    ConnectionHost,
    clean_client_close,
    close_over_limit,
    close_reason,
    error_code,
    publish_error,
    refusal_close_code,
    run_connection,
)
from spoofwatch.stream.net.limits import ConnectionGuard
from spoofwatch.stream.net.ws_connection import CloseCode, ConnectionClosed, WebSocketConnection
from spoofwatch.stream.protocols.jambonz import JAMBONZ_SUBPROTOCOLS, JambonzStart, JambonzStream

logger = logging.getLogger(__name__)


def select_subprotocol(offered: Sequence[str]) -> str | None:
    """Accept jambonz's and mod_audio_fork's subprotocols (ours in our order of preference);
    never refuse a handshake over one."""
    return next((name for name in JAMBONZ_SUBPROTOCOLS if name in offered), None)


class JambonzConnection:
    """One jambonz ``listen`` (or mod_audio_fork) WebSocket: one call, one or two parties."""

    def __init__(self, host: ConnectionHost, ws: WebSocketConnection, query: dict[str, list[str]]) -> None:
        self.host = host
        self.ws = ws
        flat = {key: values[0] for key, values in query.items() if values}
        self.parser = JambonzStream(flat, fallback_id=f"jambonz-{uuid.uuid4().hex[:12]}")
        self.guard = ConnectionGuard(host.connection_limits)
        self.streams: CallStreams | None = None
        self.admitting: asyncio.Task[None] | None = None
        self.errors = 0
        self.close_reason: str | None = None
        self.close_code = "stream_closed"

    async def run(self) -> None:
        async for message in self.ws:
            try:
                self.guard.on_message()
            except LimitExceededError as exc:
                if self.streams is None:
                    await self._refuse(exc)
                else:
                    await self._over_limit(exc)
                return
            try:
                if isinstance(message, str):
                    item = self.parser.receive_text(message)
                    if isinstance(item, JambonzStart):
                        self._start(item)
                    else:
                        logger.debug(
                            "jambonz call %s: text frame %r",
                            self.parser.start and self.parser.start.call_id,
                            item.data,
                        )
                    continue
                if self.streams is None:
                    self.parser.receive_binary(message)  # raises: audio before metadata
                    continue
                for part in self.parser.receive_binary(message):
                    self.streams.feed(part.stream_id, part.samples)
            except SpoofwatchError as exc:
                if self.streams is None:
                    await self._refuse(exc)
                    return
                if not await self._count_error(exc):
                    return

    async def _over_limit(self, exc: LimitExceededError) -> None:
        assert self.streams is not None
        logger.warning("jambonz call %s: %s", self.streams.stream_ids[0], exc)
        for sid in self.streams.stream_ids:
            publish_error(self.host.pipeline, sid, exc)
        self.close_reason, self.close_code = str(exc), "limit_exceeded"
        await close_over_limit(self.ws, exc)

    def _start(self, start: JambonzStart) -> None:
        self.guard.on_stream_opened(len(start.stream_ids))
        requests = [StreamRequest(sid, "jambonz", start.sample_rate) for sid in start.stream_ids]
        engine = self.host.pipeline.engine_config
        self.streams = CallStreams(self.host.pipeline, requests, max_pending_s=engine.queue_timeout_s + 1.0)
        logger.info("jambonz call %s: %s at %d Hz", start.call_id, start.mix_type, start.sample_rate)
        self.admitting = asyncio.create_task(self._admit(self.streams), name=f"jambonz-admit {start.call_id}")

    async def _admit(self, streams: CallStreams) -> None:
        try:
            await streams.admit()
        except SpoofwatchError as exc:  # full, a duplicate id, or a bad admission setting
            logger.warning("refusing jambonz call %s: %s", streams.stream_ids[0], exc)
            streams.closed = True
            for sid in streams.stream_ids:
                publish_error(self.host.pipeline, sid, exc)
            await self._refuse(exc)

    async def _refuse(self, exc: SpoofwatchError) -> None:
        """mod_audio_fork's error message, then a close that says why."""
        self.close_reason = f"refused: {exc}"
        if self.streams is None:
            publish_error(self.host.pipeline, None, exc)
        body = {"type": "error", "data": {"code": error_code(exc), "message": str(exc)}}
        try:
            await self.ws.send(json.dumps(body))
            await self.ws.close(refusal_close_code(exc), close_reason(str(exc)))
        except ConnectionClosed:
            pass

    async def _count_error(self, exc: SpoofwatchError) -> bool:
        """Report a bad frame on the hub; False when the connection was closed for too many."""
        self.errors += 1
        assert self.streams is not None
        logger.warning("jambonz call %s: %s", self.streams.stream_ids[0], exc)
        publish_error(self.host.pipeline, self.streams.stream_ids[0], exc)
        if self.errors <= MAX_ERRORS_PER_CONNECTION:
            return True
        self.close_reason = f"too many errors: expected at most {MAX_ERRORS_PER_CONNECTION}"
        await self.ws.close(CloseCode.POLICY_VIOLATION, self.close_reason)
        return False

    async def cleanup(self) -> None:
        await settle_admission(self.admitting)
        if self.streams is None:
            return
        if self.close_reason is not None:
            await self.streams.close(self.close_reason, self.close_code)
        elif clean_client_close(self.ws):
            await self.streams.close(None)
        else:
            await self.streams.close(*self.host.ended_reason(self.ws))


async def serve_jambonz(host: ConnectionHost, ws: WebSocketConnection, query: dict[str, list[str]]) -> None:
    await run_connection(JambonzConnection(host, ws, query))
