"""MqttSink against a real mosquitto with a password file and a TLS listener, and a broker
killed (SIGKILL) mid-stream: credentials, certificate checks, no secrets in logs, counted
score drops, republished retained state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiomqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from fakes import FakeScorer, noise, tone
from mosquitto_broker import (  # noqa: F401 - the fixtures register by being imported
    BrokerFactory,
    MosquittoBroker,
    free_port,
    mosquitto_factory_fixture,
    mosquitto_fixture,
)
from selfsigned import CertFiles, make_self_signed
from spoofwatch.config import EngineConfig, ServerConfig, StreamConfig
from spoofwatch.events import AlarmEvent, Event, ScoreEvent
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.tls import client_ssl_context
from spoofwatch.stream.sinks.mqtt import MqttSink, MqttTopics, mqtt_sink_from_config

USER = "watcher"
PASSWORD = "s3cret pw!-7c1d"  # a space and punctuation: URL-quoted in URLs
NODE = "hard-node"
TOPICS = MqttTopics("spoofwatch", NODE)
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
FAST_RETRY = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2}


@dataclass(frozen=True)
class SecureBroker:
    broker: MosquittoBroker
    tls_port: int
    cert: CertFiles


@pytest.fixture(name="secure")
def secure_fixture(mosquitto_factory: BrokerFactory, tmp_path: Path) -> SecureBroker:
    """A broker that wants a password on its plain port and also listens with TLS."""
    if subprocess.run(["which", "mosquitto_passwd"], capture_output=True).returncode != 0:
        pytest.skip("mosquitto_passwd is not installed")
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True)
    cert = make_self_signed(tmp_path / "tls")
    tls_port = free_port()
    extra = "\n".join(
        [
            "user root",  # read the files below when started as root (no effect otherwise)
            "allow_anonymous false",
            f"password_file {passwords}",
            f"listener {tls_port} 127.0.0.1",
            f"certfile {cert.cert}",
            f"keyfile {cert.key}",
        ]
    )
    return SecureBroker(mosquitto_factory(extra_config=extra), tls_port, cert)


class Recorder:
    """An authenticated MQTT 5 client recording everything under ``spoofwatch/#``."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._client = aiomqtt.Client(
            "127.0.0.1",
            port,
            username=USER,
            password=PASSWORD,
            tls_context=tls,
            protocol=aiomqtt.ProtocolVersion.V5,
            identifier=f"rec-{uuid.uuid4().hex[:8]}",
        )
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        await self._client.__aenter__()
        self._reader = asyncio.create_task(self._read())
        await self._client.subscribe("spoofwatch/#", options=SubscribeOptions(qos=1, retainAsPublished=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._reader is not None
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._reader
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self._client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            self.messages.append((message.topic.value, payload, message.retain))

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _ in self.messages if t == topic]

    async def wait_for(self, topic: str, payload: bytes | None = None, timeout_s: float = 5.0) -> bytes:
        async with asyncio.timeout(timeout_s):
            while True:
                for found in self.on(topic):
                    if payload is None or found == payload:
                        return found
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def sink_running(sink_factory: object) -> AsyncIterator[tuple[Pipeline, MqttSink]]:
    pipeline = Pipeline(FakeScorer(), CFG, EngineConfig(max_batch=4, max_wait_ms=5), node=NODE)
    sink: MqttSink = sink_factory(pipeline)  # type: ignore[operator]
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(sink.run())]
    try:
        yield pipeline, sink
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until(condition: object, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def run(body: object) -> None:
    asyncio.run(body, debug=True)  # type: ignore[arg-type]


def test_password_broker_accepts_the_right_credentials_and_nothing_leaks(
    secure: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    port = secure.broker.port
    url_with_password = f"mqtt://{USER}:{quote(PASSWORD)}@127.0.0.1:{port}"
    config = ServerConfig(
        mqtt=f"mqtt://127.0.0.1:{port}", mqtt_username=USER, mqtt_password=PASSWORD, node=NODE
    )

    async def body() -> None:
        async with Recorder(port) as live:
            # Credentials from ServerConfig fields (as from SPOOFWATCH_SERVER_MQTT_PASSWORD)...
            async with sink_running(lambda p: mqtt_sink_from_config(p.hub, config)) as (pipeline, sink):
                await live.wait_for(TOPICS.availability, b"online")
                handle = pipeline.open_stream("auth", source="test", sample_rate=16000)
                await handle.feed_wait(noise(1.0))
                await handle.close()
                await live.wait_for(TOPICS.stream("auth", "score"))
                assert sink.counters.connect_failures == 0
            # ...or from the URL; a wrong password is refused, retried, and never connects.
            wrong = f"mqtt://{USER}:not-{quote(PASSWORD)}@127.0.0.1:{port}"
            async with sink_running(
                lambda p: MqttSink(p.hub, wrong, node="intruder", **FAST_RETRY)  # type: ignore[arg-type]
            ) as (_, refused):
                await until(lambda: refused.counters.connect_failures >= 2)
                assert not refused.connected and refused.counters.connects == 0
            async with sink_running(
                lambda p: MqttSink(p.hub, url_with_password, node="second", **FAST_RETRY)  # type: ignore[arg-type]
            ) as (_, second):
                await until(lambda: second.connected)
            assert live.on("spoofwatch/intruder/availability") == []

    with caplog.at_level(logging.DEBUG):
        run(body())
    texts = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert any("cannot connect to MQTT broker" in t and "not authori" in t.lower() for t in texts)
    leaks = [t for t in texts if PASSWORD in t or quote(PASSWORD) in t]
    assert leaks == []


def test_mqtts_verifies_the_broker_certificate(
    secure: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"mqtts://{USER}:{quote(PASSWORD)}@127.0.0.1:{secure.tls_port}"
    trusting = client_ssl_context(str(secure.cert.cert))

    async def body() -> None:
        async with Recorder(secure.tls_port, tls=trusting) as live:
            config = ServerConfig(mqtt=url, mqtt_ca_file=str(secure.cert.cert), node=NODE)
            async with sink_running(lambda p: mqtt_sink_from_config(p.hub, config)) as (pipeline, sink):
                assert sink.address.tls and sink.address.port == secure.tls_port
                await live.wait_for(TOPICS.availability, b"online")
                handle = pipeline.open_stream("tls", source="test", sample_rate=16000)
                await handle.feed_wait(noise(1.5))
                await handle.close()
                state = await live.wait_for(TOPICS.stream("tls", "state"))
                assert state == b"" or json.loads(state)["stream"] == "tls"
            # The system CAs do not know this certificate: the sink keeps refusing to connect.
            async with sink_running(
                lambda p: MqttSink(p.hub, url, node="unverified", **FAST_RETRY)  # type: ignore[arg-type]
            ) as (_, unverified):
                await until(lambda: unverified.counters.connect_failures >= 2)
                assert unverified.counters.connects == 0

    with caplog.at_level(logging.INFO, logger="spoofwatch.stream.sinks.mqtt"):
        run(body())
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text or "certificate verify failed" in caplog.text
    assert PASSWORD not in caplog.text and quote(PASSWORD) not in caplog.text


def test_broker_killed_mid_stream_drops_scores_counted_and_republishes_state(
    mosquitto: MosquittoBroker,
) -> None:
    stream = "killed"

    async def body() -> None:
        factory = lambda p: MqttSink(p.hub, mosquitto.url, node=NODE, **FAST_RETRY)  # noqa: E731
        async with sink_running(factory) as (pipeline, sink):
            await until(lambda: sink.connected)
            watcher = pipeline.hub.subscribe(stream, maxsize=10_000)
            handle = pipeline.open_stream(stream, source="test", sample_rate=16000)
            await handle.feed_wait(noise(2.0))
            await until(lambda: sink.counters.published >= 5)
            await asyncio.to_thread(mosquitto.kill)  # SIGKILL: no goodbye, no Will, nothing kept
            await until(lambda: not sink.connected)
            while not watcher.queue.empty():
                watcher.queue.get_nowait()
            dropped_before = sink.counters.dropped_scores
            await handle.feed_wait(tone(3.0))  # scores and an alarm while the broker is gone
            during: list[Event] = []
            async with asyncio.timeout(5.0):
                while not any(isinstance(e, AlarmEvent) for e in during):
                    during.append(await watcher.get())
            await asyncio.sleep(0.1)
            while not watcher.queue.empty():
                during.append(watcher.queue.get_nowait())
            outage_scores = [e for e in during if isinstance(e, ScoreEvent)]
            assert outage_scores
            assert sink.counters.dropped_scores - dropped_before >= len(outage_scores)

            await asyncio.to_thread(mosquitto.start)  # a fresh broker: no retained messages
            async with aiomqtt.Client(
                "127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
            ) as late:
                await until(lambda: sink.connected and sink.counters.connects == 2)
                await asyncio.sleep(0.2)  # the republish goes out right after the reconnect
                await late.subscribe("spoofwatch/#", qos=1)
                retained: dict[str, bytes] = {}
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        async for message in late.messages:
                            payload = message.payload
                            assert isinstance(payload, bytes)
                            retained[message.topic.value] = payload
                            if {TOPICS.availability, TOPICS.status, TOPICS.stream(stream, "state")} <= set(
                                retained
                            ):
                                break
            assert retained[TOPICS.availability] == b"online"
            assert json.loads(retained[TOPICS.status])["streams"] == 1
            state = json.loads(retained[TOPICS.stream(stream, "state")])
            assert state["alarm"] == "on" and state["seq"] == max(e.seq for e in outage_scores)
            # No outage score arrives late as a (non-retained) score message.
            assert TOPICS.stream(stream, "score") not in retained
            await handle.close()
            assert sink.counters.disconnects == 1

    run(body())
