"""Runs of near-silence (comfort noise, a muted leg's hiss) are gaps like digital silence:
``QuietFrames`` alone, chained after ``DigitalSilence``, and through the pipeline.

The false-alarm measurement with the real detector is research/gap_false_alarms.py
(docs/protocol.md, "Gaps and pauses").
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray

from fakes import FakeScorer, noise
from spoofwatch.config import StreamConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import Event, GapEvent, ScoreEvent
from spoofwatch.stream.core.gaps import DigitalSilence, SilenceRun
from spoofwatch.stream.core.quiet import Flatness, QuietFrames, SilenceSplitter
from spoofwatch.stream.engine.pipeline import Pipeline
from waits import scaled

SR = 8000
FRAME = 160  # 20 ms at 8 kHz
LEVEL = 10 ** (-55 / 20)


def comfort_noise(seconds: float, seed: int = 0) -> NDArray[np.float32]:
    """White noise at -60 dBFS RMS, as a CN generator makes it."""
    return noise(seconds, SR, seed=seed, level=10 ** (-60 / 20))


def shape_of(parts: list[NDArray[np.float32] | SilenceRun]) -> list[object]:
    """Runs as their length, adjacent sound joined (chunk boundaries ignored)."""
    shape: list[object] = []
    for part in parts:
        if isinstance(part, SilenceRun):
            shape.append(part.samples)
        elif shape and isinstance(shape[-1], np.ndarray):
            shape[-1] = np.concatenate([shape[-1], part])
        else:
            shape.append(part)
    return shape


def split(detector: QuietFrames | SilenceSplitter, audio: NDArray[np.float32], chunk: int) -> list[object]:
    parts: list[NDArray[np.float32] | SilenceRun] = []
    for start in range(0, len(audio), chunk):
        parts += detector.feed(audio[start : start + chunk])
    parts += detector.flush()
    return shape_of(parts)


def test_comfort_noise_runs_are_found_whatever_the_chunking() -> None:
    speech = noise(0.3, SR, seed=1)  # -20 dBFS: sound
    short_cn = comfort_noise(0.06, seed=2)  # 3 frames: too short to be a run
    audio = np.concatenate([speech, comfort_noise(0.4), speech, short_cn, speech, comfort_noise(0.2, seed=3)])
    for chunk in (len(audio), 160, 7, 1000, 333):
        shape = split(QuietFrames(FRAME, 800, LEVEL), audio, chunk)
        assert [s if isinstance(s, int) else len(s) for s in shape] == [2400, 3200, 5280, 1600], chunk
        np.testing.assert_array_equal(shape[2], np.concatenate([speech, short_cn, speech]))


def test_sound_just_above_the_level_is_kept_and_order_is_kept() -> None:
    hiss = noise(0.5, SR, seed=4, level=10 ** (-50 / 20))  # a real pause's background: kept
    audio = np.concatenate([noise(0.2, SR), hiss, noise(0.2, SR, seed=5)])
    [whole] = split(QuietFrames(FRAME, 800, LEVEL), audio, 250)
    np.testing.assert_array_equal(whole, audio)


def test_a_quiet_tail_is_a_run_only_when_long_enough() -> None:
    detector = QuietFrames(FRAME, 800, LEVEL)
    out = detector.feed(np.concatenate([noise(0.1, SR), comfort_noise(0.05)]))
    assert sum(len(p) for p in out if not isinstance(p, SilenceRun)) == 800  # the quiet tail waits
    tail = detector.flush()
    assert [len(p) for p in tail if not isinstance(p, SilenceRun)] == [400]
    assert detector.runs == 0
    detector.feed(comfort_noise(0.13))
    assert [p.samples for p in detector.flush() if isinstance(p, SilenceRun)] == [1040]
    assert (detector.runs, detector.run_samples) == (1, 1040)


def test_digital_silence_comes_first_then_quiet_frames() -> None:
    speech = noise(0.3, SR, seed=1)
    audio = np.concatenate(
        [speech, comfort_noise(0.05), np.zeros(800, np.float32), comfort_noise(0.3), speech]
    )
    for chunk in (len(audio), 160, 77):
        splitter = SilenceSplitter(DigitalSilence(800), QuietFrames(FRAME, 800, LEVEL))
        shape = split(splitter, audio, chunk)
        # 50 ms of CN before the zeros is too short a run and stays sound; the zeros and
        # the 300 ms of CN after them are two runs.
        assert [s if isinstance(s, int) else len(s) for s in shape] == [2800, 800, 2400, 2400], chunk
        assert (splitter.runs, splitter.run_samples) == (2, 3200)
    digital_only = SilenceSplitter(DigitalSilence(800), None)
    assert [s if isinstance(s, int) else len(s) for s in split(digital_only, audio, 160)] == [2800, 800, 4800]


def test_bad_arguments_and_levels_are_refused() -> None:
    for args, match in (
        ((0, 800, LEVEL), "frame_samples: expected an int >= 1"),
        ((160, 0, LEVEL), "min_samples: expected an int >= 1"),
        ((160, 800, 0.0), "level: expected a positive RMS"),
        ((160, 800, float("nan")), "level: expected a positive RMS"),
    ):
        with pytest.raises(ValueError, match=match):
            QuietFrames(*args)
    for bad in (-10.0, -200.0, float("nan"), True):
        with pytest.raises(ConfigError, match=r"stream\.quiet_level_dbfs: expected a level in dBFS"):
            StreamConfig(quiet_level_dbfs=bad)  # type: ignore[arg-type]


CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)  # the comfort-noise rule on


def stream_with_comfort_noise(config: StreamConfig, middle: NDArray[np.float32] | None = None) -> list[Event]:
    """1.5 s of sound, ``middle`` (0.5 s of comfort noise), 1.5 s of sound, as one stream."""
    pause = comfort_noise(0.5) if middle is None else middle

    async def body() -> list[Event]:
        pipeline = Pipeline(FakeScorer(sample_rate=SR), config)
        worker = asyncio.create_task(pipeline.run())
        try:
            sub = pipeline.hub.subscribe(maxsize=1000)
            handle = pipeline.open_stream("call", source="test", sample_rate=SR)
            audio = np.concatenate([noise(1.5, SR), pause, noise(1.5, SR, seed=9)])
            for start in range(0, len(audio), 160):
                handle.feed(audio[start : start + 160])
            await handle.close()
            events: list[Event] = []
            while not sub.queue.empty():
                events.append(sub.queue.get_nowait())
            return events
        finally:
            worker.cancel()

    async def bounded() -> list[Event]:
        async with asyncio.timeout(scaled(20)):
            return await body()

    return asyncio.run(bounded())


def test_the_pipeline_splices_comfort_noise_out_as_a_gap() -> None:
    events = stream_with_comfort_noise(CFG)
    gaps = [(g.t_start, g.t_end, g.cause) for g in events if isinstance(g, GapEvent)]
    # the run's first two frames lack a quiet 60 ms context: they stay sound
    assert gaps == [(pytest.approx(1.54), 2.0, "comfort-noise")]
    scored = [(s.t_start, s.t_end) for s in events if isinstance(s, ScoreEvent)]
    assert any(a < 1.54 and b > 2.0 and b - a > 1.0 for a, b in scored)  # a window spans the splice
    off = stream_with_comfort_noise(replace(CFG, quiet_level_dbfs=-120.0))
    assert not [g for g in off if isinstance(g, GapEvent)]
    assert (StreamConfig().quiet_level_dbfs, StreamConfig().quiet_min_flatness) == (-45.0, 0.8)


def brown_background(seconds: float, seed: int = 0) -> NDArray[np.float32]:
    """A natural pause's rumbling background at -60 dBFS RMS: most power low, as rooms,
    handsets and traffic make it."""
    walk = np.cumsum(np.random.default_rng(seed).standard_normal(round(seconds * SR)))
    span = min(400, len(walk))
    walk -= np.convolve(walk, np.ones(span) / span, mode="same")  # no drift, still low-heavy
    return (10 ** (-60 / 20) * walk / walk.std()).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_flatness_tells_white_from_coloured_noise(rate: int) -> None:
    meter = Flatness(rate // 50, rate, 0.8)
    white = noise(2.0, rate, seed=1).astype(np.float64).reshape(-1, rate // 50)
    assert meter.flat(white)[2:].mean() > 0.95  # the first two frames lack their context
    meter.reset()
    walk = np.cumsum(np.random.default_rng(2).standard_normal(2 * rate)).reshape(-1, rate // 50)
    assert not meter.flat(walk).any()


def test_with_flatness_only_white_comfort_noise_is_a_run_whatever_the_chunking() -> None:
    speech = noise(0.3, SR, seed=1)
    audio = np.concatenate([speech, comfort_noise(0.4), speech, brown_background(0.4, seed=3), speech])
    for chunk in (len(audio), 160, 7, 333):
        quiet = QuietFrames(FRAME, 800, LEVEL, Flatness(FRAME, SR, 0.8))
        shape = split(quiet, audio, chunk)
        assert [s if isinstance(s, int) else len(s) for s in shape] == [2400 + 320, 3200 - 320, 8000], chunk
        np.testing.assert_array_equal(
            shape[2], np.concatenate([speech, brown_background(0.4, seed=3), speech])
        )
    level_only = QuietFrames(FRAME, 800, LEVEL)
    split(level_only, brown_background(0.4, seed=3), 160)
    assert level_only.runs >= 1  # without the meter the coloured background makes runs too


def test_the_flatness_meter_forgets_the_sound_before_a_gap() -> None:
    quiet = QuietFrames(FRAME, 800, LEVEL, Flatness(FRAME, SR, 0.8))
    quiet.feed(comfort_noise(0.2))
    assert [p for p in quiet.flush() if isinstance(p, SilenceRun)]
    out = quiet.feed(np.concatenate([brown_background(0.04, seed=5), comfort_noise(0.2, seed=6)]))
    out += quiet.flush()
    # after the gap the context starts afresh: the brown frames do not borrow the white's
    assert sum(len(p) for p in out if not isinstance(p, SilenceRun)) >= 320


def test_a_bad_flatness_is_refused() -> None:
    for bad in (-0.1, 1.0, float("nan"), True):
        with pytest.raises(ConfigError, match=r"stream\.quiet_min_flatness: expected a spectral flatness"):
            StreamConfig(quiet_min_flatness=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="minimum: expected a flatness between 0 and 1"):
        Flatness(FRAME, SR, 1.5)
    with pytest.raises(ValueError, match="frame_samples: expected a frame with at least 16 spectral bins"):
        Flatness(20, SR, 0.8)  # 400 Hz bins: 9 in the band


def test_by_default_a_coloured_pause_stays_but_the_level_alone_splices_it() -> None:
    pause = brown_background(0.5, seed=7) * np.float32(10 ** (-10 / 20))  # -70 dBFS, below either level
    kept = stream_with_comfort_noise(CFG, pause)
    assert not [g for g in kept if isinstance(g, GapEvent)]
    level_only = replace(CFG, quiet_level_dbfs=-55.0, quiet_min_flatness=0.0)
    gaps = [
        (g.t_start, g.cause) for g in stream_with_comfort_noise(level_only, pause) if isinstance(g, GapEvent)
    ]
    assert gaps and all(cause == "comfort-noise" and 1.5 <= t < 2.0 for t, cause in gaps)


def test_comfort_noise_is_spliced_however_long_but_digital_silence_restarts() -> None:
    """A call's pauses stood in for by comfort noise are one take with the speech around
    them: a 2 s run (beyond the 1 s tolerance) is spliced and windows span it; 2 s of
    digital silence (a muted leg, audio missing) restarts windowing."""
    events = stream_with_comfort_noise(CFG, comfort_noise(2.0))
    gaps = [(g.t_start, g.t_end, g.cause) for g in events if isinstance(g, GapEvent)]
    assert gaps == [(pytest.approx(1.54), 3.5, "comfort-noise")]
    spans = [(s.t_start, s.t_end) for s in events if isinstance(s, ScoreEvent)]
    assert any(a < 1.54 and b > 3.5 for a, b in spans)  # windows span the 1.96 s splice
    zeros = stream_with_comfort_noise(CFG, np.zeros(2 * SR, np.float32))
    assert [(g.t_start, g.t_end, g.cause) for g in zeros if isinstance(g, GapEvent)] == [
        (1.5, 3.5, "silence")
    ]
    zero_spans = [(s.t_start, s.t_end) for s in zeros if isinstance(s, ScoreEvent)]
    assert zero_spans and all(end <= 1.5 or start >= 3.5 for start, end in zero_spans)


def test_flatness_is_measured_on_quiet_contexts_only_whatever_the_chunking() -> None:
    rng = np.random.default_rng(3)
    frames = rng.standard_normal((40, FRAME)) * np.exp(rng.standard_normal((40, 1)))
    frames[10:20] = np.cumsum(rng.standard_normal((10, FRAME)), axis=1)  # brown stretch
    quiet = rng.random(40) < 0.7
    quiet[37:40] = True  # the last frame is measured: checked by hand below
    full = Flatness(FRAME, SR, 0.8).measure(frames, quiet)
    for size in (1, 6, 13):
        meter = Flatness(FRAME, SR, 0.8)
        chunked = np.concatenate(
            [meter.measure(frames[i : i + size], quiet[i : i + size]) for i in range(0, 40, size)]
        )
        np.testing.assert_allclose(chunked, full, rtol=1e-9, equal_nan=True)
    measurable = np.array([i >= 2 and quiet[i - 2 : i + 1].all() for i in range(40)])
    assert np.array_equal(~np.isnan(full), measurable)  # a loud frame in the context: not measured
    window = np.hanning(FRAME)
    bands = []
    for row in frames[37:40]:  # the last frame's own context, by hand
        power = np.abs(np.fft.rfft(row * window)) ** 2
        meter = Flatness(FRAME, SR, 0.8)
        bands.append(power[meter.bins].reshape(16, meter.per_band).mean(axis=1))
    context = np.sum(bands, axis=0)
    assert full[39] == pytest.approx(np.exp(np.mean(np.log(context))) / np.mean(context))


def test_one_frame_messages_split_exactly_as_whole_chunks_do() -> None:
    """20 ms messages take a shorter path (``QuietFrames._one_frame``); on random runs of
    speech, white comfort noise, brown background and frames right at the level, it must
    give the same parts, sample for sample, as one chunk and odd chunks."""
    rng = np.random.default_rng(7)
    pieces = []
    for i in range(60):
        frames = int(rng.integers(1, 12))
        kind = int(rng.integers(4))
        if kind == 0:
            piece = noise(frames * FRAME / SR, SR, seed=i)
        elif kind == 1:
            piece = comfort_noise(frames * FRAME / SR, seed=i)
        elif kind == 2:
            piece = brown_background(frames * FRAME / SR, seed=i)
        else:  # every frame's RMS at the level: quiet by the rule's "at or below"
            piece = comfort_noise(frames * FRAME / SR, seed=i)
            for k in range(frames):
                f = piece[k * FRAME : (k + 1) * FRAME].astype(np.float64)
                scaled_frame = f * (LEVEL * 0.999 / np.sqrt(np.mean(f * f)))
                piece[k * FRAME : (k + 1) * FRAME] = scaled_frame.astype(np.float32)
        pieces.append(piece)
    audio = np.concatenate(pieces)

    def make(flatness: bool) -> QuietFrames:
        return QuietFrames(FRAME, 800, LEVEL, Flatness(FRAME, SR, 0.8) if flatness else None)

    for flatness in (False, True):
        whole = split(make(flatness), audio, len(audio))
        assert any(isinstance(s, int) for s in whole), flatness  # runs were found
        for chunk in (FRAME, 333):
            shape = split(make(flatness), audio, chunk)
            assert len(shape) == len(whole), (flatness, chunk)
            for got, want in zip(shape, whole, strict=True):
                if isinstance(want, int):
                    assert got == want, (flatness, chunk)
                else:
                    assert isinstance(got, np.ndarray)
                    np.testing.assert_array_equal(got, want)


def test_one_row_flatness_in_plain_floats_matches_the_rows_version() -> None:
    from spoofwatch.stream.core.quiet import _flatness, _row_flatness

    rng = np.random.default_rng(3)
    rows = np.abs(rng.standard_normal((50, 16))) ** 3
    rows[0] = 1.0  # flat: exactly 1
    rows[1, :8] = 0.0  # zeros are floored, as in the rows' version
    expected = _flatness(rows)
    got = np.array([_row_flatness(row) for row in rows])
    assert np.allclose(got, expected, rtol=1e-12, atol=0.0)
    assert got[0] == pytest.approx(1.0) and got.min() < 0.5
