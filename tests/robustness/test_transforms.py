"""Each laundering transform changes the audio as its name says (SNR, level, band, pitch,
tempo, lost packets measured), and one whose ffmpeg encoder is missing says so."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from spoofwatch.robustness.transforms import (
    Transform,
    catalogue,
    choose,
    codec,
    gain,
    noise,
    packet_loss,
    power,
    resample_chain,
    reverb,
    rubberband,
    snr_db,
)

RATE = 16000


def tone(freq: float, seconds: float = 1.0, amplitude: float = 0.3) -> NDArray[np.float32]:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(audio: NDArray[np.float32]) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / RATE)[np.argmax(spectrum)])


def band_power_db(audio: NDArray[np.float32], low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / RATE)
    return 10 * math.log10(float(spectrum[(freqs >= low) & (freqs < high)].sum()) + 1e-20)


RNG = np.random.default_rng


@pytest.mark.parametrize("snr", [20.0, 10.0, 5.0])
def test_noise_is_added_at_the_stated_snr(snr: float) -> None:
    clean = tone(440)
    noisy = noise(snr)(clean, RATE, RNG(0))
    assert snr_db(clean, noisy) == pytest.approx(snr, abs=0.05)


def test_level_changes_by_the_stated_gain_and_clips_at_full_scale() -> None:
    clean = tone(440, amplitude=0.05)
    quieter = gain(-20.0)(clean, RATE, RNG(0))
    assert 10 * math.log10(power(quieter) / power(clean)) == pytest.approx(-20.0, abs=0.01)
    louder = gain(30.0)(clean, RATE, RNG(0))
    assert np.abs(louder).max() == pytest.approx(1.0)


def test_packet_loss_silences_whole_packets_at_about_the_rate() -> None:
    clean = np.full(RATE * 20, 0.5, np.float32)
    lost = packet_loss(0.2)(clean, RATE, RNG(1))
    packets = lost.reshape(-1, 320)
    silent = np.all(packets == 0.0, axis=1)
    assert np.all(silent | np.all(packets == 0.5, axis=1))  # all or nothing per 20 ms packet
    assert silent.mean() == pytest.approx(0.2, abs=0.03)


def test_reverb_keeps_length_and_power_and_smears_the_signal() -> None:
    clean = (RNG(2).standard_normal(RATE) * 0.1).astype(np.float32)
    wet = reverb(0.5)(clean, RATE, RNG(3))
    assert wet.size == clean.size
    assert power(wet) == pytest.approx(power(clean), rel=1e-3)
    assert 0.5 < np.corrcoef(clean, wet)[0, 1] < 0.999


def test_an_8k_resampling_chain_removes_the_upper_band() -> None:
    mixed = tone(1000) + tone(6000)
    out = resample_chain((8000,))(mixed, RATE, RNG(0))
    assert out.size == mixed.size
    assert band_power_db(out, 5500, 6500) < band_power_db(mixed, 5500, 6500) - 40
    assert band_power_db(out, 900, 1100) == pytest.approx(band_power_db(mixed, 900, 1100), abs=0.5)


@pytest.mark.parametrize(
    ("semitones", "expected"), [(2.0, 440 * 2 ** (2 / 12)), (-2.0, 440 * 2 ** (-2 / 12))]
)
def test_pitch_shift_moves_a_tone_and_keeps_the_duration(semitones: float, expected: float) -> None:
    shift = Transform("pitch", f"{semitones}", rubberband(pitch_semitones=semitones), ("rubberband",))
    if shift.unavailable():
        pytest.skip(shift.unavailable() or "")
    out = shift.apply(tone(440), RATE, RNG(0))
    assert out.size == pytest.approx(RATE, rel=0.01)
    assert peak_hz(out[2000:-2000]) == pytest.approx(expected, abs=6)


@pytest.mark.parametrize("tempo", [1.1, 0.9])
def test_time_stretch_changes_the_duration_and_keeps_the_pitch(tempo: float) -> None:
    stretch = Transform("tempo", f"{tempo}", rubberband(tempo=tempo), ("rubberband",))
    if stretch.unavailable():
        pytest.skip(stretch.unavailable() or "")
    out = stretch.apply(tone(440, seconds=2.0), RATE, RNG(0))
    assert out.size == pytest.approx(2 * RATE / tempo, rel=0.01)
    # Resampling instead of stretching would move the tone by 10 % (44 Hz).
    assert peak_hz(out[2000:-2000]) == pytest.approx(440, abs=12)


@pytest.mark.parametrize(
    ("name", "upper_band_drop_db"), [("mp3:24k", 0.0), ("opus:8k", 0.0), ("gsm:13k", 40.0)]
)
def test_codecs_come_back_at_the_input_rate_changed(name: str, upper_band_drop_db: float) -> None:
    (transform,) = choose([name])
    if transform.unavailable():
        pytest.skip(transform.unavailable() or "")
    mixed = tone(1000) + tone(6000, amplitude=0.1) + (RNG(0).standard_normal(RATE) * 0.01).astype(np.float32)
    out = transform.apply(mixed, RATE, RNG(0))
    assert out.size == pytest.approx(mixed.size, rel=0.15)
    n = min(out.size, mixed.size)
    assert not np.allclose(out[:n], mixed[:n], atol=1e-3)
    # 8 kHz codecs (GSM) cut everything above 4 kHz; all keep the 1 kHz tone.
    assert band_power_db(out, 5500, 6500) <= band_power_db(mixed, 5500, 6500) - upper_band_drop_db + 3
    assert abs(peak_hz(out[:n]) - 1000) < 10


def test_a_missing_encoder_is_reported_with_the_reason() -> None:
    missing = Transform("x", "y", codec("no-such-encoder", 8000, None, "wav"), ("no-such-encoder",))
    assert missing.unavailable() == "this ffmpeg has no no-such-encoder"
    assert {t.family for t in catalogue()} >= {"mp3", "opus", "gsm", "amr-nb", "amr-wb", "noise", "reverb"}


def test_unknown_transform_names_are_refused() -> None:
    from spoofwatch.errors import ConfigError

    with pytest.raises(ConfigError, match="expected families or names"):
        choose(["mp4"])
    assert [t.name for t in choose(["noise"])] == ["noise:20dB", "noise:10dB", "noise:5dB"]
