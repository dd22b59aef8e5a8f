"""The FARGAN neural vocoder (Opus 1.5's demo program): analysis into its features and
resynthesis by its network, one clip, window or block at a time.

``scripts/build_fargan.sh`` builds the program; it reads and writes raw 16-bit mono PCM at
16 kHz and float32 feature files of 36 values per 10 ms frame (18 cepstral bands, pitch,
voicing, ...). Training uses it for copy-synthesis (``train.copysynth``) and the
``lfcc-phase-resynth`` spectral front ends remake audio with it at scoring time (every
window, or every 1 s block of a stream once: ``model.resynthesis.remake``).
No maintained Python binding of Opus's dnn code exists, so it runs as a program.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import ConfigError, DataError, SpoofwatchError
from spoofwatch.model.encoders.weights import cache_root

SAMPLE_RATE = 16000
VOCODER_ENV = "SPOOFWATCH_FARGAN"
# What scripts/build_fargan.sh builds; features computed with it carry this in their recipe
# (not the program's hash, which differs between compilers and machines).
FARGAN_RECIPE = "opus-1.5.2-fargan-dnn-debug-float"
FRAME_VALUES = 36  # NB_TOTAL_FEATURES in Opus's dnn/lpcnet.h
PITCH_INDEX = 18  # NB_BANDS: the pitch feature follows the 18 cepstral bands
# fargan.c: period = 256 / 2 ** (feature + 1.5) samples; its pitch embedding covers 32..255.
_PITCH_MIN = math.log2(256 / 255) - 1.5
_PITCH_MAX = math.log2(256 / 32) - 1.5
BUILD_HINT = "build it with `bash scripts/build_fargan.sh` (Opus 1.5.2 from Debian, about a minute)"


class VocoderError(SpoofwatchError):
    """The vocoder program failed on one clip."""


def find_vocoder(path: str | os.PathLike[str] | None = None) -> Path:
    """The FARGAN demo program: ``path``, else $SPOOFWATCH_FARGAN, else where the build script
    puts it (``fargan/fargan_demo`` in the cache folder)."""
    chosen = Path(path or os.environ.get(VOCODER_ENV) or cache_root() / "fargan" / "fargan_demo").expanduser()
    if not chosen.is_file() or not os.access(chosen, os.X_OK):
        raise ConfigError(f"vocoder: expected an executable FARGAN demo program at {chosen}; {BUILD_HINT}")
    return chosen


def describe_vocoder(vocoder: Path) -> str:
    """What made the copies, for their manifest and the card: the program and its sha256."""
    digest = hashlib.sha256(vocoder.read_bytes()).hexdigest()
    return f"FARGAN ({vocoder.name}, sha256 {digest[:16]})"


def _run(args: Sequence[str], timeout_s: float = 600.0) -> None:
    what = f"{Path(args[0]).name} {args[1]}"
    try:
        done = subprocess.run(list(args), capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise VocoderError(f"{what}: expected to finish within {timeout_s:.0f} s, found it running") from None
    except OSError as exc:
        raise VocoderError(f"{what}: expected a program that runs, found {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise VocoderError(
            f"{what}: expected exit status 0, found {done.returncode}"
            + (f" ({message[-1]})" if message else "")
        )


FeatureEdit = Callable[[NDArray[np.float32]], NDArray[np.float32]]


def vocode(
    samples: NDArray[np.floating], vocoder: Path, pitch_factor: float = 1.0, edit: FeatureEdit | None = None
) -> NDArray[np.float32]:
    """FARGAN copy of 16 kHz mono ``samples`` (float, [-1, 1]), pitch scaled by ``pitch_factor``,
    at the original's RMS level (peaks kept below full scale). ``edit`` changes the feature
    frames (one row of FRAME_VALUES per 10 ms) before the pitch is moved."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or len(x) < SAMPLE_RATE // 10:
        raise DataError(f"vocode: expected mono audio of at least 0.1 s, found shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError("vocode: expected finite samples, found NaN or infinity")
    if not (math.isfinite(pitch_factor) and pitch_factor > 0.0):
        raise ConfigError(f"vocode: expected a positive pitch factor, found {pitch_factor}")
    with tempfile.TemporaryDirectory(prefix="spoofwatch-fargan-") as tmp:
        pcm_in, features, pcm_out = (Path(tmp) / n for n in ("in.pcm", "features.f32", "out.pcm"))
        np.round(np.clip(x, -1.0, 1.0) * 32767).astype("<i2").tofile(pcm_in)
        _run([str(vocoder), "-features", str(pcm_in), str(features)])
        if pitch_factor != 1.0 or edit is not None:
            frames = np.fromfile(features, dtype="<f4").reshape(-1, FRAME_VALUES)
            if edit is not None:
                frames = edit(frames).astype("<f4")
            shifted = frames[:, PITCH_INDEX] + math.log2(pitch_factor)
            frames[:, PITCH_INDEX] = np.clip(shifted, _PITCH_MIN, _PITCH_MAX)
            frames.tofile(features)
        _run([str(vocoder), "-fargan-synthesis", str(features), str(pcm_out)])
        y = np.fromfile(pcm_out, dtype="<i2").astype(np.float64) / 32768.0
    if len(y) == 0:
        raise VocoderError("vocoder: expected synthesised samples, found none")
    rms_in, rms_out = math.sqrt(float(np.mean(x**2))), math.sqrt(float(np.mean(y**2)))
    if rms_out > 0.0:
        y *= rms_in / rms_out
    peak = float(np.max(np.abs(y)))
    if peak > 0.999:
        y *= 0.999 / peak
    return y.astype(np.float32)
