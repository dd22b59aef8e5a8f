"""The VoIP-app channel: WebRTC's processing and Opus packets, aligned, deterministic, lossy."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from spoofwatch.errors import ConfigError
from spoofwatch.train.channel import get_channel
from spoofwatch.train.concealment import lost_frames
from spoofwatch.train.voip import OPUS_FRAME, opus, voip_app, webrtc_apm

SR = 16000


def _voiced(seconds: float = 3.0, seed: int = 0, noise: float = 0.003) -> np.ndarray:
    """Syllable-like bursts of a 140 Hz harmonic series, with quiet gaps between them."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0.0, None) ** 2
    harmonics = sum(np.sin(2 * np.pi * 140 * k * t + k) / k for k in range(1, 20))
    return (0.15 * envelope * harmonics + noise * rng.standard_normal(len(t))).astype(np.float32)


def _bursts(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Bursts of white noise: broadband, so a delay shows as one clear correlation peak
    (a harmonic series would peak at every pitch period too)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0.0, None) ** 2
    return (0.1 * envelope * rng.standard_normal(len(t))).astype(np.float32)


def _lag(y: np.ndarray, x: np.ndarray) -> int:
    size = 2 * len(x)
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
    k = int(np.argmax(np.abs(corr)))
    return k if k < len(x) else k - size


def test_the_channel_is_deterministic_per_clip_and_keeps_length_and_range() -> None:
    channel = get_channel("voip")
    x = _voiced()
    y = channel(x, SR)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert np.array_equal(y, channel(x, SR))  # the embedding cache relies on it
    assert not np.allclose(y, x, atol=1e-3)


def test_clips_draw_different_paths() -> None:
    drawn = []
    for seed in range(16):
        steps: list[str] = []
        voip_app(_voiced(1.0, seed=seed), SR, applied=steps)
        drawn.append(steps)
    suppressors = {next(s for s in steps if s.startswith("ns")).split("+")[0] for steps in drawn}
    assert len(suppressors) >= 3
    assert any("agc" in " ".join(steps) for steps in drawn)
    assert any("agc" not in " ".join(steps) for steps in drawn)
    assert any(steps[0] == "noise" for steps in drawn) and any(steps[0] != "noise" for steps in drawn)
    assert any(steps[-1].endswith("+loss") for steps in drawn)


@pytest.mark.parametrize("suppression", [1, 4])
def test_the_suppressor_output_is_aligned_with_its_input(suppression: int) -> None:
    x = _bursts()
    assert _lag(webrtc_apm(x, SR, 0, suppression), x) == 0


def test_noise_suppression_removes_stationary_noise_and_keeps_speech() -> None:
    x = _voiced(4.0, noise=0.02)
    y = webrtc_apm(x, SR, 0, 4)
    tail = slice(SR, None)  # after the suppressor's noise estimate settles
    quiet = np.zeros(len(x), dtype=bool)
    quiet[tail] = np.abs(np.sin(2 * np.pi * 2.5 * np.arange(len(x)) / SR))[tail] < 0.1  # the gaps
    gap_drop_db = 10 * np.log10(np.mean(y[quiet] ** 2) / np.mean(x[quiet] ** 2))
    loud = np.zeros(len(x), dtype=bool)
    loud[tail] = (np.sin(2 * np.pi * 2.5 * np.arange(len(x)) / SR) > 0.7)[tail]
    speech_drop_db = 10 * np.log10(np.mean(y[loud] ** 2) / np.mean(x[loud] ** 2))
    assert gap_drop_db < -10.0
    assert speech_drop_db > -3.0


def test_gain_control_raises_a_quiet_talker() -> None:
    x = _voiced(4.0) * 0.05
    raised = webrtc_apm(x, SR, 3, 1)
    level = webrtc_apm(x, SR, 0, 1)
    tail = slice(2 * SR, None)
    assert np.sqrt(np.mean(raised[tail] ** 2)) > 2.0 * np.sqrt(np.mean(level[tail] ** 2))


def _high_band_share(y: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(y)) ** 2
    return float(power[np.fft.rfftfreq(len(y), 1.0 / SR) > 4500].sum() / power.sum())


def test_opus_is_aligned_and_its_lowest_rates_go_narrowband() -> None:
    x = _bursts()
    assert _lag(opus(x, SR, 8.0), x) == 0 and _lag(opus(x, SR, 24.0), x) == 0
    x = _voiced()
    wide = _high_band_share(x)
    assert _high_band_share(opus(x, SR, 8.0)) < 1e-3 * wide  # libopus drops to narrowband at 8 kbit/s
    assert _high_band_share(opus(x, SR, 24.0)) > 0.25 * wide


def test_lost_packets_are_concealed_not_silenced() -> None:
    x = _voiced()
    frames = -(-len(x) // OPUS_FRAME) + 1
    lost = np.zeros(frames, dtype=bool)
    lost[[10, 11, 40, 70]] = True  # inside syllables of the 2.5 Hz envelope, and a burst
    kept = opus(x, SR, 16.0)
    concealed = opus(x, SR, 16.0, lost=lost)
    for k in (10, 40, 70):
        part = slice(k * OPUS_FRAME, (k + 1) * OPUS_FRAME)
        assert not np.allclose(concealed[part], kept[part], atol=1e-3)
        assert np.sqrt(np.mean(concealed[part] ** 2)) > 0.1 * np.sqrt(np.mean(kept[part] ** 2))
    # Up to the first lost packet less the encoder's look-ahead (under a frame), untouched.
    assert np.array_equal(concealed[: 9 * OPUS_FRAME], kept[: 9 * OPUS_FRAME])


def test_loss_bursts_have_the_drawn_rates() -> None:
    shares = [lost_frames(5000, np.random.default_rng(seed)).mean() for seed in range(20)]
    assert min(shares) > 0.01 and max(shares) < 0.2
    assert max(shares) - min(shares) > 0.02


def test_other_rates_come_back_at_their_own_rate() -> None:
    x = _voiced(seconds=2.0)
    wide = np.repeat(x, 3)  # 48 kHz
    y = get_channel("voip")(wide, 48000)
    assert y.shape == wide.shape and np.isfinite(y).all()


def test_a_missing_binding_says_which_extra_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "webrtc_noise_gain", None)
    with pytest.raises(ConfigError, match=r"spoofwatch\[train\]"):
        webrtc_apm(_voiced(0.5), SR, 0, 1)
    monkeypatch.delitem(sys.modules, "webrtc_noise_gain")
    monkeypatch.setitem(sys.modules, "opuslib_next", None)
    with pytest.raises(ConfigError, match=r"spoofwatch\[train\]"):
        opus(_voiced(0.5), SR, 12.0)
