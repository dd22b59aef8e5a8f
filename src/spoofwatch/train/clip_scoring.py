"""Score whole files with a detector, cutting windows exactly as streaming does.

The clip score is the mean of the window LLRs (the evidence of all windows pooled with
equal weight); each window is also reported so users see where in a file the evidence is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.audio.pcm import check_sample_rate, validate_samples
from spoofwatch.audio.resample import resample
from spoofwatch.errors import AudioError, SpoofwatchError
from spoofwatch.model.detector import Detector
from spoofwatch.stream.core.smoothing import p_spoof_from_llr
from spoofwatch.stream.core.windowing import WindowConfig, cut_windows
from spoofwatch.train.extract import remade_windows


@dataclass(frozen=True)
class WindowScore:
    t_start: float
    t_end: float
    score: float
    p_spoof: float


@dataclass(frozen=True)
class ClipScore:
    path: str
    duration_s: float = math.nan
    score: float = math.nan
    p_spoof: float = math.nan
    label: str = ""
    windows: tuple[WindowScore, ...] = ()
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error, **self.extra}
        return {
            "path": self.path,
            "duration_s": round(self.duration_s, 3),
            "score": round(self.score, 6),
            "p_spoof": round(self.p_spoof, 6),
            "label": self.label,
            "windows": [
                {
                    "t_start": round(w.t_start, 3),
                    "t_end": round(w.t_end, 3),
                    "score": round(w.score, 6),
                    "p_spoof": round(w.p_spoof, 6),
                }
                for w in self.windows
            ],
            **self.extra,
        }


def detector_window_config(detector: Detector, min_s: float = 0.5) -> WindowConfig:
    s = detector.settings
    return WindowConfig(detector.sample_rate, s.window_s, s.hop_s, min_s)


def score_file(detector: Detector, path: str | Path, window: WindowConfig | None = None) -> ClipScore:
    """Score one file; any bad input becomes a ClipScore with ``error`` set."""
    try:
        clip = load_audio(path, detector.sample_rate)
    except SpoofwatchError as exc:
        return ClipScore(path=str(path), error=str(exc))
    return score_samples(detector, clip.samples, detector.sample_rate, window=window, name=str(path))


def score_samples(
    detector: Detector,
    samples: NDArray[np.floating],
    sample_rate: int,
    *,
    window: WindowConfig | None = None,
    name: str = "<samples>",
) -> ClipScore:
    """Score mono audio held in memory (float in [-1, 1], any rate 1-384 kHz: resampled to
    the detector's), as ``score_file`` scores a file; bad input becomes ``error``."""
    config = window or detector_window_config(detector)
    try:
        audio = np.asarray(samples)
        if audio.ndim != 1:
            raise AudioError(f"{name}: expected mono samples (one dimension), found shape {audio.shape}")
        validate_samples(audio, name=name)
        rate = check_sample_rate(sample_rate, name=f"{name}: sample_rate")
        mono = audio.astype(np.float32)
        if rate != detector.sample_rate:
            mono = resample(mono, rate, detector.sample_rate)
        duration_s = len(mono) / detector.sample_rate
        windows = cut_windows(mono, config)
        if not windows:
            raise SpoofwatchError(
                f"{name}: {duration_s:.3f} s of audio is shorter than the minimum {config.min_s} s"
            )
        remake = detector.remake
        remakes = None if remake is None else remade_windows(remake, mono, config)
        llrs = detector.score_windows(np.stack([w.samples for w in windows]), remakes)
    except SpoofwatchError as exc:
        return ClipScore(path=name, error=str(exc))
    clip_llr = float(np.mean(llrs))
    p_spoof = p_spoof_from_llr(clip_llr)
    return ClipScore(
        path=name,
        duration_s=duration_s,
        score=clip_llr,
        p_spoof=p_spoof,
        label=detector.label(p_spoof),
        windows=tuple(
            WindowScore(w.t_start, w.t_end, float(s), p_spoof_from_llr(float(s)))
            for w, s in zip(windows, llrs, strict=True)
        ),
    )


def score_files(detector: Detector, paths: Sequence[str | Path]) -> Iterator[ClipScore]:
    config = detector_window_config(detector)
    for path in paths:
        yield score_file(detector, path, config)
