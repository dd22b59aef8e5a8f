"""research/pause_canon.py's canonicaliser: speech is kept, every pause becomes noise of its
own level, so a natural pause and one a DTX decoder filled reach the encoder alike."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from research_kit import research_script

SR = 16000


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return research_script("pause_canon")


def _speech_with_pause(rng: np.random.Generator) -> np.ndarray:
    """1.5 s of a loud voiced sound, a 1 s pause holding a breath-like swell over a quiet
    background, 1.5 s more of the sound."""
    t = np.arange(int(1.5 * SR)) / SR
    voiced = 0.3 * np.sign(np.sin(2 * np.pi * 140 * t)) * (1 + 0.3 * np.sin(2 * np.pi * 4 * t))
    swell = np.hanning(SR) * 0.002 * rng.standard_normal(SR)
    pause = 0.0005 * rng.standard_normal(SR) + swell
    return np.concatenate([voiced, pause, voiced]).astype(np.float32)


def test_speech_is_kept_and_the_pause_becomes_noise_of_its_level(script: ModuleType) -> None:
    x = _speech_with_pause(np.random.default_rng(0))
    y = script.canonicalise(x)
    speech = slice(0, int(1.4 * SR))
    np.testing.assert_array_equal(y[speech], x[speech])
    pause = slice(int(1.6 * SR), int(2.4 * SR))
    assert not np.array_equal(y[pause], x[pause])
    rms_x, rms_y = np.sqrt(np.mean(x[pause] ** 2)), np.sqrt(np.mean(y[pause] ** 2))
    assert abs(20 * np.log10(rms_y / rms_x)) < 1.0
    # the swell in the middle of the pause is gone: the noise holds one level
    frames = y[int(1.52 * SR) : int(2.48 * SR)].reshape(-1, 320)
    levels = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)))
    assert levels.max() - levels.min() < 3.0
    assert np.array_equal(script.canonicalise(x), y)  # the same window gives the same samples


def test_a_pause_a_decoder_already_filled_canonicalises_like_the_natural_one(script: ModuleType) -> None:
    concealment = research_script("gap_false_alarms").make_call
    x = _speech_with_pause(np.random.default_rng(1))
    (piece,) = concealment(x, SR, "dtx-matched").pieces
    filled = piece.audio
    assert filled is not None and not np.array_equal(filled, x)
    a, b = script.canonicalise(x), script.canonicalise(filled)
    np.testing.assert_array_equal(a[: int(1.4 * SR)], b[: int(1.4 * SR)])
    gap_before = np.sqrt(np.mean((filled - x) ** 2))
    gap_after = np.sqrt(np.mean((b - a) ** 2))
    assert gap_after < 0.2 * gap_before  # what reaches the encoder nearly the same
