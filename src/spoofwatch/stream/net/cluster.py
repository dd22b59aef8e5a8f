"""One view of every call: relay the shared MQTT broker's events of all nodes to this
node's dashboard (``serve --cluster-view``; docs/deploy.md, "One view of every call").

Every node publishes its events under ``<prefix>/<node>/...`` (``sinks.mqtt``). The relay
subscribes to those topics of every node and hands each message on to the subscribers of
``/v1/cluster`` as the event's JSON object of ``/v1/scores`` with one more member,
``node``; a node's MQTT availability arrives as ``{"type": "availability", "v": 1,
"node": N, "state": "online"|"offline"}``. A subscriber first gets this node's status,
then the latest availability and status of every node known so far. A subscriber whose
bounded queue overflows is closed with 1013 "too slow", as on ``/v1/scores``.

``publish_status_every`` puts the pipeline's status (load) event on the hub at a fixed
interval, so that a cluster view sees every node's load even while no call starts or
ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from spoofwatch.config import ServerConfig
from spoofwatch.errors import ConfigError, ProtocolError
from spoofwatch.events import SCHEMA_VERSION, StatusEvent, event_to_dict, parse_event, to_json
from spoofwatch.stream.engine.hub import EventHub
from spoofwatch.stream.net.mqtt_subscriber import Subscription, subscribe_forever
from spoofwatch.stream.net.tls import client_ssl_context
from spoofwatch.stream.sinks.mqtt import BrokerAddress, parse_broker_url

if TYPE_CHECKING:  # aiohttp serves /v1/cluster once the server runs on it (cluster_routes)
    from aiohttp import web

logger = logging.getLogger(__name__)

STATUS_INTERVAL_S: Final = 5.0
SUBSCRIBER_QUEUE: Final = 4096
RECONNECT_MIN_S: Final = 0.5
RECONNECT_MAX_S: Final = 30.0
EVENT_LEAVES: Final = ("score", "alarm", "event")
TOO_SLOW: Final = "too slow: the cluster view subscriber fell behind"
SHUTTING_DOWN: Final = "server shutting down"


def cluster_message(prefix: str, topic: str, payload: bytes) -> dict[str, Any] | None:
    """The ``/v1/cluster`` message for one broker message, or None for topics the view
    does not show (retained stream states, cleared retained messages)."""
    head = f"{prefix}/"
    if not topic.startswith(head):
        return None
    node, _, rest = topic[len(head) :].partition("/")
    if not node or not payload:
        return None
    if rest == "availability":
        state = payload.decode(errors="replace").strip()
        if state not in ("online", "offline"):
            raise ProtocolError(f"{topic}: expected availability online or offline, found {state!r}")
        return {"type": "availability", "v": SCHEMA_VERSION, "node": node, "state": state}
    levels = rest.split("/")
    shown = rest in ("status", "event") or (
        len(levels) == 3 and levels[0] == "streams" and levels[2] in EVENT_LEAVES
    )
    if not shown:
        return None
    body = event_to_dict(parse_event(payload))
    body["node"] = node
    return body


class ClusterSubscription:
    """One ``/v1/cluster`` subscriber: a bounded queue of JSON texts; ``None`` = the end
    (``reason`` says why: it overflowed, or the relay stopped)."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize)
        self.overflowed = False
        self.reason = TOO_SLOW

    def end(self, reason: str) -> None:
        """No more messages: the subscriber's next ``get`` after those queued is None."""
        if self.overflowed:
            return
        self.overflowed, self.reason = True, reason
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    def put(self, text: str) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= self.queue.maxsize - 1:  # room for the overflow mark
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(text)

    async def get(self) -> str | None:
        return await self.queue.get()


class ClusterRelay:
    """Subscribe to every node's events on the broker; fan them out to local subscribers."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "spoofwatch",
        node: str = "node",
        username: str | None = None,
        password: str | None = None,
        tls_ca_file: str | None = None,
        subscriber_queue: int = SUBSCRIBER_QUEUE,
        rng: random.Random | None = None,
    ) -> None:
        address = parse_broker_url(url)
        self.address = BrokerAddress(
            host=address.host,
            port=address.port,
            tls=address.tls,
            username=username if username is not None else address.username,
            password=password if password is not None else address.password,
        )
        self.prefix = prefix
        self.client_id = f"{prefix}-{node}-cluster-view"
        self.tls_context = client_ssl_context(tls_ca_file) if address.tls else None
        self.subscriber_queue = subscriber_queue
        self.connected = False
        self.bad_messages = 0
        self.nodes: dict[str, dict[str, str]] = {}  # node -> latest availability / status text
        self._subscribers: set[ClusterSubscription] = set()
        self._rng = rng or random.Random()

    @property
    def topics(self) -> list[str]:
        base = f"{self.prefix}/+"
        return [
            f"{base}/availability",
            f"{base}/status",
            f"{base}/event",
            *(f"{base}/streams/+/{leaf}" for leaf in EVENT_LEAVES),
        ]

    def subscribe(self) -> ClusterSubscription:
        sub = ClusterSubscription(self.subscriber_queue)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: ClusterSubscription) -> None:
        self._subscribers.discard(sub)

    def snapshot(self) -> list[str]:
        """The latest availability and status of every known node."""
        return [text for node in sorted(self.nodes) for text in self.nodes[node].values()]

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            message = cluster_message(self.prefix, topic, payload)
        except ProtocolError as exc:
            self.bad_messages += 1
            logger.info("cluster view: ignoring a message on %s: %s", topic, exc)
            return
        if message is None:
            return
        text = json.dumps(message, separators=(",", ":"))
        if message["type"] in ("availability", "status"):
            self.nodes.setdefault(message["node"], {})[message["type"]] = text
        for sub in list(self._subscribers):
            sub.put(text)

    async def run(self) -> None:
        """Keep a broker subscription until cancelled, reconnecting with backoff; on
        cancellation every subscriber is ended (its WebSocket closed with 1001)."""
        try:
            await self._subscribe_forever()
        finally:
            for sub in list(self._subscribers):
                sub.end(SHUTTING_DOWN)

    async def _subscribe_forever(self) -> None:
        subscription = Subscription(
            self.address,
            self.client_id,
            self.topics,
            self.tls_context,
            "cluster view",
            RECONNECT_MIN_S,
            RECONNECT_MAX_S,
        )

        async def on_message(topic: str, payload: bytes) -> None:
            self.on_message(topic, payload)

        def on_connected(up: bool) -> None:
            self.connected = up

        await subscribe_forever(subscription, on_message, on_connected, self._rng)


def cluster_relay_from_config(config: ServerConfig) -> ClusterRelay:
    if not config.mqtt:
        raise ConfigError(
            "server.cluster_view: expected server.mqtt (the broker every node publishes to), found none"
        )
    return ClusterRelay(
        config.mqtt,
        prefix=config.mqtt_prefix,
        node=config.node,
        username=config.mqtt_username,
        password=config.mqtt_password,
        tls_ca_file=config.mqtt_ca_file,
    )


async def forward_cluster(relay: ClusterRelay, first: str, send: Callable[[str], Awaitable[None]]) -> str:
    """Send ``first``, the snapshot, then every relayed message; returns the reason to
    close with once the subscription ended (``TOO_SLOW``: 1013, else 1001)."""
    sub = relay.subscribe()
    try:
        await send(first)
        for known in relay.snapshot():
            await send(known)
        while True:
            text = await sub.get()
            if text is None:
                return sub.reason
            await send(text)
    finally:
        relay.unsubscribe(sub)


async def publish_status_every(
    hub: EventHub, status: Callable[[], StatusEvent], interval_s: float = STATUS_INTERVAL_S
) -> None:
    """A node's load on the hub every ``interval_s`` (and so on MQTT), until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        hub.publish(status())


def cluster_routes(relay: ClusterRelay, status: Callable[[], StatusEvent]) -> list[web.RouteDef]:
    """``GET /v1/cluster`` (WebSocket) for an aiohttp application."""
    from aiohttp import WSMsgType, web

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)

        async def ignore_incoming() -> None:
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    return

        reader = asyncio.create_task(ignore_incoming())
        forwarder = asyncio.create_task(forward_cluster(relay, to_json(status()), ws.send_str))
        try:
            await asyncio.wait({reader, forwarder}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            forwarder.cancel()
            results = await asyncio.gather(reader, forwarder, return_exceptions=True)
        if isinstance(results[1], str):  # overflowed (1013) or shutting down (1001)
            code = 1013 if results[1] == TOO_SLOW else 1001
            await ws.close(code=code, message=results[1].encode())
        return ws

    return [web.get("/v1/cluster", handle)]
