"""A cheap energy gate that tells whether a window holds enough audible sound to score.

Level is in dBFS relative to a full-scale square wave: 20·log10(RMS), so a full-scale
sine is about -3 dBFS and digital silence is very low (RMS is floored at 1e-10).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spoofwatch.errors import AudioError, ConfigError

__all__ = ["EnergySpeechGate"]

logger = logging.getLogger(__name__)

_RMS_FLOOR = 1e-10


class EnergySpeechGate:
    """Speech if at least ``min_speech_fraction`` of ``frame_s`` frames exceed the level."""

    def __init__(
        self,
        threshold_dbfs: float = -50.0,
        frame_s: float = 0.02,
        min_speech_fraction: float = 0.1,
    ) -> None:
        if not math.isfinite(threshold_dbfs):
            raise ConfigError(f"threshold_dbfs: expected a finite level, got {threshold_dbfs!r}")
        if not (math.isfinite(frame_s) and frame_s > 0):
            raise ConfigError(f"frame_s: expected a number of seconds > 0, got {frame_s!r}")
        if not 0.0 <= min_speech_fraction <= 1.0:
            raise ConfigError(
                f"min_speech_fraction: expected a fraction in [0, 1], got {min_speech_fraction!r}"
            )
        self.threshold_dbfs = float(threshold_dbfs)
        self.frame_s = float(frame_s)
        self.min_speech_fraction = float(min_speech_fraction)

    def frame_levels_dbfs(self, samples: ArrayLike, sample_rate: int) -> NDArray[np.float64]:
        """Level of each whole frame in dBFS; a clip shorter than a frame is one frame."""
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ConfigError(f"sample_rate: expected a positive int (Hz), got {sample_rate!r}")
        audio = np.asarray(samples, dtype=np.float64)
        if audio.ndim != 1:
            raise AudioError(f"samples: expected 1-D mono samples, got shape {audio.shape}")
        if not np.isfinite(audio).all():
            raise AudioError("samples: expected finite samples, got NaN or inf")
        frame = max(1, round(self.frame_s * sample_rate))
        n_frames = audio.shape[0] // frame
        if n_frames == 0:
            frames = audio[np.newaxis, :] if audio.shape[0] else np.empty((0, 1))
        else:
            frames = audio[: n_frames * frame].reshape(n_frames, frame)
        rms = np.sqrt(np.mean(np.square(frames), axis=1))
        levels: NDArray[np.float64] = 20.0 * np.log10(np.maximum(rms, _RMS_FLOOR))
        return levels

    def speech_fraction(self, samples: ArrayLike, sample_rate: int) -> float:
        """Fraction of frames louder than ``threshold_dbfs`` (0.0 for empty input)."""
        levels = self.frame_levels_dbfs(samples, sample_rate)
        if levels.size == 0:
            return 0.0
        return self._loud_fraction(levels)

    def _loud_fraction(self, levels: NDArray[np.float64]) -> float:
        return float(np.count_nonzero(levels > self.threshold_dbfs)) / float(levels.size)

    def is_speech(self, samples: ArrayLike, sample_rate: int) -> bool:
        """True when enough frames are loud enough to be worth scoring (never for empty input)."""
        levels = self.frame_levels_dbfs(samples, sample_rate)
        if levels.size == 0:
            return False
        return self._loud_fraction(levels) >= self.min_speech_fraction
