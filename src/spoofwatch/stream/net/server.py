"""The spoofwatch WebSocket server: one port, routed by path.

- ``/v1/scores[?stream=ID]``: events from the pipeline's hub as JSON text, starting with a
  status snapshot. A subscriber whose bounded queue overflows is closed with 1013 "too slow".
- ``/v1/ingest``: a client streams audio (``protocols.ws_ingest``, handled in ``ingest``)
  and receives the events of its stream on the same connection.
- ``/twilio``: Twilio Media Streams (``protocols.twilio``, handled in ``twilio``); events
  are published to the hub only, since Twilio ignores what it is sent.
- ``/audiohook`` (Genesys AudioHook) and ``/jambonz`` (jambonz ``listen``, mod_audio_fork):
  handled in ``audiohook`` and ``jambonz``; events go to the hub only. AudioHook checks the token itself
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
import contextlib
import email.utils
import http
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from spoofwatch.config import ServerConfig
from spoofwatch.errors import LimitExceededError
from spoofwatch.events import to_json
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.audiohook import serve_audiohook
from spoofwatch.stream.net.audiohook_auth import AudioHookAuthenticator, load_audiohook_clients
from spoofwatch.stream.net.auth import refuse_unauthorized, request_authorized, token_matches
from spoofwatch.stream.net.connection import close_reason, run_connection
from spoofwatch.stream.net.ingest import IngestConnection
from spoofwatch.stream.net.jambonz import select_subprotocol, serve_jambonz
from spoofwatch.stream.net.limits import ConnectionGuard, ConnectionLimits
from spoofwatch.stream.net.redact import RedactingLogger
from spoofwatch.stream.net.tls import server_ssl_context
from spoofwatch.stream.net.twilio import TwilioConnection
from spoofwatch.stream.protocols.ws_ingest import IngestLimits
from spoofwatch.stream.sinks.websocket import forward_events

if TYPE_CHECKING:  # the cluster view needs the MQTT extra; imported when used
    from spoofwatch.stream.net.cluster import ClusterRelay

logger = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parents[1] / "static"

_INLINE_INDEX: Final = (
    "<!doctype html><html><head><meta charset='utf-8'><title>spoofwatch</title></head>"
    "<body><h1>spoofwatch</h1><p>Live scores: WebSocket <code>/v1/scores</code>. "
    "Health: <a href='/healthz'>/healthz</a>.</p></body></html>"
)

SELF_AUTHORIZING_PATHS: Final = ("/twilio", "/audiohook")  # they refuse in their own protocol


Route = Callable[[ServerConnection, dict[str, list[str]], bool], Awaitable[None]]


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
    """WebSocket + HTTP front end of one pipeline.

    ``limits`` overrides the ingest protocol's bounds (by default built from ``config``);
    the TLS files are loaded here, so a bad certificate fails before anything listens.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        config: ServerConfig,
        *,
        limits: IngestLimits | None = None,
        cluster: ClusterRelay | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.cluster = cluster  # serves /v1/cluster when given (net.cluster)
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
        if cluster is not None:
            self._routes["/v1/cluster"] = self._serve_cluster
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
        return token_matches(self.config.token, candidate)

    def _authorized(self, request: Request) -> bool:
        return request_authorized(request, self.config.token)

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
        draining = self.pipeline.drain.draining
        body = {
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
            "cluster_view": self.cluster is not None,
        }
        # 503 while draining, so a load balancer's health check sends new calls elsewhere.
        code = http.HTTPStatus.SERVICE_UNAVAILABLE if draining else http.HTTPStatus.OK
        return _http_response(code, json.dumps(body).encode(), "application/json")

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
                await ws.close(CloseCode.POLICY_VIOLATION, close_reason(str(exc)))
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

    async def _serve_cluster(self, ws: ServerConnection, query: dict[str, list[str]], _: bool) -> None:
        from spoofwatch.stream.net.cluster import serve_cluster_websocket

        assert self.cluster is not None
        with contextlib.suppress(ConnectionClosed):
            await serve_cluster_websocket(ws, self.cluster, self.pipeline.status, self._ignore_incoming)

    async def _serve_ingest(self, ws: ServerConnection, query: dict[str, list[str]], _: bool) -> None:
        await run_connection(IngestConnection(self, ws))

    async def _serve_twilio(
        self, ws: ServerConnection, query: dict[str, list[str]], authorized: bool
    ) -> None:
        await run_connection(TwilioConnection(self, ws, authorized))

    async def _serve_audiohook(
        self, ws: ServerConnection, query: dict[str, list[str]], authorized: bool
    ) -> None:
        await serve_audiohook(self, ws, authorized)

    async def _serve_jambonz(self, ws: ServerConnection, query: dict[str, list[str]], _: bool) -> None:
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
    cluster: ClusterRelay | None = None,
) -> None:
    """Serve until cancelled, then close every connection and its streams."""
    server = SpoofwatchServer(pipeline, config, cluster=cluster)
    await server.start()
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await server.stop()
