"""Gaps: the timeline, digital-silence runs, the session's policy (restart or splice, the
cap over the call, state held across a gap) and the pipeline's ``StreamHandle.gap``.

``FillerScorer`` (fakes) reproduces what the real detector does with zeros filled into
a gap; the end-to-end tests with the real detector are in test_gaps_real.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray
from websockets.asyncio.client import connect

import streamkit
from fakes import FillerScorer, noise, tone
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import ConfigError, ProtocolError
from spoofwatch.events import AlarmEvent, ErrorEvent, Event, GapEvent, ScoreEvent, parse_event, to_json
from spoofwatch.stream.core.gaps import DigitalSilence, SilenceRun, Timeline, check_gap_seconds
from spoofwatch.stream.core.session import StreamSession
from spoofwatch.stream.core.windowing import WindowConfig, Windower
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.sources.mic import Block, drop_oldest
from waits import scaled

SR = 8000
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)


# --- the timeline and digital silence --------------------------------------------------


def test_timeline_maps_received_samples_onto_the_clock() -> None:
    line = Timeline()
    line.add_audio(100)
    line.add_gap(50)  # before received sample 100
    line.add_audio(100)
    line.add_gap(10)
    line.add_gap(5)  # two gaps at the same point add up
    line.add_audio(10)
    assert line.now == 275 and line.gap_samples == 65
    assert [line.offset(i) for i in (0, 99, 100, 199, 200, 209)] == [0, 0, 50, 50, 65, 65]
    assert line.span(90, 110) == (90, 160, 50)  # 20 received samples spanning the gap
    assert line.span(100, 200) == (150, 250, 0)
    line.forget_before(150)
    assert line.span(150, 210) == (200, 275, 15)  # what is still needed is kept
    line.add_gap(0)
    assert line.gap_samples == 65


def test_digital_silence_runs_do_not_depend_on_chunking() -> None:
    sound = noise(0.3, SR, seed=1)
    quiet_short = np.full(30, 1.0 / 32768, dtype=np.float32)  # 1 LSB: silent but too short
    audio = np.concatenate(
        [sound, np.zeros(800, np.float32), sound, quiet_short, sound, np.zeros(500, np.float32)]
    )

    def split(chunk: int) -> list[object]:
        detector = DigitalSilence(min_samples=400)
        parts: list[NDArray[np.float32] | SilenceRun] = []
        for start in range(0, len(audio), chunk):
            parts += detector.feed(audio[start : start + chunk])
        parts += detector.flush()
        # Merge the pieces of sound so that the comparison ignores chunk boundaries.
        shape: list[object] = []
        for part in parts:
            if isinstance(part, SilenceRun):
                shape.append(part.samples)
            elif shape and isinstance(shape[-1], np.ndarray):
                shape[-1] = np.concatenate([shape[-1], part])
            else:
                shape.append(part)
        return shape

    for chunk in (len(audio), 160, 7, 1000):
        shape = split(chunk)
        assert [s if isinstance(s, int) else len(s) for s in shape] == [2400, 800, 4830, 500], chunk
        np.testing.assert_array_equal(shape[2], np.concatenate([sound, quiet_short, sound]))
    with pytest.raises(ValueError, match="expected an int >= 1"):
        DigitalSilence(0)


def test_gap_durations_and_causes_are_checked() -> None:
    assert check_gap_seconds(1, "paused") == 1.0
    for bad in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="expected a finite number of seconds >= 0"):
            check_gap_seconds(bad, "paused")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected one of \['discarded'"):
        check_gap_seconds(1.0, "lunch")
    with pytest.raises(ConfigError, match=r"stream\.gap_tolerance_s: expected a finite number"):
        StreamConfig(gap_tolerance_s=-1.0)


# --- the session's policy --------------------------------------------------------------


def test_windower_restart_starts_the_next_window_after_the_gap_and_tiles_short_tails() -> None:
    windower = Windower(WindowConfig(SR, 1.0, 0.5, 0.25))
    first = windower.feed(noise(1.7, SR))
    assert [w.start_sample for w in first] == [0, 4000]
    windower.restart()  # 0.7 s of audio held for the next window is never scored
    later = windower.feed(noise(1.2, SR, seed=2))
    assert [w.start_sample for w in later] == [13600]
    short = Windower(WindowConfig(SR, 1.0, 0.5, 0.25))
    short.feed(noise(0.5, SR))
    short.restart()
    tail = noise(0.3, SR, seed=3)
    short.feed(tail)
    [tiled] = short.flush()
    assert tiled.tiled and tiled.start_sample == 4000 and tiled.covered_samples == 2400
    np.testing.assert_array_equal(tiled.samples[:2400], tail)


def test_a_gap_up_to_the_tolerance_is_spliced_and_reported() -> None:
    session = StreamSession("s", SR, CFG)  # the default tolerance, 1 s
    session.feed(noise(0.8, SR))
    event = session.gap(SR, "discarded")
    windows = session.feed(noise(0.7, SR, seed=2))
    assert event == GapEvent("s", 0.8, 1.8, "discarded")  # reported, though spliced
    # 1 s windows of received audio, each spanning 2 s of the clock; no filler in them
    assert [(w.t_start, w.t_end, len(w.samples)) for w in windows] == [(0.0, 2.0, SR), (0.5, 2.5, SR)]
    assert session.gap(round(0.05 * SR), "loss") is None  # too short to report


def test_a_long_gap_restarts_windowing_and_keeps_the_calls_clock() -> None:
    session = StreamSession("s", SR, CFG)
    before = session.feed(noise(1.6, SR))
    event = session.gap(2 * SR, "paused")
    after = session.feed(noise(1.5, SR, seed=2))
    assert event == GapEvent("s", 1.6, 3.6, "paused")
    assert [(w.t_start, w.t_end) for w in before] == [(0.0, 1.0), (0.5, 1.5)]
    assert [(w.t_start, w.t_end) for w in after] == [(3.6, 4.6), (4.1, 5.1)]  # restarted at the gap's end
    assert session.duration_s == pytest.approx(5.1)
    # no window holds audio from both sides of the gap
    assert all(w.t_end <= 1.6 or w.t_start >= 3.6 for w in before + after)


def test_short_gaps_are_spliced_and_a_window_with_too_many_is_not_scored() -> None:
    session = StreamSession("s", SR, replace(CFG, gap_tolerance_s=0.1))
    windows = session.feed(noise(0.6, SR))
    assert session.gap(round(0.06 * SR), "loss") is None  # spliced: no event
    windows += session.feed(noise(0.6, SR, seed=2))
    assert [(w.t_start, round(w.t_end, 3)) for w in windows] == [(0.0, 1.06)]
    assert session.gap(round(0.06 * SR), "loss") is None  # 0.12 s now inside the next window
    windows = session.feed(noise(1.0, SR, seed=3))
    assert [(round(w.t_start, 3), round(w.t_end, 3)) for w in windows] == [(1.06, 2.12)]
    assert session.counters.windows_skipped_gap == 1  # the window at 0.5 s held both losses
    assert session.counters.gaps == 2 and session.counters.gap_samples == 960


def test_the_gap_cap_holds_over_the_whole_call() -> None:
    session = StreamSession("s", SR, StreamConfig(window_s=1.0, hop_s=0.5, gap_max_total_s=10.0))
    session.feed(noise(1.0, SR))
    events = [session.gap(6 * SR, "paused"), session.gap(6 * SR, "paused")]
    session.feed(noise(1.0, SR))
    assert events == [GapEvent("s", 1.0, 7.0, "paused"), GapEvent("s", 7.0, 11.0, "paused")]
    assert session.counters.gap_samples == 10 * SR and session.counters.gap_samples_over_cap == 2 * SR
    assert session.duration_s == 12.0
    with pytest.raises(ValueError, match="expected a number of samples >= 0"):
        session.gap(-1, "paused")


def test_smoother_and_alarm_keep_their_state_across_a_gap() -> None:
    session = StreamSession("s", SR, CFG.with_alarm_levels(0.5))
    events: list[Event] = []
    windows = session.feed(tone(2.0, SR))
    for w in windows:
        events += session.on_score(w, -5.0, True, 0.0)
    assert [e.state for e in events if isinstance(e, AlarmEvent)] == ["on"]
    smoothed = session.smoother.value
    session.gap(12 * SR, "paused")
    assert session.smoother.value == smoothed and session.alarm.state == "on"
    [w] = session.feed(tone(1.0, SR))
    [score] = [e for e in session.on_score(w, -5.0, True, 0.0) if isinstance(e, ScoreEvent)]
    assert score.t_start == 14.0 and score.smoothed > 0.99 and session.alarm.state == "on"


def test_gap_events_round_trip_the_wire_schema() -> None:
    event = GapEvent("call:external", 6.0, 18.0, "paused")
    assert (
        to_json(event)
        == '{"type":"gap","v":1,"stream":"call:external","t_start":6.0,"t_end":18.0,"cause":"paused"}'
    )
    assert parse_event(to_json(event)) == event


# --- through the pipeline --------------------------------------------------------------


@contextlib.asynccontextmanager
async def pipeline_of(config: StreamConfig = CFG) -> AsyncIterator[Pipeline]:
    pipeline = Pipeline(
        FillerScorer(sample_rate=16000, window_s=1.0), config, EngineConfig(max_batch=8, max_wait_ms=5)
    )
    worker = asyncio.create_task(pipeline.run())
    try:
        yield pipeline
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def drain(sub: object) -> list[Event]:
    queue = sub.queue  # type: ignore[attr-defined]
    out: list[Event] = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def test_pipeline_gap_at_8k_scores_no_window_over_it_and_publishes_it() -> None:
    """Noise (bona fide to the fake) at 8 kHz, resampled to 16 kHz, with a 1.5 s gap: the
    resampler's tail goes before the gap, no window spans it, the gap is published."""

    async def body() -> list[Event]:
        async with pipeline_of() as pipeline:
            sub = pipeline.hub.subscribe(maxsize=1000)
            handle = pipeline.open_stream("call", source="test", sample_rate=SR)
            handle.feed(noise(2.0, SR))
            event = handle.gap(1.5, "discarded")
            handle.feed(noise(2.0, SR, seed=2))
            await handle.close()
            assert event == GapEvent("call", 2.0, 3.5, "discarded")
            return drain(sub)

    events = run(body())
    gaps = [e for e in events if isinstance(e, GapEvent)]
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    assert gaps == [GapEvent("call", 2.0, 3.5, "discarded")]
    assert [(s.t_start, s.t_end) for s in scores] == [
        (0.0, 1.0),
        (0.5, 1.5),
        (1.0, 2.0),
        (3.5, 4.5),
        (4.0, 5.0),
        (4.5, 5.5),
    ]


def test_zeros_inside_the_audio_are_gaps_and_raise_no_alarm() -> None:
    """What a gateway's filler or a muted leg looks like: runs of exact zeros in bona fide
    audio. With ``silence_gap_s`` off (the old behaviour) the windows over them alarm."""

    def call() -> NDArray[np.float32]:
        parts = []
        for i in range(6):
            parts += [noise(1.5, 16000, seed=i), np.zeros(4000, np.float32)]  # 0.25 s zeros
        return np.concatenate(parts)

    async def body(config: StreamConfig) -> list[Event]:
        async with pipeline_of(config) as pipeline:
            sub = pipeline.hub.subscribe(maxsize=1000)
            handle = pipeline.open_stream("call", source="test", sample_rate=16000)
            audio = call()
            for start in range(0, len(audio), 320):
                handle.feed(audio[start : start + 320])
            await handle.close()
            return drain(sub)

    fixed = run(body(CFG))
    assert not [e for e in fixed if isinstance(e, AlarmEvent)]
    assert len([e for e in fixed if isinstance(e, GapEvent) and e.cause == "silence"]) == 6
    assert all(s.p_spoof < 0.5 for s in fixed if isinstance(s, ScoreEvent))
    old = run(
        body(StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2, silence_gap_s=0.0))
    )
    assert [e.state for e in old if isinstance(e, AlarmEvent)][:1] == ["on"]


def test_gap_on_a_closed_stream_is_refused() -> None:
    async def body() -> None:
        async with pipeline_of() as pipeline:
            handle = pipeline.open_stream("call", source="test", sample_rate=SR)
            with pytest.raises(ValueError, match="expected one of"):
                handle.gap(1.0, "coffee")
            await handle.close()
            with pytest.raises(ProtocolError, match="is closed; expected no more gaps"):
                handle.gap(1.0, "paused")

    run(body())


def run(body: object) -> list[Event]:
    async def bounded() -> list[Event]:
        async with asyncio.timeout(scaled(20)):
            return await body  # type: ignore[misc, no-any-return]

    return asyncio.run(bounded())


# --- microphone overruns -----------------------------------------------------------------


def test_a_dropped_block_becomes_a_gap_before_the_next_one() -> None:
    async def body() -> list[tuple[int, int]]:
        queue: asyncio.Queue[Block | None] = asyncio.Queue(maxsize=3)
        for n in (10, 20, 30):
            queue.put_nowait(Block(np.zeros(n, np.float32), lost_before=1 if n == 10 else 0))
        assert drop_oldest(queue) == 0  # carried by the block now first
        single: asyncio.Queue[Block | None] = asyncio.Queue(maxsize=1)
        single.put_nowait(Block(np.zeros(5, np.float32)))
        assert drop_oldest(single) == 5  # nothing left to carry it: the caller's block does
        out = []
        while not queue.empty():
            item = queue.get_nowait()
            assert item is not None
            out.append((len(item.samples), item.lost_before))
        return out

    assert asyncio.run(body()) == [(20, 11), (30, 0)]


# --- WebSocket ingest --------------------------------------------------------------------


def test_ingest_clients_declare_gaps_between_frames() -> None:
    async def body() -> list[Event]:
        async with (
            streamkit.serving(sample_rate=16000, scorer=FillerScorer()) as (server, _),
            connect(f"ws://127.0.0.1:{server.port}/v1/ingest") as ws,
        ):
            await ws.send(streamkit.start_message("mic-1"))
            await streamkit.send_audio(ws, noise(2.0, 16000, seed=1))
            await ws.send(json.dumps({"type": "gap", "seconds": 1.5, "cause": "underrun"}))
            await ws.send(json.dumps({"type": "gap", "seconds": -1}))
            await streamkit.send_audio(ws, noise(2.0, 16000, seed=2))
            await ws.send(json.dumps({"type": "stop"}))
            return await streamkit.events_until_end(ws, "mic-1")

    events = asyncio.run(asyncio.wait_for(body(), scaled(20)))
    assert [e for e in events if isinstance(e, GapEvent)] == [GapEvent("mic-1", 2.0, 3.5, "underrun")]
    [error] = [e for e in events if isinstance(e, ErrorEvent)]
    assert "gap message: gap duration: expected a finite number of seconds >= 0, got -1" in error.message
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    assert [s.t_start for s in scores] == [0.0, 0.5, 1.0, 3.5, 4.0, 4.5]


def test_capture_overruns_are_spliced_whatever_their_length() -> None:
    session = StreamSession("s", SR, CFG)
    windows = session.feed(noise(0.8, SR))
    event = session.gap(3 * SR, "overrun")
    windows += session.feed(noise(0.7, SR, seed=2))
    assert event == GapEvent("s", 0.8, 3.8, "overrun")
    assert [(w.t_start, w.t_end) for w in windows] == [(0.0, 4.0), (0.5, 4.5)]
    assert session.counters.windows_skipped_gap == 0
