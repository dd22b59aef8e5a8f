"""The spoofwatch server: one aiohttp application serves HTTP and WebSocket on one port,
routed by path.

- ``/v1/scores[?stream=ID]``: events from the pipeline's hub as JSON text, starting with a
  status snapshot. A subscriber whose bounded queue overflows is closed with 1013 "too slow".
- ``/v1/ingest``: a client streams audio (``protocols.ws_ingest``, handled in ``ingest``)
  and receives the events of its stream on the same connection.
- ``/twilio``: Twilio Media Streams (``protocols.twilio``, handled in ``twilio``); events
  are published to the hub only, since Twilio ignores what it is sent.
- ``/audiohook`` (Genesys AudioHook) and ``/jambonz`` (jambonz ``listen``, mod_audio_fork):
  handled in ``audiohook`` and ``jambonz``; events go to the hub only. AudioHook checks the token itself
  (also as ``X-API-KEY``) and refuses with its own ``disconnect`` message.
- ``/healthz`` (JSON) and ``/`` (dashboard HTML) are plain HTTP; so are the routes other
  features mount through ``extra_routes``; any other path is 404.

With a token configured every path needs ``Authorization: Bearer TOKEN``, ``?token=`` or
HTTP Basic auth with the token as the password (jambonz ``wsAuth``): WebSocket paths are
accepted and closed with 1008, HTTP paths (unknown ones too, before any 404) answered
401. Tokens are compared in constant time. Twilio can send neither (it drops the URL's
query string), so ``/twilio`` also accepts the token as the start message's
``customParameters.token`` (``<Parameter name="token">`` in TwiML).

With ``tls_cert`` (and ``tls_key``) configured the port speaks TLS: ``wss://`` and
``https://``. aiohttp's access log is replaced by a redacted one at DEBUG and its loggers
carry a ``RedactingFilter`` while the server runs, so no token reaches a log. WebSocket
compression is off (audio does not deflate).

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
import contextlib
import http
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from spoofwatch.config import ServerConfig
from spoofwatch.errors import LimitExceededError
from spoofwatch.events import to_json
from spoofwatch.model.scorer import scorer_health
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.audiohook import serve_audiohook
from spoofwatch.stream.net.audiohook_auth import AudioHookAuthenticator, load_audiohook_clients
from spoofwatch.stream.net.auth import refuse_unauthorized, request_authorized, token_matches
from spoofwatch.stream.net.connection import close_reason, run_connection
from spoofwatch.stream.net.ingest import IngestConnection
from spoofwatch.stream.net.jambonz import select_subprotocol, serve_jambonz
from spoofwatch.stream.net.limits import ConnectionGuard, ConnectionLimits
from spoofwatch.stream.net.openapi import OPENAPI_PATH, openapi_routes
from spoofwatch.stream.net.redact import RedactingAccessLogger, RedactingFilter
from spoofwatch.stream.net.tls import server_ssl_context
from spoofwatch.stream.net.twilio import TwilioConnection
from spoofwatch.stream.net.ws_connection import (
    CLOSE_TIMEOUT_S,
    HEARTBEAT_S,
    CloseCode,
    ConnectionClosed,
    WebSocketConnection,
)
from spoofwatch.stream.protocols.ws_ingest import IngestLimits
from spoofwatch.stream.sinks.websocket import forward_events

logger = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parents[1] / "static"

_INLINE_INDEX: Final = (
    "<!doctype html><html><head><meta charset='utf-8'><title>spoofwatch</title></head>"
    "<body><h1>spoofwatch</h1><p>Live scores: WebSocket <code>/v1/scores</code>. "
    "Health: <a href='/healthz'>/healthz</a>.</p></body></html>"
)

SELF_AUTHORIZING_PATHS: Final = ("/twilio", "/audiohook")  # they refuse in their own protocol

# aiohttp's loggers; each carries a RedactingFilter while a server runs.
AIOHTTP_LOGGERS: Final = ("aiohttp.access", "aiohttp.server", "aiohttp.web", "aiohttp.websocket")

# A stopping server waits this long for its handlers: their streams flush (10 s at most),
# their WebSockets close (10 s at most).
SHUTDOWN_TIMEOUT_S: Final = 25.0

Route = Callable[[WebSocketConnection, dict[str, list[str]], bool], Awaitable[None]]


def http_response(status: http.HTTPStatus, body: bytes, content_type: str) -> web.Response:
    """A plain response that closes its connection; a 401 names the auth scheme."""
    response = web.Response(
        status=status.value,
        body=body,
        headers={"Content-Type": content_type, "Cache-Control": "no-store"},
    )
    if status == http.HTTPStatus.UNAUTHORIZED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="spoofwatch"'
    response.force_close()
    return response


def unauthorized_response() -> web.Response:
    return http_response(
        http.HTTPStatus.UNAUTHORIZED,
        b"expected Authorization: Bearer TOKEN or ?token=TOKEN\n",
        "text/plain; charset=utf-8",
    )


def index_html() -> bytes:
    """The dashboard page: ``static/index.html`` when the package ships one."""
    page = STATIC_DIR / "index.html"
    try:
        return page.read_bytes()
    except OSError:
        return _INLINE_INDEX.encode()


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


class SpoofwatchServer:
    """HTTP + WebSocket front end of one pipeline (an ``aiohttp.web.Application``).

    ``limits`` overrides the ingest protocol's bounds (by default built from ``config``);
    the TLS files are loaded here, so a bad certificate fails before anything listens.
    ``extra_routes`` mounts more HTTP endpoints on the same port; the token guards them as
    it guards ``/healthz``.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        config: ServerConfig,
        *,
        limits: IngestLimits | None = None,
        extra_routes: Sequence[web.AbstractRouteDef] = (),
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.limits = limits or IngestLimits(max_frame_bytes=config.max_message_bytes)
        self.connection_limits = ConnectionLimits.from_config(config)
        self.ssl_context = server_ssl_context(config.tls_cert, config.tls_key)
        clients = load_audiohook_clients(config.audiohook_clients, config.audiohook_clients_file)
        # With AudioHook clients configured, /audiohook checks Genesys' message signatures.
        self.audiohook_auth = AudioHookAuthenticator(clients) if clients.secrets else None
        self.extra_routes = tuple(extra_routes)
        self._runner: web.AppRunner | None = None
        self._log_filter: RedactingFilter | None = None
        self._websockets: set[WebSocketConnection] = set()
        self._stopping = False
        self._routes: dict[str, Route] = {
            "/v1/scores": self._serve_scores,
            "/v1/ingest": self._serve_ingest,
            "/twilio": self._serve_twilio,
            "/audiohook": self._serve_audiohook,
            "/jambonz": self._serve_jambonz,
        }

    @property
    def port(self) -> int:
        """The bound port (useful with ``config.port == 0``)."""
        addresses = self.addresses
        if not addresses:
            raise RuntimeError("SpoofwatchServer.port: expected a started server, found none")
        port: int = addresses[0][1]
        return port

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs; empty when the server is not running."""
        if self._runner is None:
            return []
        return [(str(a[0]), int(a[1])) for a in self._runner.addresses]

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl_context is not None else "ws"

    @property
    def max_message_bytes(self) -> int:
        """The largest WebSocket message; beyond it the connection is closed with 1009."""
        return 2 * self.limits.max_frame_bytes

    def ended_reason(self, ws: WebSocketConnection) -> tuple[str, str]:
        """Why the streams of a connection that ended without a stop end: (reason, code)."""
        if self._stopping:
            return "server shutting down", "stream_closed"
        if ws.close_sent == CloseCode.MESSAGE_TOO_BIG:
            return (
                f"message too big: expected at most {self.max_message_bytes} bytes per WebSocket "
                "message; the connection was closed (1009)",
                "limit_exceeded",
            )
        return "client disconnected before stop", "stream_closed"

    @property
    def connections(self) -> int:
        """Open WebSocket connections."""
        return len(self._websockets)

    def _secrets(self) -> list[str]:
        secrets = [self.config.token] if self.config.token else []
        if self.audiohook_auth is not None:
            encoded = (base64.b64encode(s).decode() for s in self.audiohook_auth.clients.secrets.values())
            secrets += [s for s in encoded if s]
        return secrets

    def application(self) -> web.Application:
        """The aiohttp application: the WebSocket paths, ``/healthz``, ``/``, the extra routes."""
        app = web.Application(middlewares=[self._guard], client_max_size=1024**2)
        app.router.add_routes([web.get(path, self._websocket) for path in self._routes])
        app.router.add_routes([web.get("/healthz", self._get_healthz), web.get("/", self._get_index)])
        app.router.add_routes(openapi_routes())
        app.router.add_routes(self.extra_routes)
        app.on_shutdown.append(self._close_websockets)
        return app

    async def start(self) -> None:
        self._stopping = False
        self._log_filter = RedactingFilter(self._secrets())
        for name in AIOHTTP_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        runner = web.AppRunner(
            self.application(),
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            access_log_class=RedactingAccessLogger,
            access_log=logging.getLogger("aiohttp.access"),
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=self.ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            self._remove_log_filter()
            raise
        self._runner = runner
        logger.info("spoofwatch server listening on %s://%s:%d", self.scheme, self.config.host, self.port)

    async def stop(self) -> None:
        """Close every connection (1001), close their streams, stop listening."""
        if self._runner is None:
            return
        self._stopping = True
        runner, self._runner = self._runner, None
        try:
            await runner.cleanup()
        finally:
            self._remove_log_filter()
        logger.info("spoofwatch server stopped")

    def _remove_log_filter(self) -> None:
        if self._log_filter is not None:
            for name in AIOHTTP_LOGGERS:
                logging.getLogger(name).removeFilter(self._log_filter)
            self._log_filter = None

    async def _close_websockets(self, _: web.Application) -> None:
        await asyncio.gather(
            *(ws.close(CloseCode.GOING_AWAY, "server shutting down") for ws in list(self._websockets)),
            return_exceptions=True,
        )

    # --- HTTP ---------------------------------------------------------------------------

    def token_matches(self, candidate: str | None) -> bool:
        """True when no token is configured or ``candidate`` equals it (constant time)."""
        return token_matches(self.config.token, candidate)

    def _authorized(self, request: web.BaseRequest) -> bool:
        return request_authorized(request.headers, request.raw_path, self.config.token)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The token before anything else, unknown paths too: a stranger learns no routes.
        WebSocket paths authorize after the handshake (a 1008 close says why)."""
        if request.path in self._routes and request.method == "GET":
            return await handler(request)
        if not self._authorized(request):
            self.pipeline.refused["unauthorized"] += 1
            return unauthorized_response()
        # Only the router's own 404 (no such path): a handler's 404 says what it lacks.
        if isinstance(request.match_info.http_exception, web.HTTPNotFound):
            known = sorted([*self._routes, "/healthz", "/", OPENAPI_PATH, *self._extra_paths()])
            return http_response(
                http.HTTPStatus.NOT_FOUND,
                f"no route {request.path}; expected one of {known}\n".encode(),
                "text/plain; charset=utf-8",
            )
        return await handler(request)

    def _extra_paths(self) -> list[str]:
        return sorted({str(getattr(r, "path", "")) for r in self.extra_routes} - {""})

    async def _get_index(self, request: web.Request) -> web.Response:
        return http_response(http.HTTPStatus.OK, index_html(), "text/html; charset=utf-8")

    async def _get_healthz(self, request: web.Request) -> web.Response:
        return self._healthz()

    def _healthz(self) -> web.Response:
        status = self.pipeline.status()
        draining = self.pipeline.drain.draining
        body: dict[str, Any] = {
            "status": "draining" if draining else "ok",
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
            "cluster_view": self.config.cluster_view,
        }
        scorer = scorer_health(self.pipeline.scorer)
        if scorer is not None:  # a remote scorer (the inference pool): is it reachable?
            body["scorer"] = scorer
        # 503 while draining, so a load balancer's health check sends new calls elsewhere.
        code = http.HTTPStatus.SERVICE_UNAVAILABLE if draining else http.HTTPStatus.OK
        return http_response(code, json.dumps(body).encode(), "application/json")

    # --- WebSocket ----------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        chosen = select_subprotocol(offered)  # jambonz asks for audio.jambonz.org
        response = web.WebSocketResponse(
            protocols=(chosen,) if chosen else (),
            compress=False,  # audio does not deflate; spare the CPU
            # Room above the ingest frame limit, so an oversized frame gets an error event
            # rather than a bare 1009 close.
            max_msg_size=self.max_message_bytes,
            heartbeat=HEARTBEAT_S,
            timeout=CLOSE_TIMEOUT_S,
        )
        authorized = self._authorized(request)
        if not response.can_prepare(request).ok:
            if not authorized:
                return unauthorized_response()
            return http_response(
                http.HTTPStatus.UPGRADE_REQUIRED,
                f"{request.path} is a WebSocket endpoint: expected a WebSocket upgrade request\n".encode(),
                "text/plain; charset=utf-8",
            )
        await response.prepare(request)
        ws = WebSocketConnection(request, response)
        self._websockets.add(ws)
        try:
            if self._stopping:
                await ws.close(CloseCode.GOING_AWAY, "server shutting down")
            elif not authorized and request.path not in SELF_AUTHORIZING_PATHS:
                self.pipeline.refused["unauthorized"] += 1
                await refuse_unauthorized(ws, request.path)
            else:
                query = parse_qs(urlsplit(request.raw_path).query)
                await self._routes[request.path](ws, query, authorized)
                await ws.close()
        except Exception:
            logger.exception("WebSocket handler for %s failed", request.path)
            with contextlib.suppress(Exception):
                await ws.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._websockets.discard(ws)
        return response

    async def _ignore_incoming(self, ws: WebSocketConnection) -> None:
        """Subscribers have nothing to say; one that floods anyway is closed (1008)."""
        guard = ConnectionGuard(self.connection_limits)
        async for _ in ws:
            try:
                guard.on_message()
            except LimitExceededError as exc:
                logger.warning("closing WebSocket subscriber %s: %s", ws.remote_address, exc)
                await ws.close(CloseCode.POLICY_VIOLATION, close_reason(str(exc)))
                return

    async def _serve_scores(self, ws: WebSocketConnection, query: dict[str, list[str]], _: bool) -> None:
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

    async def _serve_ingest(self, ws: WebSocketConnection, query: dict[str, list[str]], _: bool) -> None:
        await run_connection(IngestConnection(self, ws))

    async def _serve_twilio(
        self, ws: WebSocketConnection, query: dict[str, list[str]], authorized: bool
    ) -> None:
        await run_connection(TwilioConnection(self, ws, authorized))

    async def _serve_audiohook(
        self, ws: WebSocketConnection, query: dict[str, list[str]], authorized: bool
    ) -> None:
        await serve_audiohook(self, ws, authorized)

    async def _serve_jambonz(self, ws: WebSocketConnection, query: dict[str, list[str]], _: bool) -> None:
        await serve_jambonz(self, ws, query)


def _detector_name(scorer: object) -> str | None:
    card = getattr(scorer, "card", None)
    if isinstance(card, dict):
        name = card.get("name")
        return str(name) if name is not None else None
    return None


async def run_server(
    pipeline: Pipeline,
    config: ServerConfig,
    ready: asyncio.Event | None = None,
    *,
    extra_routes: Sequence[web.AbstractRouteDef] = (),
) -> None:
    """Serve until cancelled, then close every connection and its streams."""
    server = SpoofwatchServer(pipeline, config, extra_routes=extra_routes)
    await server.start()
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await server.stop()
