"""Microphone source and the terminal alert, end to end through a virtual PulseAudio mic.

The virtual microphone plays a WAV whose first part is noise (bona fide to FakeScorer) and
second part a tone (spoof); PortAudio captures it at the device's own rate through ALSA's
pulse plugin, exactly as it would a real microphone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import soundfile as sf

from fakes import FakeScorer, noise, tone
from pulse import (
    VirtualMic,
    portaudio_input_missing_reason,
    portaudio_missing_reason,
    pulseaudio_missing_reason,
)
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import AlarmEvent, Event, ScoreEvent, StreamEvent
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.sinks.console import format_event, run_listen
from spoofwatch.stream.sources.mic import find_input_device, run_mic_source
from spoofwatch.stream.sources.spec import run_source

pytestmark = pytest.mark.microphone

CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
NOISE_S = 2.5
TONE_S = 2.5
DEADLINE_S = 15.0
T = TypeVar("T")
needs_portaudio = pytest.mark.skipif(
    portaudio_missing_reason() is not None, reason=str(portaudio_missing_reason())
)


@pytest.fixture(scope="module")
def pulse_mic() -> Iterator[VirtualMic]:
    reason = pulseaudio_missing_reason()
    if reason:
        pytest.skip(reason)
    with VirtualMic() as mic:
        reason = portaudio_input_missing_reason()
        if reason:
            pytest.skip(reason)
        yield mic


@pytest.fixture
def virtual_mic(pulse_mic: VirtualMic) -> Iterator[VirtualMic]:
    """The shared daemon, silent at the start of each test (a test may stop mid-WAV)."""
    pulse_mic.clear()
    yield pulse_mic
    pulse_mic.clear()


@pytest.fixture
def switch_wav(tmp_path: Path) -> Path:
    path = tmp_path / "noise_then_tone.wav"
    sf.write(path, np.concatenate([noise(NOISE_S), tone(TONE_S)]), 16000, subtype="PCM_16")
    return path


def _pipeline() -> Pipeline:
    return Pipeline(FakeScorer(), CFG, EngineConfig(max_batch=4, max_wait_ms=5))


def _run(body: Callable[[Pipeline], Awaitable[T]]) -> T:
    async def main() -> T:
        pipeline = _pipeline()
        worker = asyncio.create_task(pipeline.run(), name="worker")
        try:
            return await body(pipeline)
        finally:
            worker.cancel()
            await asyncio.wait([worker])

    return asyncio.run(main())


async def _until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not condition():
            await asyncio.sleep(0.02)
    assert condition(), what


def test_mic_capture_scores_and_alarms_after_the_switch(virtual_mic: VirtualMic, switch_wav: Path) -> None:
    async def body(pipeline: Pipeline) -> list[Event]:
        sub = pipeline.hub.subscribe("mic", maxsize=10000)
        seen: list[Event] = []

        def saw(kind: type, **fields: object) -> bool:
            while not sub.queue.empty():
                seen.append(sub.queue.get_nowait())
            return any(
                isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items()) for e in seen
            )

        task = asyncio.create_task(run_mic_source(pipeline, None, block_s=0.02))
        await _until(lambda: saw(StreamEvent, state="start"), "the mic stream started")
        virtual_mic.play_wav(switch_wav)
        await _until(lambda: saw(AlarmEvent, state="on"), "an alarm after the tone began")
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        assert not pipeline.streams
        saw(StreamEvent)
        return seen

    events = _run(body)
    start = events[0]
    assert isinstance(start, StreamEvent) and start.state == "start"
    assert start.source == "mic:default"
    assert start.sample_rate == find_input_device(None).default_sample_rate  # the device's rate
    speech = [e for e in events if isinstance(e, ScoreEvent) and e.speech]
    alarm_on = next(e for e in events if isinstance(e, AlarmEvent) and e.state == "on")
    # The noise comes first: several bona fide speech windows before any spoof one.
    first_spoof = next(i for i, s in enumerate(speech) if s.p_spoof >= 0.5)
    assert first_spoof >= 2
    assert all(s.p_spoof < 0.5 for s in speech[:first_spoof])
    # The noise began within the first speech window (give or take a hop), so the tone
    # began about NOISE_S later; the alarm follows the tone, not the noise.
    earliest_tone = speech[0].t_start - CFG.hop_s + NOISE_S
    assert earliest_tone < alarm_on.t <= speech[0].t_end + NOISE_S + 3.0
    end = events[-1]
    assert isinstance(end, StreamEvent) and end.state == "end"
    assert any(isinstance(e, AlarmEvent) and e.state == "off" for e in events)  # closed while on


def test_listen_prints_score_lines_and_an_alarm(virtual_mic: VirtualMic, switch_wav: Path) -> None:
    out = io.StringIO()

    async def main() -> None:
        pipeline = _pipeline()
        task = asyncio.create_task(run_listen(pipeline, "default", out=out, block_s=0.02))
        await _until(lambda: "listening on" in out.getvalue(), "the listening banner")
        virtual_mic.play_wav(switch_wav)
        await _until(lambda: "ALARM ON" in out.getvalue(), "an ALARM ON line")
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        assert not pipeline.streams

    asyncio.run(main())
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("listening on mic:default (")
    alarm_at = next(i for i, line in enumerate(lines) if "ALARM ON" in line)
    score_lines = [line for line in lines[:alarm_at] if " s  spoof [" in line]
    assert any(line.endswith("speech") for line in score_lines)
    assert any("ALARM OFF" in line for line in lines[alarm_at:])  # stopping ends the alarm
    assert lines[-1] == "stopped listening on mic:default"
    assert "\033[" not in out.getvalue()  # no colour codes when out is not a terminal


def test_unknown_device_names_the_available_ones(virtual_mic: VirtualMic) -> None:
    async def body(pipeline: Pipeline) -> None:
        with pytest.raises(ConfigError) as info:
            await run_mic_source(pipeline, "no-such-mic")
        assert not pipeline.streams
        message = str(info.value)
        assert "'no-such-mic'" in message
        assert "available input devices: 0: pulse; 1: default" in message

    _run(body)


@needs_portaudio
def test_listen_raises_a_missing_device_error_as_is() -> None:
    async def main() -> None:
        with pytest.raises(ConfigError, match="expected input device 'no-such-mic'"):
            await run_listen(_pipeline(), "no-such-mic", out=io.StringIO())

    asyncio.run(main())


@needs_portaudio
def test_mic_spec_runs_the_mic_source() -> None:
    async def body(pipeline: Pipeline) -> None:
        with pytest.raises(ConfigError, match="expected input device 'no-such-mic'"):
            await run_source(pipeline, "mic:no-such-mic")

    _run(body)


def test_alarm_lines_are_loud_on_a_terminal() -> None:
    on = AlarmEvent(stream="mic", state="on", t=12.0, p_spoof=0.91)
    off = AlarmEvent(stream="mic", state="off", t=20.0, p_spoof=0.2)
    assert format_event(on) == "*** ALARM ON: synthetic voice suspected on mic at 12.0 s (p_spoof 0.91) ***"
    loud = format_event(on, color=True)
    assert loud is not None and loud.startswith("\a\033[1;31m") and "ALARM ON" in loud
    assert format_event(off) == "*** ALARM OFF: mic at 20.0 s (p_spoof 0.20) ***"


def test_score_line_bar_follows_the_smoothed_probability() -> None:
    event = ScoreEvent(
        stream="mic",
        seq=3,
        t_start=2.0,
        t_end=3.0,
        score=-2.0,
        p_spoof=0.88,
        smoothed=0.75,
        speech=True,
        lag_ms=12.0,
    )
    assert format_event(event, bar_width=8) == "     3.0 s  spoof [######..] 0.75  speech"
    quiet = dataclasses.replace(event, smoothed=0.0, speech=False)
    assert format_event(quiet, bar_width=8) == "     3.0 s  spoof [........] 0.00  quiet"
