"""The inference pool on a real local Ray cluster (2 CPUs) with 2 replicas: the same
scores as the local detector, a replica killed mid-run loses no window of any stream,
``pool status``/``down``, and the local fallback once the pool is gone. One module-scoped
cluster; the tests run in file order (the last one removes the pool)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

import streamkit
from fakes import EXAMPLE_SPEECH
from ray_pool import RayPool, ray_pool
from spoofwatch.audio.files import load_audio
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.events import ScoreEvent
from spoofwatch.model.artifact import load_detector
from spoofwatch.model.detector import Detector
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.pool.client import RayPoolHandle, RayScorer
from spoofwatch.pool.identity import card_identity
from spoofwatch.stream.engine.pipeline import Pipeline
from waits import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SYNTHETIC = EXAMPLE_SPEECH.parent / "synthetic_espeak.flac"


@pytest.fixture(scope="module")
def pool() -> Iterator[RayPool]:
    with ray_pool(replicas=2) as running:
        yield running


@pytest.fixture(scope="module")
def local() -> Detector:
    return load_detector(None, num_threads=1)


def calls() -> dict[str, np.ndarray]:
    real = load_audio(EXAMPLE_SPEECH, 16000).samples
    fake = load_audio(SYNTHETIC, 16000).samples
    return {f"call-{i}": (real if i % 2 else fake)[: 9 * 16000] for i in range(4)}


def run_calls(
    scorer: WindowScorer, during: Any = None, audio: dict[str, np.ndarray] | None = None
) -> dict[str, list[tuple[float, float]]]:
    """Each call through a real Pipeline (2 workers, batches of up to 4): its score events
    as (t_start, p_spoof). ``during(scored)`` runs after each score event."""

    audio = audio or calls()
    seconds = min(len(a) for a in audio.values()) // 16000

    async def body() -> dict[str, list[tuple[float, float]]]:
        engine = EngineConfig(max_batch=4, max_wait_ms=5, workers=2)
        pipeline = Pipeline(scorer, StreamConfig(), engine)
        sub = pipeline.hub.subscribe(None, maxsize=10_000, name="test")
        worker = asyncio.create_task(pipeline.run())
        scores: dict[str, list[tuple[float, float]]] = defaultdict(list)

        async def drain() -> None:
            while True:
                event = await sub.get()
                if isinstance(event, ScoreEvent):
                    scores[event.stream].append((event.t_start, event.p_spoof))
                    if during is not None:
                        await asyncio.to_thread(during, sum(len(v) for v in scores.values()))

        reader = asyncio.create_task(drain())
        handles = [
            pipeline.open_stream(name, source="test", sample_rate=16000, trusted=True) for name in audio
        ]
        for start in range(0, seconds * 16000, 16000):
            for handle, samples in zip(handles, audio.values(), strict=True):
                await handle.feed_wait(samples[start : start + 16000])
        await asyncio.gather(*(h.close() for h in handles))
        await asyncio.sleep(0.2)
        reader.cancel()
        worker.cancel()
        await asyncio.gather(reader, worker, return_exceptions=True)
        assert pipeline.batcher.counters.dropped == 0 and pipeline.batcher.counters.failed == 0
        return dict(scores)

    return streamkit.run(body(), timeout_s=300)


def test_pool_scores_equal_the_local_detector(pool: RayPool, local: Detector) -> None:
    status, report = pool.cli("status")
    assert status == 0 and report["replicas"] == {"RUNNING": 2}
    assert report["detector"] == card_identity(local.card, local.encoder.identity.name)
    assert report["device"] == "cpu"
    scorer = RayScorer(RayPoolHandle(pool.address))
    assert (scorer.sample_rate, scorer.window_samples, scorer.threshold) == (
        local.sample_rate,
        local.window_samples,
        local.threshold,
    )
    windows = np.stack([a[:64000] for a in list(calls().values())[:2]])
    np.testing.assert_allclose(scorer.score_windows(windows), local.score_windows(windows), atol=1e-4)


def test_killing_a_replica_mid_run_loses_no_window(pool: RayPool, local: Detector) -> None:
    scorer = RayScorer(RayPoolHandle(pool.address), timeout_s=20.0)
    expected = run_calls(local)

    def kill_once(scored: int) -> None:
        if scored == 6 and not pool.killed:
            pool.kill_replica()

    got = run_calls(scorer, during=kill_once)
    assert pool.killed, "the run ended before a replica could be killed"
    assert sorted(got) == sorted(expected)
    for call, want in expected.items():
        assert [t for t, _ in got[call]] == [t for t, _ in want], call
        np.testing.assert_allclose([p for _, p in got[call]], [p for _, p in want], atol=1e-4)
    assert scorer.health()["pool"] == "ok"


def test_serve_scores_on_the_pool(pool: RayPool, local: Detector) -> None:
    """``spoofwatch serve --scorer ray`` in its own process (another Ray driver): a
    WebSocket call's scores equal the local detector's; /healthz shows the pool."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "spoofwatch", "serve", "--scorer", "ray", "--ray-address", pool.address]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--node", "ingest-1"],
        env={**pool.env, "SPOOFWATCH_ENGINE_RAY_TIMEOUT_S": "30"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _listening(port) or proc.poll() is not None, 180, "serve --scorer ray to listen")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        audio = np.clip(np.rint(calls()["call-1"] * 32768), -32768, 32767) / 32768

        async def call() -> tuple[list[Any], dict[str, Any]]:
            async with connect(f"ws://127.0.0.1:{port}/v1/ingest") as ws:
                await ws.send(streamkit.start_message("ws-call"))
                await streamkit.send_audio(ws, audio.astype(np.float32))
                await ws.send('{"type":"stop"}')
                events = await streamkit.events_until_end(ws, "ws-call")
            _, _, payload = await streamkit.http_get(port, "/healthz")
            return events, json.loads(payload)

        events, health = streamkit.run(call(), timeout_s=120)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    got = [(e.t_start, e.p_spoof) for e in streamkit.of_type(events, ScoreEvent)]
    want = run_calls(local, audio={"ws-call": audio.astype(np.float32)})["ws-call"]
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=1e-4)
    assert health["scorer"]["pool"] == "ok" and health["scorer"]["pool_batches"] >= 1
    assert health["scorer"]["detector"] == card_identity(local.card, local.encoder.identity.name)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_gpu_replicas_on_a_cpu_cluster_are_refused_and_the_pool_kept(
    pool: RayPool, capsys: pytest.CaptureFixture[str]
) -> None:
    from spoofwatch.cli import main

    status = main(["pool", "up", "--replicas", "1", "--num-gpus", "1", "--ray-address", pool.address])
    assert status == 2
    assert "--num-gpus 1: the Ray cluster at" in capsys.readouterr().err
    # A replica killed by an earlier test may still be restarting: wait for the pool to be whole.
    wait_until(lambda: pool.cli("status")[0] == 0, timeout_s=120, what="the pool running again")
    status, report = pool.cli("status")
    assert report["replicas"] == {"RUNNING": 2} and report["device"] == "cpu"


def test_pool_down_falls_back_to_local_scoring(pool: RayPool, local: Detector) -> None:
    scorer = RayScorer(RayPoolHandle(pool.address), fallback=local, timeout_s=10.0)
    status, report = pool.cli("down")
    assert status == 0 and report == {"removed": True}
    windows = np.stack([a[:64000] for a in calls().values()])
    np.testing.assert_allclose(scorer.score_windows(windows), local.score_windows(windows), atol=1e-4)
    health = scorer.health()
    assert (health["pool"], health["scoring"], health["fallback_batches"]) == ("unreachable", "local", 1)
    status, report = pool.cli("status")
    assert status == 1 and report["status"] == "NOT_DEPLOYED"
