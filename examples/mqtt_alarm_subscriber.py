"""React to spoofwatch alarms published on MQTT.

Run a broker and a server that publishes to it, then subscribe::

    mosquitto -p 1883 &
    spoofwatch serve --mqtt mqtt://127.0.0.1:1883
    python examples/mqtt_alarm_subscriber.py --url mqtt://127.0.0.1:1883 \\
        --on-alarm 'notify-send "synthetic voice on $SPOOFWATCH_STREAM"'

Subscribes (MQTT 5) to ``<prefix>/<node>/streams/+/alarm`` (QoS 1) and to the nodes'
``availability``. Each alarm is printed; when one turns on, the ``--on-alarm`` shell
command runs with ``SPOOFWATCH_STREAM``, ``SPOOFWATCH_NODE``, ``SPOOFWATCH_T`` and
``SPOOFWATCH_P_SPOOF`` in its environment (values are never pasted into the command
text, so a hostile stream id cannot inject shell code).

The subscriber reconnects with jittered backoff when the broker goes away. Give
``--client-id`` to keep a persistent session: the broker then holds QoS 1 alarms that
arrive while the subscriber is disconnected (for up to an hour) and delivers them on
reconnection. Broker credentials go in the URL (``mqtt://user:password@host:1883``);
``mqtts://`` uses TLS. ``--until-alarm`` exits 0 after the first alarm (and its command).

Needs only ``aiomqtt`` (``pip install aiomqtt``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import ssl
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SESSION_EXPIRY_S = 3600
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"--url: expected mqtt://host[:port] or mqtts://host[:port], found {url!r}")
    _ = parts.port  # raises ValueError for a port that is not a number


def client_for(url: str, client_id: str | None) -> aiomqtt.Client:
    check_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme == "mqtts"
    properties = None
    if client_id:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return aiomqtt.Client(
        host,
        parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not client_id,  # a persistent session keeps alarms while we are away
        properties=properties,
        tls_context=ssl.create_default_context() if tls else None,
    )


def topic_parts(topic: str, prefix: str) -> list[str]:
    """``<prefix>/<node>/...`` → ``[node, ...]`` (the prefix may contain slashes)."""
    return topic.removeprefix(prefix + "/").split("/")


async def run_command(command: str, alarm: dict[str, Any], node: str) -> int:
    env = {
        **os.environ,
        "SPOOFWATCH_STREAM": str(alarm.get("stream", "")),
        "SPOOFWATCH_NODE": node,
        "SPOOFWATCH_T": str(alarm.get("t", "")),
        "SPOOFWATCH_P_SPOOF": str(alarm.get("p_spoof", "")),
    }
    process = await asyncio.create_subprocess_shell(command, env=env)
    return await process.wait()


async def handle(message: aiomqtt.Message, args: argparse.Namespace) -> bool:
    """Print one message and react; True when the subscriber should stop."""
    topic = str(message.topic)
    node, *rest = topic_parts(topic, args.prefix)
    payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
    if rest == ["availability"]:
        print(f"node {node} is {payload.decode(errors='replace') or 'gone'}", flush=True)
        return False
    if not payload:
        return False
    alarm = json.loads(payload)
    if args.json:
        print(json.dumps({"topic": topic, **alarm}), flush=True)
    else:
        word = "ALARM ON " if alarm.get("state") == "on" else "alarm off"
        print(
            f"{node}/{alarm.get('stream')}: {word} at {alarm.get('t', 0):.1f} s "
            f"(p_spoof {alarm.get('p_spoof', 0):.2f})",
            flush=True,
        )
    if alarm.get("state") != "on":
        return False
    if args.on_alarm:
        status = await run_command(args.on_alarm, alarm, node)
        if status != 0:
            print(f"--on-alarm command exited with status {status}", file=sys.stderr, flush=True)
    return bool(args.until_alarm)


async def subscribe(args: argparse.Namespace) -> int:
    """Subscribe, react, and reconnect with jittered exponential backoff."""
    alarms = f"{args.prefix}/{args.node}/streams/+/alarm"
    availability = f"{args.prefix}/{args.node}/availability"
    failures = 0
    while True:
        try:
            async with client_for(args.url, args.client_id) as client:
                failures = 0
                await client.subscribe(alarms, qos=1)
                await client.subscribe(availability, qos=1)
                print(f"subscribed to {alarms} on {args.url}", file=sys.stderr, flush=True)
                async for message in client.messages:
                    if await handle(message, args):
                        return 0
        except aiomqtt.MqttError as exc:
            delay = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2**failures) * random.uniform(0.5, 1.0)
            failures += 1
            print(f"MQTT: {exc}; reconnecting in {delay:.1f} s", file=sys.stderr, flush=True)
            await asyncio.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="mqtt://127.0.0.1:1883", help="broker URL (default %(default)s)")
    parser.add_argument("--prefix", default="spoofwatch", help="topic prefix (default %(default)s)")
    parser.add_argument("--node", default="+", help="server node name (default: every node)")
    parser.add_argument("--on-alarm", metavar="SHELL_COMMAND", help="run this when an alarm turns on")
    parser.add_argument("--client-id", help="persistent session id: receive alarms missed while away")
    parser.add_argument("--json", action="store_true", help="print alarms as JSON lines")
    parser.add_argument("--until-alarm", action="store_true", help="exit 0 after the first alarm")
    args = parser.parse_args(argv)
    try:
        check_url(args.url)
        return asyncio.run(subscribe(args))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
