"""Tests of window cutting: config validation, the windows cut, chunking invariance, tiling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoofwatch.errors import AudioError, ConfigError
from spoofwatch.stream.core.windowing import Window, WindowConfig, Windower, cut_windows

# Small rate so property tests stay fast: window 40 samples, hop 10, min 20.
SMALL = WindowConfig(sample_rate=100, window_s=0.4, hop_s=0.1, min_s=0.2)


def _audio(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)


def _feed_in_chunks(audio: np.ndarray, sizes: list[int], config: WindowConfig) -> list[Window]:
    windower = Windower(config)
    windows: list[Window] = []
    pos = 0
    for size in sizes:
        windows += windower.feed(audio[pos : pos + size])
        pos += size
    windows += windower.feed(audio[pos:])
    return windows + windower.flush()


# --- WindowConfig --------------------------------------------------------------------------


def test_default_config_sample_counts() -> None:
    config = WindowConfig()
    assert (config.window_samples, config.hop_samples, config.min_samples) == (64000, 16000, 8000)


def test_float_rounding_of_whole_sample_durations_is_accepted() -> None:
    config = WindowConfig(sample_rate=16000, window_s=0.3, hop_s=0.1, min_s=0.1)
    assert (config.window_samples, config.hop_samples) == (4800, 1600)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window_s": 0.00003}, "window_s"),
        ({"hop_s": 1.00001}, "hop_s"),
        ({"hop_s": 5.0}, "hop_s"),
        ({"window_s": -1.0}, "window_s"),
        ({"hop_s": 0.0}, "hop_s"),
        ({"min_s": 0.0}, "min_s"),
        ({"min_s": 5.0}, "min_s"),
        ({"window_s": math.nan}, "window_s"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": 16000.0}, "sample_rate"),
        ({"sample_rate": True}, "sample_rate"),
    ],
)
def test_invalid_config_names_the_field_and_value(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: expected .*got"):
        WindowConfig(**kwargs)  # type: ignore[arg-type]


# --- what gets cut -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [40, 41, 49, 50, 137])
def test_windows_are_the_hop_aligned_slices_that_fit(n: int) -> None:
    audio = _audio(n)
    windows = cut_windows(audio, SMALL)
    starts = list(range(0, n - 40 + 1, 10))
    assert [w.start_sample for w in windows] == starts
    assert [w.index for w in windows] == list(range(len(starts)))
    for window, start in zip(windows, starts, strict=True):
        assert not window.tiled
        assert window.samples.dtype == np.float32
        np.testing.assert_array_equal(window.samples, audio[start : start + 40])
        assert window.t_start == pytest.approx(start / 100)
        assert window.t_end == pytest.approx((start + 40) / 100)


def test_window_appears_as_soon_as_its_last_sample_arrives() -> None:
    windower = Windower(SMALL)
    audio = _audio(60)
    assert windower.feed(audio[:39]) == []
    assert [w.start_sample for w in windower.feed(audio[39:40])] == [0]
    assert windower.feed(audio[40:49]) == []
    assert [w.start_sample for w in windower.feed(audio[49:60])] == [10, 20]
    assert (windower.samples_in, windower.windows_out) == (60, 3)


def test_one_huge_chunk_far_beyond_the_ring_gives_every_window() -> None:
    config = WindowConfig(sample_rate=1000, window_s=0.05, hop_s=0.02, min_s=0.01)
    audio = _audio(10_000)
    windows = Windower(config).feed(audio)
    assert len(windows) == (10_000 - 50) // 20 + 1
    last = windows[-1]
    np.testing.assert_array_equal(last.samples, audio[last.start_sample : last.start_sample + 50])


def test_window_samples_are_read_only() -> None:
    window = cut_windows(_audio(40), SMALL)[0]
    with pytest.raises(ValueError, match="read-only"):
        window.samples[0] = 0.0


def test_float64_input_is_converted_to_float32() -> None:
    audio = _audio(40)
    windows = cut_windows(audio.astype(np.float64), SMALL)
    assert windows == cut_windows(audio, SMALL)
    assert windows[0].samples.dtype == np.float32


# --- flush and tiling ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [20, 23, 39])
def test_short_stream_flushes_one_tiled_window(n: int) -> None:
    audio = _audio(n)
    windower = Windower(SMALL)
    assert windower.feed(audio) == []
    [window] = windower.flush()
    assert window.tiled and window.index == 0 and window.start_sample == 0
    assert window.samples.shape == (40,)
    for k in range(0, 40, n):  # each repetition is the audio itself, never zeros
        np.testing.assert_array_equal(window.samples[k : k + n], audio[: min(n, 40 - k)])
    assert window.t_start == 0.0
    assert window.t_end == pytest.approx(n / 100)
    assert windower.windows_out == 1
    assert windower.flush() == []


@pytest.mark.parametrize("n", [0, 1, 19])
def test_stream_shorter_than_min_s_gives_nothing(n: int) -> None:
    assert cut_windows(_audio(n), SMALL) == []


def test_flush_after_windows_emits_nothing_for_the_tail() -> None:
    windower = Windower(SMALL)
    assert len(windower.feed(_audio(45))) == 1
    assert windower.flush() == []


def test_feed_after_flush_needs_reset() -> None:
    windower = Windower(SMALL)
    windower.feed(_audio(10))
    windower.flush()
    with pytest.raises(RuntimeError, match="reset"):
        windower.feed(_audio(10))


def test_reset_starts_a_fresh_stream() -> None:
    audio = _audio(77)
    windower = Windower(SMALL)
    first = windower.feed(audio) + windower.flush()
    windower.reset()
    assert (windower.samples_in, windower.windows_out) == (0, 0)
    assert windower.feed(audio) + windower.flush() == first


# --- input validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunk", "pattern"),
    [
        (np.zeros((2, 10), dtype=np.float32), r"1-D.*\(2, 10\)"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), "finite.*1 NaN/inf of 3"),
        (np.array([np.inf], dtype=np.float32), "finite"),
        (np.array([1e300]), "finite"),
        (np.zeros(10, dtype=np.int16), "float.*int16"),
    ],
)
def test_bad_chunks_are_audio_errors(chunk: np.ndarray, pattern: str) -> None:
    windower = Windower(SMALL)
    with pytest.raises(AudioError, match=pattern):
        windower.feed(chunk)
    assert windower.samples_in == 0


def test_empty_chunk_is_accepted() -> None:
    windower = Windower(SMALL)
    assert windower.feed(np.zeros(0, dtype=np.float32)) == []
    assert windower.samples_in == 0


# --- Window ----------------------------------------------------------------------------------


def test_window_equality_compares_arrays_bit_for_bit() -> None:
    a = np.array([0.0, 1.0], dtype=np.float32)
    window = Window(index=0, start_sample=0, samples=a, sample_rate=100, tiled=False)
    assert window == Window(0, 0, a.copy(), 100, False)
    assert window != Window(0, 0, np.array([-0.0, 1.0], dtype=np.float32), 100, False)
    assert window != Window(1, 0, a, 100, False)
    assert window.t_end == pytest.approx(0.02)


# --- chunking invariance ---------------------------------------------------------------------


chunk_sizes = st.one_of(
    st.just([1] * 200),
    st.just([7] * 30),
    st.lists(st.integers(0, 60), max_size=15),
)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 200), sizes=chunk_sizes, seed=st.integers(0, 3))
def test_any_chunking_yields_identical_windows(n: int, sizes: list[int], seed: int) -> None:
    audio = _audio(n, seed)
    expected = cut_windows(audio, SMALL)
    assert _feed_in_chunks(audio, sizes, SMALL) == expected
    if n >= 40:
        assert [w.start_sample for w in expected] == list(range(0, n - 40 + 1, 10))
    else:
        assert [w.tiled for w in expected] == ([True] if n >= 20 else [])


@settings(max_examples=10, deadline=None)
@given(n=st.integers(0, 500), hop_s=st.sampled_from([0.01, 0.1, 0.25, 0.4]))
def test_one_and_whole_and_160_sample_chunks_agree(n: int, hop_s: float) -> None:
    config = WindowConfig(sample_rate=100, window_s=0.4, hop_s=hop_s, min_s=0.2)
    audio = _audio(n, seed=n)
    whole = cut_windows(audio, config)
    assert _feed_in_chunks(audio, [1] * n, config) == whole
    assert _feed_in_chunks(audio, [160] * (n // 160), config) == whole
