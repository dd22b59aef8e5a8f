"""Laundering transforms: what a channel or an attacker does to audio before it reaches
the detector. Each takes mono float32 samples at ``rate`` and returns samples at the
same rate (codecs and resampling chains come back to it). Random ones draw from the
``numpy.random.Generator`` they are given, so a report is reproducible.

Codecs and pitch/tempo changes run through ffmpeg (``libmp3lame``, ``libopus``,
``libgsm``, ``libopencore_amrnb``, ``libvo_amrwbenc``, the ``rubberband`` filter); a
transform whose encoder or filter this ffmpeg lacks is reported as unavailable, with the
reason, rather than skipped silently.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.signal import fftconvolve

from spoofwatch.audio.resample import resample
from spoofwatch.errors import AudioError, ConfigError

Audio = NDArray[np.float32]
Apply = Callable[[Audio, int, np.random.Generator], Audio]


@dataclass(frozen=True)
class Transform:
    """One transform at one strength: ``family`` (``mp3``), ``strength`` (``32k``) and the
    function that applies it; ``needs``: the ffmpeg encoders/filters it uses."""

    family: str
    strength: str
    apply: Apply
    needs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.family}:{self.strength}"

    def unavailable(self) -> str | None:
        """Why this transform cannot run here, or None."""
        if not self.needs:
            return None
        if shutil.which("ffmpeg") is None:
            return "ffmpeg is not installed"
        missing = [n for n in self.needs if n not in ffmpeg_capabilities()]
        return f"this ffmpeg has no {', '.join(missing)}" if missing else None


@functools.cache
def ffmpeg_capabilities() -> frozenset[str]:
    """Names of the encoders and filters the installed ffmpeg has."""
    names: set[str] = set()
    for listing in ("-encoders", "-filters"):
        try:
            text = subprocess.run(
                ["ffmpeg", "-hide_banner", listing], capture_output=True, text=True, check=False, timeout=30
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return frozenset()
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and not line.startswith(" ="):
                names.add(parts[1])
    return frozenset(names)


def _ffmpeg(audio: Audio, rate: int, args: Sequence[str], out_format: Sequence[str]) -> Audio:
    """``audio`` through one ffmpeg run (raw float32 in and out, at ``rate``)."""
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "f32le", "-ar", str(rate), "-ac", "1",
        "-i", "pipe:0", *args, *out_format,
    ]  # fmt: skip
    done = subprocess.run(
        command, input=np.ascontiguousarray(audio, "<f4").tobytes(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise AudioError(f"ffmpeg {' '.join(args)}: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)


def codec(encoder: str, codec_rate: int, bitrate: str | None, container: str) -> Apply:
    """Encode at ``codec_rate`` with ``encoder``, decode, back to the input rate."""

    def apply(audio: Audio, rate: int, _: np.random.Generator) -> Audio:
        low = resample(audio, rate, codec_rate) if codec_rate != rate else audio
        bits = ["-b:a", bitrate] if bitrate else []
        encoded_args = ["-c:a", encoder, *bits, "-ar", str(codec_rate), "-f", container, "pipe:1"]
        command = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "f32le", "-ar", str(codec_rate), "-ac", "1",
            "-i", "pipe:0", *encoded_args,
        ]  # fmt: skip
        done = subprocess.run(
            command, input=np.ascontiguousarray(low, "<f4").tobytes(), capture_output=True, check=False
        )
        if done.returncode != 0:
            raise AudioError(f"ffmpeg -c:a {encoder}: {done.stderr.decode(errors='replace').strip()[-300:]}")
        decoded = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", container, "-i", "pipe:0",
             "-ac", "1", "-ar", str(codec_rate), "-f", "f32le", "pipe:1"],
            input=done.stdout, capture_output=True, check=False,
        )  # fmt: skip
        if decoded.returncode != 0:
            raise AudioError(
                f"ffmpeg decoding {container}: {decoded.stderr.decode(errors='replace').strip()[-300:]}"
            )
        out = np.frombuffer(decoded.stdout, dtype="<f4").astype(np.float32)
        return resample(out, codec_rate, rate) if codec_rate != rate else out

    return apply


def resample_chain(rates: Sequence[int]) -> Apply:
    """Through each rate in turn and back to the input rate."""

    def apply(audio: Audio, rate: int, _: np.random.Generator) -> Audio:
        current, out = rate, audio
        for step in (*rates, rate):
            out = resample(out, current, step)
            current = step
        return out.astype(np.float32)

    return apply


def power(audio: NDArray[np.floating]) -> float:
    return float(np.mean(np.square(np.asarray(audio, dtype=np.float64))))


def snr_db(clean: NDArray[np.floating], noisy: NDArray[np.floating]) -> float:
    """SNR of ``noisy`` against ``clean`` (the difference is the noise), in dB."""
    noise = np.asarray(noisy, np.float64) - np.asarray(clean, np.float64)
    return 10.0 * math.log10(power(clean) / max(power(noise), 1e-30))


def noise(snr: float) -> Apply:
    """White Gaussian noise at ``snr`` dB below the clip's mean power."""

    def apply(audio: Audio, rate: int, rng: np.random.Generator) -> Audio:
        added = rng.standard_normal(audio.size)
        added *= math.sqrt(power(audio) / max(power(added), 1e-30) / 10 ** (snr / 10))
        return (audio + added).astype(np.float32)

    return apply


def synthetic_rir(rt60: float, rate: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """A room impulse response: a direct path, then exponentially decaying noise reaching
    -60 dB after ``rt60`` seconds."""
    n = max(1, int(rt60 * rate))
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    tail[0] = 0.0
    rir = np.concatenate([[1.0], 0.3 * tail / max(np.sqrt(np.sum(tail**2)), 1e-12)])
    return rir


def reverb(rt60: float) -> Apply:
    """Convolution with a synthetic RIR; the output keeps the input's length and power."""

    def apply(audio: Audio, rate: int, rng: np.random.Generator) -> Audio:
        wet = np.asarray(fftconvolve(audio.astype(np.float64), synthetic_rir(rt60, rate, rng)), np.float64)[
            : audio.size
        ]
        wet *= math.sqrt(power(audio) / max(power(wet), 1e-30))
        return wet.astype(np.float32)

    return apply


def rubberband(pitch_semitones: float = 0.0, tempo: float = 1.0) -> Apply:
    """Pitch shift (semitones, duration kept) or time stretch (``tempo`` > 1 = faster)."""

    def apply(audio: Audio, rate: int, _: np.random.Generator) -> Audio:
        ratio = 2.0 ** (pitch_semitones / 12.0)
        return _ffmpeg(
            audio, rate, ["-af", f"rubberband=pitch={ratio:.6f}:tempo={tempo:.6f}"], ["-f", "f32le", "pipe:1"]
        )

    return apply


def packet_loss(rate_lost: float, packet_s: float = 0.02) -> Apply:
    """Drop each ``packet_s`` packet with probability ``rate_lost`` (silence in its place,
    as a receiver without concealment plays it)."""

    def apply(audio: Audio, rate: int, rng: np.random.Generator) -> Audio:
        size = max(1, round(packet_s * rate))
        out = audio.copy()
        lost = rng.random(math.ceil(audio.size / size)) < rate_lost
        for index in np.flatnonzero(lost):
            out[index * size : (index + 1) * size] = 0.0
        return out

    return apply


def gain(db: float) -> Apply:
    """Scale by ``db`` decibels, clipping at full scale as a real chain would."""

    def apply(audio: Audio, rate: int, _: np.random.Generator) -> Audio:
        out: Audio = np.clip(audio * 10 ** (db / 20), -1.0, 1.0).astype(np.float32)
        return out

    return apply


def catalogue() -> list[Transform]:
    """Every transform at every strength the report measures."""
    return [
        Transform("mp3", "64k", codec("libmp3lame", 16000, "64k", "mp3"), ("libmp3lame",)),
        Transform("mp3", "24k", codec("libmp3lame", 16000, "24k", "mp3"), ("libmp3lame",)),
        Transform("opus", "24k", codec("libopus", 16000, "24k", "ogg"), ("libopus",)),
        Transform("opus", "8k", codec("libopus", 16000, "8k", "ogg"), ("libopus",)),
        Transform("gsm", "13k", codec("libgsm", 8000, None, "gsm"), ("libgsm",)),
        Transform(
            "amr-nb", "12.2k", codec("libopencore_amrnb", 8000, "12.2k", "amr"), ("libopencore_amrnb",)
        ),
        Transform("amr-wb", "23.85k", codec("libvo_amrwbenc", 16000, "23.85k", "amr"), ("libvo_amrwbenc",)),
        Transform("resample", "16k-8k-16k", resample_chain((8000,))),
        Transform("resample", "16k-11k-22k-16k", resample_chain((11025, 22050))),
        Transform("noise", "20dB", noise(20.0)),
        Transform("noise", "10dB", noise(10.0)),
        Transform("noise", "5dB", noise(5.0)),
        Transform("reverb", "rt60-0.3s", reverb(0.3)),
        Transform("reverb", "rt60-0.8s", reverb(0.8)),
        Transform("pitch", "+2st", rubberband(pitch_semitones=2.0), ("rubberband",)),
        Transform("pitch", "-2st", rubberband(pitch_semitones=-2.0), ("rubberband",)),
        Transform("tempo", "+10%", rubberband(tempo=1.1), ("rubberband",)),
        Transform("tempo", "-10%", rubberband(tempo=0.9), ("rubberband",)),
        Transform("packet-loss", "5%", packet_loss(0.05)),
        Transform("packet-loss", "20%", packet_loss(0.20)),
        Transform("level", "-20dB", gain(-20.0)),
        Transform("level", "+10dB", gain(10.0)),
    ]


def choose(names: Sequence[str] | None) -> list[Transform]:
    """The catalogue's transforms whose family or full name is in ``names`` (all for None)."""
    every = catalogue()
    if not names:
        return every
    known = {t.family for t in every} | {t.name for t in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"transforms {unknown}: expected families or names among {sorted(known)}")
    return [t for t in every if t.family in names or t.name in names]
