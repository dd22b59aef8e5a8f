"""One MQTT subscription kept alive: connect, subscribe, hand each message on, and
reconnect with the MQTT sink's backoff when the broker goes away. The feedback listener
and the cluster view both subscribe this way."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiomqtt

from spoofwatch.stream.sinks.mqtt import BrokerAddress, backoff_delay

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subscription:
    """Where and what to subscribe to; ``what`` names it in log lines."""

    address: BrokerAddress
    client_id: str
    topics: Sequence[str]
    tls_context: ssl.SSLContext | None
    what: str
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0


async def subscribe_forever(
    sub: Subscription,
    on_message: Callable[[str, bytes], Awaitable[None]],
    on_connected: Callable[[bool], None],
    rng: random.Random,
) -> None:
    """Until cancelled: ``on_message(topic, payload)`` for each message (a text payload is
    encoded as UTF-8), ``on_connected`` True once subscribed and False when the link drops."""
    attempt = 0
    while True:
        try:
            async with aiomqtt.Client(
                sub.address.host,
                sub.address.port,
                username=sub.address.username,
                password=sub.address.password,
                identifier=sub.client_id,
                protocol=aiomqtt.ProtocolVersion.V5,
                tls_context=sub.tls_context,
            ) as client:
                for topic in sub.topics:
                    await client.subscribe(topic, qos=1)
                attempt = 0
                on_connected(True)
                logger.info("%s: subscribed to %s on %s", sub.what, list(sub.topics), sub.address.display)
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, str):
                        payload = payload.encode()
                    if not isinstance(payload, bytes | bytearray):
                        payload = b""  # aiomqtt's numbers or None: nothing this protocol sends
                    await on_message(str(message.topic), bytes(payload))
        except aiomqtt.MqttError as exc:
            logger.info("%s: broker %s unavailable: %s", sub.what, sub.address.display, exc)
        finally:
            on_connected(False)
        await asyncio.sleep(backoff_delay(attempt, sub.reconnect_min_s, sub.reconnect_max_s, rng))
        attempt += 1
