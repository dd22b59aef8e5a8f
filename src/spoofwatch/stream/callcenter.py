"""Call-center connections: admission control, and the AudioHook and jambonz WebSocket handlers.

The protocol logic lives in ``sources.audiohook`` and ``sources.jambonz`` (pure); this
module does their I/O and maps calls to pipeline streams:

- ``Admission`` admits all the streams of one call together, or none. Beyond
  ``EngineConfig.max_streams`` a call is refused (``admission = "refuse"``) or waits in a
  FIFO queue for up to ``queue_timeout_s`` (``admission = "queue"``). One instance per
  pipeline, shared by every call-center protocol (``Admission.of``). Streams open through
  ``Pipeline.open_stream``, which publishes the stream start and the status (load) events.
- ``CallStreams`` holds audio that arrives while a call waits for admission (bounded;
  the oldest is dropped and counted), then feeds the admitted streams live.
- AudioHook refusals are a ``disconnect`` with reason ``error`` (full, bad media) or
  ``unauthorized``, then ``closed`` once the client sends ``close``; the WebSocket then
  closes with 1013 (full), 1008 (unauthorized) or 1000. With AudioHook clients
  configured the upgrade request's message signature is verified
  (``sources.audiohook_auth``) and the organization id header must match ``open``; an
  ``unauthorized`` disconnect's info names the check that failed. jambonz refusals are a
  mod_audio_fork ``{"type":"error","data":{...}}`` text frame and a close with 1013 or 1008.
- Connection limits (``limits.ConnectionGuard``: message rate, streams per connection)
  apply as on every other path: breaking one publishes a ``limit_exceeded`` error event,
  ends the call's streams with that code and closes the WebSocket with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol

import numpy as np
from numpy.typing import NDArray
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from spoofwatch.errors import AudioError, ConfigError, LimitExceededError, ProtocolError, SpoofwatchError
from spoofwatch.events import ErrorEvent
from spoofwatch.stream.limits import ConnectionGuard, ConnectionLimits
from spoofwatch.stream.pipeline import Pipeline, StreamHandle
from spoofwatch.stream.sources.audiohook import (
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
from spoofwatch.stream.sources.audiohook_auth import AudioHookAuthenticator, VerifyResult, check_organization
from spoofwatch.stream.sources.jambonz import JAMBONZ_SUBPROTOCOLS, JambonzStart, JambonzStream

logger = logging.getLogger(__name__)

ADMISSION_MODES: Final = ("refuse", "queue")
ADMISSION_POLL_S: Final = 0.02
STREAM_CLOSE_TIMEOUT_S: Final = 10.0
ADMISSION_AT_END_S: Final = 1.0  # see settle_admission
DISCONNECT_GRACE_S: Final = 5.0  # how long a disconnected AudioHook client has to send close
AUDIOHOOK_OPEN_WAIT_S: Final = 4.0  # Genesys gives up on an open after about 5 s
MAX_ERRORS_PER_CONNECTION: Final = 32
MAX_CLOSE_REASON_BYTES: Final = 123
UNAUTHORIZED_INFO: Final = (
    "unauthorized: expected a valid API key (X-API-KEY, Authorization: Bearer or ?token=)"
)
# A refused signature is answered no sooner than this after the connection opened, as
# the reference server does, so the time taken says nothing about what failed.
SIGNATURE_FAILURE_DELAY_S: Final = 0.5


class CallCenterHost(Protocol):
    """What the handlers need from the WebSocket server (``SpoofwatchServer`` fits)."""

    pipeline: Pipeline
    connection_limits: ConnectionLimits
    audiohook_auth: AudioHookAuthenticator | None

    def token_matches(self, candidate: str | None) -> bool: ...

    def ended_reason(self, ws: ServerConnection) -> tuple[str, str]:
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


def refusal_close_code(exc: SpoofwatchError) -> CloseCode:
    return CloseCode.TRY_AGAIN_LATER if isinstance(exc, LimitExceededError) else CloseCode.POLICY_VIOLATION


def select_subprotocol(
    connection: ServerConnection, subprotocols: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Accept jambonz's and mod_audio_fork's subprotocols; never refuse a handshake over one."""
    return next((Subprotocol(name) for name in JAMBONZ_SUBPROTOCOLS if name in subprotocols), None)


# --- admission ------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamRequest:
    stream_id: str
    source: str
    sample_rate: int


class Admission:
    """Admit a call's streams together, refusing or queueing (FIFO) beyond the limit."""

    _instances: ClassVar[weakref.WeakKeyDictionary[Pipeline, Admission]] = weakref.WeakKeyDictionary()

    def __init__(self, pipeline: Pipeline) -> None:
        engine = pipeline.engine_config
        if engine.admission not in ADMISSION_MODES:
            raise ConfigError(
                f"engine.admission: expected one of {list(ADMISSION_MODES)}, found {engine.admission!r}"
            )
        if not (math.isfinite(engine.queue_timeout_s) and engine.queue_timeout_s >= 0):
            raise ConfigError(
                "engine.queue_timeout_s: expected a non-negative number of seconds, "
                f"found {engine.queue_timeout_s!r}"
            )
        self.pipeline = pipeline
        self.mode = engine.admission
        self.timeout_s = engine.queue_timeout_s
        self._waiting: deque[object] = deque()

    @classmethod
    def of(cls, pipeline: Pipeline) -> Admission:
        """The pipeline's shared instance, so queued calls of every protocol share one FIFO."""
        admission = cls._instances.get(pipeline)
        if admission is None:
            admission = cls._instances[pipeline] = cls(pipeline)
        return admission

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def limit(self) -> int:
        return self.pipeline.engine_config.max_streams

    def _free(self) -> int:
        return self.limit - len(self.pipeline.streams)

    def _full_error(self, needed: int, waited_s: float | None = None) -> LimitExceededError:
        waited = f", after waiting {waited_s:g} s in the admission queue" if waited_s is not None else ""
        return LimitExceededError(
            f"server is at its limit of {self.limit} concurrent streams ({len(self.pipeline.streams)} live, "
            f"this call needs {needed}){waited}; try again later"
        )

    async def open(
        self, requests: Sequence[StreamRequest], *, max_wait_s: float | None = None
    ) -> list[StreamHandle]:
        """Open every requested stream, or raise LimitExceededError / ProtocolError with the reason."""
        needed = len(requests)
        if needed > self.limit:
            raise LimitExceededError(
                f"call needs {needed} streams; expected at most the server's limit of {self.limit}"
            )
        self._check_ids(requests)
        if self.mode == "refuse" or (not self._waiting and self._free() >= needed):
            return await self._open_now(requests)
        wait_s = self.timeout_s if max_wait_s is None else min(self.timeout_s, max_wait_s)
        ticket = object()
        self._waiting.append(ticket)
        logger.info("call %s queued for admission (%d waiting)", requests[0].stream_id, len(self._waiting))
        try:
            async with asyncio.timeout(wait_s):
                while self._waiting[0] is not ticket or self._free() < needed:
                    await asyncio.sleep(ADMISSION_POLL_S)
        except TimeoutError:
            raise self._full_error(needed, wait_s) from None
        finally:
            self._waiting.remove(ticket)
        return await self._open_now(requests)

    def _check_ids(self, requests: Sequence[StreamRequest]) -> None:
        ids = [r.stream_id for r in requests]
        taken = [i for i in ids if i in self.pipeline.streams]
        if taken or len(set(ids)) != len(ids):
            raise ProtocolError(f"stream id(s) {taken or ids} already live; expected unique ids")

    async def _open_now(self, requests: Sequence[StreamRequest]) -> list[StreamHandle]:
        if self._free() < len(requests):
            raise self._full_error(len(requests))
        self._check_ids(requests)  # again: ids may have gone live while this call waited
        handles: list[StreamHandle] = []
        try:
            for request in requests:
                handles.append(
                    self.pipeline.open_stream(
                        request.stream_id, source=request.source, sample_rate=request.sample_rate
                    )
                )
        except SpoofwatchError:
            await asyncio.gather(*(close_stream(h, "call refused") for h in handles))
            raise
        return handles


async def close_stream(handle: StreamHandle, reason: str | None, code: str = "stream_closed") -> None:
    try:
        async with asyncio.timeout(STREAM_CLOSE_TIMEOUT_S):
            await handle.close(reason, code=code)
    except TimeoutError:
        logger.warning("stream %s did not flush within %.0f s", handle.stream_id, STREAM_CLOSE_TIMEOUT_S)


class CallStreams:
    """One call's pipeline streams; audio waits (bounded, oldest dropped) until admitted."""

    def __init__(
        self, pipeline: Pipeline, requests: Sequence[StreamRequest], *, max_pending_s: float
    ) -> None:
        self.pipeline = pipeline
        self.requests = list(requests)
        self.handles: dict[str, StreamHandle] = {}
        self.max_pending = {r.stream_id: max(1, round(max_pending_s * r.sample_rate)) for r in requests}
        self.pending: dict[str, deque[NDArray[np.float32]]] = {r.stream_id: deque() for r in requests}
        self.pending_samples = dict.fromkeys(self.pending, 0)
        self.dropped_samples = 0
        self.admitted = False
        self.closed = False

    @property
    def stream_ids(self) -> list[str]:
        return [r.stream_id for r in self.requests]

    async def admit(self, max_wait_s: float | None = None) -> None:
        handles = await Admission.of(self.pipeline).open(self.requests, max_wait_s=max_wait_s)
        if self.closed:  # the call ended while it waited
            await asyncio.gather(*(close_stream(h, "call ended before admission") for h in handles))
            return
        self.handles = {h.stream_id: h for h in handles}
        self.admitted = True
        for stream_id, chunks in self.pending.items():
            if chunks:
                self.handles[stream_id].feed(np.concatenate(list(chunks)))
            chunks.clear()
        if self.dropped_samples:
            logger.warning(
                "call %s: %d samples dropped while queued", self.stream_ids[0], self.dropped_samples
            )

    def feed(self, stream_id: str, samples: NDArray[np.float32]) -> None:
        if self.closed:
            return
        handle = self.handles.get(stream_id)
        if handle is not None:
            handle.feed(samples)
            return
        if self.admitted or stream_id not in self.pending:
            raise ProtocolError(f"audio for stream {stream_id!r}: expected one of {self.stream_ids}")
        chunks = self.pending[stream_id]
        chunks.append(samples)
        self.pending_samples[stream_id] += len(samples)
        while self.pending_samples[stream_id] > self.max_pending[stream_id] and len(chunks) > 1:
            dropped = chunks.popleft()
            self.pending_samples[stream_id] -= len(dropped)
            self.dropped_samples += len(dropped)

    def gap(self, seconds: float, cause: str) -> None:
        """Every party's audio is missing for ``seconds`` (``StreamHandle.gap``); a call
        still waiting for admission has no timeline yet, so the gap is only logged."""
        if self.closed:
            return
        if not self.admitted:
            logger.info("call %s: %.3f s gap (%s) before admission", self.stream_ids[0], seconds, cause)
            return
        for handle in self.handles.values():
            handle.gap(seconds, cause)

    async def close(self, reason: str | None, code: str = "stream_closed") -> None:
        self.closed = True
        handles = list(self.handles.values())
        self.handles.clear()
        await asyncio.gather(*(close_stream(h, reason, code) for h in handles))


async def settle_admission(task: asyncio.Task[None] | None) -> None:
    """A call that ended while its admission was under way: let an admission that can
    finish at once do so (its buffered audio is then scored and the stream ends normally;
    the task may not even have started when a short call's last frame arrived), cancel
    one still queued for capacity after ``ADMISSION_AT_END_S``."""
    if task is None or task.done():
        return
    done, _ = await asyncio.wait({task}, timeout=ADMISSION_AT_END_S)
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def publish_error(pipeline: Pipeline, stream: str | None, exc: SpoofwatchError) -> None:
    pipeline.hub.publish(ErrorEvent(stream=stream, code=error_code(exc), message=str(exc)))


async def close_over_limit(ws: ServerConnection, exc: LimitExceededError) -> None:
    """Close (1008) while discarding what a too-fast client still sends."""
    from spoofwatch.stream.server import close_draining  # the server imports this module

    with contextlib.suppress(ConnectionClosed):
        await close_draining(ws, CloseCode.POLICY_VIOLATION, close_reason(str(exc)))


def _clean_client_close(ws: ServerConnection) -> bool:
    """True when the client closed the WebSocket normally (1000/1001) on its own initiative."""
    protocol = ws.protocol
    rcvd = protocol.close_rcvd
    return (
        rcvd is not None
        and rcvd.code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)
        and bool(protocol.close_rcvd_then_sent)
    )


# --- AudioHook ------------------------------------------------------------------------


class AudioHookConnection:
    """One Genesys AudioHook session over one WebSocket."""

    def __init__(self, host: CallCenterHost, ws: ServerConnection, authorized: bool) -> None:
        self.host = host
        self.ws = ws
        self.started = asyncio.get_running_loop().time()
        request = ws.request
        self.verification: VerifyResult | None = None
        self.organization_header: str | None = None
        if host.audiohook_auth is None:
            api_key = request.headers.get("X-API-KEY") if request is not None else None
            self.authorized = authorized or host.token_matches(api_key)
        else:  # signatures configured: the server token is no way in
            headers: dict[str, list[str]] = {}
            for name, value in request.headers.raw_items() if request is not None else []:
                headers.setdefault(name.lower(), []).append(value)
            target = request.path if request is not None else ""
            self.verification = host.audiohook_auth.verify(headers, target)
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


# --- jambonz / mod_audio_fork ---------------------------------------------------------


class JambonzConnection:
    """One jambonz ``listen`` (or mod_audio_fork) WebSocket: one call, one or two parties."""

    def __init__(self, host: CallCenterHost, ws: ServerConnection, query: dict[str, list[str]]) -> None:
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
        elif _clean_client_close(self.ws):
            await self.streams.close(None)
        else:
            await self.streams.close(*self.host.ended_reason(self.ws))


# --- entry points for the WebSocket server ------------------------------------------


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


async def serve_audiohook(host: CallCenterHost, ws: ServerConnection, authorized: bool) -> None:
    await run_connection(AudioHookConnection(host, ws, authorized))


async def serve_jambonz(host: CallCenterHost, ws: ServerConnection, query: dict[str, list[str]]) -> None:
    await run_connection(JambonzConnection(host, ws, query))
