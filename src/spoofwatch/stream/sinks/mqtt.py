"""Publish hub events to an MQTT 5 broker, surviving broker outages.

Topics (``<p>`` = prefix, ``<n>`` = node, ``<s>`` = stream id made topic-safe):

- ``<p>/<n>/availability`` — retained ``online`` on every (re)connect; the Last Will is
  a retained ``offline``, also published on a clean shutdown.
- ``<p>/<n>/status`` — retained latest StatusEvent, QoS 1.
- ``<p>/<n>/event`` — error events that belong to no stream, QoS 1.
- ``<p>/<n>/streams/<s>/score`` — score events, QoS 0, message expiry 10 s.
- ``<p>/<n>/streams/<s>/alarm`` — alarm events, QoS 1.
- ``<p>/<n>/streams/<s>/event`` — stream start/end, gap, evidence and error events, QoS 1.
- ``<p>/<n>/streams/<s>/state`` — retained latest state (smoothed p_spoof, alarm, last t),
  cleared with an empty retained message when the stream ends.

Drop policy ``drop-scores-keep-alarms``: while disconnected, score events are dropped and
counted; alarms, stream and error events wait in a bounded outbox (oldest dropped and
counted when full) and go out after reconnection, followed by the latest retained state
of every live stream. Reconnection uses jittered exponential backoff.

Security: ``mqtts://`` verifies the broker's certificate against the system's CAs or
``tls_ca_file``; credentials come from the URL or ``username``/``password`` and never
appear in logs (``BrokerAddress.display`` and its ``repr`` leave the password out).
``mqtt_sink_from_config`` builds a sink from ``ServerConfig``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from spoofwatch.config import ServerConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import (
    SCHEMA_VERSION,
    AlarmEvent,
    ErrorEvent,
    Event,
    EvidenceEvent,
    FeedbackEvent,
    GapEvent,
    ScoreEvent,
    ScorerEvent,
    StatusEvent,
    StreamEvent,
    to_json,
)
from spoofwatch.stream.engine.hub import EventHub
from spoofwatch.stream.net.tls import client_ssl_context

logger = logging.getLogger(__name__)

SCORE_EXPIRY_S = 10
FAREWELL_TIMEOUT_S = 2.0
_TOPIC_UNSAFE = str.maketrans({"+": "_", "#": "_", "/": "_", "\x00": "_"})


def topic_level(text: str) -> str:
    """One topic level from free text: MQTT wildcards, separators and NUL become ``_``."""
    return text.translate(_TOPIC_UNSAFE)


@dataclass(frozen=True)
class MqttTopics:
    prefix: str
    node: str

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.startswith(("/", "$")) or self.prefix.endswith("/"):
            raise ConfigError(
                f"MQTT prefix must be non-empty and not start with '/' or '$', found {self.prefix!r}"
            )
        if any(ch in self.prefix for ch in "+#\x00"):
            raise ConfigError(f"MQTT prefix must not contain '+', '#' or NUL, found {self.prefix!r}")
        if not self.node or topic_level(self.node) != self.node:
            raise ConfigError(f"MQTT node must be one topic level without '/', '+', '#', found {self.node!r}")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.node}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def node_event(self) -> str:
        return f"{self.base}/event"

    def stream(self, stream_id: str, leaf: Literal["score", "alarm", "state", "event"]) -> str:
        return f"{self.base}/streams/{topic_level(stream_id)}/{leaf}"


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None = field(repr=False)

    @property
    def display(self) -> str:
        """Where we connect, without credentials (safe to log)."""
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://...`` (TLS, 8883)."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:  # a malformed [IPv6] host; the message holds no password
        raise ConfigError(f"expected an mqtt:// or mqtts:// URL with a valid host, found: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"expected an mqtt:// or mqtts:// broker URL, found scheme {parts.scheme!r}")
    if not hostname:
        raise ConfigError(
            f"expected a host in the MQTT URL, found none in {scheme}://{parts.netloc.rpartition('@')[2]}"
        )
    try:
        port = parts.port
    except ValueError:
        where = parts.netloc.rpartition("@")[2]
        raise ConfigError(f"expected a port 1..65535 in the MQTT URL, found {where!r}") from None
    tls = scheme == "mqtts"
    return BrokerAddress(
        host=hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before reconnect ``attempt`` (0-based): doubling from min_s, capped at max_s,
    then drawn from [d/2, d] so that many clients do not reconnect in lockstep."""
    ceiling = min(max_s, min_s * 2.0 ** min(attempt, 32))
    return rng.uniform(ceiling / 2.0, ceiling)


@dataclass
class StreamState:
    """What the retained ``state`` topic says about one live stream."""

    stream: str
    alarm: Literal["on", "off"] = "off"
    smoothed: float | None = None
    p_spoof: float | None = None
    t: float = 0.0
    seq: int | None = None

    def to_json(self) -> str:
        def rounded(value: float | None) -> float | None:
            return round(value, 6) if value is not None and math.isfinite(value) else None

        body: dict[str, Any] = {
            "type": "state",
            "v": SCHEMA_VERSION,
            "stream": self.stream,
            "alarm": self.alarm,
            "smoothed": rounded(self.smoothed),
            "p_spoof": rounded(self.p_spoof),
            "t": rounded(self.t),
            "seq": self.seq,
        }
        return json.dumps(body, separators=(",", ":"), allow_nan=False)


@dataclass
class MqttCounters:
    published: int = 0
    dropped_scores: int = 0
    dropped_events: int = 0  # alarms/stream/error events lost because the outbox was full
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0


@dataclass(eq=False)
class _Outgoing:
    topic: str
    payload: bytes
    reliable: bool  # QoS 1, kept across outages; otherwise a QoS 0 score


def _reason(exc: BaseException) -> str:
    """aiomqtt wraps the useful part ("connection lost", "refused") in ``__cause__``."""
    cause = exc.__cause__
    return f"{exc} ({cause})" if cause is not None else str(exc)


def _raise_if_cancel_was_swallowed() -> None:
    # Python 3.11's asyncio.wait_for (inside aiomqtt's publish) returns the result instead
    # of raising when a cancellation races with the PUBACK; the task still counts it.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class MqttSink:
    """Mirror the event hub onto MQTT topics; ``run()`` until cancelled.

    The hub subscription is taken at construction so no event published between
    construction and ``run()`` is missed.
    """

    def __init__(
        self,
        hub: EventHub,
        url: str,
        *,
        prefix: str = "spoofwatch",
        node: str = "node",
        username: str | None = None,
        password: str | None = None,
        tls: bool | None = None,
        tls_ca_file: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        queue: int = 1024,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        keepalive_s: int = 30,
        client_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        address = parse_broker_url(url)
        self.address = BrokerAddress(
            host=address.host,
            port=address.port,
            tls=address.tls if tls is None else tls,
            username=username if username is not None else address.username,
            password=password if password is not None else address.password,
        )
        if queue < 1:
            raise ConfigError(f"MQTT queue must be at least 1, found {queue}")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ConfigError(
                "expected 0 < reconnect_min_s <= reconnect_max_s, "
                f"found {reconnect_min_s} and {reconnect_max_s}"
            )
        self.topics = MqttTopics(prefix, node)
        self._tls_context: ssl.SSLContext | None = None
        if self.address.tls:
            self._tls_context = tls_context or client_ssl_context(tls_ca_file)
        elif tls_ca_file is not None or tls_context is not None:
            logger.warning("MQTT broker %s is not mqtts://; TLS settings unused", self.address.display)
        # A stable client id: a restarted sink takes over the old session at once, so the
        # old connection's Will cannot land after the new ``online``.
        self.client_id = client_id or f"{topic_level(prefix)}-{node}"
        self.queue = queue
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.keepalive_s = keepalive_s
        self.counters = MqttCounters()
        self._hub = hub
        self._sub = hub.subscribe(None, maxsize=queue, keep_alarms=True, name="mqtt")
        self._rng = rng or random.Random()
        self._outbox: deque[_Outgoing] = deque()
        self._states: dict[str, StreamState] = {}
        self._dirty_states: set[str] = set()
        self._status: StatusEvent | None = None
        self._status_dirty = False
        self._wake = asyncio.Event()
        self._connected = False
        self._overflow_warned = False
        self._dropped_scores_at_disconnect = 0
        self._score_properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self._score_properties.MessageExpiryInterval = SCORE_EXPIRY_S

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def dropped_in_hub(self) -> int:
        """Events the hub dropped because this sink's subscription queue was full."""
        return self._sub.dropped

    async def run(self) -> None:
        """Consume hub events and keep a broker connection until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._consume(), name="mqtt-consume")
                group.create_task(self._connection_loop(), name="mqtt-connection")
        finally:
            self._hub.unsubscribe(self._sub)
            self._connected = False

    # Routing: hub events -> outbox and stream states. Synchronous, never waits.

    async def _consume(self) -> None:
        while True:
            self._route(await self._sub.get())

    def _route_pending(self) -> None:
        while not self._sub.queue.empty():
            self._route(self._sub.queue.get_nowait())

    def _route(self, event: Event) -> None:
        topics = self.topics
        if isinstance(event, ScoreEvent):
            state = self._state_for(event.stream)
            state.smoothed, state.p_spoof = event.smoothed, event.p_spoof
            state.t, state.seq = event.t_end, event.seq
            self._enqueue(_Outgoing(topics.stream(event.stream, "score"), to_json(event).encode(), False))
        elif isinstance(event, AlarmEvent):
            state = self._state_for(event.stream)
            state.alarm, state.smoothed, state.t = event.state, event.p_spoof, max(state.t, event.t)
            self._enqueue(_Outgoing(topics.stream(event.stream, "alarm"), to_json(event).encode(), True))
        elif isinstance(event, StreamEvent):
            if event.state == "start":
                self._states[event.stream] = StreamState(event.stream)
            else:
                self._states.pop(event.stream, None)
            self._dirty_states.add(event.stream)
            self._enqueue(_Outgoing(topics.stream(event.stream, "event"), to_json(event).encode(), True))
        elif isinstance(event, GapEvent | EvidenceEvent | FeedbackEvent):
            self._enqueue(_Outgoing(topics.stream(event.stream, "event"), to_json(event).encode(), True))
        elif isinstance(event, ErrorEvent):
            topic = topics.node_event if event.stream is None else topics.stream(event.stream, "event")
            self._enqueue(_Outgoing(topic, to_json(event).encode(), True))
        elif isinstance(event, StatusEvent):
            self._status, self._status_dirty = event, True
        elif isinstance(event, ScorerEvent):
            self._enqueue(_Outgoing(topics.node_event, to_json(event).encode(), True))
        self._wake.set()

    def _state_for(self, stream: str) -> StreamState:
        state = self._states.get(stream)
        if state is None:  # joined mid-stream: the start event came before we subscribed
            state = self._states[stream] = StreamState(stream)
        self._dirty_states.add(stream)
        return state

    def _enqueue(self, item: _Outgoing) -> None:
        if not item.reliable and not self._connected:
            self.counters.dropped_scores += 1
            return
        if len(self._outbox) >= self.queue:
            if not item.reliable:
                self.counters.dropped_scores += 1
                return
            victim = next((o for o in self._outbox if not o.reliable), self._outbox[0])
            self._outbox.remove(victim)
            if victim.reliable:
                self.counters.dropped_events += 1
                if not self._overflow_warned:
                    self._overflow_warned = True
                    logger.warning("MQTT outbox full (%d); dropping the oldest alarm events", self.queue)
            else:
                self.counters.dropped_scores += 1
        self._outbox.append(item)

    def _drop_queued_scores(self) -> None:
        kept = deque(o for o in self._outbox if o.reliable)
        self.counters.dropped_scores += len(self._outbox) - len(kept)
        self._outbox = kept

    # Connection: connect, publish until the connection fails, back off, repeat.

    def _new_client(self) -> aiomqtt.Client:
        address = self.address
        return aiomqtt.Client(
            address.host,
            address.port,
            username=address.username,
            password=address.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self.topics.availability, b"offline", qos=1, retain=True),
            keepalive=self.keepalive_s,
            tls_context=self._tls_context,
        )

    async def _connection_loop(self) -> None:
        attempt = 0
        while True:
            try:
                async with self._new_client() as client:
                    attempt = 0
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                if self._connected:
                    self._on_disconnected(_reason(exc))
                else:
                    self.counters.connect_failures += 1
                    logger.info("cannot connect to MQTT broker %s: %s", self.address.display, _reason(exc))
            finally:
                self._connected = False
            delay = backoff_delay(attempt, self.reconnect_min_s, self.reconnect_max_s, self._rng)
            attempt += 1
            logger.info("reconnecting to MQTT broker %s in %.2f s", self.address.display, delay)
            await asyncio.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish until the connection drops (MqttError) or the task is cancelled."""
        self._connected = True
        self._overflow_warned = False
        self.counters.connects += 1
        logger.info("connected to MQTT broker %s as %s", self.address.display, self.client_id)
        lost = self.counters.dropped_scores - self._dropped_scores_at_disconnect
        if self.counters.disconnects and (lost or self._outbox):
            logger.info(
                "delivering %d queued events; %d score events dropped while disconnected",
                len(self._outbox),
                lost,
            )
        # A restarted broker may have lost its retained messages: say them again.
        self._dirty_states.update(self._states)
        self._status_dirty = self._status is not None
        failure: str | None = None
        try:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._publish_loop(client), name="mqtt-publish")
                    group.create_task(self._watch(client), name="mqtt-watch")
            except* aiomqtt.MqttError as errors:
                failure = _reason(errors.exceptions[0])
        except asyncio.CancelledError:
            await self._farewell(client)
            raise
        if failure is not None:
            self._on_disconnected(failure)

    def _on_disconnected(self, reason: str) -> None:
        if not self._connected:
            return
        self._connected = False
        self.counters.disconnects += 1
        self._drop_queued_scores()
        self._dropped_scores_at_disconnect = self.counters.dropped_scores
        logger.info("disconnected from MQTT broker %s: %s", self.address.display, reason)

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        # Nothing is subscribed; iterating only raises MqttError when the connection drops.
        async for _ in client.messages:
            pass

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        await client.publish(self.topics.availability, b"online", qos=1, retain=True)
        self.counters.published += 1
        while True:
            await self._flush(client)
            _raise_if_cancel_was_swallowed()
            self._wake.clear()
            if self._has_work():
                continue
            await self._wake.wait()

    def _has_work(self) -> bool:
        return bool(self._outbox or self._dirty_states or self._status_dirty)

    async def _flush(self, client: aiomqtt.Client) -> None:
        while self._outbox:
            item = self._outbox[0]
            if not item.reliable:
                self._outbox.popleft()
                try:
                    await client.publish(item.topic, item.payload, qos=0, properties=self._score_properties)
                except BaseException:
                    self.counters.dropped_scores += 1
                    raise
            else:
                # Removed only once acknowledged: a drop mid-flight resends it (at least once).
                await client.publish(item.topic, item.payload, qos=1)
                with contextlib.suppress(ValueError):
                    self._outbox.remove(item)
            self.counters.published += 1
        while self._dirty_states:
            stream = self._dirty_states.pop()
            state = self._states.get(stream)
            topic = self.topics.stream(stream, "state")
            try:
                if state is None:
                    await client.publish(topic, b"", qos=1, retain=True)
                else:
                    await client.publish(topic, state.to_json().encode(), retain=True)
            except BaseException:
                self._dirty_states.add(stream)
                raise
            self.counters.published += 1
        if self._status_dirty and self._status is not None:
            self._status_dirty = False
            try:
                await client.publish(self.topics.status, to_json(self._status).encode(), qos=1, retain=True)
            except BaseException:
                self._status_dirty = True
                raise
            self.counters.published += 1

    async def _farewell(self, client: aiomqtt.Client) -> None:
        """On shutdown: deliver what is queued (stream ends, cleared states), then ``offline``
        (a clean DISCONNECT suppresses the Will). Bounded in time; errors only logged."""
        if not self._connected:
            return
        self._route_pending()
        try:
            async with asyncio.timeout(FAREWELL_TIMEOUT_S):
                await self._flush(client)
                await client.publish(self.topics.availability, b"offline", qos=1, retain=True)
        except (TimeoutError, aiomqtt.MqttError) as exc:
            logger.info("MQTT shutdown publish incomplete: %s", exc or "timed out")
        logger.info("disconnecting from MQTT broker %s", self.address.display)


def mqtt_sink_from_config(hub: EventHub, config: ServerConfig) -> MqttSink:
    """The sink ``spoofwatch serve`` runs: broker, prefix, node, credentials, CA bundle."""
    if not config.mqtt:
        raise ConfigError("server.mqtt: expected an mqtt:// or mqtts:// broker URL, found none")
    return MqttSink(
        hub,
        config.mqtt,
        prefix=config.mqtt_prefix,
        node=config.node,
        username=config.mqtt_username,
        password=config.mqtt_password,
        tls_ca_file=config.mqtt_ca_file,
    )
