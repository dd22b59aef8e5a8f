"""The cluster view (``net.cluster``): broker topics to ``/v1/cluster`` messages, and two
pipelines publishing to a real Mosquitto seen through one node's ``/v1/cluster``
(``websockets`` server) and through the aiohttp route."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from websockets.asyncio.client import connect

from fakes import FakeScorer, noise, tone
from mosquitto_broker import (  # noqa: F401 - the fixtures register by being imported
    MosquittoBroker,
    mosquitto_factory_fixture,
    mosquitto_fixture,
)
from spoofwatch.config import EngineConfig, ServerConfig, StreamConfig
from spoofwatch.errors import ConfigError, ProtocolError
from spoofwatch.events import ScoreEvent, StatusEvent, to_json
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.cluster import (
    ClusterRelay,
    cluster_message,
    cluster_relay_from_config,
    cluster_routes,
    forward_cluster,
)
from spoofwatch.stream.net.server import SpoofwatchServer
from spoofwatch.stream.sinks.mqtt import MqttSink
from streamkit import http_get, run

CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
ENGINE = EngineConfig(max_batch=8, max_wait_ms=5)


def test_broker_topics_become_cluster_messages_with_the_node() -> None:
    score = ScoreEvent("c1", 0, 0.0, 1.0, 2.0, 0.9, 0.8, True, 12.0)
    message = cluster_message("sw", "sw/a/streams/c1/score", to_json(score).encode())
    assert message is not None and message["node"] == "a" and message["type"] == "score"
    assert message["p_spoof"] == 0.9 and message["v"] == 1
    assert cluster_message("sw", "sw/b/availability", b"offline") == {
        "type": "availability",
        "v": 1,
        "node": "b",
        "state": "offline",
    }
    status = StatusEvent("b", 3, 10, 0, 0)
    assert cluster_message("sw", "sw/b/status", to_json(status).encode()) == {
        **json.loads(to_json(status)),
        "node": "b",
    }
    assert cluster_message("sw", "sw/a/streams/c1/state", b"{}") is None  # retained state: not shown
    assert cluster_message("sw", "sw/a/streams/c1/event", b"") is None  # a cleared retained message
    assert cluster_message("other", "sw/a/status", to_json(status).encode()) is None
    with pytest.raises(ProtocolError, match="expected availability online or offline, found 'maybe'"):
        cluster_message("sw", "sw/a/availability", b"maybe")
    with pytest.raises(ProtocolError, match="expected a JSON event object"):
        cluster_message("sw", "sw/a/streams/c1/alarm", b"not json")


def test_relay_keeps_each_nodes_latest_state_and_marks_a_slow_subscriber() -> None:
    relay = ClusterRelay("mqtt://127.0.0.1:1", prefix="sw", subscriber_queue=4)
    relay.on_message("sw/b/availability", b"online")
    relay.on_message("sw/a/status", to_json(StatusEvent("a", 1, 4, 0, 0)).encode())
    relay.on_message("sw/a/status", to_json(StatusEvent("a", 2, 4, 0, 0)).encode())
    relay.on_message("sw/a/availability", b"garbage")  # counted, not relayed
    assert relay.bad_messages == 1
    assert [json.loads(t)["node"] for t in relay.snapshot()] == ["a", "b"]
    assert json.loads(relay.snapshot()[0])["streams"] == 2
    slow = relay.subscribe()
    for seq in range(5):
        relay.on_message("sw/a/event", to_json(StatusEvent("a", seq, 4, 0, 0)).encode())
    texts = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
    assert texts[-1] is None and slow.overflowed and len(texts) == 4
    with pytest.raises(ConfigError, match=r"cluster_view: expected server\.mqtt"):
        cluster_relay_from_config(ServerConfig(cluster_view=True))


@contextlib.asynccontextmanager
async def node(broker: MosquittoBroker, name: str) -> AsyncIterator[Pipeline]:
    pipeline = Pipeline(FakeScorer(sample_rate=8000, window_s=1.0), CFG, ENGINE, node=name)
    sink = MqttSink(pipeline.hub, broker.url, prefix="sw", node=name, reconnect_min_s=0.05)
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(sink.run())]
    try:
        while not sink.connected:
            await asyncio.sleep(0.01)
        yield pipeline
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def call(pipeline: Pipeline, stream: str, synthetic: bool) -> None:
    handle = pipeline.open_stream(stream, source="test", sample_rate=8000)
    handle.feed(tone(3.0, 8000) if synthetic else noise(3.0, 8000))
    await handle.close()


async def collect(receive: Any, done: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while not done(seen):
            seen.append(json.loads(await receive()))
    return seen


def both_calls_ended(seen: list[dict[str, Any]]) -> bool:
    ends = {(m.get("node"), m["stream"]) for m in seen if m["type"] == "stream" and m["state"] == "end"}
    loads = {m["node"] for m in seen if m["type"] == "status"}
    return {("a", "call-a"), ("b", "call-b")} <= ends and loads == {"a", "b"}


def test_one_nodes_cluster_view_shows_every_nodes_calls_alarms_and_load(mosquitto: MosquittoBroker) -> None:
    async def body() -> tuple[list[dict[str, Any]], tuple[int, dict[str, Any]]]:
        async with node(mosquitto, "a") as a, node(mosquitto, "b") as b:
            relay = ClusterRelay(mosquitto.url, prefix="sw", node="a")
            relaying = asyncio.create_task(relay.run())
            config = ServerConfig(host="127.0.0.1", port=0, cluster_view=True)
            server = SpoofwatchServer(a, config, extra_routes=cluster_routes(relay, a.status))
            await server.start()
            try:
                while not relay.connected:
                    await asyncio.sleep(0.01)
                async with connect(f"ws://127.0.0.1:{server.port}/v1/cluster") as ws:
                    first = json.loads(await ws.recv())
                    assert first["type"] == "status" and first["node"] == "a"
                    await asyncio.gather(
                        call(a, "call-a", synthetic=False), call(b, "call-b", synthetic=True)
                    )
                    seen = await collect(ws.recv, both_calls_ended)
                status, _, raw = await http_get(server.port, "/healthz")
                return seen, (status, json.loads(raw))
            finally:
                await server.stop()
                relaying.cancel()
                await asyncio.gather(relaying, return_exceptions=True)

    seen, (status, health) = run(body())
    assert status == 200 and health["cluster_view"] is True
    nodes_online = {m["node"] for m in seen if m["type"] == "availability" and m["state"] == "online"}
    assert nodes_online == {"a", "b"}
    scored = {(m["node"], m["stream"]) for m in seen if m["type"] == "score"}
    assert {("a", "call-a"), ("b", "call-b")} <= scored
    alarms = [(m["node"], m["stream"], m["state"]) for m in seen if m["type"] == "alarm"]
    assert ("b", "call-b", "on") in alarms and not [a for a in alarms if a[1] == "call-a"]
    assert {m["node"] for m in seen if m["type"] == "status"} == {"a", "b"}


def test_cluster_route_on_a_bare_aiohttp_application(mosquitto: MosquittoBroker) -> None:
    async def body() -> list[dict[str, Any]]:
        async with node(mosquitto, "b") as b:
            relay = ClusterRelay(mosquitto.url, prefix="sw", node="a")
            relaying = asyncio.create_task(relay.run())
            app = web.Application()
            app.add_routes(cluster_routes(relay, lambda: StatusEvent("a", 0, 10, 0, 0)))
            try:
                while not relay.connected:
                    await asyncio.sleep(0.01)
                async with TestClient(TestServer(app)) as client:
                    ws = await client.ws_connect("/v1/cluster")
                    await call(b, "only-b", synthetic=True)

                    async def receive() -> str:
                        return str(await ws.receive_str())

                    seen = await collect(
                        receive, lambda s: any(m["type"] == "stream" and m["state"] == "end" for m in s)
                    )
                    await ws.close()
                    return seen
            finally:
                relaying.cancel()
                await asyncio.gather(relaying, return_exceptions=True)

    seen = run(body())
    assert seen[0] == {"type": "status", "v": 1, "node": "a", "streams": 0, "max_streams": 10,
                       "queued_windows": 0, "dropped_windows": 0,
                       "detector": None, "detector_sha": None}  # fmt: skip
    assert any(m["type"] == "alarm" and m["node"] == "b" and m["stream"] == "only-b" for m in seen)


def test_a_slow_subscriber_is_told_why() -> None:
    async def body() -> str:
        relay = ClusterRelay("mqtt://127.0.0.1:1", prefix="sw", subscriber_queue=3)
        sent: list[str] = []
        gate = asyncio.Event()

        async def send(text: str) -> None:
            sent.append(text)
            if len(sent) == 1:
                await gate.wait()  # a subscriber stuck on its first message

        forwarding = asyncio.create_task(forward_cluster(relay, "first", send))
        await asyncio.sleep(0.05)
        for seq in range(5):
            relay.on_message("sw/a/event", to_json(StatusEvent("a", seq, 4, 0, 0)).encode())
        gate.set()
        return await forwarding

    assert "too slow" in run(body())


def test_subscribers_are_ended_when_the_relay_stops() -> None:
    async def body() -> str:
        relay = ClusterRelay("mqtt://127.0.0.1:1", prefix="sw")  # no broker there: it keeps retrying
        running = asyncio.create_task(relay.run())
        sent: list[str] = []

        async def send(text: str) -> None:
            sent.append(text)

        forwarding = asyncio.create_task(forward_cluster(relay, "first", send))
        await asyncio.sleep(0.1)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        reason = await forwarding
        assert sent == ["first"] and not relay.connected
        return reason

    assert run(body()) == "server shutting down"
