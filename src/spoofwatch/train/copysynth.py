"""Vocoder copy-synthesis: spoofs made from the corpus's own bona fide clips.

Each bona fide clip is analysed into the FARGAN vocoder's features (18 cepstral bands,
pitch, voicing per 10 ms) and resynthesised by its neural network, optionally with the
pitch scaled; the copy is level-matched to the original and labelled spoof. A copy keeps
its original's speaker, words, channel and source, so the only thing telling the pair
apart is the neural vocoder (and the moved pitch): the head learns vocoder artefacts
rather than recording styles or the telephone band.

FARGAN ships with Opus 1.5 (BSD licence, weights included in the release tarball);
``model.resynthesis.vocoder`` runs it.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from spoofwatch.audio.files import load_audio
from spoofwatch.errors import ConfigError, DataError, SpoofwatchError
from spoofwatch.model.resynthesis.vocoder import (
    SAMPLE_RATE,
    FeatureEdit,
    VocoderError,
    describe_vocoder,
    vocode,
)
from spoofwatch.progress import progress as show_progress
from spoofwatch.train.corpus import LabelledItem

logger = logging.getLogger(__name__)

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
        done = show_progress(
            zip(bonafide, futures, strict=True),
            total=len(bonafide),
            desc="copy-synthesis",
            unit="clip",
            enabled=progress,
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
