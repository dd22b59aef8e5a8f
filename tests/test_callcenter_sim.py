"""``examples/callcenter_sim.py`` against a real loopback server (WebSocket + AudioSocket)
scored by ``FakeScorer``: noise files play the bona fide speech, tone files the synthetic."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import soundfile as sf

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, ServerConfig, StreamConfig
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.audiosocket_server import AudioSocketServer
from spoofwatch.stream.net.server import SpoofwatchServer

SIM_PATH = Path(__file__).resolve().parents[1] / "examples" / "callcenter_sim.py"
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)


def load_sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("callcenter_sim", SIM_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


sim = load_sim()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("sim-audio")
    bona_fide, synthetic = folder / "noise.wav", folder / "tone.wav"
    sf.write(bona_fide, noise(3.0, 16000, seed=7), 16000)
    sf.write(synthetic, tone(3.0, 16000), 16000)
    return str(bona_fide), str(synthetic)


@contextlib.asynccontextmanager
async def serving(max_streams: int = 64, token: str | None = None) -> AsyncIterator[tuple[int, int]]:
    engine = EngineConfig(max_batch=16, max_wait_ms=5, max_streams=max_streams, queue_windows=4096)
    pipeline = Pipeline(FakeScorer(sample_rate=8000, window_s=1.0), CFG, engine)
    worker = asyncio.create_task(pipeline.run(), name="worker")
    websocket = SpoofwatchServer(pipeline, ServerConfig(host="127.0.0.1", port=0, token=token))
    audiosocket = AudioSocketServer(pipeline, "127.0.0.1", 0)
    await websocket.start()
    await audiosocket.start()
    try:
        yield websocket.port, audiosocket.port
    finally:
        await audiosocket.stop()
        await websocket.stop()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def simulate(
    clips: tuple[str, str], *args: str, max_streams: int = 64, token: str | None = None
) -> tuple[dict[str, Any], str]:
    async def body() -> tuple[dict[str, Any], str]:
        async with serving(max_streams, token) as (port, audiosocket_port):
            out = io.StringIO()
            argv = [
                "--url",
                f"ws://127.0.0.1:{port}",
                "--audiosocket",
                f"127.0.0.1:{audiosocket_port}",
                "--bona-fide",
                clips[0],
                "--synthetic",
                clips[1],
                "--json",
                *args,
            ]
            summary: dict[str, Any] = await sim.simulate(argv, out)
            return summary, out.getvalue()

    async def bounded() -> tuple[dict[str, Any], str]:
        async with asyncio.timeout(40):
            return await body()

    return asyncio.run(bounded())


def test_six_mixed_protocol_calls_with_a_token_flag_exactly_the_synthetic_ones(
    clips: tuple[str, str],
) -> None:
    summary, text = simulate(clips, "--calls", "6", "--speed", "0", "--token", "t0k", token="t0k")
    assert json.loads(text.strip().splitlines()[-1]) == summary
    per_call = summary["per_call"]
    assert [c["protocol"] for c in per_call] == ["audiohook", "jambonz", "audiosocket", "twilio"] * 1 + [
        "audiohook",
        "jambonz",
    ]
    assert (summary["answered"], summary["refused"], summary["failed"]) == (6, 0, 0)
    synthetic = [c for c in per_call if c["synthetic_from_s"] is not None]
    assert len(synthetic) == summary["synthetic_calls"] == 3
    assert all(c["flagged"] and 0.0 < c["delay_s"] <= 2.5 for c in synthetic)
    assert not any(
        c["flagged"] or c["false_alarm"] or c["agent_alarm"] for c in per_call if c not in synthetic
    )
    assert all(c["synthetic_from_s"] == pytest.approx(3.0) for c in synthetic)
    assert summary["detected"] == 3 and summary["false_alarm_calls"] == 0
    assert "3/3 synthetic calls flagged" in text


def test_twenty_calls_all_complete(clips: tuple[str, str]) -> None:
    summary, _ = simulate(
        clips, "--calls", "20", "--speed", "0", "--synthetic-fraction", "0.25", "--stagger-s", "0.01"
    )
    assert (summary["calls"], summary["answered"], summary["failed"]) == (20, 20, 0)
    assert summary["synthetic_calls"] == 5 and summary["detected"] == 5
    assert summary["false_alarm_calls"] == 0
    assert {c["protocol"] for c in summary["per_call"]} == {"audiohook", "jambonz", "audiosocket", "twilio"}


def test_calls_beyond_the_admission_limit_are_reported_refused(clips: tuple[str, str]) -> None:
    summary, text = simulate(
        clips, "--calls", "3", "--speed", "4", "--protocols", "audiohook,jambonz", max_streams=2
    )
    refused = [c for c in summary["per_call"] if c["refused"]]
    assert summary["refused"] == len(refused) >= 1 and summary["failed"] == 0
    assert all("limit of 2 concurrent streams" in c["refused"] for c in refused)
    assert "refused: server is at its limit of 2" in text
