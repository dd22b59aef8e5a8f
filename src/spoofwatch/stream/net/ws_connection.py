"""One server-side WebSocket as the connection handlers see it: aiohttp's
``WebSocketResponse`` behind a small interface (send, receive, iterate, close; the peer
and the upgrade request; the close codes that went each way).

The handlers were written against this shape, so the sans-I/O protocol cores and the
handlers do not depend on the HTTP library. ``recv`` and ``send`` raise
``ConnectionClosed`` once the WebSocket is closed; iterating ends quietly at the close.
aiohttp's ``close`` reads and discards what the client still sends until its close
frame arrives, so a client that queued audio before a refusal still gets the close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_websocket import WebSocketError

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S: Final = 10.0  # how long a close may wait for the client (as ``websockets``)

HEARTBEAT_S: Final = 20.0  # ping this often; a client silent for half of it more is dropped

CloseCode = WSCloseCode  # 1000 OK, 1001 GOING_AWAY, 1008 POLICY_VIOLATION, 1009, 1011, 1013 ...


class ConnectionClosed(Exception):
    """The WebSocket is closed: nothing more can be sent or received."""


@dataclass(frozen=True)
class UpgradeRequest:
    """The HTTP request that opened the WebSocket."""

    path: str  # path and query exactly as received (AudioHook signs it)
    headers: Mapping[str, str]  # case-insensitive; ``getall`` gives repeated fields

    def header_items(self) -> list[tuple[str, str]]:
        """Every header field in order, repeated ones included."""
        return list(self.headers.items())


class WebSocketConnection:
    """A prepared aiohttp WebSocket; see the module docstring."""

    def __init__(self, request: web.BaseRequest, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._transport = request.transport
        self.request = UpgradeRequest(request.raw_path, request.headers)
        peer = self._transport.get_extra_info("peername") if self._transport is not None else None
        self.remote_address: tuple[str, int] | None = tuple(peer[:2]) if peer else None
        self.subprotocol = ws.ws_protocol
        self.close_sent: int | None = None  # the code of the close frame the server sent
        self.close_received: int | None = None  # the client's code, when the client closed first

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send(self, message: str | bytes) -> None:
        if self._ws.closed:
            raise ConnectionClosed("send: the WebSocket is closed")
        try:
            if isinstance(message, str):
                await self._ws.send_str(message)
            else:
                await self._ws.send_bytes(message)
        except ConnectionError as exc:
            raise ConnectionClosed(f"send: {exc}") from None

    async def recv(self) -> str | bytes:
        """The next text (str) or binary (bytes) message; ConnectionClosed at the close."""
        while True:
            msg = await self._ws.receive()
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                data: str | bytes = msg.data
                return data
            if msg.type is WSMsgType.CLOSE:  # the client closed first; aiohttp answered 1000
                self.close_received = int(msg.data)
                self._note_sent(CloseCode.OK)
            elif msg.type is WSMsgType.ERROR:
                # A protocol breach (too big, bad UTF-8): aiohttp closed with its code.
                exc = msg.data
                self._note_sent(exc.code if isinstance(exc, WebSocketError) else CloseCode.ABNORMAL_CLOSURE)
            elif msg.type in (WSMsgType.PING, WSMsgType.PONG):
                continue
            raise ConnectionClosed(f"the WebSocket closed ({msg.type.name})")

    def __aiter__(self) -> WebSocketConnection:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def close(self, code: int = CloseCode.OK, reason: str = "") -> None:
        """Close with ``code`` and ``reason`` (nothing when already closed or closing)."""
        if self._ws.closed:
            return
        self._note_sent(code)
        try:
            # aiohttp bounds the wait for the client's close, not a flush to a client that
            # stopped reading: bound the whole close, then drop the connection.
            async with asyncio.timeout(CLOSE_TIMEOUT_S + 1.0):
                await self._ws.close(code=code, message=reason.encode())
        except TimeoutError:
            logger.info("WebSocket client %s did not take its close in time", self.remote_address)
            if self._transport is not None:
                self._transport.abort()

    def _note_sent(self, code: int) -> None:
        if self.close_sent is None:
            self.close_sent = int(code)
