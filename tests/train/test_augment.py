"""Augmentation: each transform changes the audio in the intended way and keeps length."""

from __future__ import annotations

import numpy as np
import pytest

from spoofwatch.train.augment import (
    CODECS,
    SIGNAL,
    AugmentPolicy,
    add_noise,
    augment,
    augmented_channel,
    band_limit,
)
from spoofwatch.train.channel import get_channel

SR = 16000


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    # 7.5 kHz lies above every band limit drawn (at most 7 kHz) and the telephone band.
    parts = [(150, 1.0), (300, 0.5), (450, 0.3), (2500, 0.2), (7500, 0.5)]
    harmonics = sum(a * np.sin(2 * np.pi * f * t) for f, a in parts)
    return (0.2 * envelope * harmonics + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("name", sorted(CODECS) + sorted(SIGNAL))
def test_every_transform_keeps_length_range_and_changes_the_audio(name: str) -> None:
    x = _speechlike()
    transform = {**CODECS, **SIGNAL}[name]
    y = transform(x, SR, np.random.default_rng(1))
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0 + 1e-6
    assert not np.allclose(x, y, atol=1e-4)


def _high_band_energy(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spectrum[freqs > 4500].sum() / spectrum.sum())


@pytest.mark.parametrize("name", ["gsm", "alaw", "mulaw"])
def test_telephone_codecs_remove_the_band_above_4_khz(name: str) -> None:
    x = _speechlike()
    assert _high_band_energy(x) > 0.05
    assert _high_band_energy(CODECS[name](x, SR, np.random.default_rng(0))) < 0.001
    assert _high_band_energy(get_channel("telephone")(x, SR)) < 0.001


def test_noise_snr_is_within_the_drawn_range() -> None:
    x = _speechlike()
    for seed in range(5):
        y = add_noise(x, SR, np.random.default_rng(seed))
        snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
        assert 4.5 < snr < 30.5


def test_band_limit_lowers_the_high_band() -> None:
    x = _speechlike()
    assert _high_band_energy(band_limit(x, SR, np.random.default_rng(0))) < _high_band_energy(x) / 2


def test_augmented_channel_is_deterministic_per_clip_and_differs_between_clips() -> None:
    a, b = _speechlike(seed=1), _speechlike(seed=2)
    assert np.array_equal(augmented_channel(a, SR), augmented_channel(a, SR))
    chains = {augment(a, SR, np.random.default_rng(s)).tobytes() for s in range(6)}
    assert len(chains) > 1
    assert augmented_channel(b, SR).shape == b.shape


def test_augment_reports_the_chain_it_applied_without_changing_the_output() -> None:
    x = _speechlike(seed=3)
    seen: set[str] = set()
    for seed in range(12):
        applied: list[str] = []
        y = augment(x, SR, np.random.default_rng(seed), applied=applied)
        assert np.array_equal(y, augment(x, SR, np.random.default_rng(seed)))  # recording draws nothing
        codecs = [name for name in applied if name in CODECS]
        signal = [name for name in applied if name in SIGNAL]
        assert len(codecs) + len(signal) == len(applied) and len(codecs) <= 1
        assert applied == signal + codecs and signal == sorted(signal)  # fixed order, codec last
        seen.update(applied)
    assert seen & set(SIGNAL) and seen & set(CODECS)
    everything: list[str] = []
    augment(x, SR, np.random.default_rng(0), AugmentPolicy(p_signal=1.0, p_codec=0.0), everything)
    assert everything == sorted(SIGNAL)
    nothing: list[str] = []
    y = augment(x, SR, np.random.default_rng(0), AugmentPolicy(p_signal=0.0, p_codec=0.0), nothing)
    assert nothing == [] and np.array_equal(y, x)
    first: list[str] = []
    again: list[str] = []
    augmented_channel(x, SR, applied=first)
    augmented_channel(x, SR, applied=again)
    assert first == again


def test_level_channels_draw_one_gain_per_clip_deterministically() -> None:
    gains_db = []
    for seed in range(12):
        x = _speechlike(seed=seed) * 0.5
        y = get_channel("level")(x, SR)
        assert y.dtype == np.float32 and y.shape == x.shape and np.abs(y).max() <= 1.0
        assert np.array_equal(y, get_channel("level")(x, SR))  # cache-safe: same clip, same gain
        loud = np.abs(y) >= 1.0
        gain = float(np.median(y[~loud & (np.abs(x) > 1e-3)] / x[~loud & (np.abs(x) > 1e-3)]))
        gains_db.append(20 * np.log10(gain))
    assert all(-20.001 <= g <= 6.001 for g in gains_db)
    assert max(gains_db) - min(gains_db) > 10  # clips really get different levels
    phone = get_channel("telephone-level")(_speechlike(), SR)
    assert _high_band_energy(phone) < 0.001


def test_the_cli_help_names_every_channel() -> None:
    from spoofwatch.cli import _CHANNEL_NAMES
    from spoofwatch.train.channel import CHANNELS

    assert set(_CHANNEL_NAMES.split(" | ")) == set(CHANNELS)
