"""Test doubles shared by the streaming tests.

``FakeScorer`` stands in for the detector: it calls tonal audio (a sine) spoof and
noise-like audio bona fide, using spectral flatness, so tests can build streams whose
"real" and "fake" parts are known without running a neural network.
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import NDArray


class FakeScorer:
    def __init__(
        self, sample_rate: int = 16000, window_s: float = 1.0, threshold: float = 0.5, delay_s: float = 0.0
    ) -> None:
        self._sample_rate = sample_rate
        self._window_samples = round(window_s * sample_rate)
        self._threshold = threshold
        self.delay_s = delay_s
        self.calls: list[int] = []
        self.thread_names: set[str] = set()

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def window_samples(self) -> int:
        return self._window_samples

    @property
    def threshold(self) -> float:
        return self._threshold

    def score_windows(self, windows: NDArray[np.float32]) -> NDArray[np.float64]:
        self.calls.append(len(windows))
        self.thread_names.add(threading.current_thread().name)
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        power = np.abs(np.fft.rfft(windows, axis=1)) ** 2 + 1e-12
        flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
        return (12.0 * (flatness - 0.2)).astype(np.float64)


def noise(seconds: float, sample_rate: int = 16000, seed: int = 0, level: float = 0.1) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * sample_rate)) * level).astype(np.float32)


def tone(
    seconds: float, sample_rate: int = 16000, freq: float = 440.0, level: float = 0.3
) -> NDArray[np.float32]:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)
