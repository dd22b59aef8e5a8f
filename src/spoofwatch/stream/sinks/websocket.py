"""WebSocket fan-out: forward a hub subscription's events to one client as JSON text,
dropping a client that falls behind (1013 "too slow")."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from spoofwatch.events import StreamEvent, to_json
from spoofwatch.stream.engine.hub import EventHub, Subscription
from spoofwatch.stream.net.ws_connection import CloseCode, ConnectionClosed, WebSocketConnection

logger = logging.getLogger(__name__)

SEND_POLL_S: Final = 0.1  # how often a blocked send re-checks its subscription for overflow


async def _send_all(ws: WebSocketConnection, sub: Subscription, until_end_of: str | None) -> bool:
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
    ws: WebSocketConnection, hub: EventHub, sub: Subscription, *, until_end_of: str | None = None
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
