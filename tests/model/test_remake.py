"""The streamed remake (model.remake): each 1 s block vocoded once with 0.2 s of warm-up and
0.1 s of lookahead, the block's own part kept, rounded to 16-bit PCM; a live stream's
windows get exactly the windows of the whole clip's remake, whatever the chunking, hop or
length, with each block vocoded once. The vocoder here is a stand-in function whose output
depends on the whole segment it is given (so a wrong warm-up or lookahead shows)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from fakes import FakeScorer, noise
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import DataError
from spoofwatch.events import ErrorEvent, Event, ScoreEvent
from spoofwatch.model.resynthesis import remake as remake_module
from spoofwatch.model.resynthesis.remake import RemadeBlocks, RemakeContext, StreamedRemake, as_pcm16
from spoofwatch.model.resynthesis.stream_context import RemakeStream, WindowContexts
from spoofwatch.model.resynthesis.vocoder import VocoderError
from spoofwatch.ops.bench import measure_one_stream
from spoofwatch.stream.core.windowing import WindowConfig, Windower, cut_windows
from spoofwatch.stream.engine.pipeline import Pipeline

RATE = 16000


class CountingVocoder:
    """Scales each segment by its RMS and drops its last 40 samples (as FARGAN ends a few
    frames short); counts its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, segment: NDArray[np.floating], vocoder: Path) -> NDArray[np.float32]:
        self.calls.append(len(segment))
        x = np.asarray(segment, dtype=np.float64)
        return (x * 3.0 * np.sqrt(np.mean(x**2)))[:-40].astype(np.float32)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> CountingVocoder:
    vocoder = CountingVocoder()
    monkeypatch.setattr(remake_module, "vocode", vocoder)
    return vocoder


REMAKE = StreamedRemake(Path("/nonexistent/fargan"))


def test_a_clip_is_remade_block_by_block(fake: CountingVocoder) -> None:
    x = noise(3.45, seed=1)
    remade = REMAKE.clip(x)
    assert remade.shape == x.shape and remade.dtype == np.float32
    assert fake.calls == [17600, 20800, 20800, 3200 + 7200]  # the last block: no lookahead left
    for b, first in enumerate([0, 12800, 28800, 44800]):
        start = b * RATE
        segment = x[first : start + RATE + 1600].astype(np.float64)
        expected = (segment * 3.0 * np.sqrt(np.mean(segment**2)))[:-40][start - first : start - first + RATE]
        got = remade[start : start + RATE]
        assert np.array_equal(got[: len(expected)], as_pcm16(expected.astype(np.float32)))
    assert not remade[-40:].any()  # the vocoder's missing end stays silent
    # Rounded to 16-bit PCM exactly as a FLAC written and read by libsndfile.
    assert np.array_equal(as_pcm16(remade), remade)


def test_pcm16_rounding_is_what_libsndfile_writes_and_reads(tmp_path: Path) -> None:
    x = np.concatenate([noise(0.5, seed=3, level=0.3), np.array([1.2, -1.2, 0.99999, -1.0], np.float32)])
    sf.write(tmp_path / "x.flac", x, RATE, subtype="PCM_16")
    back, _ = sf.read(tmp_path / "x.flac", dtype="float32")
    assert np.array_equal(as_pcm16(x), back)


def test_short_clips_and_missing_context_are_handled(fake: CountingVocoder) -> None:
    tiny = noise(0.05, seed=2)
    assert len(REMAKE.clip(tiny)) == len(tiny)
    assert fake.calls == [1600]  # padded to the vocoder's shortest input
    assert len(REMAKE.clip(np.zeros(0, np.float32))) == 0
    with pytest.raises(DataError, match="block 3 needs stream samples from 44800"):
        REMAKE.remake_block(RemakeContext(48000, noise(2.0)), 3)


def _streamed(
    x: NDArray[np.float32], config: WindowConfig, chunks: list[int]
) -> list[tuple[int, NDArray[np.float32], NDArray[np.float32], int]]:
    """(index, window, remake, samples seen when handed on) per window, streamed in
    ``chunks`` (cycled) through Windower, WindowContexts and RemadeBlocks."""
    windower, contexts, blocks = (
        Windower(config),
        WindowContexts(REMAKE, config.window_samples),
        RemadeBlocks(REMAKE),
    )
    out = []
    position, n = 0, 0
    while position < len(x):
        chunk = x[position : position + chunks[n % len(chunks)]]
        position, n = position + len(chunk), n + 1
        for window, context in contexts.add(chunk, windower.feed(chunk)):
            assert contexts.held <= 3
            real = window.covered_samples if window.tiled else None
            remade = blocks.window(context, window.start_sample, len(window.samples), real)
            out.append((window.index, window.samples, remade, contexts.end))
    for window, context in contexts.finish(windower.flush()):
        real = window.covered_samples if window.tiled else None
        remade = blocks.window(context, window.start_sample, len(window.samples), real)
        out.append((window.index, window.samples, remade, contexts.end))
    return out


@pytest.mark.parametrize(
    ("seconds", "hop_s", "chunks"),
    [
        (9.7, 1.0, [320]),  # 20 ms packets
        (9.7, 0.5, [7, 1601, 333]),
        (12.0, 2.0, [16000 * 30]),  # one chunk larger than the stream
        (2.3, 1.0, [1000]),  # shorter than a window: the tiled window
        (4.0, 1.0, [4000]),
    ],
)
def test_streamed_windows_get_the_windows_of_the_clips_remake(
    fake: CountingVocoder, seconds: float, hop_s: float, chunks: list[int]
) -> None:
    config = WindowConfig(RATE, 4.0, hop_s, 0.5)
    x = noise(seconds, seed=5)
    expected = cut_windows(REMAKE.clip(x), config)
    clip_calls = len(fake.calls)
    fake.calls.clear()
    streamed = _streamed(x, config, chunks)
    assert [s[0] for s in streamed] == list(range(len(expected)))
    for (_, window, remade, _), want, cut in zip(streamed, expected, cut_windows(x, config), strict=True):
        assert np.array_equal(window, cut.samples)
        assert np.array_equal(remade, want.samples)
    # Each block a window covers vocoded once (the clip's remake also does the blocks past
    # the last window).
    covered = set()
    for window in cut_windows(x, config):
        covered |= set(REMAKE.blocks_of(0 if window.tiled else window.start_sample, window.covered_samples))
    assert len(fake.calls) == len(covered) <= clip_calls


def test_a_window_on_whole_seconds_waits_only_for_the_lookahead(fake: CountingVocoder) -> None:
    config = WindowConfig(RATE, 4.0, 1.0, 0.5)
    streamed = _streamed(noise(8.0, seed=6), config, [160])
    # Window k covers [k, k + 4) s and is handed on once 0.1 s more has arrived (at 8 s,
    # the stream's end, for the last one).
    assert [seen for *_, seen in streamed] == [(k + 4) * RATE + 1600 for k in range(4)] + [8 * RATE]


def test_remade_blocks_refuse_a_context_that_misses_a_block(fake: CountingVocoder) -> None:
    blocks = RemadeBlocks(REMAKE)
    with pytest.raises(DataError, match="needs stream samples"):
        blocks.window(RemakeContext(16000, noise(6.0)), 16000, 4 * RATE)


class RemakingScorer(FakeScorer):
    """Scores a window by how far its remake is from it (the streamed front end's idea),
    so a wrong remake changes the score."""

    def stream_context(self) -> RemakeStream:
        return RemakeStream(REMAKE, self.window_samples)

    def score_windows(
        self, windows: NDArray[np.float32], remakes: NDArray[np.float32] | None = None
    ) -> NDArray[np.float64]:
        assert remakes is not None and remakes.shape == windows.shape
        self.calls.append(len(windows))
        return np.log(np.mean((windows - remakes) ** 2, axis=1) + 1e-9).astype(np.float64)


def test_the_engine_scores_each_stream_with_its_own_remake(fake: CountingVocoder) -> None:
    """Two streams fed side by side in 20 ms packets: each window's score is the one its
    window and the matching window of the clip's remake give offline."""
    config = StreamConfig(window_s=4.0, hop_s=1.0)
    clips = {"a": noise(7.3, seed=7, level=0.05), "b": noise(5.0, seed=8, level=0.2)}
    scorer = RemakingScorer(window_s=4.0)

    async def body(pipeline: Pipeline) -> list[Event]:
        sub = pipeline.hub.subscribe(None, maxsize=10000)
        handles = {name: pipeline.open_stream(name, source="test", sample_rate=RATE) for name in clips}
        for start in range(0, 8 * RATE, 320):
            for name, x in clips.items():
                if start < len(x):
                    await handles[name].feed_wait(x[start : start + 320])
        await asyncio.gather(*(h.close() for h in handles.values()))
        events: list[Event] = []
        while not sub.queue.empty():
            events.append(sub.queue.get_nowait())
        return events

    async def run() -> list[Event]:
        pipeline = Pipeline(scorer, config, EngineConfig(max_batch=8, max_wait_ms=5))
        worker = asyncio.create_task(pipeline.run())
        try:
            return await body(pipeline)
        finally:
            worker.cancel()

    events = asyncio.run(run())
    window_config = WindowConfig(RATE, 4.0, 1.0, config.min_s)
    for name, x in clips.items():
        got = [e.score for e in events if isinstance(e, ScoreEvent) and e.stream == name]
        windows = np.stack([w.samples for w in cut_windows(x, window_config)])
        remakes = np.stack([w.samples for w in cut_windows(REMAKE.clip(x), window_config)])
        expected = scorer.score_windows(windows, remakes)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert max(scorer.calls) > 1  # batched across windows and streams


def test_bench_times_a_lone_stream_vocoding_its_new_block_per_window(fake: CountingVocoder) -> None:
    scorer = RemakingScorer(window_s=4.0)
    one = measure_one_stream(scorer, hop_s=1.0, windows=4)
    # A warm-up window (4 blocks), then one new block for each of the 4 timed windows.
    assert len(fake.calls) == 4 + 4
    assert scorer.calls == [1] * 5
    assert one.ms_per_window > 0 and one.hop_s == 1.0


def test_a_stream_whose_remake_fails_does_not_fail_the_others(
    fake: CountingVocoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vocoder fails on one stream's audio (loud here): that stream's windows end in
    inference_failed errors naming the vocoder, the other stream, batched with it, is
    scored in full, and the engine goes on."""

    def failing(segment: NDArray[np.floating], vocoder: Path) -> NDArray[np.float32]:
        if np.max(np.abs(segment)) > 0.5:
            raise VocoderError("fargan_demo -features: expected exit status 0, found 3 (bad input)")
        return fake(segment, vocoder)

    monkeypatch.setattr(remake_module, "vocode", failing)
    config = StreamConfig(window_s=4.0, hop_s=1.0)
    clips = {"quiet": noise(6.0, seed=9, level=0.05), "loud": np.clip(noise(6.0, seed=10, level=0.5), -1, 1)}
    scorer = RemakingScorer(window_s=4.0)

    async def run() -> list[Event]:
        pipeline = Pipeline(scorer, config, EngineConfig(max_batch=8, max_wait_ms=50))
        worker = asyncio.create_task(pipeline.run())
        sub = pipeline.hub.subscribe(None, maxsize=10000)
        try:
            handles = {name: pipeline.open_stream(name, source="test", sample_rate=RATE) for name in clips}
            for start in range(0, 6 * RATE, 1600):
                for name, x in clips.items():
                    await handles[name].feed_wait(x[start : start + 1600])
            await asyncio.gather(*(h.close() for h in handles.values()))
            assert pipeline.batcher.counters.failed == 3 and pipeline.batcher.counters.scored == 3
        finally:
            worker.cancel()
        events: list[Event] = []
        while not sub.queue.empty():
            events.append(sub.queue.get_nowait())
        return events

    events = asyncio.run(run())
    quiet = [e for e in events if isinstance(e, ScoreEvent) and e.stream == "quiet"]
    assert len(quiet) == 3  # windows at 0, 1 and 2 s
    assert not [e for e in events if isinstance(e, ScoreEvent) and e.stream == "loud"]
    errors = [e for e in events if isinstance(e, ErrorEvent) and e.stream == "loud"]
    assert len(errors) == 3 and all(e.code == "inference_failed" for e in errors)
    assert "remaking the window failed" in errors[0].message and "fargan_demo" in errors[0].message
    assert not [e for e in events if isinstance(e, ErrorEvent) and e.stream == "quiet"]
