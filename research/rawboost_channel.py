"""RawBoost-style data boosting (Tak et al., ICASSP 2022: linear and non-linear convolutive
noise, then impulsive signal-dependent noise; their "algorithm 5", used for the ASVspoof
2021 LA track) as a fourth training channel beside the shipped card's clean, telephone and
augmented ones, both classes alike, seeded per clip. Leave-one-source-out under the Asterisk
grouping on the clean, telephone and augmented test channels, with the fold bootstrap
against the shipped recipe.

    PYTHONPATH=src python research/rawboost_channel.py --manifest ../shared/corpus/manifest.csv

About 25 minutes on 2 cores with the shipped channels' embeddings cached. Result (2026-11-26): worse on
every channel (clean 17.57 -> 19.88 %, telephone 19.34 -> 21.06 %; README, selection table).
"""

from __future__ import annotations

import zlib

import numpy as np
from copies_grouped import compare_fourth_channel
from numpy.typing import NDArray
from scipy.signal import firwin, lfilter


def _normalise(x: NDArray[np.float64]) -> NDArray[np.float64]:
    peak = float(np.max(np.abs(x)))
    return x / peak if peak > 0 else x


def _multiband_fir(rng: np.random.Generator, sr: int) -> NDArray[np.float64]:
    """A random multi-band filter: 5 band-pass FIRs (centres 20-8000 Hz, widths 100-1000 Hz,
    10-100 taps) summed."""
    taps = int(rng.integers(10, 101)) | 1  # odd, so every band-pass design is allowed
    total = np.zeros(taps)
    nyquist = sr / 2
    for _ in range(5):
        centre = rng.uniform(20, 8000)
        width = rng.uniform(100, 1000)
        low, high = max(centre - width / 2, 1.0), min(centre + width / 2, nyquist - 1.0)
        if high <= low:
            continue
        total += firwin(taps, [low / nyquist, high / nyquist], pass_zero=False)
    return total


def lnl_convolutive(x: NDArray[np.float64], sr: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Linear and non-linear convolutive noise: x, x**2 .. x**5 each through a random
    multi-band filter, higher orders attenuated by a random 5-20 dB bias."""
    y = np.zeros_like(x)
    for order in range(1, 6):
        bias_db = rng.uniform(5, 20) * (order - 1)
        y += 10 ** (-bias_db / 20) * lfilter(_multiband_fir(rng, sr), 1.0, x**order)
    return _normalise(y - y.mean())


def isd_noise(x: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    """Impulsive signal-dependent noise on 10 % of the samples (gain 2)."""
    y = x.copy()
    hit = rng.permutation(len(x))[: len(x) // 10]
    factor = (2 * rng.random(len(hit)) - 1) * (2 * rng.random(len(hit)) - 1)
    y[hit] += 2.0 * x[hit] * factor
    return _normalise(y)


def rawboost(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(samples).tobytes()) ^ 0x52415742)
    x = samples.astype(np.float64)
    peak = float(np.max(np.abs(x)))
    y = isd_noise(lnl_convolutive(x, sample_rate, rng), rng) * peak  # keep the clip's peak level
    return np.clip(y, -1.0, 1.0).astype(np.float32)


if __name__ == "__main__":
    compare_fourth_channel(__doc__, "rawboost", rawboost)
