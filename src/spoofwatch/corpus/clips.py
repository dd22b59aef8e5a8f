"""Cutting decoded recordings into clips, and telling silence from sound."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from spoofwatch.corpus.config import BuildConfig
from spoofwatch.corpus.decode import SAMPLE_RATE


def piece_bounds(n_samples: int, config: BuildConfig, max_pieces: int | None = None) -> list[tuple[int, int]]:
    """Consecutive pieces of at most ``max_s``; the last is kept only if at least ``min_last_s``
    (a file of at most ``max_s`` is one piece); at most ``max_pieces`` of them."""
    limit = max_pieces or config.max_pieces
    size = round(config.max_s * SAMPLE_RATE)
    if n_samples <= size:
        return [(0, n_samples)]
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < n_samples and len(bounds) < limit:
        stop = min(start + size, n_samples)
        if stop - start >= (size if stop < n_samples else round(config.min_last_s * SAMPLE_RATE)):
            bounds.append((start, stop))
        start = stop
    return bounds


def silence_reason(pcm: NDArray[np.int16], config: BuildConfig) -> str | None:
    """Why this audio counts as silent (None if it does not)."""
    if not len(pcm) or not np.any(pcm):
        return "digital silence"
    x = pcm.astype(np.float64) / 32768.0
    peak = 20 * np.log10(float(np.max(np.abs(x))) + 1e-12)
    rms = 10 * np.log10(float(np.mean(x**2)) + 1e-20)
    if peak < config.peak_dbfs:
        return f"very low level (peak {peak:.1f} dBFS < {config.peak_dbfs:g})"
    if rms < config.rms_dbfs:
        return f"very low energy (RMS {rms:.1f} dBFS < {config.rms_dbfs:g})"
    return None


def nonzero_span(pcm: NDArray[np.int16]) -> tuple[int, int]:
    """``(first, stop)``: the samples from the first to the last that is not exactly zero
    (``(0, 0)`` for an all-zero file)."""
    nonzero = np.flatnonzero(pcm)
    if len(nonzero) == 0:
        return 0, 0
    return int(nonzero[0]), int(nonzero[-1]) + 1
