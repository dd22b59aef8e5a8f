"""Feedback end to end: a pipeline with live streams, feedback over REST (a bare aiohttp
app until the server mounts the route) and over MQTT with a real mosquitto; what is
stored is the marked windows' features, label, stream metadata and the scoring card."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import streamkit
from fakes import FeatureFakeScorer, noise, tone, window_features
from mosquitto_broker import MosquittoBroker
from spoofwatch.config import ServerConfig
from spoofwatch.events import AlarmEvent, ErrorEvent, Event, FeedbackEvent, ScoreEvent, parse_event
from spoofwatch.feedback.capture import FeatureRing
from spoofwatch.feedback.desk import FeedbackDesk
from spoofwatch.feedback.mqtt_feedback import feedback_topic, mqtt_feedback_from_config
from spoofwatch.feedback.routes import feedback_routes
from spoofwatch.learning.feedback_store import FeedbackStore, read_feedback
from spoofwatch.model.identity import CardIdentity
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.sinks.mqtt import MqttSink

CARD = CardIdentity(name="test-card", sha256="c" * 64, version="7")


@contextlib.asynccontextmanager
async def pipeline_with_feedback(
    directory: Path | None,
) -> AsyncIterator[tuple[Pipeline, FeedbackDesk | None]]:
    pipeline = Pipeline(FeatureFakeScorer(), streamkit.CFG, streamkit.ENGINE, node="n1", card=CARD)
    desk = None if directory is None else FeedbackDesk(pipeline, FeatureRing(), FeedbackStore(directory))
    worker = asyncio.create_task(pipeline.run())
    try:
        yield pipeline, desk
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


async def synthetic_call(pipeline: Pipeline, stream: str, *, end: bool) -> list[Event]:
    """4 s of noise (bona fide to the fake) then 6 s of tone (spoof): one alarm."""
    sub = pipeline.hub.subscribe(stream, maxsize=10_000)
    handle = pipeline.open_stream(stream, source="twilio", sample_rate=8000)
    audio = np.concatenate([noise(4.0, 8000), tone(6.0, 8000)])
    for start in range(0, len(audio), 800):
        handle.feed(audio[start : start + 800])
        await asyncio.sleep(0)
    if end:
        await handle.close()
    else:
        await streamkit.until(lambda: handle.pending == 0, what="every window scored")
    events = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    pipeline.hub.unsubscribe(sub)
    return events


def test_rest_feedback_on_an_alarm_stores_its_windows_features_label_and_card(tmp_path: Path) -> None:
    async def body() -> None:
        async with pipeline_with_feedback(tmp_path / "fb") as (pipeline, desk):
            events = await synthetic_call(pipeline, "call-1", end=True)  # late: after the call ended
            alarm_on = next(e for e in events if isinstance(e, AlarmEvent) and e.state == "on")
            alarm_off = next(e for e in events if isinstance(e, AlarmEvent) and e.state == "off")
            app = web.Application()
            app.add_routes(feedback_routes(desk))
            sub = pipeline.hub.subscribe(None)
            async with TestClient(TestServer(app)) as client:
                message = {
                    "stream": "call-1",
                    "label": "confirmed_synthetic",
                    "alarm_t": alarm_on.t,
                    "note": "caller admitted a TTS app",
                    "analyst": "ana",
                }
                response = await client.post("/v1/feedback", json=message)
                assert response.status == 201, await response.text()
                answer = await response.json()
                bad = await client.post("/v1/feedback", json={"stream": "call-1", "label": "maybe"})
                unknown = await client.post("/v1/feedback", json={"stream": "nope", "label": "false_alarm"})
                junk = await client.post("/v1/feedback", data=b"{not json")
                far = await client.post(
                    "/v1/feedback", json={"stream": "call-1", "label": "false_alarm", "t_start": 500}
                )
                assert (bad.status, unknown.status, junk.status, far.status) == (400, 404, 400, 404)
                assert "label: expected one of" in (await bad.json())["error"]
                assert "no recent windows kept" in (await unknown.json())["error"]
                assert "invalid JSON" in (await junk.json())["error"]
                assert "no kept window overlaps" in (await far.json())["error"]
            published = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
        feedback_events = [e for e in published if isinstance(e, FeedbackEvent)]
        assert len(feedback_events) == 1  # refused feedback publishes nothing
        event = feedback_events[0]
        assert parse_event(json.dumps(answer)) == event  # the answer is the event published
        assert (event.label, event.via, event.detector_sha, event.id) == (
            "confirmed_synthetic",
            "rest",
            CARD.short,
            1,
        )
        scores = [e for e in events if isinstance(e, ScoreEvent)]
        marked = [s for s in scores if s.t_end > alarm_on.t and s.t_start < alarm_off.t]
        [stored] = read_feedback(tmp_path / "fb")
        windows = stored.metadata["windows"]
        assert [w["seq"] for w in windows] == [s.seq for s in marked]
        assert event.windows == len(marked) == stored.window_count > 0
        meta = stored.metadata
        assert (stored.stream_id, meta["source"], meta["sample_rate"], meta["live"], meta["node"]) == (
            "call-1",
            "twilio",
            8000,
            False,
            "n1",
        )
        assert (stored.detector_name, meta["detector_version"], stored.detector_sha256) == (
            "test-card",
            "7",
            CARD.sha256,
        )
        assert (stored.label, stored.note, meta["analyst"], meta["alarm_t"], meta["via"]) == (
            "confirmed_synthetic",
            "caller admitted a TTS app",
            "ana",
            alarm_on.t,
            "rest",
        )
        # The features stored are the ones the scorer computed for those windows (the
        # fake's fourth feature is the window's score; the store keeps float16).
        scores_by_seq = {s.seq: s for s in scores}
        for window, row in zip(windows, stored.features, strict=True):
            assert window["score"] == pytest.approx(scores_by_seq[window["seq"]].score)
            assert float(row[3]) == pytest.approx(window["score"], rel=2e-3, abs=2e-3)

    streamkit.run(body())


def test_rest_feedback_without_a_feedback_dir_is_refused_clearly() -> None:
    async def body() -> None:
        app = web.Application()
        app.add_routes(feedback_routes(None))
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/v1/feedback", json={"stream": "s", "label": "false_alarm"})
            assert response.status == 503
            assert "--feedback-dir" in (await response.json())["error"]

    streamkit.run(body())


def test_feature_capture_keeps_the_features_the_scorer_computed() -> None:
    scorer = FeatureFakeScorer()
    windows = np.stack([noise(1.0), tone(1.0)])
    scores, feats = scorer.score_windows_with_features(windows)
    np.testing.assert_array_equal(feats, window_features(windows, scores))


@pytest.mark.broker
def test_mqtt_feedback_is_recorded_and_bad_messages_answered_with_an_error_event(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    config = ServerConfig(mqtt=mosquitto.url, node=f"n{uuid.uuid4().hex[:6]}")
    topic = feedback_topic(config.mqtt_prefix, config.node)

    async def body() -> None:
        async with pipeline_with_feedback(tmp_path / "fb") as (pipeline, desk):
            listener = mqtt_feedback_from_config(desk, pipeline.hub, config)
            sink = MqttSink(pipeline.hub, mosquitto.url, prefix=config.mqtt_prefix, node=config.node)
            tasks = [asyncio.create_task(listener.run()), asyncio.create_task(sink.run())]
            try:
                async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="analyst") as analyst:
                    await analyst.subscribe(f"{config.mqtt_prefix}/{config.node}/#", qos=1)
                    async with asyncio.timeout(10):
                        await listener.subscribed.wait()
                    await synthetic_call(pipeline, "call-2", end=False)  # feedback while the call is live
                    await analyst.publish(topic, b"[not an object", qos=1)
                    await analyst.publish(topic, json.dumps({"stream": "call-2", "label": "x"}), qos=1)
                    good = {
                        "stream": "call-2",
                        "label": "false_alarm",
                        "t_start": 2.0,
                        "t_end": 6.0,
                        "note": "agent",
                    }
                    await analyst.publish(topic, json.dumps(good), qos=1)
                    seen: list[Event] = []
                    async with asyncio.timeout(10):
                        async for message in analyst.messages:
                            if str(message.topic).endswith("/event") and isinstance(message.payload, bytes):
                                event = parse_event(message.payload)
                                seen.append(event)
                                if isinstance(event, FeedbackEvent):
                                    break
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        errors = [e for e in seen if isinstance(e, ErrorEvent) and e.code == "bad_feedback"]
        assert len(errors) == 2
        assert "invalid JSON" in errors[0].message and errors[0].stream is None
        assert "label: expected one of" in errors[1].message and errors[1].stream == "call-2"
        [feedback] = [e for e in seen if isinstance(e, FeedbackEvent)]
        assert (feedback.stream, feedback.label, feedback.via, feedback.note) == (
            "call-2",
            "false_alarm",
            "mqtt",
            "agent",
        )
        [stored] = read_feedback(tmp_path / "fb")
        assert stored.metadata["live"] and stored.metadata["via"] == "mqtt" and stored.label == "false_alarm"
        windows = stored.metadata["windows"]
        assert windows and all(w["t_end"] > 2.0 and w["t_start"] < 6.0 for w in windows)
        assert (listener.recorded, listener.refused) == (1, 2)

    streamkit.run(body())
