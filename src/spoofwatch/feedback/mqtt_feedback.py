"""Analyst feedback over MQTT: ``<prefix>/<node>/feedback`` carries feedback messages
(feedback.desk, docs/protocol.md "Feedback").

Its own client (QoS 1 subscription, clean reconnects with backoff) beside the event sink,
so feedback never waits behind outgoing scores. A message that cannot be recorded is
refused with an ``error`` event (code ``bad_feedback``, the reason; published like every
event, on ``.../event``) and a log line; the subscription goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl

from spoofwatch.config import ServerConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import ErrorEvent, FeedbackEvent
from spoofwatch.feedback.desk import FeedbackDesk, FeedbackError, parse_feedback
from spoofwatch.stream.engine.hub import EventHub
from spoofwatch.stream.net.mqtt_subscriber import Subscription, subscribe_forever
from spoofwatch.stream.net.tls import client_ssl_context
from spoofwatch.stream.sinks.mqtt import BrokerAddress, MqttTopics, parse_broker_url

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024


def feedback_topic(prefix: str, node: str) -> str:
    return f"{MqttTopics(prefix, node).base}/feedback"


class MqttFeedback:
    """Subscribes to the node's feedback topic and hands each message to the desk."""

    def __init__(
        self,
        desk: FeedbackDesk | None,
        hub: EventHub,
        address: BrokerAddress,
        topic: str,
        *,
        tls_context: ssl.SSLContext | None = None,
        client_id: str = "spoofwatch-feedback",
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.desk = desk
        self.hub = hub
        self.address = address
        self.topic = topic
        self.tls_context = tls_context
        self.client_id = client_id
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.subscribed = asyncio.Event()
        self.recorded = 0
        self.refused = 0
        self._rng = random.Random()

    async def handle(self, payload: bytes) -> FeedbackEvent | None:
        """Record one message; a bad one is refused (error event, log) and None returned."""
        stream: str | None = None
        try:
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise FeedbackError(f"expected a feedback message of at most {MAX_PAYLOAD_BYTES} bytes")
            if self.desk is None:
                raise FeedbackError("feedback is not recorded on this node; start it with --feedback-dir DIR")
            try:
                data = json.loads(payload)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise FeedbackError(f"expected a JSON feedback object, found invalid JSON ({exc})") from None
            if isinstance(data, dict) and isinstance(data.get("stream"), str):
                stream = data["stream"]
            event = await self.desk.record(parse_feedback(data), "mqtt")
        except FeedbackError as exc:
            self.refused += 1
            message = f"feedback on {self.topic} refused: {exc}"
            logger.warning("%s", message)
            self.hub.publish(ErrorEvent(stream=stream, code="bad_feedback", message=message))
            return None
        self.recorded += 1
        return event

    async def run(self) -> None:
        """Subscribe, reconnecting with backoff, until cancelled."""
        subscription = Subscription(
            self.address,
            self.client_id,
            [self.topic],
            self.tls_context,
            "MQTT feedback",
            self.reconnect_min_s,
            self.reconnect_max_s,
        )

        async def on_message(_topic: str, payload: bytes) -> None:
            await self.handle(payload)

        def on_connected(up: bool) -> None:
            if up:
                self.subscribed.set()
            else:
                self.subscribed.clear()

        await subscribe_forever(subscription, on_message, on_connected, self._rng)


def mqtt_feedback_from_config(desk: FeedbackDesk | None, hub: EventHub, config: ServerConfig) -> MqttFeedback:
    if not config.mqtt:
        raise ConfigError("server.mqtt: expected an mqtt:// or mqtts:// broker URL, found none")
    parsed = parse_broker_url(config.mqtt)
    address = BrokerAddress(
        host=parsed.host,
        port=parsed.port,
        tls=parsed.tls,
        username=config.mqtt_username if config.mqtt_username is not None else parsed.username,
        password=config.mqtt_password if config.mqtt_password is not None else parsed.password,
    )
    tls = client_ssl_context(config.mqtt_ca_file) if address.tls else None
    return MqttFeedback(
        desk,
        hub,
        address,
        feedback_topic(config.mqtt_prefix, config.node),
        tls_context=tls,
        client_id=f"{config.mqtt_prefix.replace('/', '_')}-{config.node}-feedback",
    )
