"""Vocoder copy-synthesis: spoofs made from the corpus's own bona fide clips.

Each bona fide clip is analysed into the FARGAN vocoder's features (18 cepstral bands,
pitch, voicing per 10 ms) and resynthesised by its neural network, optionally with the
pitch scaled; the copy is level-matched to the original and labelled spoof. A copy keeps
its original's speaker, words, channel and source, so the only thing telling the pair
apart is the neural vocoder (and the moved pitch): the head learns vocoder artefacts
rather than recording styles or the telephone band.

FARGAN ships with Opus 1.5 (BSD licence, weights included in the release tarball).
``scripts/build_fargan.sh`` builds its command-line demo; it reads and writes raw 16-bit
mono PCM at 16 kHz and float32 feature files of 36 values per 10 ms frame.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray
from tqdm import tqdm

from spoofwatch.errors import ConfigError, DataError, SpoofwatchError
from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.stream.audiofile import load_audio
from spoofwatch.train.corpus import LabelledItem

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
VOCODER_ENV = "SPOOFWATCH_FARGAN"
FRAME_VALUES = 36  # NB_TOTAL_FEATURES in Opus's dnn/lpcnet.h
PITCH_INDEX = 18  # NB_BANDS: the pitch feature follows the 18 cepstral bands
# fargan.c: period = 256 / 2 ** (feature + 1.5) samples; its pitch embedding covers 32..255.
_PITCH_MIN = math.log2(256 / 255) - 1.5
_PITCH_MAX = math.log2(256 / 32) - 1.5
MANIFEST_COLUMNS = (
    "path",
    "label",
    "utt_id",
    "system",
    "speaker",
    "split",
    "source",
    "license",
    "copy_of",
    "pitch_factor",
    "vocoder",
)
_BUILD_HINT = "build it with `bash scripts/build_fargan.sh` (Opus 1.5.2 from Debian, about a minute)"


class VocoderError(SpoofwatchError):
    """The vocoder program failed on one clip."""


@dataclass(frozen=True)
class PitchShift:
    """Scale each copy's pitch by a factor drawn per clip from [low, high], raised or
    lowered with equal chance (a deterministic draw from the clip's utt_id and ``seed``)."""

    low: float = 1.1
    high: float = 1.35
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and 1.0 <= self.low <= self.high <= 4.0):
            raise ConfigError(
                f"pitch shift: expected factors 1 <= low <= high <= 4, found {self.low}, {self.high}"
            )

    def factor_for(self, utt_id: str) -> float:
        key = utt_id if self.seed == 0 else f"{utt_id}#{self.seed}"
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        factor = float(rng.uniform(self.low, self.high))
        return factor if rng.integers(2) else 1.0 / factor


def parse_pitch_shift(text: str, seed: int = 0) -> PitchShift | None:
    """``none`` or ``LOW,HIGH`` (e.g. ``1.1,1.35``)."""
    if text.strip().lower() == "none":
        return None
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"--pitch-shift {text!r}: expected none or LOW,HIGH factors, e.g. 1.1,1.35"
        ) from None
    return PitchShift(low, high, seed)


def find_vocoder(path: str | os.PathLike[str] | None = None) -> Path:
    """The FARGAN demo program: ``path``, else $SPOOFWATCH_FARGAN, else where the build script
    puts it (``fargan/fargan_demo`` in the cache folder)."""
    chosen = Path(path or os.environ.get(VOCODER_ENV) or cache_root() / "fargan" / "fargan_demo").expanduser()
    if not chosen.is_file() or not os.access(chosen, os.X_OK):
        raise ConfigError(f"vocoder: expected an executable FARGAN demo program at {chosen}; {_BUILD_HINT}")
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


def _copy_row(
    item: LabelledItem, utt_id: str, system: str, pitch_factor: float, made_by: str
) -> dict[str, str]:
    """The manifest row of ``item``'s copy: a spoof with the original's speaker, split and source."""
    return {
        "path": f"audio/{utt_id}.flac",
        "label": "spoof",
        "utt_id": utt_id,
        "system": system,
        "speaker": item.speaker,
        "split": item.split,
        "source": item.source,
        # A copy is derived from its original, so it carries the original's licence.
        "license": item.extra.get("license", ""),
        "copy_of": item.utt_id,
        "pitch_factor": f"{pitch_factor:.4f}",
        "vocoder": made_by,
    }


@dataclass(frozen=True)
class CopyReport:
    manifest: Path
    written: int
    failed: tuple[tuple[str, str], ...]


def write_copies(
    items: Sequence[LabelledItem],
    out_dir: Path,
    vocoder: Path,
    *,
    pitch_shift: PitchShift | None = PitchShift(),
    variant: tuple[str, Callable[[LabelledItem, float], FeatureEdit]] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> CopyReport:
    """A copy of every bona fide item in ``out_dir/audio`` and ``out_dir/manifest.csv``
    listing them as spoofs with the original's speaker, split and source (so validation
    holds a copy out with its original) and ``copy_of`` = the original's utt_id.
    ``variant`` (name, edit for an item and its pitch factor) changes each copy's features
    as ``vocode``'s ``edit`` does; its name joins the copies' names and system."""
    bonafide = [it for it in items if it.label == "bonafide"]
    if not bonafide:
        raise DataError("copy-synthesis: expected bona fide items to copy, found none")
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    suffix = "fargan"
    if pitch_shift is not None:
        suffix += f"-ps{pitch_shift.seed or ''}"
    system = "FARGAN-copy" if pitch_shift is None else "FARGAN-copy-pitch-shifted"
    if variant is not None:
        suffix, system = f"{suffix}-{variant[0]}", f"{system}-{variant[0]}"
    made_by = describe_vocoder(vocoder)

    def one(item: LabelledItem) -> dict[str, str]:
        factor = 1.0 if pitch_shift is None else pitch_shift.factor_for(item.utt_id)
        edit = None if variant is None else variant[1](item, factor)
        copy = vocode(load_audio(item.path, SAMPLE_RATE).samples, vocoder, factor, edit)
        name = f"{item.utt_id}-{suffix}"
        sf.write(audio_dir / f"{name}.flac", copy, SAMPLE_RATE, subtype="PCM_16")
        return _copy_row(item, name, system, factor, made_by)

    rows: list[dict[str, str]] = []
    failed: list[tuple[str, str]] = []
    # Threads suffice: the work happens in the vocoder's processes.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        futures = [pool.submit(one, it) for it in bonafide]
        done = tqdm(
            zip(bonafide, futures, strict=True),
            total=len(bonafide),
            desc="copy-synthesis",
            disable=not progress,
        )
        for item, future in done:
            try:
                rows.append(future.result())
            except SpoofwatchError as exc:
                logger.warning("%s: no copy (%s)", item.path, exc)
                failed.append((str(item.path), str(exc)))
    if not rows:
        raise VocoderError(f"copy-synthesis: every clip failed; first: {failed[0][0]}: {failed[0][1]}")
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return CopyReport(manifest, len(rows), tuple(failed))
