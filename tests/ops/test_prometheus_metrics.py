"""/metrics scraped over HTTP from a bare aiohttp app and parsed with prometheus_client's
parser: the values follow streams opened, scored, dropped, refused and alarmed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import LimitExceededError, ProtocolError
from spoofwatch.ops.drift import CARD_KEY, drift_monitor_for, reference_section, window_features
from spoofwatch.ops.metrics import ServerMetrics, detector_identity
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.metrics_http import metrics_routes

CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class FakeWebhooks:
    """What the webhook sink's ``counters()`` returns, per endpoint."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, int]] = {
            "0:http://127.0.0.1:9": {
                "delivered": 0,
                "retried": 0,
                "dropped": 0,
                "dropped_gave_up": 0,
                "queued": 0,
            }
        }

    def counters(self) -> Mapping[str, Mapping[str, int]]:
        return self.values


class CardScorer(FakeScorer):
    def __init__(self, card: dict[str, object], delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self.card = card


def card() -> dict[str, object]:
    windows = [noise(1.0, seed=s) for s in range(20)]
    scores = FakeScorer().score_windows(np.stack(windows))
    feats = [window_features(w, 16000, float(x), True, -50.0) for w, x in zip(windows, scores, strict=True)]
    return {
        "name": "fake-detector",
        "created": "2026-12-06T00:00:00+00:00",
        "inference": {"backend": "torch"},
        CARD_KEY: reference_section(feats, ["bonafide"] * len(feats)),
    }


async def scrape(client: TestClient[web.Request, web.Application]) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    out: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def feed(pipeline: Pipeline, stream: str, source: str, audio: np.ndarray) -> None:
    handle = pipeline.open_stream(stream, source=source, sample_rate=16000)
    for start in range(0, len(audio), 1600):
        await handle.feed_wait(audio[start : start + 1600])
    await handle.close()


def test_metrics_follow_streams_scores_drops_refusals_alarms_and_webhooks() -> None:
    async def body() -> None:
        engine = EngineConfig(
            max_batch=4, max_wait_ms=1, max_streams=3, drift_min_windows=5, drift_threshold=0.3
        )
        pipeline = Pipeline(CardScorer(card()), CFG, engine, node="n1")
        drift = drift_monitor_for(pipeline, engine)
        webhooks = FakeWebhooks()
        metrics = ServerMetrics(pipeline, drift=drift, webhooks=[webhooks])
        app = web.Application()
        app.add_routes(metrics_routes(metrics))
        worker = asyncio.create_task(pipeline.run())
        async with TestClient(TestServer(app)) as client:
            before = await scrape(client)
            assert value(before, "spoofwatch_windows_scored_total") == 0
            assert value(before, "spoofwatch_streams_max") == 3
            info = {
                k: v
                for (n, labels), _ in before.items()
                if n == "spoofwatch_detector_info"
                for k, v in labels
            }
            assert info["name"] == "fake-detector" and info["threshold"] == "0.5"
            assert info["version"] == "2026-12-06T00:00:00+00:00" and len(info["sha256"]) == 64

            live = pipeline.open_stream("live", source="twilio", sample_rate=16000)
            during = await scrape(client)
            assert value(during, "spoofwatch_streams_open", source="twilio") == 1
            assert value(during, "spoofwatch_streams_opened_total", source="twilio") == 1
            with pytest.raises(ProtocolError):
                pipeline.open_stream("live", source="twilio", sample_rate=16000)
            await live.close()

            await feed(pipeline, "calm", "ws", noise(4.0))
            calm = await scrape(client)
            scored = value(calm, "spoofwatch_windows_scored_total")
            assert scored == 7  # (4 s - 1 s) / 0.5 s + 1
            assert value(calm, "spoofwatch_scoring_lag_seconds_count") == scored
            assert value(calm, "spoofwatch_streams_open", source="twilio") == 0
            assert value(calm, "spoofwatch_refused_total", reason="duplicate_stream") == 1
            assert value(calm, "spoofwatch_alarms_total") == 0
            assert value(calm, "spoofwatch_drift_active") == 0
            assert value(calm, "spoofwatch_drift_windows") == scored

            await feed(pipeline, "fake", "ws", np.concatenate([noise(2.0), tone(6.0)]))
            alarmed = await scrape(client)
            assert value(alarmed, "spoofwatch_alarms_total") == 1
            assert value(alarmed, "spoofwatch_streams_opened_total", source="ws") == 2
            assert value(alarmed, "spoofwatch_drift_statistic") > 0.3
            assert value(alarmed, "spoofwatch_drift_active") == 1
            assert value(alarmed, "spoofwatch_drift_paused") == 0
            assert value(alarmed, "spoofwatch_drift_divergence", feature="score") > 0.3

            for n in range(3):
                pipeline.open_stream(f"full-{n}", source="ws", sample_rate=16000)
            with pytest.raises(LimitExceededError):
                pipeline.open_stream("one-too-many", source="ws", sample_rate=16000)
            await pipeline.close_all("test over")
            webhooks.values["0:http://127.0.0.1:9"].update(
                delivered=5, retried=2, dropped=1, dropped_gave_up=1
            )
            after = await scrape(client)
            assert value(after, "spoofwatch_refused_total", reason="max_streams") == 1
            assert value(after, "spoofwatch_errors_total", code="stream_closed") == 3
            endpoint = "0:http://127.0.0.1:9"
            assert (
                value(after, "spoofwatch_webhook_deliveries_total", endpoint=endpoint, outcome="delivered")
                == 5
            )
            assert (
                value(after, "spoofwatch_webhook_deliveries_total", endpoint=endpoint, outcome="retried") == 2
            )
            assert value(after, "spoofwatch_webhook_dropped_total", endpoint=endpoint, reason="gave_up") == 1
        worker.cancel()

    asyncio.run(body())


def test_dropped_windows_are_counted_by_reason() -> None:
    """A slow scorer and a two-window queue: live audio pushes windows out (queue_full);
    closing without waiting for the rest discards them (stream_ended)."""

    async def body() -> None:
        engine = EngineConfig(max_batch=1, max_wait_ms=0, queue_windows=2, workers=1)
        pipeline = Pipeline(CardScorer(card(), delay_s=0.2), CFG, engine)
        metrics = ServerMetrics(pipeline)
        app = web.Application()
        app.add_routes(metrics_routes(metrics))
        worker = asyncio.create_task(pipeline.run())
        async with TestClient(TestServer(app)) as client:
            handle = pipeline.open_stream("burst", source="ws", sample_rate=16000)
            handle.feed(noise(6.0))  # 11 windows at once into a queue of 2
            queued = await scrape(client)
            assert value(queued, "spoofwatch_queue_windows") >= 1
            assert value(queued, "spoofwatch_windows_dropped_total", reason="queue_full") == 9
            with pytest.raises(TimeoutError):  # a close cut short ends the stream, discarding its queue
                await asyncio.wait_for(handle.close(), 0.01)
            ended = await scrape(client)
            assert value(ended, "spoofwatch_windows_dropped_total", reason="stream_ended") >= 1
            assert value(ended, "spoofwatch_queue_windows") == 0
        worker.cancel()

    asyncio.run(body())


def test_two_servers_in_one_process_keep_their_own_registries() -> None:
    a = ServerMetrics(Pipeline(FakeScorer(), CFG))
    b = ServerMetrics(Pipeline(FakeScorer(), CFG))
    a.alarms.inc()
    assert a.registry.get_sample_value("spoofwatch_alarms_total") == 1
    assert b.registry.get_sample_value("spoofwatch_alarms_total") == 0


def test_detector_identity_hash_ignores_how_the_detector_runs() -> None:
    one = CardScorer({"name": "x", "inference": {"backend": "torch"}})
    two = CardScorer({"name": "x", "inference": {"backend": "onnxruntime"}})
    other = CardScorer({"name": "x", "calibration": {"scale": 2}})
    assert detector_identity(one)["sha256"] == detector_identity(two)["sha256"]
    assert detector_identity(one)["sha256"] != detector_identity(other)["sha256"]
    assert detector_identity(FakeScorer())["name"] == "FakeScorer"


def test_admission_refusals_are_counted_by_reason() -> None:
    from spoofwatch.stream.net.admission import Admission, StreamRequest

    async def body() -> None:
        engine = EngineConfig(max_streams=2, admission="queue", queue_timeout_s=0.05)
        pipeline = Pipeline(FakeScorer(), CFG, engine)
        metrics = ServerMetrics(pipeline)
        admission = Admission.of(pipeline)
        first = await admission.open(
            [StreamRequest("a", "audiohook", 8000), StreamRequest("b", "audiohook", 8000)]
        )
        with pytest.raises(LimitExceededError, match="after waiting"):
            await admission.open([StreamRequest("c", "audiohook", 8000)])
        with pytest.raises(LimitExceededError, match="call needs 3 streams"):
            await admission.open([StreamRequest(s, "audiohook", 8000) for s in "xyz"])
        refused = metrics.registry.get_sample_value
        assert refused("spoofwatch_refused_total", {"reason": "queue_timeout"}) == 1
        assert refused("spoofwatch_refused_total", {"reason": "call_too_large"}) == 1
        assert refused("spoofwatch_streams_open", {"source": "audiohook"}) == 2
        for handle in first:
            await handle.close()

    asyncio.run(body())


def test_draining_and_token_refusals_are_counted_by_reason() -> None:
    from spoofwatch.config import ServerConfig
    from spoofwatch.stream.net.server import SpoofwatchServer

    async def body() -> None:
        pipeline = Pipeline(FakeScorer(), CFG, EngineConfig())
        metrics = ServerMetrics(pipeline)
        server = SpoofwatchServer(pipeline, ServerConfig(port=0, token="s3cret"))
        await server.start()
        try:
            async with TestClient(TestServer(web.Application())) as client:
                url = f"http://127.0.0.1:{server.port}"
                assert (await client.session.get(f"{url}/healthz")).status == 401
                assert (await client.session.get(f"{url}/healthz?token=s3cret")).status == 200
        finally:
            await server.stop()
        pipeline.drain.begin()
        with pytest.raises(LimitExceededError, match="draining"):
            pipeline.open_stream("late", source="ws_ingest", sample_rate=16000)
        pipeline.open_stream("local", source="mic", sample_rate=16000, trusted=True)  # not a network call
        refused = metrics.registry.get_sample_value
        assert refused("spoofwatch_refused_total", {"reason": "unauthorized"}) == 1
        assert refused("spoofwatch_refused_total", {"reason": "draining"}) == 1

    asyncio.run(body())
