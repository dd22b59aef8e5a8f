"""The spoofwatch WebSocket server: one port, routed by path.

- ``/v1/scores[?stream=ID]``: events from the pipeline's hub as JSON text, starting with a
  status snapshot. A subscriber whose bounded queue overflows is closed with 1013 "too slow".
- ``/v1/ingest``: a client streams audio (``sources.ws_ingest`` protocol) and receives the
  events of its stream on the same connection.
- ``/twilio``: Twilio Media Streams (``sources.twilio``); events are published to the hub
  only, since Twilio ignores what it is sent.
- ``/audiohook`` (Genesys AudioHook) and ``/jambonz`` (jambonz ``listen``, mod_audio_fork):
  handled in ``callcenter``; events go to the hub only. AudioHook checks the token itself
  (also as ``X-API-KEY``) and refuses with its own ``disconnect`` message.
- ``/healthz`` (JSON) and ``/`` (dashboard HTML) are plain HTTP, answered in
  ``process_request``; any other path is 404.

With a token configured every path needs ``Authorization: Bearer TOKEN``, ``?token=`` or
HTTP Basic auth with the token as the password (jambonz ``wsAuth``): WebSocket paths are
accepted and closed with 1008, HTTP paths answered 401. Tokens are compared in constant
time. Twilio can send neither (it drops the URL's query string), so ``/twilio`` also
accepts the token as the start message's ``customParameters.token`` (``<Parameter
name="token">`` in TwiML).

With ``tls_cert`` (and ``tls_key``) configured the port speaks TLS: ``wss://`` and
``https://``. The ``websockets`` library's own DEBUG log goes through ``RedactingLogger``,
so no token reaches a log.

Limits per connection (``ServerConfig``): a message rate (token bucket), the number of
streams it may open, and the message size. Breaking the rate or stream limit sends an
error event ``limit_exceeded``, ends the connection's streams with the same code and
closes the connection with 1008; an audio frame over ``max_message_bytes`` is dropped
with an error event, and a message over twice that ends the connection (1009) and its
streams (``limit_exceeded``). The stream duration limit is the pipeline's.

The pipeline's inference worker (``Pipeline.run``) is run by the caller; stop the server
before cancelling it, so that the streams of live connections can flush their last windows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import hmac
import http
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from spoofwatch.config import ServerConfig
from spoofwatch.errors import AudioError, LimitExceededError, ProtocolError, SpoofwatchError
from spoofwatch.events import ErrorEvent, StreamEvent, to_json
from spoofwatch.stream.callcenter import (
    close_stream,
    run_connection,
    select_subprotocol,
    serve_audiohook,
    serve_jambonz,
)
from spoofwatch.stream.hub import EventHub, Subscription
from spoofwatch.stream.limits import ConnectionGuard, ConnectionLimits
from spoofwatch.stream.pipeline import Pipeline, StreamHandle
from spoofwatch.stream.redact import RedactingLogger
from spoofwatch.stream.sources.audiohook_auth import AudioHookAuthenticator, load_audiohook_clients
from spoofwatch.stream.sources.twilio import (
    TWILIO_SAMPLE_RATE,
    TwilioMedia,
    TwilioMediaStream,
    TwilioStart,
    TwilioStop,
)
from spoofwatch.stream.sources.ws_ingest import (
    GapMessage,
    IngestLimits,
    IngestProtocol,
    StartMessage,
    StopMessage,
)
from spoofwatch.stream.tls import server_ssl_context

logger = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
MAX_ERRORS_PER_CONNECTION: Final = 32
SEND_POLL_S: Final = 0.1  # how often a blocked send re-checks its subscription for overflow
MAX_CLOSE_REASON_BYTES: Final = 123  # RFC 6455: a close frame's reason fits in 123 bytes

_INLINE_INDEX: Final = (
    "<!doctype html><html><head><meta charset='utf-8'><title>spoofwatch</title></head>"
    "<body><h1>spoofwatch</h1><p>Live scores: WebSocket <code>/v1/scores</code>. "
    "Health: <a href='/healthz'>/healthz</a>.</p></body></html>"
)

MAX_MESSAGES_BEFORE_AUTH: Final = 4  # Twilio sends "connected", then "start" with the token
SELF_AUTHORIZING_PATHS: Final = ("/twilio", "/audiohook")  # they refuse in their own protocol

Route = Callable[[ServerConnection, dict[str, list[str]], bool], Awaitable[None]]
UNAUTHORIZED_REASON: Final = "unauthorized: expected a valid bearer token"


def _close_reason(text: str) -> str:
    encoded = text.encode()
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return text
    return encoded[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


def _error_code(exc: SpoofwatchError) -> str:
    if isinstance(exc, LimitExceededError):
        return "limit_exceeded"
    if isinstance(exc, AudioError):
        return "audio_error"
    if isinstance(exc, ProtocolError):
        return "protocol_error"
    return "error"


def _http_response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
        ]
    )
    if status == http.HTTPStatus.UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="spoofwatch"'
    return Response(status.value, status.phrase, headers, body)


def index_html() -> bytes:
    """The dashboard page: ``static/index.html`` when the package ships one."""
    page = STATIC_DIR / "index.html"
    try:
        return page.read_bytes()
    except OSError:
        return _INLINE_INDEX.encode()


async def _send_all(ws: ServerConnection, sub: Subscription, until_end_of: str | None) -> bool:
    """Send queued events until ``until_end_of``'s end event; True when the queue overflowed."""
    while True:
        if sub.overflowed:
            return True
        event = await sub.get()
        if sub.overflowed:
            return True
        sending = asyncio.ensure_future(ws.send(to_json(event)))
        try:
            # A client that stops reading blocks the send; keep watching for overflow meanwhile.
            while not (await asyncio.wait({sending}, timeout=SEND_POLL_S))[0]:
                if sub.overflowed:
                    return True
            sending.result()
        finally:
            sending.cancel()
        if (
            until_end_of is not None
            and isinstance(event, StreamEvent)
            and event.stream == until_end_of
            and event.state == "end"
        ):
            return False


async def forward_events(
    ws: ServerConnection, hub: EventHub, sub: Subscription, *, until_end_of: str | None = None
) -> None:
    """Forward a subscription to a client; drop the client with 1013 "too slow" on overflow."""
    try:
        overflowed = await _send_all(ws, sub, until_end_of)
    except ConnectionClosed:
        return
    if overflowed:
        hub.unsubscribe(sub)
        logger.warning("closing slow WebSocket subscriber %s (%d events dropped)", sub.name, sub.dropped)
        await ws.close(CloseCode.TRY_AGAIN_LATER, "too slow")


async def _first_completed(*tasks: asyncio.Task[None]) -> None:
    """Wait for one task, cancel the others, and surface unexpected failures."""
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, ConnectionClosed):
            raise result


def basic_auth_password(credentials: str) -> str | None:
    """The password of an HTTP Basic ``Authorization`` value, or None when malformed."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep else None


class SpoofwatchServer:
    """WebSocket + HTTP front end of one pipeline.

    ``limits`` overrides the ingest protocol's bounds (by default built from ``config``);
    the TLS files are loaded here, so a bad certificate fails before anything listens.
    """

    def __init__(
        self, pipeline: Pipeline, config: ServerConfig, *, limits: IngestLimits | None = None
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.limits = limits or IngestLimits(max_frame_bytes=config.max_message_bytes)
        self.connection_limits = ConnectionLimits.from_config(config)
        self.ssl_context = server_ssl_context(config.tls_cert, config.tls_key)
        clients = load_audiohook_clients(config.audiohook_clients, config.audiohook_clients_file)
        # With AudioHook clients configured, /audiohook checks Genesys' message signatures.
        self.audiohook_auth = AudioHookAuthenticator(clients) if clients.secrets else None
        self._server: Server | None = None
        self._stopping = False
        self._routes: dict[str, Route] = {
            "/v1/scores": self._serve_scores,
            "/v1/ingest": self._serve_ingest,
            "/twilio": self._serve_twilio,
            "/audiohook": self._serve_audiohook,
            "/jambonz": self._serve_jambonz,
        }
        self._http_routes: dict[str, Callable[[], Response]] = {
            "/healthz": self._healthz,
            "/": lambda: _http_response(http.HTTPStatus.OK, index_html(), "text/html; charset=utf-8"),
        }

    @property
    def port(self) -> int:
        """The bound port (useful with ``config.port == 0``)."""
        if self._server is None:
            raise RuntimeError("SpoofwatchServer.port: expected a started server, found none")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl_context is not None else "ws"

    @property
    def max_message_bytes(self) -> int:
        """The largest WebSocket message; beyond it the connection is closed with 1009."""
        return 2 * self.limits.max_frame_bytes

    def ended_reason(self, ws: ServerConnection) -> tuple[str, str]:
        """Why the streams of a connection that ended without a stop end: (reason, code)."""
        if self._stopping:
            return "server shutting down", "stream_closed"
        sent = ws.protocol.close_sent
        if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
            return (
                f"message too big: expected at most {self.max_message_bytes} bytes per WebSocket "
                "message; the connection was closed (1009)",
                "limit_exceeded",
            )
        return "client disconnected before stop", "stream_closed"

    @property
    def connections(self) -> int:
        return 0 if self._server is None else len(self._server.connections)

    async def start(self) -> None:
        self._stopping = False
        secrets = [self.config.token] if self.config.token else []
        if self.audiohook_auth is not None:
            encoded = (base64.b64encode(s).decode() for s in self.audiohook_auth.clients.secrets.values())
            secrets += [s for s in encoded if s]
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            # Room above the ingest frame limit, so an oversized frame gets an error event
            # rather than a bare 1009 close.
            max_size=self.max_message_bytes,
            compression=None,  # audio does not deflate; spare the CPU
            select_subprotocol=select_subprotocol,  # jambonz asks for audio.jambonz.org
            ssl=self.ssl_context,
            logger=RedactingLogger(logging.getLogger("websockets.server"), secrets),
        )
        logger.info("spoofwatch server listening on %s://%s:%d", self.scheme, self.config.host, self.port)

    async def stop(self) -> None:
        """Close every connection (1001), close their streams, stop listening."""
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        logger.info("spoofwatch server stopped")

    # --- HTTP ---------------------------------------------------------------------------

    def token_matches(self, candidate: str | None) -> bool:
        """True when no token is configured or ``candidate`` equals it (constant time)."""
        token = self.config.token
        if not token:
            return True
        return candidate is not None and hmac.compare_digest(candidate.encode(), token.encode())

    def _authorized(self, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        candidate = None
        if scheme == "bearer":
            candidate = credentials
        elif scheme == "basic":
            candidate = basic_auth_password(credentials)
        if self.token_matches(candidate):
            return True
        return any(self.token_matches(t) for t in parse_qs(urlsplit(request.path).query).get("token", []))

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path in self._routes:
            return None  # a WebSocket route; authorization is refused after the handshake
        if not self._authorized(request):  # unknown paths too: a stranger learns no routes
            return _http_response(
                http.HTTPStatus.UNAUTHORIZED,
                b"expected Authorization: Bearer TOKEN or ?token=TOKEN\n",
                "text/plain; charset=utf-8",
            )
        http_route = self._http_routes.get(path)
        if http_route is not None:
            return http_route()
        return _http_response(
            http.HTTPStatus.NOT_FOUND,
            f"no route {path}; expected one of {sorted([*self._routes, *self._http_routes])}\n".encode(),
            "text/plain; charset=utf-8",
        )

    def _healthz(self) -> Response:
        status = self.pipeline.status()
        body = {
            "status": "ok",
            "node": status.node,
            "streams": status.streams,
            "max_streams": status.max_streams,
            "queued_windows": status.queued_windows,
            "dropped_windows": status.dropped_windows,
            "subscribers": self.pipeline.hub.subscriber_count,
            "connections": self.connections,
            "detector": _detector_name(self.pipeline.scorer),
            "threshold": self.pipeline.scorer.threshold,
            "alarm_on": self.pipeline.stream_config.alarm_on,
            "alarm_off": self.pipeline.stream_config.alarm_off,
        }
        return _http_response(http.HTTPStatus.OK, json.dumps(body).encode(), "application/json")

    # --- WebSocket ----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None  # the handler only runs after a handshake request
        target = urlsplit(ws.request.path)
        authorized = self._authorized(ws.request)
        if not authorized and target.path not in SELF_AUTHORIZING_PATHS:
            await refuse_unauthorized(ws, target.path)
            return
        await self._routes[target.path](ws, parse_qs(target.query), authorized)

    async def _ignore_incoming(self, ws: ServerConnection) -> None:
        """Subscribers have nothing to say; one that floods anyway is closed (1008)."""
        guard = ConnectionGuard(self.connection_limits)
        async for _ in ws:
            try:
                guard.on_message()
            except LimitExceededError as exc:
                logger.warning("closing WebSocket subscriber %s: %s", ws.remote_address, exc)
                await ws.close(CloseCode.POLICY_VIOLATION, _close_reason(str(exc)))
                return

    async def _serve_scores(self, ws: ServerConnection, query: dict[str, list[str]], _: bool) -> None:
        streams = query.get("stream")
        stream = streams[0] if streams and streams[0] else None
        hub = self.pipeline.hub
        sub = hub.subscribe(stream, name=f"ws-scores {ws.remote_address}")
        try:
            await ws.send(to_json(self.pipeline.status()))
            await _first_completed(
                asyncio.create_task(forward_events(ws, hub, sub), name="scores-forward"),
                asyncio.create_task(self._ignore_incoming(ws), name="scores-read"),
            )
        except ConnectionClosed:
            pass
        finally:
            hub.unsubscribe(sub)

    async def _serve_ingest(self, ws: ServerConnection, query: dict[str, list[str]], _: bool) -> None:
        await run_connection(_IngestConnection(self, ws))

    async def _serve_twilio(
        self, ws: ServerConnection, query: dict[str, list[str]], authorized: bool
    ) -> None:
        await run_connection(_TwilioConnection(self, ws, authorized))

    async def _serve_audiohook(
        self, ws: ServerConnection, query: dict[str, list[str]], authorized: bool
    ) -> None:
        await serve_audiohook(self, ws, authorized)

    async def _serve_jambonz(self, ws: ServerConnection, query: dict[str, list[str]], _: bool) -> None:
        await serve_jambonz(self, ws, query)


async def refuse_unauthorized(ws: ServerConnection, path: str) -> None:
    logger.warning("refusing unauthorized WebSocket client %s on %s", ws.remote_address, path)
    await ws.close(CloseCode.POLICY_VIOLATION, UNAUTHORIZED_REASON)


async def _send_error(ws: ServerConnection, stream: str | None, exc: SpoofwatchError) -> None:
    await ws.send(to_json(ErrorEvent(stream=stream, code=_error_code(exc), message=str(exc))))


async def _close_refused(ws: ServerConnection, exc: SpoofwatchError) -> None:
    """1013 (try again later) when the server is full, 1008 (policy) for bad requests."""
    code = CloseCode.TRY_AGAIN_LATER if isinstance(exc, LimitExceededError) else CloseCode.POLICY_VIOLATION
    await close_draining(ws, code, _close_reason(str(exc)))


async def close_draining(ws: ServerConnection, code: int, reason: str) -> None:
    """Close while reading (and discarding) what the client still sends: with reading
    paused, a client that already queued audio frames would never get to our close frame
    and the close would wait out its whole timeout."""

    async def drain() -> None:
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass

    drainer = asyncio.create_task(drain(), name="drain-refused")
    try:
        await ws.close(code, reason)
    finally:
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer


def _detector_name(scorer: object) -> str | None:
    card = getattr(scorer, "card", None)
    if isinstance(card, dict):
        name = card.get("name")
        return str(name) if name is not None else None
    return None


class _IngestConnection:
    """One ``/v1/ingest`` client: at most one live stream at a time, several in sequence."""

    def __init__(self, server: SpoofwatchServer, ws: ServerConnection) -> None:
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
        await _send_error(self.ws, self.handle.stream_id if self.handle else None, exc)
        self.close_reason, self.close_code = str(exc), "limit_exceeded"
        await close_draining(self.ws, CloseCode.POLICY_VIOLATION, _close_reason(str(exc)))

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
                await _send_error(self.ws, self.handle.stream_id if self.handle else None, exc)
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
            await _send_error(self.ws, None, exc)
            await _close_refused(self.ws, exc)
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
            await _send_error(self.ws, start.stream, exc)
            await _close_refused(self.ws, exc)
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


class _TwilioConnection:
    """One Twilio Media Stream: one pipeline stream per announced track."""

    def __init__(self, server: SpoofwatchServer, ws: ServerConnection, authorized: bool) -> None:
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
        await close_draining(self.ws, CloseCode.POLICY_VIOLATION, _close_reason(str(exc)))

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
                    ErrorEvent(stream=self._sid(), code=_error_code(exc), message=str(exc))
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
            await _close_refused(self.ws, exc)
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


async def run_server(pipeline: Pipeline, config: ServerConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled, then close every connection and its streams."""
    server = SpoofwatchServer(pipeline, config)
    await server.start()
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await server.stop()
