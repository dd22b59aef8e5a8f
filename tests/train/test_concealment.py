"""The call-path fillers of the ``augmented-gaps`` channel: comfort noise only in the pauses,
concealment and digital silence where frames are lost, the same draws for the same clip."""

from __future__ import annotations

import numpy as np
import pytest

from spoofwatch.train.augment import augmented_channel
from spoofwatch.train.channel import get_channel
from spoofwatch.train.concealment import (
    SID_FILLERS,
    comfort_noise,
    dtx,
    dtx_sid,
    fill_matched_comfort_noise,
    fill_plc,
    pauses,
    plc_bursts,
    sid_envelope,
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


def band_shares(x: np.ndarray) -> np.ndarray:
    """Share of the power below 500 Hz, 500-2000 Hz and above 2000 Hz."""
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    bands = [power[f < 500].sum(), power[(f >= 500) & (f < 2000)].sum(), power[f >= 2000].sum()]
    return np.array(bands) / power.sum()


def test_matched_comfort_noise_keeps_the_pause_level_and_colour_but_not_its_samples() -> None:
    rng = np.random.default_rng(5)
    brown = np.cumsum(rng.standard_normal(SR))  # a rumbling background, most power low
    brown = (1e-3 * (brown - brown.mean()) / brown.std()).astype(np.float32)
    x = np.concatenate([np.full(SR, 0.3, np.float32), brown, np.full(SR, 0.3, np.float32)])
    y = x.copy()
    fill_matched_comfort_noise(y, SR, 2 * SR, SR)
    cn = y[SR : 2 * SR]
    np.testing.assert_array_equal(y[:SR], x[:SR])
    np.testing.assert_array_equal(y[2 * SR :], x[2 * SR :])
    assert np.sqrt(np.mean(cn**2)) == pytest.approx(np.sqrt(np.mean(brown**2)), rel=0.01)
    assert band_shares(cn)[0] > 0.8 and band_shares(brown)[0] > 0.8
    white = comfort_noise(SR, SR, np.random.default_rng(0), level_dbfs=-60.0)
    assert band_shares(white)[0] < 0.1  # what the fixed comfort noise would have put there
    assert abs(np.corrcoef(np.diff(cn), np.diff(brown))[0, 1]) < 0.1  # new noise, not the pause
    again = x.copy()
    fill_matched_comfort_noise(again, SR, 2 * SR, SR)
    np.testing.assert_array_equal(again, y)
    level_only = x.copy()
    fill_matched_comfort_noise(level_only, SR, 2 * SR, SR, order=0)
    assert np.sqrt(np.mean(level_only[SR : 2 * SR] ** 2)) == pytest.approx(
        np.sqrt(np.mean(brown**2)), rel=0.01
    )
    assert band_shares(level_only[SR : 2 * SR])[0] < 0.1  # white: the level alone


def test_a_silence_descriptor_of_digital_silence_or_a_tone_is_safe() -> None:
    rms, coeffs = sid_envelope(np.zeros(800, np.float32))
    assert rms == 0.0 and list(coeffs) == [1.0]
    y = np.zeros(1600, np.float32)
    fill_matched_comfort_noise(y, 0, 1600, SR)
    assert not np.any(y)
    tone = np.sin(2 * np.pi * 1000 * np.arange(800) / SR).astype(np.float32)
    _, coeffs = sid_envelope(tone)
    assert np.all(np.abs(np.roots(coeffs)) < 1.0)


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


def rumbling_pause_clip() -> np.ndarray:
    """1 s of a loud tone, 0.5 s of a quiet low-frequency background, 1 s of tone."""
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    brown = np.cumsum(np.random.default_rng(2).standard_normal(SR // 2))
    brown = (3e-4 * (brown - brown.mean()) / brown.std()).astype(np.float32)
    return np.concatenate([tone, brown, tone])


def test_sid_comfort_noise_takes_each_pause_level_and_mostly_its_colour() -> None:
    x = rumbling_pause_clip()
    pause = x[SR : SR + SR // 2].astype(np.float64)
    coloured = white = 0
    for seed in range(12):
        y = dtx_sid(x, SR, np.random.default_rng(seed))
        np.testing.assert_array_equal(y[:SR], x[:SR])
        np.testing.assert_array_equal(y[-SR:], x[-SR:])
        cn = y[SR : SR + SR // 2].astype(np.float64)
        assert not np.allclose(cn, pause)
        # One descriptor per pause or one every 0.1-0.2 s of it: the level is the pause's own.
        assert np.sqrt(np.mean(cn**2)) == pytest.approx(np.sqrt(np.mean(pause**2)), rel=0.1)
        if band_shares(cn)[0] > 0.8:
            coloured += 1
        elif band_shares(cn)[0] < 0.1:
            white += 1
    # The pause's envelope two times in three, its level alone (white) otherwise.
    assert coloured >= 5 and white >= 1 and coloured + white == 12


def test_the_telephone_sid_gaps_channel_puts_pause_coloured_comfort_noise_after_the_codec() -> None:
    from spoofwatch.train.channel import telephone_mulaw
    from spoofwatch.train.concealment import gaps_seed

    channel = get_channel("telephone-sid-gaps")
    kinds: list[str | None] = []
    for k in range(16):
        clip = rumbling_pause_clip() * np.float32(1.0 - 0.01 * k)  # another clip: another seed

        def fill(coded: np.ndarray, clip: np.ndarray = clip) -> np.ndarray:
            out, name = with_gaps(coded, 8000, np.random.default_rng(gaps_seed(clip)), 1.0, SID_FILLERS)
            kinds.append(name)
            return out

        y = channel(clip, SR)
        np.testing.assert_array_equal(y, channel(clip, SR))  # deterministic per clip
        np.testing.assert_array_equal(y, telephone_mulaw(clip, SR, fill))  # a filler made at 8 kHz
        assert len(y) == len(clip) and y.dtype == np.float32
        phone = telephone_mulaw(clip, SR)
        assert not np.allclose(y, phone, atol=1e-5)  # on every clip
        if kinds[-1] == "dtx-sid":
            inner = slice(SR + SR // 10, SR + 2 * SR // 5)  # inside the pause, clear of the codec's edges
            cn, pause = y[inner].astype(np.float64), phone[inner].astype(np.float64)
            assert not np.allclose(cn, pause)
            level_db = 20 * np.log10(np.sqrt(np.mean(cn**2)) / np.sqrt(np.mean(pause**2)))
            assert level_db == pytest.approx(0.0, abs=3.0)  # the pause's own level
    assert set(kinds) == {"dtx-sid", "plc", "zeros"}
