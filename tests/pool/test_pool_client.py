"""RayScorer over a fake pool handle: retry once, fallback, health, shedding, batcher
guarantees. The real pool (Ray Serve) is tested in test_pool_ray.py."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import streamkit
from fakes import FakeScorer, noise
from spoofwatch.config import EngineConfig, StreamConfig, load_settings
from spoofwatch.errors import ConfigError, LimitExceededError, ModelError
from spoofwatch.events import ScorerEvent, parse_event, to_json
from spoofwatch.model.scorer import scorer_health
from spoofwatch.pool.client import PoolCallFailed, RayScorer
from spoofwatch.pool.control import PoolError, spec_from_args
from spoofwatch.pool.spec import PoolSpec
from spoofwatch.stream.app import publish_scorer_health
from spoofwatch.stream.core.windowing import Window
from spoofwatch.stream.engine.batcher import Batcher, WindowJob
from spoofwatch.stream.engine.pipeline import Pipeline

IDENTITY = {"name": "fake-detector", "version": "0123456789abcdef", "encoder": "fake"}


class FakePool:
    """A pool of fake replicas scoring with FakeScorer; ``fail`` lists what the next calls
    do: "die" (a replica died mid-batch) or "ok"."""

    address = "fake:6379"

    def __init__(self, scorer: FakeScorer, card: dict[str, Any] | None = None) -> None:
        self.scorer = scorer
        self.card = card or {"name": IDENTITY["name"]}
        self.plan: list[str] = []
        self.down = False
        self.calls = 0

    def describe(self, timeout_s: float) -> dict[str, Any]:
        if self.down:
            raise PoolCallFailed("connection refused")
        return {
            "identity": IDENTITY,
            "sample_rate": self.scorer.sample_rate,
            "window_samples": self.scorer.window_samples,
            "threshold": self.scorer.threshold,
            "card": self.card,
        }

    def score(self, windows: NDArray[np.float32], timeout_s: float) -> dict[str, Any]:
        self.calls += 1
        step = self.plan.pop(0) if self.plan else "ok"
        if self.down or step == "die":
            raise PoolCallFailed("ActorDiedError: the replica died mid-batch")
        if step == "bad":
            raise ModelError("expected finite audio")
        return {"scores": self.scorer.score_windows(windows), "identity": IDENTITY, "replica": "r1"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def windows(n: int = 3, samples: int = 16000) -> NDArray[np.float32]:
    return np.stack([noise(samples / 16000, seed=i) for i in range(n)]).astype(np.float32)


def test_scores_come_from_the_pool_with_its_geometry_and_card() -> None:
    local = FakeScorer()
    pool = FakePool(FakeScorer())
    scorer = RayScorer(pool)
    batch = windows()
    np.testing.assert_allclose(scorer.score_windows(batch), local.score_windows(batch), atol=1e-9)
    assert (scorer.sample_rate, scorer.window_samples, scorer.threshold) == (16000, 16000, 0.5)
    assert scorer.card == {"name": "fake-detector"} and scorer.identity == IDENTITY
    assert scorer_health(scorer) == {
        "kind": "ray",
        "address": "fake:6379",
        "pool": "ok",
        "fallback": None,
        "scoring": "pool",
        "accepting": True,
        "detector": IDENTITY,
        "pool_batches": 1,
        "fallback_batches": 0,
        "retries": 0,
        "last_error": None,
    }
    assert scorer_health(local) is None


def test_a_replica_dying_mid_batch_is_retried_once() -> None:
    pool = FakePool(FakeScorer())
    scorer = RayScorer(pool)
    pool.plan = ["die", "ok"]
    batch = windows()
    np.testing.assert_allclose(scorer.score_windows(batch), FakeScorer().score_windows(batch))
    assert pool.calls == 2 and scorer.retries == 1 and scorer.health()["pool"] == "ok"


def test_bad_windows_are_not_retried() -> None:
    pool = FakePool(FakeScorer())
    scorer = RayScorer(pool)
    pool.plan = ["bad"]
    with pytest.raises(ModelError, match="finite"):
        scorer.score_windows(windows())
    assert pool.calls == 1 and scorer.health()["pool"] == "ok"


def test_unreachable_pool_without_fallback_fails_fast_sheds_load_and_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    pool = FakePool(FakeScorer())
    scorer = RayScorer(pool, probe_interval_s=5.0, clock=clock)
    changes: list[dict[str, Any]] = []
    scorer.on_health_change(changes.append)
    pool.plan = ["die", "die"]
    with caplog.at_level(logging.ERROR), pytest.raises(PoolError, match="unreachable: ActorDiedError"):
        scorer.score_windows(windows())
    assert "refusing new calls" in caplog.text
    health = scorer.health()
    assert (health["pool"], health["scoring"], health["accepting"]) == ("unreachable", "none", False)
    assert [c["pool"] for c in changes] == ["unreachable"]
    calls = pool.calls
    with pytest.raises(PoolError):  # within the probe interval: no call to the pool
        scorer.score_windows(windows())
    assert pool.calls == calls
    pipeline = Pipeline(scorer, StreamConfig(window_s=1.0), EngineConfig())
    with pytest.raises(LimitExceededError, match="inference pool unreachable"):
        pipeline.open_stream("call-1", source="test", sample_rate=16000)
    clock.now += 5.0
    batch = windows()
    np.testing.assert_allclose(scorer.score_windows(batch), FakeScorer().score_windows(batch))
    assert scorer.health()["pool"] == "ok" and [c["pool"] for c in changes] == ["unreachable", "ok"]
    pipeline.open_stream("call-1", source="test", sample_rate=16000)


def test_unreachable_pool_falls_back_to_local_scoring() -> None:
    clock = Clock()
    pool = FakePool(FakeScorer())
    local = FakeScorer()
    scorer = RayScorer(pool, fallback=local, clock=clock)
    pool.down = True
    batch = windows()
    np.testing.assert_allclose(scorer.score_windows(batch), local.score_windows(batch))
    np.testing.assert_allclose(scorer.score_windows(batch), local.score_windows(batch))
    health = scorer.health()
    assert (health["pool"], health["scoring"], health["accepting"]) == ("unreachable", "local", True)
    assert health["fallback_batches"] == 2 and health["retries"] == 1
    pool.down = False
    clock.now += 10.0
    scorer.score_windows(batch)
    assert scorer.health()["pool"] == "ok" and scorer.health()["pool_batches"] == 1


class CountingScorer(FakeScorer):
    """A local scorer that records the most calls it ever ran at once."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s=delay_s)
        self._guard = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def score_windows(self, windows: NDArray[np.float32]) -> NDArray[np.float64]:
        with self._guard:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            return super().score_windows(windows)
        finally:
            with self._guard:
                self.running -= 1


def test_a_node_keeps_ray_inflight_batches_in_flight_but_scores_workers_at_once_when_down() -> None:
    pool = FakePool(FakeScorer())
    local = CountingScorer(delay_s=0.05)
    scorer = RayScorer(pool, fallback=local, inflight=6, fallback_workers=2)
    engine = EngineConfig(workers=2, ray_inflight=6)
    assert Pipeline(scorer, StreamConfig(window_s=1.0, hop_s=0.5), engine).batcher.workers == 6
    assert Pipeline(local, StreamConfig(window_s=1.0, hop_s=0.5), engine).batcher.workers == 2
    pool.down = True
    batch = windows(1)
    with ThreadPoolExecutor(max_workers=6) as threads:
        results = list(threads.map(lambda _: scorer.score_windows(batch), range(12)))
    assert all(np.allclose(r, local.score_windows(batch)) for r in results)
    assert local.most_at_once == 2
    assert scorer.health()["fallback_batches"] == 12
    with pytest.raises(ConfigError, match="ray_inflight"):
        RayScorer(pool, inflight=0)


def test_start_with_the_pool_down() -> None:
    pool = FakePool(FakeScorer())
    pool.down = True
    with pytest.raises(PoolError, match="does not answer"):
        RayScorer(pool)
    scorer = RayScorer(pool, fallback=FakeScorer())
    assert scorer.health()["pool"] == "unreachable" and scorer.window_samples == 16000


def test_fallback_must_be_the_pools_detector() -> None:
    with pytest.raises(ConfigError, match="differ"):
        RayScorer(FakePool(FakeScorer()), fallback=FakeScorer(window_s=2.0))
    other = FakeScorer()
    other.card = {"name": "another"}  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="same detector"):
        RayScorer(FakePool(FakeScorer()), fallback=other)


def test_companions_are_refused_with_a_clear_error() -> None:
    scorer = RayScorer(FakePool(FakeScorer()))
    with pytest.raises(ModelError, match="--scorer local"):
        scorer.score_windows(windows(), windows())


def test_batcher_keeps_order_and_loses_nothing_when_replicas_die() -> None:
    """The unchanged batcher over the ray scorer: every window of every stream comes back
    scored, in order, although replicas die (each failure retried once)."""
    pool = FakePool(FakeScorer(delay_s=0.002))
    scorer = RayScorer(pool)
    pool.plan = ["ok", "die", "ok", "ok", "die", "ok"] * 4
    results: dict[str, list[tuple[int, float | None, str | None]]] = defaultdict(list)

    async def on_result(job: WindowJob, score: float | None, error: str | None) -> None:
        results[job.stream].append((job.window.index, score, error))

    async def body() -> None:
        batcher = Batcher(scorer, on_result, max_batch=4, max_wait_ms=1, workers=2)
        worker = asyncio.create_task(batcher.run())
        for index in range(6):
            for stream in ("a", "b", "c"):
                samples = noise(1.0, seed=index * 10 + ord(stream))
                window = Window(index, index * 16000, samples, 16000, tiled=False)
                batcher.submit_nowait(WindowJob(stream, window))
            await asyncio.sleep(0)
        await streamkit.until(lambda: batcher.counters.scored == 18, what="18 windows scored")
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        assert batcher.counters.dropped == 0 and batcher.counters.failed == 0

    streamkit.run(body())
    assert scorer.retries >= 2
    for stream, got in results.items():
        assert [i for i, _, _ in got] == list(range(6)), stream
        assert all(error is None and score is not None for _, score, error in got)


def test_health_changes_become_scorer_events() -> None:
    pool = FakePool(FakeScorer())
    scorer = RayScorer(pool)

    async def body() -> list[Any]:
        pipeline = Pipeline(scorer, StreamConfig(window_s=1.0), EngineConfig(), node="n1")
        sub = pipeline.hub.subscribe(None, name="test")
        publish_scorer_health(pipeline)
        pool.down = True
        with pytest.raises(PoolError):
            await asyncio.to_thread(scorer.score_windows, windows())
        event = await asyncio.wait_for(sub.get(), 5)
        return [event]

    (event,) = streamkit.run(body())
    assert isinstance(event, ScorerEvent)
    assert (event.node, event.pool, event.scoring) == ("n1", "unreachable", "none")
    assert "ActorDiedError" in event.message
    assert parse_event(to_json(event)) == event


def test_healthz_reports_the_pool() -> None:
    pool = FakePool(FakeScorer())
    scorer = RayScorer(pool)

    async def body() -> dict[str, Any]:
        async with streamkit.serving(scorer=scorer) as (server, _):
            _, _, payload = await streamkit.http_get(server.port, "/healthz")
            health: dict[str, Any] = json.loads(payload)
            return health

    health = streamkit.run(body())
    assert health["status"] == "ok" and health["scorer"]["pool"] == "ok"
    assert health["scorer"]["detector"] == IDENTITY and health["detector"] == "fake-detector"


def test_engine_scorer_options() -> None:
    env = {"SPOOFWATCH_ENGINE_SCORER": "ray,local", "SPOOFWATCH_ENGINE_RAY_ADDRESS": "h:1"}
    settings = load_settings(env=env)
    assert (settings.engine.scorer, settings.engine.ray_address) == ("ray,local", "h:1")
    with pytest.raises(ConfigError, match=r"engine\.scorer: expected one of"):
        EngineConfig(scorer="remote")
    with pytest.raises(ConfigError, match="ray_timeout_s"):
        EngineConfig(ray_timeout_s=0)
    assert load_settings(env={"SPOOFWATCH_ENGINE_RAY_INFLIGHT": "12"}).engine.ray_inflight == 12
    assert EngineConfig().ray_inflight == 8
    from spoofwatch.cli import _server_settings, build_parser

    args = build_parser().parse_args(["serve", "--scorer", "ray", "--ray-inflight", "3"])
    assert _server_settings(args).engine.ray_inflight == 3
    with pytest.raises(ConfigError, match=r"engine\.ray_inflight: expected 1\.\.256"):
        EngineConfig(ray_inflight=0)


def test_pool_spec() -> None:
    fixed = spec_from_args(detector=None, replicas=2, min_replicas=None, max_replicas=None)
    assert fixed.deployment_options()["num_replicas"] == 2
    scaling = spec_from_args(detector=None, replicas=None, min_replicas=1, max_replicas=3, num_cpus=2.0)
    options = scaling.deployment_options()
    assert "num_replicas" not in options and options["autoscaling_config"]["max_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 2.0} and scaling.torch_threads == 2
    with pytest.raises(ConfigError, match="--replicas or"):
        spec_from_args(detector=None, replicas=2, min_replicas=1, max_replicas=None)
    with pytest.raises(ConfigError, match="min_replicas <= max_replicas"):
        PoolSpec(min_replicas=3, max_replicas=2)
    with pytest.raises(ConfigError, match="num_gpus"):
        PoolSpec(num_gpus=-1)
    assert fixed.device == "cpu"
    gpu = spec_from_args(detector=None, replicas=4, min_replicas=None, max_replicas=None, num_gpus=0.25)
    assert gpu.device == "cuda"  # Ray hands each replica its share of one GPU as cuda
    assert gpu.deployment_options()["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.25}


def test_gpu_replicas_are_refused_on_a_cluster_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    from spoofwatch.pool.control import check_gpus

    gpu = PoolSpec(num_gpus=1.0)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(PoolError, match=r"--num-gpus 1: the Ray cluster at h:1 has 0 GPU\(s\)"):
        check_gpus(gpu, "h:1")
    check_gpus(PoolSpec(), "h:1")  # CPU replicas ask nothing of the cluster
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    check_gpus(gpu, "h:1")


def test_bench_comparison_gives_ratios_to_the_first_run() -> None:
    from spoofwatch.ops.bench import BenchReport
    from spoofwatch.ops.bench_scorers import ScorerRun, compare, format_comparison

    def report(streams: int, p99: float) -> BenchReport:
        return BenchReport(
            rtf=0.05,
            cpu_rtf=0.05,
            ms_per_window=50.0,
            max_realtime_streams=streams,
            p50_latency_ms=p99 / 2,
            p99_latency_ms=p99,
            windows_per_s=float(streams),
            dropped_windows=0,
            streams=streams,
            peak_rss_mb=1.0,
            setup={},
        )

    table = compare([ScorerRun("local", report(40, 400.0)), ScorerRun("ray-2", report(34, 600.0))])
    assert "streams_vs_first" not in table["local"]
    assert table["ray-2"]["streams_vs_first"] == pytest.approx(0.85)
    assert table["ray-2"]["p99_vs_first"] == pytest.approx(1.5)
    assert "streams x0.85 of the first, p99 x1.50" in format_comparison(table)
