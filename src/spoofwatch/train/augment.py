"""Channel and signal augmentation, applied identically to both classes.

The corpus confounds class with channel (most 8 kHz speech is bona fide), so every
transform here is drawn the same way for bona fide and spoof clips, and a head trained
on augmented copies cannot use the channel as a shortcut. Codecs go through
libsndfile in memory (Opus, Vorbis, MP3, GSM 6.10, G.711 A-law/mu-law); noise,
reverberation, gain, band-limiting and packet loss are a few lines of numpy each, so no
augmentation library is needed (audiomentations would add a dependency for less control
over codecs, which matter most here).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from numpy.typing import NDArray
from scipy.signal import fftconvolve

from spoofwatch.audio.resample import resample

Samples = NDArray[np.float32]
Transform = Callable[[Samples, int, np.random.Generator], Samples]


def _fit_length(x: Samples, n: int) -> Samples:
    out = np.zeros(n, dtype=np.float32)
    m = min(n, len(x))
    out[:m] = x[:m]
    return out


def codec(fmt: str, subtype: str, rate: int | None = None) -> Transform:
    """Round trip through a libsndfile codec, optionally at another sample rate."""

    def apply(x: Samples, sr: int, rng: np.random.Generator) -> Samples:
        work_rate = rate or sr
        y = resample(x, sr, work_rate) if work_rate != sr else x
        buffer = io.BytesIO()
        sf.write(buffer, np.clip(y, -1.0, 1.0), work_rate, format=fmt, subtype=subtype)
        buffer.seek(0)
        decoded, _ = sf.read(buffer, dtype="float32")
        z = resample(decoded, work_rate, sr) if work_rate != sr else decoded
        return _fit_length(z, len(x))

    return apply


def add_noise(x: Samples, sr: int, rng: np.random.Generator) -> Samples:
    """White, pink or brown noise at 5–30 dB SNR."""
    n = len(x)
    white = rng.standard_normal(n)
    colour = rng.integers(3)
    if colour:
        spectrum = np.fft.rfft(white)
        freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 1.0)
        spectrum /= freqs ** (0.5 * colour)
        white = np.fft.irfft(spectrum, n)
    noise = white / (np.sqrt(np.mean(white**2)) + 1e-12)
    signal_rms = np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-9
    snr_db = rng.uniform(5.0, 30.0)
    noisy: Samples = (x + noise * signal_rms / (10 ** (snr_db / 20))).astype(np.float32)
    return noisy


def reverb(x: Samples, sr: int, rng: np.random.Generator) -> Samples:
    """Synthetic room: exponentially decaying noise, RT60 0.15–0.8 s, partly wet."""
    rt60 = rng.uniform(0.15, 0.8)
    length = int(rt60 * sr)
    t = np.arange(length) / sr
    rir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    rir[0] = 1.0
    rir /= np.sqrt(np.sum(rir**2))
    wet = fftconvolve(x, rir)[: len(x)]
    mix = rng.uniform(0.3, 1.0)
    y = (1 - mix) * x + mix * wet
    peak = np.max(np.abs(y)) + 1e-9
    out: Samples = (y * min(1.0, float(np.max(np.abs(x))) / peak)).astype(np.float32)
    return out


def gain(x: Samples, sr: int, rng: np.random.Generator) -> Samples:
    out: Samples = np.clip(x * 10 ** (rng.uniform(-15.0, 6.0) / 20), -1.0, 1.0).astype(np.float32)
    return out


def band_limit(x: Samples, sr: int, rng: np.random.Generator) -> Samples:
    """Low-pass at a random 3.4–7 kHz through a resampling round trip."""
    cutoff_rate = int(rng.choice([8000, 11025, 12000, 14000]))
    return _fit_length(resample(resample(x, sr, cutoff_rate), cutoff_rate, sr), len(x))


def packet_loss(x: Samples, sr: int, rng: np.random.Generator) -> Samples:
    """Zero 20 ms frames with 1–8 % probability, as a lossy VoIP link does."""
    frame = sr // 50
    y = x.copy()
    lost = rng.random(len(x) // frame) < rng.uniform(0.01, 0.08)
    for i in np.flatnonzero(lost):
        y[i * frame : (i + 1) * frame] = 0.0
    return y


CODECS: dict[str, Transform] = {
    "opus": codec("OGG", "OPUS"),
    "vorbis": codec("OGG", "VORBIS"),
    "mp3": codec("MP3", "MPEG_LAYER_III"),
    "gsm": codec("WAV", "GSM610", 8000),
    "alaw": codec("WAV", "ALAW", 8000),
    "mulaw": codec("WAV", "ULAW", 8000),
}
SIGNAL: dict[str, Transform] = {
    "noise": add_noise,
    "reverb": reverb,
    "gain": gain,
    "band_limit": band_limit,
    "packet_loss": packet_loss,
}


@dataclass(frozen=True)
class AugmentPolicy:
    """Each signal transform with probability ``p_signal``; then one codec with
    probability ``p_codec``. A chain is drawn per clip."""

    p_signal: float = 0.3
    p_codec: float = 0.7


def augment(
    x: Samples,
    sr: int,
    rng: np.random.Generator,
    policy: AugmentPolicy | None = None,
    applied: list[str] | None = None,
) -> Samples:
    """One drawn chain applied to ``x``; the names of the transforms it applied, in order, are
    appended to ``applied`` when given."""
    policy = policy or AugmentPolicy()
    y = x
    chain = []
    for name in sorted(SIGNAL):
        if rng.random() < policy.p_signal:
            y = SIGNAL[name](y, sr, rng)
            chain.append(name)
    if rng.random() < policy.p_codec:
        names = sorted(CODECS)
        codec_name = names[int(rng.integers(len(names)))]
        y = CODECS[codec_name](y, sr, rng)
        chain.append(codec_name)
    if applied is not None:
        applied.extend(chain)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def augmented_channel(x: Samples, sr: int, applied: list[str] | None = None) -> Samples:
    """Deterministic per clip (seeded by its samples), so the embedding cache stays valid;
    ``applied`` as ``augment`` takes it."""
    seed = zlib.crc32(np.ascontiguousarray(x).tobytes())
    return augment(x, sr, np.random.default_rng(seed), applied=applied)


def augmented_gaps_channel(x: Samples, sr: int, applied: list[str] | None = None) -> Samples:
    """``augmented_channel``'s chain, then on half the clips one call-path filler
    (``concealment.with_gaps``: comfort noise in the pauses, concealed packet loss or
    digital silence), drawn from its own per-clip seed so the chain is the one
    ``augmented`` draws."""
    from spoofwatch.train.concealment import gaps_seed, with_gaps

    y = augmented_channel(x, sr, applied=applied)
    filled, name = with_gaps(y, sr, np.random.default_rng(gaps_seed(x)))
    if applied is not None and name is not None:
        applied.append(name)
    return filled
