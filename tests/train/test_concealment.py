"""The call-path fillers of the ``augmented-gaps`` channel: comfort noise only in the pauses,
concealment and digital silence where frames are lost, the same draws for the same clip."""

from __future__ import annotations

import numpy as np
import pytest

from spoofwatch.train.augment import augmented_channel
from spoofwatch.train.channel import get_channel
from spoofwatch.train.concealment import (
    comfort_noise,
    dtx,
    fill_plc,
    pauses,
    plc_bursts,
    with_gaps,
    zero_inserts,
)

SR = 16000


def talk_and_pause() -> np.ndarray:
    """1 s of a loud tone, 0.5 s of near silence, 1 s of tone."""
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    quiet = (1e-5 * np.random.default_rng(0).standard_normal(SR // 2)).astype(np.float32)
    return np.concatenate([tone, quiet, tone])


def test_pauses_are_the_quiet_runs_and_dtx_fills_only_them() -> None:
    x = talk_and_pause()
    spans = pauses(x, SR)
    assert spans == [pytest.approx((1.0, 1.5))]
    y = dtx(x, SR, np.random.default_rng(3))
    assert len(y) == len(x) and y.dtype == np.float32
    np.testing.assert_array_equal(y[:SR], x[:SR])
    np.testing.assert_array_equal(y[-SR:], x[-SR:])
    noise = y[SR : SR + SR // 2]
    level = 20 * np.log10(np.sqrt(np.mean(noise.astype(np.float64) ** 2)))
    assert -79.0 < level < -41.0  # drawn from -75..-45 dBFS, ±3 dB silence-descriptor steps
    assert not np.allclose(noise, x[SR : SR + SR // 2])


def test_comfort_noise_has_the_asked_level_and_steps_with_sid_updates() -> None:
    rng = np.random.default_rng(1)
    flat = comfort_noise(SR, SR, rng, level_dbfs=-50.0)
    assert 20 * np.log10(np.sqrt(np.mean(flat.astype(np.float64) ** 2))) == pytest.approx(-50.0, abs=0.1)
    stepped = comfort_noise(SR, SR, rng, level_dbfs=-50.0, colour=1, sid_s=0.1)
    blocks = stepped.reshape(10, -1).astype(np.float64)
    levels = 20 * np.log10(np.sqrt(np.mean(blocks**2, axis=1)))
    assert levels.max() - levels.min() > 0.5 and np.all(np.abs(levels + 50) < 4.5)


def test_plc_repeats_the_last_frame_fading_and_zero_inserts_are_digital_silence() -> None:
    x = talk_and_pause()
    out = x.copy()
    fill_plc(out, SR // 2, SR // 2 + 960, SR)
    fade = 1.0 - np.arange(320) / 960
    np.testing.assert_allclose(out[SR // 2 : SR // 2 + 320], x[SR // 2 - 320 : SR // 2] * fade, atol=1e-6)
    assert abs(out[SR // 2 + 959]) < 0.01
    lost = plc_bursts(x, SR, np.random.default_rng(5))
    assert len(lost) == len(x) and not np.array_equal(lost, x)
    muted = zero_inserts(x, SR, np.random.default_rng(5))
    changed = muted != x
    assert changed.any() and np.all(muted[changed] == 0.0)


def test_the_augmented_gaps_channel_is_augmented_plus_a_filler_on_about_half_the_clips() -> None:
    channel = get_channel("augmented-gaps")
    rng = np.random.default_rng(7)
    same = filled = 0
    for _ in range(24):
        x = np.concatenate([talk_and_pause(), (0.1 * rng.standard_normal(SR)).astype(np.float32)])
        y = channel(x, SR)
        np.testing.assert_array_equal(y, channel(x, SR))  # deterministic per clip: the cache stays valid
        assert len(y) == len(x)
        if np.array_equal(y, augmented_channel(x, SR)):
            same += 1
        else:
            filled += 1
    assert same >= 4 and filled >= 4
    y, name = with_gaps(talk_and_pause(), SR, np.random.default_rng(0), p=1.0)
    assert name in {"dtx", "plc", "zeros"}
    assert with_gaps(talk_and_pause(), SR, np.random.default_rng(0), p=0.0)[1] is None


def test_the_telephone_gaps_channel_fills_every_clip_after_the_g711_codec() -> None:
    from spoofwatch.train.channel import telephone_mulaw

    channel = get_channel("telephone-gaps")
    rng = np.random.default_rng(11)
    for _ in range(6):
        x = np.concatenate([talk_and_pause(), (0.1 * rng.standard_normal(SR)).astype(np.float32)])
        y = channel(x, SR)
        np.testing.assert_array_equal(y, channel(x, SR))  # deterministic per clip
        assert len(y) == len(x) and y.dtype == np.float32
        phone = telephone_mulaw(x, SR)
        assert not np.allclose(y, phone, atol=1e-4)  # a filler on every clip
        # The filler is made at 8 kHz: nothing above the narrow band is added.
        spectrum = np.abs(np.fft.rfft(y - phone))
        freqs = np.fft.rfftfreq(len(y), 1 / SR)
        assert spectrum[freqs > 4200].sum() < 0.02 * spectrum.sum()
