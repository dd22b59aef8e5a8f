"""Tests for spoofwatch.audio.files.load_audio on real files written into tmp_path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from spoofwatch.audio.files import AudioClip, load_audio
from spoofwatch.errors import AudioError, ConfigError


def _sine(freq: float, sr: int, seconds: float, amplitude: float = 0.5) -> NDArray[np.float32]:
    t = np.arange(round(sr * seconds)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: NDArray[np.float32], sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


def _write(path: Path, x: NDArray[np.float32], sr: int, subtype: str | None = None) -> Path:
    sf.write(path, x, sr, subtype=subtype)
    return path


def _halve(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _load_error(path: Path, **kwargs: float | None) -> str:
    with pytest.raises(AudioError) as info:
        load_audio(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    return message


# --- good files -----------------------------------------------------------------------


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
def test_float_wav_round_trips_exactly_at_native_rate(tmp_path: Path, sr: int) -> None:
    x = _sine(440, sr, 0.25)
    clip = load_audio(_write(tmp_path / "a.wav", x, sr, "FLOAT"), target_sr=sr)
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert np.array_equal(clip.samples, x)
    assert (clip.sample_rate, clip.original_sample_rate, clip.original_channels) == (sr, sr, 1)
    assert clip.duration_s == pytest.approx(0.25, abs=1 / sr)
    assert clip.path == str(tmp_path / "a.wav")


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
def test_resampling_to_16k_keeps_frequency_and_length(tmp_path: Path, sr: int) -> None:
    seconds = 0.5
    clip = load_audio(_write(tmp_path / "a.flac", _sine(1000, sr, seconds), sr), target_sr=16000)
    assert clip.sample_rate == 16000 and clip.original_sample_rate == sr
    assert abs(len(clip.samples) - seconds * 16000) <= 1
    assert abs(_peak_hz(clip.samples, 16000) - 1000) <= 2  # 2 Hz bins for 0.5 s
    rms = float(np.sqrt(np.mean(clip.samples[400:-400] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), abs=0.01)


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    left = _sine(300, 16000, 0.2)
    right = _sine(1200, 16000, 0.2, amplitude=0.25)
    path = _write(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000, "FLOAT")
    clip = load_audio(path)
    assert clip.original_channels == 2 and clip.samples.shape == (len(left),)
    np.testing.assert_allclose(clip.samples, (left + right) / 2, atol=1e-7)


def test_pcm16_wav_and_pathlike_and_str_paths(tmp_path: Path) -> None:
    x = _sine(440, 16000, 0.1)
    path = _write(tmp_path / "pcm.wav", x, 16000, "PCM_16")
    from_path, from_str = load_audio(path), load_audio(str(path))
    assert np.array_equal(from_path.samples, from_str.samples)
    assert np.max(np.abs(from_path.samples - x)) <= 1 / 32768


def test_audio_clip_is_frozen(tmp_path: Path) -> None:
    clip = load_audio(_write(tmp_path / "a.wav", _sine(440, 8000, 0.1), 8000))
    assert isinstance(clip, AudioClip)
    with pytest.raises(dataclasses.FrozenInstanceError):
        clip.sample_rate = 8000  # type: ignore[misc]


def test_ogg_vorbis_loads(tmp_path: Path) -> None:
    path = tmp_path / "a.ogg"
    sf.write(path, _sine(1000, 16000, 0.5), 16000, format="OGG", subtype="VORBIS")
    clip = load_audio(path)
    assert abs(len(clip.samples) - 8000) <= 1
    assert abs(_peak_hz(clip.samples, 16000) - 1000) <= 2


# --- bad files ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _load_error(tmp_path / "nope.wav")


def test_directory(tmp_path: Path) -> None:
    assert "directory" in _load_error(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert "empty file (0 bytes)" in _load_error(path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "unknown format" in _load_error(path)


def test_text_file_renamed_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\nsecond line\n" * 20)
    assert "unknown format" in _load_error(path)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_truncated_wav_is_detected_from_its_header(tmp_path: Path, subtype: str) -> None:
    path = _halve(_write(tmp_path / "cut.wav", _sine(440, 16000, 1.0), 16000, subtype))
    # libsndfile alone would read the first half silently; the RIFF check must catch it.
    assert sf.info(str(path)).frames < 16000
    message = _load_error(path)
    assert "truncated" in message and "bytes of WAV data" in message


def test_truncated_flac(tmp_path: Path) -> None:
    path = _halve(_write(tmp_path / "cut.flac", _sine(440, 16000, 1.0), 16000))
    message = _load_error(path)
    assert "truncated" in message and "expected 16000" in message


def test_wav_with_streaming_length_placeholder_still_loads(tmp_path: Path) -> None:
    # Writers piping WAV out leave the data size as 0xFFFFFFFF; that is not truncation.
    x = _sine(440, 16000, 0.1)
    path = _write(tmp_path / "pipe.wav", x, 16000, "PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = (0xFFFFFFFF).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert len(load_audio(path).samples) == len(x)


def test_zero_frames(tmp_path: Path) -> None:
    path = _write(tmp_path / "silent.wav", np.zeros(0, dtype=np.float32), 16000)
    assert "0 frames" in _load_error(path)


def test_nan_and_inf_in_float_wav(tmp_path: Path) -> None:
    x = _sine(440, 16000, 0.1)
    x[[3, 50, 70]] = [np.nan, np.inf, np.nan]
    path = _write(tmp_path / "nan.wav", x, 16000, "FLOAT")
    assert "3 NaN or infinite" in _load_error(path)


def test_too_long_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "long.wav", _sine(440, 8000, 2.0), 8000)
    message = _load_error(path, max_duration_s=1.5)
    assert "at most 1.5 s" in message and "2.00 s" in message
    assert len(load_audio(path, max_duration_s=None).samples) == 32000


def test_unsupported_native_sample_rate(tmp_path: Path) -> None:
    path = _write(tmp_path / "low.wav", np.zeros(100, dtype=np.float32), 500)
    assert "between 1000 and 384000" in _load_error(path)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_max_duration_is_a_config_error(tmp_path: Path, bad: float) -> None:
    path = _write(tmp_path / "a.wav", _sine(440, 8000, 0.1), 8000)
    with pytest.raises(ConfigError, match="max_duration_s"):
        load_audio(path, max_duration_s=bad)
