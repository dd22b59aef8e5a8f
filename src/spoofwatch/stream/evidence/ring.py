"""A fixed-size ring of a stream's latest audio as 16-bit PCM, placed on the stream's clock."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class AudioRing:
    """The last ``capacity`` samples; ``end_t`` is the stream time just after the newest.

    Samples are placed back from ``end_t`` at the sample rate, so audio on either side of
    a gap inside the ring is joined (gaps are listed beside the clip, not invented).
    """

    def __init__(self, sample_rate: int, seconds: float) -> None:
        self.sample_rate = sample_rate
        self.capacity = max(1, round(seconds * sample_rate))
        self._buf = np.zeros(self.capacity, dtype=np.int16)
        self._write = 0  # next index to write
        self._filled = 0
        self.end_t = 0.0

    @property
    def filled(self) -> int:
        return self._filled

    def append(self, samples: NDArray[np.float32], end_t: float) -> None:
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        if len(pcm) >= self.capacity:
            pcm = pcm[-self.capacity :]
            self._buf[:] = pcm
            self._write = 0
            self._filled = self.capacity
        else:
            first = min(len(pcm), self.capacity - self._write)
            self._buf[self._write : self._write + first] = pcm[:first]
            self._buf[: len(pcm) - first] = pcm[first:]
            self._write = (self._write + len(pcm)) % self.capacity
            self._filled = min(self.capacity, self._filled + len(pcm))
        self.end_t = end_t

    def latest(self) -> NDArray[np.int16]:
        """All held samples, oldest first (a copy)."""
        if self._filled < self.capacity:
            return self._buf[self._write - self._filled : self._write].copy()
        return np.concatenate([self._buf[self._write :], self._buf[: self._write]])

    def clip(self, t_start: float, t_end: float) -> tuple[NDArray[np.int16], float, float]:
        """The held samples within ``t_start``..``t_end`` and the span they cover."""
        held = self.latest()
        first_t = self.end_t - len(held) / self.sample_rate
        lo = max(0, round((t_start - first_t) * self.sample_rate))
        hi = min(len(held), max(lo, round((t_end - first_t) * self.sample_rate)))
        return held[lo:hi], first_t + lo / self.sample_rate, first_t + hi / self.sample_rate
