"""MqttSink against a real mosquitto: topics, QoS, retained state, Will, outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiomqtt
import numpy as np
import pytest
from numpy.typing import NDArray
from paho.mqtt.subscribeoptions import SubscribeOptions

from fakes import FakeScorer, noise, tone
from mosquitto_broker import (  # noqa: F401 - the fixtures register by being imported
    BrokerFactory,
    MosquittoBroker,
    TcpProxy,
    mosquitto_factory_fixture,
    mosquitto_fixture,
)
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import AlarmEvent, GapEvent, ScoreEvent, StatusEvent, StreamEvent, parse_event
from spoofwatch.stream.engine.pipeline import Pipeline, StreamHandle
from spoofwatch.stream.sinks.mqtt import (
    MqttSink,
    MqttTopics,
    backoff_delay,
    parse_broker_url,
    topic_level,
)

CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
NODE = "test-node"
TOPICS = MqttTopics("spoofwatch", NODE)
ALL = "spoofwatch/#"


# ---------------------------------------------------------------- pure helpers


def test_topic_level_replaces_wildcards_and_separators() -> None:
    assert topic_level("call/1+x#y") == "call_1_x_y"
    assert TOPICS.stream("a/b", "score") == "spoofwatch/test-node/streams/a_b/score"
    assert TOPICS.availability == "spoofwatch/test-node/availability"
    with pytest.raises(ConfigError, match="node"):
        MqttTopics("spoofwatch", "a/b")
    with pytest.raises(ConfigError, match="prefix"):
        MqttTopics("spoof/#", "n")


def test_broker_url_parsing_and_errors_never_echo_passwords() -> None:
    plain = parse_broker_url("mqtt://broker.local")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker.local", 1883, False, None)
    secure = parse_broker_url("mqtts://me:p%40ss@broker.local")
    assert (secure.port, secure.tls, secure.username, secure.password) == (8883, True, "me", "p@ss")
    assert "p@ss" not in secure.display and "p@ss" not in repr(secure)
    with pytest.raises(ConfigError, match=r"mqtt:// or mqtts://.*'http'"):
        parse_broker_url("http://broker.local")
    with pytest.raises(ConfigError, match="port") as info:
        parse_broker_url("mqtt://me:hunter2@host:99999")
    assert "hunter2" not in str(info.value)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0), (200, 30.0)]:
        delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered, not lockstep


# ---------------------------------------------------------------- harness


@dataclass(frozen=True)
class Received:
    n: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    expiry: int | None


class Recorder:
    """An independent MQTT 5 client recording every message under a topic filter.

    Subscribed with retain-as-published, so ``retain`` says how the sink published it.
    """

    def __init__(self, port: int, topic: str = ALL) -> None:
        self.port = port
        self.topic = topic
        self.messages: list[Received] = []
        self._sync_topic = f"sync/{uuid.uuid4().hex}"
        self._changed = asyncio.Event()
        self._client = aiomqtt.Client(
            "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, identifier=f"rec-{uuid.uuid4().hex[:8]}"
        )
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        await self._client.__aenter__()
        self._reader = asyncio.create_task(self._read())
        await self._client.subscribe(self.topic, options=SubscribeOptions(qos=1, retainAsPublished=True))
        await self._client.subscribe(self._sync_topic, qos=1)
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
            props = message.properties
            expiry = getattr(props, "MessageExpiryInterval", None) if props is not None else None
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            topic, n = message.topic.value, len(self.messages)
            self.messages.append(Received(n, topic, payload, message.qos, message.retain, expiry))
            self._changed.set()

    async def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 5.0) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if predicate(message):
                    return message
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(m.topic, m.payload[:60]) for m in self.messages[-15:]]
                raise AssertionError(f"expected a matching MQTT message within {timeout} s; last: {seen}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def sync(self) -> None:
        """Return once every retained message sent on subscription has arrived."""
        await self._client.publish(self._sync_topic, b"sync", qos=1)
        await self.wait_for(lambda m: m.topic == self._sync_topic)

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]


async def until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {what} within {timeout} s")
        await asyncio.sleep(0.01)


@dataclass
class Harness:
    pipeline: Pipeline
    sink: MqttSink


@contextlib.asynccontextmanager
async def running(url: str, **sink_options: object) -> AsyncIterator[Harness]:
    """A Pipeline with FakeScorer (1 s windows) and an MqttSink, both running."""
    pipeline = Pipeline(FakeScorer(), CFG, EngineConfig(max_batch=4, max_wait_ms=5), node=NODE)
    options: dict[str, object] = {"node": NODE, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}
    options.update(sink_options)
    sink = MqttSink(pipeline.hub, url, **options)  # type: ignore[arg-type]
    tasks = [
        asyncio.create_task(pipeline.run(), name="worker"),
        asyncio.create_task(sink.run(), name="mqtt-sink"),
    ]
    try:
        yield Harness(pipeline, sink)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if not isinstance(result, asyncio.CancelledError):
                raise AssertionError(f"expected the task to end by cancellation, found {result!r}")


async def feed(handle: StreamHandle, audio: NDArray[np.float32], chunk: int = 1600) -> None:
    for start in range(0, len(audio), chunk):
        await handle.feed_wait(audio[start : start + chunk])


def is_online(m: Received) -> bool:
    return m.topic == TOPICS.availability and m.payload == b"online"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro, debug=True)


# ---------------------------------------------------------------- integration


def test_scores_alarm_and_retained_state_reach_an_independent_client(mosquitto: MosquittoBroker) -> None:
    stream = "call/1+x"  # needs topic sanitizing
    score_topic, state_topic = TOPICS.stream(stream, "score"), TOPICS.stream(stream, "state")

    async def body() -> None:
        async with Recorder(mosquitto.port) as live, running(mosquitto.url) as h:
            online = await live.wait_for(is_online)
            assert online.retain and online.qos == 1
            handle = h.pipeline.open_stream(stream, source="test", sample_rate=16000)
            await feed(handle, np.concatenate([noise(3.0), tone(4.0)]))
            # State updates coalesce, but the latest one always goes out.
            latest = await live.wait_for(lambda m: m.topic == state_topic and b'"seq":12' in m.payload)
            assert latest.retain and latest.qos == 0
            assert json.loads(latest.payload) == {
                "type": "state",
                "v": 1,
                "stream": stream,
                "alarm": "on",
                "t": 7.0,
                "smoothed": pytest.approx(1.0, abs=0.2),
                "p_spoof": pytest.approx(1.0, abs=0.2),
                "seq": 12,
            }
            await handle.close()
            await live.wait_for(lambda m: m.topic == state_topic and m.payload == b"")

            scores = live.on(score_topic)
            events = [parse_event(m.payload) for m in scores]
            assert all(isinstance(e, ScoreEvent) and e.stream == stream for e in events)
            assert [e.seq for e in events if isinstance(e, ScoreEvent)] == list(range(13))
            assert all(
                m.qos == 0 and not m.retain and m.expiry is not None and 0 < m.expiry <= 10 for m in scores
            )

            alarms = live.on(TOPICS.stream(stream, "alarm"))
            first = parse_event(alarms[0].payload)
            assert isinstance(first, AlarmEvent) and first.state == "on" and 3.0 < first.t <= 5.0
            assert alarms[0].qos == 1 and not alarms[0].retain
            assert [json.loads(m.payload)["state"] for m in alarms] == ["on", "off"]  # off at stream end
            # The alarm follows the score that raised it.
            raising = next(
                m
                for m, e in zip(scores, events, strict=True)
                if isinstance(e, ScoreEvent) and e.t_end == first.t
            )
            assert raising.n < alarms[0].n

            states = live.on(state_topic)
            assert all(m.retain for m in states)
            assert states[-1].payload == b"" and states[-1].qos == 1

            lifecycle = [parse_event(m.payload) for m in live.on(TOPICS.stream(stream, "event"))]
            assert [e.state for e in lifecycle if isinstance(e, StreamEvent)] == ["start", "end"]

            async with Recorder(mosquitto.port) as late:
                await late.sync()
                assert [m.payload for m in late.on(TOPICS.availability)] == [b"online"]
                assert late.on(state_topic) == []  # cleared at stream end
                status = parse_event(late.on(TOPICS.status)[0].payload)
                assert isinstance(status, StatusEvent) and status.streams == 0 and status.node == NODE
            assert h.sink.counters.dropped_scores == 0

    run(body())


def test_shutdown_flushes_stream_end_and_says_offline(mosquitto: MosquittoBroker) -> None:
    async def body() -> None:
        async with running(mosquitto.url) as h:
            handle = h.pipeline.open_stream("s1", source="test", sample_rate=16000)
            await feed(handle, noise(2.0))
            async with Recorder(mosquitto.port, TOPICS.stream("s1", "state")) as r:
                await r.wait_for(lambda m: m.payload.startswith(b"{"))
            await h.pipeline.close_all()  # queues the end; the sink is cancelled right after
        async with Recorder(mosquitto.port) as late:
            await late.sync()
            assert [m.payload for m in late.on(TOPICS.availability)] == [b"offline"]
            assert late.on(TOPICS.stream("s1", "state")) == []

    run(body())


def test_last_will_offline_when_the_connection_is_cut(mosquitto: MosquittoBroker) -> None:
    async def body() -> None:
        async with (
            TcpProxy(mosquitto.port) as proxy,
            Recorder(mosquitto.port, TOPICS.availability) as live,
            running(proxy.url) as h,
        ):
            await live.wait_for(is_online)
            await proxy.pause()
            proxy.cut()  # no DISCONNECT reaches the broker: it must publish the Will
            offline = await live.wait_for(lambda m: m.payload == b"offline")
            assert offline.retain and offline.qos == 1
            await until(lambda: not h.sink.connected, what="the sink to notice the cut")
            await proxy.resume()
            back = await live.wait_for(lambda m: is_online(m) and m.n > offline.n)
            assert back.retain
            assert (h.sink.counters.connects, h.sink.counters.disconnects) == (2, 1)

    run(body())


def test_sink_keeps_retrying_until_the_broker_starts(
    mosquitto_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto_factory(start=False)
    url = f"mqtt://watcher:s3cret-pw@127.0.0.1:{broker.port}"

    async def body() -> None:
        async with running(url) as h:
            await until(lambda: h.sink.counters.connect_failures >= 2, what="two failed connects")
            assert not h.sink.connected
            await asyncio.to_thread(broker.start)
            await until(lambda: h.sink.connected, what="the sink to connect")
            async with Recorder(broker.port, TOPICS.availability) as r:
                online = await r.wait_for(is_online)
                assert online.retain

    with caplog.at_level(logging.INFO, logger="spoofwatch.stream.sinks.mqtt"):
        run(body())
    assert "reconnecting" in caplog.text and "connected to MQTT broker" in caplog.text
    assert "s3cret-pw" not in caplog.text


def test_alarms_wait_out_an_outage_in_a_bounded_outbox(mosquitto: MosquittoBroker) -> None:
    stream = "queued"

    async def body() -> None:
        async with TcpProxy(mosquitto.port) as proxy, Recorder(mosquitto.port) as live:
            await proxy.pause()  # the broker is up, but the sink cannot reach it
            async with running(proxy.url, queue=3) as h:
                await until(lambda: h.sink.counters.connect_failures > 0, what="a refused connect")
                for i in range(5):
                    h.pipeline.hub.publish(AlarmEvent(stream, "on" if i % 2 == 0 else "off", float(i), 0.9))
                    h.pipeline.hub.publish(ScoreEvent(stream, i, i, i + 1.0, -2.0, 0.88, 0.9, True, 1.0))
                    await asyncio.sleep(0)  # events arrive over time, as from the pipeline
                await until(lambda: h.sink.counters.dropped_scores == 5, what="scores dropped")
                await proxy.resume()
                await live.wait_for(lambda m: m.topic == TOPICS.stream(stream, "state"))
                alarms = [parse_event(m.payload) for m in live.on(TOPICS.stream(stream, "alarm"))]
                assert [a.t for a in alarms if isinstance(a, AlarmEvent)] == [2.0, 3.0, 4.0]
                assert h.sink.counters.dropped_events == 2
                assert live.on(TOPICS.stream(stream, "score")) == []
                assert h.sink.dropped_in_hub == 0

    run(body())


def test_broker_restart_mid_stream_republishes_and_delivers_the_missed_alarm(
    mosquitto: MosquittoBroker,
) -> None:
    stream = "restart"
    state_topic, alarm_topic = TOPICS.stream(stream, "state"), TOPICS.stream(stream, "alarm")

    async def body() -> None:
        # The proxy holds the sink off until the new recorder is subscribed after the restart.
        async with TcpProxy(mosquitto.port) as proxy, running(proxy.url) as h:
            raised = h.pipeline.hub.subscribe(
                stream, maxsize=1000, predicate=lambda e: isinstance(e, AlarmEvent)
            )
            handle = h.pipeline.open_stream(stream, source="test", sample_rate=16000)
            idle = h.pipeline.open_stream("idle", source="test", sample_rate=16000)  # quiet in the outage
            async with Recorder(mosquitto.port) as before:
                # Scores made before the first connect are dropped by design; wait so none are.
                await until(lambda: h.sink.connected, what="the sink to connect")
                await feed(idle, noise(1.0))
                await feed(handle, noise(3.0))
                await before.wait_for(lambda m: m.topic == TOPICS.stream(stream, "score"))
                idle_topic = TOPICS.stream("idle", "state")
                await before.wait_for(lambda m: m.topic == idle_topic and m.payload != b"")
            await proxy.pause()
            await asyncio.to_thread(mosquitto.stop)
            await until(lambda: not h.sink.connected, what="the sink to notice the broker is gone")

            await feed(handle, tone(4.0))  # the alarm is raised during the outage
            await until(lambda: not raised.queue.empty(), what="an alarm during the outage")
            await until(lambda: h.sink.counters.dropped_scores > 0, what="the sink to drop outage scores")

            await asyncio.to_thread(mosquitto.start)
            async with Recorder(mosquitto.port) as after:
                await after.sync()
                assert after.on(TOPICS.availability) == []  # the restart lost all retained messages
                await proxy.resume()
                online = await after.wait_for(is_online)
                alarm = await after.wait_for(lambda m: m.topic == alarm_topic)
                event = parse_event(alarm.payload)
                assert isinstance(event, AlarmEvent) and event.state == "on" and alarm.qos == 1
                state = await after.wait_for(lambda m: m.topic == state_topic)
                assert state.retain and json.loads(state.payload)["alarm"] == "on"
                assert online.n < alarm.n
                idle_state = await after.wait_for(lambda m: m.topic == TOPICS.stream("idle", "state"))
                assert idle_state.retain and json.loads(idle_state.payload)["seq"] == 0
                await handle.close()
                await after.wait_for(lambda m: m.topic == state_topic and m.payload == b"")
            assert h.sink.counters.connects == 2

    run(body())


def test_gap_events_go_to_the_streams_event_topic_reliably(mosquitto: MosquittoBroker) -> None:
    stream = "call-gap"

    async def body() -> None:
        async with Recorder(mosquitto.port) as live, running(mosquitto.url) as h:
            await live.wait_for(is_online)
            handle = h.pipeline.open_stream(stream, source="test", sample_rate=16000)
            await feed(handle, noise(2.0))
            handle.gap(12.0, "paused")
            await feed(handle, noise(2.0, seed=1))
            await handle.close()
            message = await live.wait_for(
                lambda m: m.topic == TOPICS.stream(stream, "event") and b'"gap"' in m.payload
            )
            assert parse_event(message.payload) == GapEvent(stream, 2.0, 14.0, "paused")
            assert message.qos == 1

    run(body())


def test_drift_events_go_to_the_nodes_event_topic_reliably(mosquitto: MosquittoBroker) -> None:
    from spoofwatch.events import DriftEvent

    async def body() -> None:
        async with Recorder(mosquitto.port) as live, running(mosquitto.url) as h:
            await live.wait_for(is_online)
            drift = DriftEvent("n", "on", 0.4, 0.1, 500, 900.0, 0.4, 0.05, 0.01)
            h.pipeline.hub.publish(drift)
            message = await live.wait_for(lambda m: m.topic == TOPICS.node_event and b'"drift"' in m.payload)
            assert parse_event(message.payload) == drift
            assert message.qos == 1

    run(body())
