"""PCM decoding, G.711 companding, mono mixing and sample checks: pure numpy, no I/O.

Float audio is float32 in [-1, 1]. The fixed-point scale is 32768, so an int16 value
``v`` maps to ``v / 32768`` and back exactly.

G.711 mu-law and A-law follow the ITU-T reference (Sun Microsystems' ``g711.c``), the
same code CPython's ``audioop.lin2ulaw``/``ulaw2lin``/``lin2alaw``/``alaw2lin`` use, and
produce identical values. Both directions are table lookups built once at import.
"""

from __future__ import annotations

import logging
from typing import Final

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import AudioError

logger = logging.getLogger(__name__)

SUPPORTED_ENCODINGS: Final = ("pcm_s16le", "pcm_f32le", "mulaw", "alaw")
MIN_SAMPLE_RATE: Final = 1000
MAX_SAMPLE_RATE: Final = 384000
MAX_CHANNELS: Final = 8

_INT16_SCALE: Final = 32768.0
_BYTES_PER_SAMPLE: Final = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}


# --- G.711 tables ---------------------------------------------------------------------


def _all_int16() -> NDArray[np.int32]:
    return np.arange(-32768, 32768, dtype=np.int32)


def _build_ulaw_encode_table() -> NDArray[np.uint8]:
    """Code for every int16 value, indexed by ``value + 32768``."""
    seg_end = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
    pcm14 = _all_int16() >> 2  # the reference works on 14-bit magnitudes
    mask = np.where(pcm14 < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm14), 8159) + (0x84 >> 2)
    seg = np.searchsorted(seg_end, magnitude, side="left").astype(np.int32)
    in_range = seg < 8
    safe_seg = np.minimum(seg, 7)
    code = (safe_seg << 4) | ((magnitude >> (safe_seg + 1)) & 0x0F)
    code = np.where(in_range, code ^ mask, 0x7F ^ mask)
    return code.astype(np.uint8)


def _build_ulaw_decode_table() -> NDArray[np.int16]:
    inverted = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((inverted & 0x0F) << 3) + 0x84) << ((inverted & 0x70) >> 4)
    value = np.where(inverted & 0x80, 0x84 - magnitude, magnitude - 0x84)
    return value.astype(np.int16)


def _build_alaw_encode_table() -> NDArray[np.uint8]:
    """Code for every int16 value, indexed by ``value + 32768``."""
    seg_end = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
    pcm13 = _all_int16() >> 3  # the reference works on 13-bit magnitudes
    non_negative = pcm13 >= 0
    mask = np.where(non_negative, 0xD5, 0x55)
    magnitude = np.where(non_negative, pcm13, -pcm13 - 1)
    seg = np.searchsorted(seg_end, magnitude, side="left").astype(np.int32)
    quant = np.where(seg < 2, magnitude >> 1, magnitude >> np.maximum(seg, 1)) & 0x0F
    code = ((seg << 4) | quant) ^ mask  # |pcm13| <= 4096 keeps seg below 8
    return code.astype(np.uint8)


def _build_alaw_decode_table() -> NDArray[np.int16]:
    toggled = np.arange(256, dtype=np.int32) ^ 0x55
    base = (toggled & 0x0F) << 4
    seg = (toggled & 0x70) >> 4
    magnitude = np.where(seg == 0, base + 8, (base + 0x108) << np.maximum(seg - 1, 0))
    value = np.where(toggled & 0x80, magnitude, -magnitude)
    return value.astype(np.int16)


_ULAW_ENCODE: Final = _build_ulaw_encode_table()
_ULAW_DECODE: Final = _build_ulaw_decode_table()
_ALAW_ENCODE: Final = _build_alaw_encode_table()
_ALAW_DECODE: Final = _build_alaw_decode_table()


# --- validation -----------------------------------------------------------------------


def validate_samples(x: NDArray[np.floating] | NDArray[np.integer], *, name: str) -> None:
    """Raise AudioError when ``x`` holds NaN or infinite values."""
    finite = np.isfinite(x)
    if finite.all():
        return
    n_nan = int(np.isnan(x).sum())
    n_inf = int(finite.size - finite.sum()) - n_nan
    raise AudioError(
        f"{name}: expected finite samples, found {n_nan} NaN and {n_inf} infinite values among {finite.size}"
    )


def check_sample_rate(rate: object, *, name: str) -> int:
    """Return ``rate`` as int if it is an integer in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]."""
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer):
        raise AudioError(f"{name}: expected an integer sample rate in Hz, found {rate!r}")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: expected a sample rate between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, found {rate}"
        )
    return int(rate)


def _as_code_array(b: NDArray[np.uint8] | bytes | bytearray | memoryview) -> NDArray[np.uint8]:
    if isinstance(b, bytes | bytearray | memoryview):
        return np.frombuffer(b, dtype=np.uint8)
    if b.dtype != np.uint8:
        raise AudioError(f"G.711 codes: expected a uint8 array, found dtype {b.dtype}")
    return b


def _float_to_int16_index(x: NDArray[np.floating]) -> NDArray[np.int32]:
    validate_samples(x, name="G.711 input")
    scaled = np.rint(np.asarray(x, dtype=np.float64) * _INT16_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int32) + 32768


# --- G.711 ----------------------------------------------------------------------------


def mulaw_encode(x: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Encode float samples (clipped to [-1, 1)) as G.711 mu-law codes, same shape."""
    return _ULAW_ENCODE[_float_to_int16_index(x)]


def mulaw_decode(b: NDArray[np.uint8] | bytes | bytearray | memoryview) -> NDArray[np.float32]:
    """Decode G.711 mu-law codes to float32 samples in [-1, 1]."""
    return (_ULAW_DECODE[_as_code_array(b)] / np.float32(_INT16_SCALE)).astype(np.float32)


def alaw_encode(x: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Encode float samples (clipped to [-1, 1)) as G.711 A-law codes, same shape."""
    return _ALAW_ENCODE[_float_to_int16_index(x)]


def alaw_decode(b: NDArray[np.uint8] | bytes | bytearray | memoryview) -> NDArray[np.float32]:
    """Decode G.711 A-law codes to float32 samples in [-1, 1]."""
    return (_ALAW_DECODE[_as_code_array(b)] / np.float32(_INT16_SCALE)).astype(np.float32)


# --- interleaved PCM ------------------------------------------------------------------


def decode_pcm(data: bytes, encoding: str, channels: int) -> NDArray[np.float32]:
    """Decode interleaved audio bytes to float32 of shape (frames, channels) in [-1, 1].

    ``pcm_f32le`` values beyond +-1 are clipped, as a fixed-point converter would.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or not (1 <= channels <= MAX_CHANNELS):
        raise AudioError(f"channels: expected an integer in 1..{MAX_CHANNELS}, found {channels!r}")
    if encoding not in _BYTES_PER_SAMPLE:
        raise AudioError(f"encoding: expected one of {', '.join(SUPPORTED_ENCODINGS)}, found {encoding!r}")
    frame_bytes = _BYTES_PER_SAMPLE[encoding] * channels
    if len(data) % frame_bytes:
        raise AudioError(
            f"{encoding} with {channels} channel(s): expected a byte length that is a multiple "
            f"of {frame_bytes}, found {len(data)}"
        )
    samples: NDArray[np.float32]
    if encoding == "pcm_s16le":
        ints = np.frombuffer(data, dtype="<i2")
        samples = (ints / np.float32(_INT16_SCALE)).astype(np.float32)
    elif encoding == "pcm_f32le":
        floats = np.frombuffer(data, dtype="<f4")
        validate_samples(floats, name="pcm_f32le data")
        samples = np.clip(floats, -1.0, 1.0).astype(np.float32)
    elif encoding == "mulaw":
        samples = mulaw_decode(data)
    else:
        samples = alaw_decode(data)
    return samples.reshape(-1, channels)


def to_mono(x: NDArray[np.floating]) -> NDArray[np.float32]:
    """Average (frames, channels) to (frames,); a 1-D array passes through as float32."""
    if x.ndim == 1:
        return np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise AudioError(f"audio: expected shape (frames,) or (frames, channels), found {x.shape}")
    if x.shape[1] == 1:
        return np.asarray(x[:, 0], dtype=np.float32)
    return np.asarray(x.mean(axis=1, dtype=np.float32), dtype=np.float32)
