"""Tests of the energy speech gate on synthetic signals of known level."""

from __future__ import annotations

import numpy as np
import pytest

from spoofwatch.errors import AudioError, ConfigError
from spoofwatch.stream.core.speech import EnergySpeechGate

SR = 16000


def _seconds(s: float) -> int:
    return round(s * SR)


def _am_tone(seconds: float, rms_dbfs: float) -> np.ndarray:
    """A 220 Hz tone amplitude-modulated at 4 Hz (syllable rate), scaled to an RMS level."""
    t = np.arange(_seconds(seconds)) / SR
    x = np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    x *= 10 ** (rms_dbfs / 20) / np.sqrt(np.mean(x**2))
    return x.astype(np.float32)


def test_digital_silence_is_not_speech() -> None:
    gate = EnergySpeechGate()
    silence = np.zeros(_seconds(1.0), dtype=np.float32)
    assert gate.speech_fraction(silence, SR) == 0.0
    assert not gate.is_speech(silence, SR)


def test_very_quiet_noise_is_not_speech() -> None:
    noise = np.random.default_rng(0).normal(0, 10 ** (-70 / 20), _seconds(1.0))
    assert not EnergySpeechGate().is_speech(noise.astype(np.float32), SR)


def test_modulated_tone_at_minus_20_dbfs_is_speech() -> None:
    gate = EnergySpeechGate()
    tone = _am_tone(1.0, -20.0)
    assert gate.speech_fraction(tone, SR) == 1.0
    assert gate.is_speech(tone, SR)


def test_fraction_counts_loud_frames() -> None:
    # 15 loud 20 ms frames, then 35 silent ones.
    audio = np.concatenate([_am_tone(0.3, -20.0), np.zeros(_seconds(0.7), dtype=np.float32)])
    assert EnergySpeechGate().speech_fraction(audio, SR) == pytest.approx(15 / 50)
    assert EnergySpeechGate(min_speech_fraction=0.3).is_speech(audio, SR)
    assert not EnergySpeechGate(min_speech_fraction=0.31).is_speech(audio, SR)


@pytest.mark.parametrize("level_dbfs", [-60.0, -30.0, -6.0])
def test_threshold_is_in_dbfs_of_rms(level_dbfs: float) -> None:
    constant = np.full(_seconds(0.2), 10 ** (level_dbfs / 20), dtype=np.float32)
    assert EnergySpeechGate(threshold_dbfs=level_dbfs - 0.5).is_speech(constant, SR)
    assert not EnergySpeechGate(threshold_dbfs=level_dbfs + 0.5).is_speech(constant, SR)


def test_clip_shorter_than_a_frame_is_one_frame_and_empty_is_silence() -> None:
    gate = EnergySpeechGate()
    assert gate.is_speech(_am_tone(0.005, -20.0), SR)
    assert not gate.is_speech(np.zeros(0, dtype=np.float32), SR)
    assert gate.speech_fraction(np.zeros(0, dtype=np.float32), SR) == 0.0


def test_bad_audio_is_an_audio_error() -> None:
    gate = EnergySpeechGate()
    with pytest.raises(AudioError, match=r"1-D.*\(2, 5\)"):
        gate.is_speech(np.zeros((2, 5), dtype=np.float32), SR)
    with pytest.raises(AudioError, match="finite"):
        gate.is_speech(np.array([0.1, np.nan], dtype=np.float32), SR)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"frame_s": 0.0}, "frame_s"),
        ({"min_speech_fraction": 1.5}, "min_speech_fraction"),
        ({"threshold_dbfs": float("nan")}, "threshold_dbfs"),
    ],
)
def test_gate_config_is_validated(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: expected"):
        EnergySpeechGate(**kwargs)


def test_bad_sample_rate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sample_rate: expected a positive int"):
        EnergySpeechGate().is_speech(np.zeros(10, dtype=np.float32), 0)
