"""File source (real-time and fast replay) and local source specs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import soundfile as sf

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import AudioError, ConfigError
from spoofwatch.events import AlarmEvent, Event, ScoreEvent, StreamEvent
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.sources.file import run_file_source
from spoofwatch.stream.sources.spec import SourceSpec, parse_source_spec, run_source

CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
T = TypeVar("T")


def _run(body: Callable[[Pipeline], Awaitable[T]]) -> T:
    async def main() -> T:
        pipeline = Pipeline(FakeScorer(), CFG, EngineConfig(max_batch=4, max_wait_ms=5))
        worker = asyncio.create_task(pipeline.run(), name="worker")
        try:
            return await body(pipeline)
        finally:
            worker.cancel()
            await asyncio.wait([worker])

    return asyncio.run(main())


def _drain(pipeline: Pipeline, sub_events: asyncio.Queue[Event]) -> list[Event]:
    events: list[Event] = []
    while not sub_events.empty():
        events.append(sub_events.get_nowait())
    return events


def _write(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    sf.write(path, audio, rate, subtype="PCM_16")
    return path


@pytest.fixture
def switch_wav(tmp_path: Path) -> Path:
    return _write(tmp_path / "call.wav", np.concatenate([noise(4.0), tone(4.0)]))


def test_realtime_replay_takes_the_file_duration(tmp_path: Path) -> None:
    path = _write(tmp_path / "clip.wav", noise(2.0, sample_rate=8000), rate=8000)

    async def body(pipeline: Pipeline) -> tuple[float, list[Event]]:
        sub = pipeline.hub.subscribe(maxsize=1000)
        started = time.monotonic()
        await run_file_source(pipeline, path, chunk_s=0.05)
        return time.monotonic() - started, _drain(pipeline, sub.queue)

    elapsed, events = _run(body)
    assert 1.8 <= elapsed < 3.0  # paced, and late wake-ups do not add up
    lifecycle = [e for e in events if isinstance(e, StreamEvent)]
    assert [(e.stream, e.state) for e in lifecycle] == [("clip", "start"), ("clip", "end")]
    assert lifecycle[0].sample_rate == 16000  # loaded at the model rate, not the file's 8 kHz
    assert lifecycle[0].source == f"file:{path}"
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    assert [round(s.t_end, 3) for s in scores] == [1.0, 1.5, 2.0]


def test_fast_replay_scores_every_window_and_alarms_after_the_switch(switch_wav: Path) -> None:
    async def body(pipeline: Pipeline) -> tuple[float, list[Event]]:
        sub = pipeline.hub.subscribe("calls", maxsize=1000)
        started = time.monotonic()
        await run_file_source(pipeline, switch_wav, stream_id="calls", realtime=False)
        return time.monotonic() - started, _drain(pipeline, sub.queue)

    elapsed, events = _run(body)
    assert elapsed < 4.0  # 8 s of audio, far faster than real time
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    alarms = [e for e in events if isinstance(e, AlarmEvent)]
    assert len(scores) == 15  # (8 s - 1 s) / 0.5 s + 1: nothing dropped
    assert all(s.p_spoof < 0.5 for s in scores if s.t_end <= 4.0)
    assert all(s.p_spoof >= 0.5 for s in scores if s.t_start >= 4.0)
    assert alarms[0].state == "on" and 4.0 < alarms[0].t <= 6.0
    assert alarms[-1].state == "off"  # the stream ended with the alarm on
    assert isinstance(events[-1], StreamEvent) and events[-1].state == "end"


def test_looping_replay_continues_stream_time_until_cancelled(tmp_path: Path) -> None:
    path = _write(tmp_path / "short.wav", noise(1.5))

    async def body(pipeline: Pipeline) -> list[Event]:
        sub = pipeline.hub.subscribe("short", maxsize=10000)
        task = asyncio.create_task(run_file_source(pipeline, path, realtime=False, loop=True))
        while not any(isinstance(e, ScoreEvent) and e.t_end > 4.0 for e in list(sub.queue._queue)):  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        assert not pipeline.streams
        return _drain(pipeline, sub.queue)

    events = _run(body)
    ends = [e for e in events if isinstance(e, StreamEvent) and e.state == "end"]
    assert len(ends) == 1
    t_ends = [e.t_end for e in events if isinstance(e, ScoreEvent)]
    assert t_ends == sorted(t_ends) and max(t_ends) > 4.0


def test_missing_file_raises_before_a_stream_opens(tmp_path: Path) -> None:
    async def body(pipeline: Pipeline) -> None:
        with pytest.raises(AudioError, match="no such file"):
            await run_file_source(pipeline, tmp_path / "absent.wav")
        assert not pipeline.streams

    _run(body)


def test_non_positive_chunk_is_refused(switch_wav: Path) -> None:
    async def body(pipeline: Pipeline) -> None:
        with pytest.raises(ConfigError, match="chunk_s: expected a positive"):
            await run_file_source(pipeline, switch_wav, chunk_s=0.0)

    _run(body)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mic", SourceSpec("mic")),
        ("mic:2", SourceSpec("mic", "2")),
        ("mic:USB Audio: hw:1", SourceSpec("mic", "USB Audio: hw:1")),
        ("file:/data/call.wav", SourceSpec("file", "/data/call.wav", realtime=True)),
        ("file+fast:rel/c:a.flac", SourceSpec("file", "rel/c:a.flac", realtime=False)),
    ],
)
def test_source_specs_parse(spec: str, expected: SourceSpec) -> None:
    parsed = parse_source_spec(spec)
    assert parsed == expected
    assert parse_source_spec(str(parsed)) == parsed


@pytest.mark.parametrize("spec", ["", "microphone", "file", "file:", "mic:", "rtsp://cam", "wav:x.wav"])
def test_bad_source_specs_name_the_accepted_forms(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_source_spec(spec)
    message = str(info.value)
    assert all(form in message for form in ("'mic'", "'mic:DEVICE'", "'file:PATH'", "'file+fast:PATH'"))
    assert repr(spec) in message


def test_run_source_replays_a_fast_file_spec(switch_wav: Path) -> None:
    async def body(pipeline: Pipeline) -> list[Event]:
        sub = pipeline.hub.subscribe("call", maxsize=1000)
        await run_source(pipeline, f"file+fast:{switch_wav}")
        return _drain(pipeline, sub.queue)

    events = _run(body)
    assert sum(isinstance(e, ScoreEvent) for e in events) == 15
    assert any(isinstance(e, AlarmEvent) and e.state == "on" for e in events)
