"""Tests for spoofwatch.audio.pcm: G.711, PCM decoding, mono mixing, resampling."""

from __future__ import annotations

import itertools
import warnings
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from spoofwatch.audio.pcm import (
    SUPPORTED_ENCODINGS,
    alaw_decode,
    alaw_encode,
    decode_pcm,
    mulaw_decode,
    mulaw_encode,
    to_mono,
    validate_samples,
)
from spoofwatch.audio.resample import StreamResampler, resample
from spoofwatch.errors import AudioError

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_INT16_AS_FLOAT = (ALL_INT16 / 32768).astype(np.float32)
ALL_CODES = np.arange(256, dtype=np.uint8)


def _audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module: ModuleType = pytest.importorskip("audioop")
    return module


def _sine(freq: float, sr: int, seconds: float) -> NDArray[np.float32]:
    t = np.arange(round(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: NDArray[np.float32], sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


# --- G.711 against CPython's audioop --------------------------------------------------


def test_mulaw_encode_matches_audioop_on_every_int16() -> None:
    expected = np.frombuffer(_audioop().lin2ulaw(ALL_INT16.tobytes(), 2), dtype=np.uint8)
    assert np.array_equal(mulaw_encode(ALL_INT16_AS_FLOAT), expected)


def test_alaw_encode_matches_audioop_on_every_int16() -> None:
    expected = np.frombuffer(_audioop().lin2alaw(ALL_INT16.tobytes(), 2), dtype=np.uint8)
    assert np.array_equal(alaw_encode(ALL_INT16_AS_FLOAT), expected)


def test_mulaw_decode_matches_audioop_on_every_code() -> None:
    expected = np.frombuffer(_audioop().ulaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    assert np.array_equal(mulaw_decode(ALL_CODES) * 32768, expected.astype(np.float32))


def test_alaw_decode_matches_audioop_on_every_code() -> None:
    expected = np.frombuffer(_audioop().alaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    assert np.array_equal(alaw_decode(ALL_CODES) * 32768, expected.astype(np.float32))


# --- G.711 properties that need no reference ------------------------------------------


def test_mulaw_reencodes_every_code_except_negative_zero() -> None:
    reencoded = mulaw_encode(mulaw_decode(ALL_CODES))
    differs = np.flatnonzero(reencoded != ALL_CODES)
    # 0x7F is mu-law's "negative zero"; it decodes to 0, which encodes as 0xFF.
    assert differs.tolist() == [0x7F]
    assert reencoded[0x7F] == 0xFF


def test_alaw_reencodes_every_code() -> None:
    assert np.array_equal(alaw_encode(alaw_decode(ALL_CODES)), ALL_CODES)


@pytest.mark.parametrize(("encode", "decode"), [(mulaw_encode, mulaw_decode), (alaw_encode, alaw_decode)])
def test_g711_decode_is_monotonic_and_bounded(encode: object, decode: object) -> None:
    x = np.linspace(-1, 1, 4001, dtype=np.float32)
    y = decode(encode(x))  # type: ignore[operator]
    assert y.dtype == np.float32
    assert np.all(np.diff(y) >= 0)
    assert np.abs(y).max() <= 1.0
    # Companding error grows with amplitude but stays within one segment step (~3 %).
    assert np.max(np.abs(y - x)) < 0.035


def test_g711_encode_clips_out_of_range_and_keeps_shape() -> None:
    x = np.array([[2.0, -2.0], [1.0, -1.0]], dtype=np.float32)
    codes = mulaw_encode(x)
    assert codes.shape == (2, 2) and codes.dtype == np.uint8
    assert codes[0, 0] == codes[1, 0] and codes[0, 1] == codes[1, 1]
    assert (
        alaw_encode(np.array([5.0], dtype=np.float32))[0]
        == alaw_encode(np.array([32767 / 32768], dtype=np.float32))[0]
    )


def test_g711_encode_rejects_nan() -> None:
    with pytest.raises(AudioError, match="1 NaN"):
        mulaw_encode(np.array([0.0, np.nan], dtype=np.float32))


def test_g711_decode_accepts_bytes_and_rejects_wrong_dtype() -> None:
    raw = bytes(range(256))
    assert np.array_equal(mulaw_decode(raw), mulaw_decode(ALL_CODES))
    assert np.array_equal(alaw_decode(bytearray(raw)), alaw_decode(ALL_CODES))
    with pytest.raises(AudioError, match="uint8"):
        mulaw_decode(np.arange(4, dtype=np.int16))


# --- decode_pcm -----------------------------------------------------------------------


def test_decode_pcm_s16le_stereo_deinterleaves() -> None:
    left = np.array([0, 16384, -32768], dtype=np.int16)
    right = np.array([32767, -16384, 1], dtype=np.int16)
    data = np.stack([left, right], axis=1).astype("<i2").tobytes()
    out = decode_pcm(data, "pcm_s16le", 2)
    assert out.shape == (3, 2) and out.dtype == np.float32
    assert np.array_equal(out[:, 0], left / np.float32(32768))
    assert np.array_equal(out[:, 1], right / np.float32(32768))


def test_decode_pcm_f32le_is_exact_and_clips_overs() -> None:
    x = np.array([0.25, -0.5, 1.5, -3.0], dtype="<f4")
    out = decode_pcm(x.tobytes(), "pcm_f32le", 1)
    assert out.shape == (4, 1)
    assert out[:, 0].tolist() == [0.25, -0.5, 1.0, -1.0]


@pytest.mark.parametrize(("encoding", "decode"), [("mulaw", mulaw_decode), ("alaw", alaw_decode)])
def test_decode_pcm_g711_matches_codec(encoding: str, decode: object) -> None:
    data = bytes(range(256))
    out = decode_pcm(data, encoding, 4)
    assert out.shape == (64, 4)
    assert np.array_equal(out.reshape(-1), decode(data))  # type: ignore[operator]


def test_decode_pcm_empty_gives_zero_frames() -> None:
    assert decode_pcm(b"", "pcm_s16le", 2).shape == (0, 2)


def test_decode_pcm_unknown_encoding_names_supported_ones() -> None:
    with pytest.raises(AudioError) as info:
        decode_pcm(b"\x00\x00", "pcm_s24le", 1)
    message = str(info.value)
    assert "pcm_s24le" in message
    assert all(name in message for name in SUPPORTED_ENCODINGS)


def test_decode_pcm_partial_frame_reports_expected_and_actual() -> None:
    with pytest.raises(AudioError, match=r"multiple of 8, found 12"):
        decode_pcm(bytes(12), "pcm_f32le", 2)
    with pytest.raises(AudioError, match=r"multiple of 2, found 3"):
        decode_pcm(bytes(3), "pcm_s16le", 1)


@pytest.mark.parametrize("channels", [0, 9, -1, True])
def test_decode_pcm_rejects_channel_counts_outside_1_to_8(channels: int) -> None:
    with pytest.raises(AudioError, match=r"1\.\.8"):
        decode_pcm(bytes(16), "mulaw", channels)


def test_decode_pcm_f32le_counts_nonfinite_values() -> None:
    x = np.array([0.0, np.nan, np.inf, np.nan, -np.inf, 0.1], dtype="<f4")
    with pytest.raises(AudioError, match=r"2 NaN and 2 infinite"):
        decode_pcm(x.tobytes(), "pcm_f32le", 1)


# --- to_mono, validate_samples --------------------------------------------------------


def test_to_mono_averages_channels() -> None:
    x = np.array([[1.0, 0.0], [0.5, -0.5], [-1.0, -0.5]], dtype=np.float32)
    assert to_mono(x).tolist() == [0.5, 0.0, -0.75]


def test_to_mono_passes_one_dimensional_through_as_float32() -> None:
    x = np.array([0.1, -0.2], dtype=np.float64)
    out = to_mono(x)
    assert out.dtype == np.float32 and np.allclose(out, x)


def test_to_mono_rejects_three_dimensions() -> None:
    with pytest.raises(AudioError, match=r"\(2, 2, 2\)"):
        to_mono(np.zeros((2, 2, 2), dtype=np.float32))


def test_validate_samples() -> None:
    validate_samples(np.zeros(3, dtype=np.float32), name="ok")
    with pytest.raises(AudioError, match=r"^chunk: .*1 NaN and 1 infinite values among 4"):
        validate_samples(np.array([0, np.nan, np.inf, 1], dtype=np.float32), name="chunk")


# --- resample -------------------------------------------------------------------------


def test_resample_equal_rates_is_identity() -> None:
    x = _sine(440, 16000, 0.1)
    assert resample(x, 16000, 16000) is x


@pytest.mark.parametrize(("sr_in", "sr_out"), [(8000, 16000), (44100, 16000), (48000, 22050)])
def test_resample_keeps_frequency_and_duration(sr_in: int, sr_out: int) -> None:
    x = _sine(1000, sr_in, 0.5)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32
    assert abs(len(y) - 0.5 * sr_out) <= 1
    assert abs(_peak_hz(y, sr_out) - 1000) <= 2  # FFT bin spacing is 2 Hz for 0.5 s
    assert abs(np.sqrt(np.mean(y[200:-200] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_resample_stereo_keeps_channels() -> None:
    x = np.stack([_sine(300, 8000, 0.25), _sine(900, 8000, 0.25)], axis=1)
    y = resample(x, 8000, 16000)
    assert y.shape == (4000, 2)
    assert abs(_peak_hz(y[:, 0], 16000) - 300) <= 4 and abs(_peak_hz(y[:, 1], 16000) - 900) <= 4


@pytest.mark.parametrize("rate", [0, -16000, 999, 384001, 16000.0, True, "16000"])
def test_resample_rejects_bad_rates(rate: object) -> None:
    x = np.zeros(10, dtype=np.float32)
    with pytest.raises(AudioError, match="sample rate"):
        resample(x, rate, 16000)  # type: ignore[arg-type]
    with pytest.raises(AudioError, match="output sample rate"):
        resample(x, 16000, rate)  # type: ignore[arg-type]


# --- StreamResampler ------------------------------------------------------------------

_SIGNAL = np.random.default_rng(7).uniform(-0.9, 0.9, 3000).astype(np.float32)


def _stream_in_chunks(rs: StreamResampler, x: NDArray[np.float32], cuts: list[int]) -> NDArray[np.float32]:
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(x))), len(x)]
    parts = [rs.feed(x[a:b]) for a, b in itertools.pairwise(edges)]
    parts.append(rs.flush())
    return np.concatenate(parts)


@settings(max_examples=25, deadline=None)
@given(
    rates=st.sampled_from([(8000, 16000), (44100, 16000), (48000, 16000), (16000, 8000)]),
    cuts=st.lists(st.integers(min_value=1, max_value=2999), max_size=40),
)
def test_stream_resampler_is_bit_identical_across_chunkings(rates: tuple[int, int], cuts: list[int]) -> None:
    sr_in, sr_out = rates
    chunked = _stream_in_chunks(StreamResampler(sr_in, sr_out), _SIGNAL, cuts)
    assert np.array_equal(chunked, resample(_SIGNAL, sr_in, sr_out))


def test_stream_resampler_one_sample_chunks_match_one_shot() -> None:
    x = _SIGNAL[:800]
    one_sample = _stream_in_chunks(StreamResampler(22050, 16000), x, list(range(1, len(x))))
    assert np.array_equal(one_sample, resample(x, 22050, 16000))


def test_stream_resampler_reset_starts_a_fresh_stream() -> None:
    rs = StreamResampler(8000, 16000)
    first = _stream_in_chunks(rs, _SIGNAL, [100, 1000])
    rs.reset()
    rs.feed(_SIGNAL[:500])  # abandoned half-way
    rs.reset()
    assert np.array_equal(_stream_in_chunks(rs, _SIGNAL, [7]), first)


def test_stream_resampler_equal_rates_passes_through() -> None:
    rs = StreamResampler(16000, 16000)
    assert np.array_equal(rs.feed(_SIGNAL[:10]), _SIGNAL[:10])
    assert rs.flush().size == 0


def test_stream_resampler_rejects_feed_after_flush_and_bad_chunks() -> None:
    rs = StreamResampler(8000, 16000)
    with pytest.raises(AudioError, match="1-D"):
        rs.feed(np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(AudioError, match="1 NaN"):
        rs.feed(np.array([np.nan], dtype=np.float32))
    rs.flush()
    with pytest.raises(AudioError, match=r"reset\(\)"):
        rs.feed(_SIGNAL[:10])


def test_stream_resampler_validates_rates() -> None:
    with pytest.raises(AudioError, match="between 1000 and 384000"):
        StreamResampler(500, 16000)
