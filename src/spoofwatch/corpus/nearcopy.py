"""Near copies by 20 ms log-energy envelope, as ``../shared/tools/reserved_check.py`` defines them.

Two clips are near copies when their durations agree within 50 ms and their envelopes (10 log10
of the mean square per 320-sample frame, floored at the peak - 60 dB) correlate at >= 0.85 at
some shift of at most 3 frames. Comparing every pair one by one is far too slow for ~20,000
clips, so candidates come from a matrix product: every envelope's core (3 frames trimmed at each
end) is standardised, the products against the 7 shifted cores of the duration-matched clips
give Pearson correlations of the cores, and only pairs within 0.1 of the threshold are scored
again with the exact definition (``correlation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FRAME = 320  # 20 ms at 16 kHz
FLOOR_DB = 60.0
MAX_SHIFT = 3
THRESHOLD = 0.85
DURATION_TOLERANCE_S = 0.05
_PREFILTER_MARGIN = 0.1
_BIN_S = 0.1
_ROWS = 512

Envelope = NDArray[np.float64]


def envelope(pcm: NDArray[np.int16] | NDArray[np.float32]) -> Envelope:
    """The 20 ms log-energy envelope of 16 kHz audio (int16 PCM is scaled to [-1, 1))."""
    x = pcm.astype(np.float64) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float64)
    n = len(x) // FRAME
    e: Envelope = 10 * np.log10(np.mean(x[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)
    return np.maximum(e, e.max() - FLOOR_DB) if n else e


def correlation(a: Envelope, b: Envelope, max_shift: int = MAX_SHIFT) -> float:
    """Highest Pearson correlation of two envelopes over shifts of at most ``max_shift`` frames."""
    best = -1.0
    for shift in range(-max_shift, max_shift + 1):
        x, y = (a[shift:], b) if shift >= 0 else (a, b[-shift:])
        n = min(len(x), len(y))
        if n < 10:
            continue
        x, y = x[:n], y[:n]
        if x.std() == 0 or y.std() == 0:
            continue
        best = max(best, float(np.corrcoef(x, y)[0, 1]))
    return best


@dataclass(frozen=True)
class Match:
    query: int
    reference: int
    correlation: float


def _standardise(rows: NDArray[np.float64]) -> NDArray[np.float32]:
    centred = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    out = np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0)
    result: NDArray[np.float32] = out.astype(np.float32)
    return result


def find_near_copies(
    queries: Sequence[Envelope],
    query_durations: Sequence[float],
    references: Sequence[Envelope],
    reference_durations: Sequence[float],
    *,
    threshold: float = THRESHOLD,
    tolerance_s: float = DURATION_TOLERANCE_S,
    same_set: bool = False,
) -> list[Match]:
    """Every (query, reference) pair that is a near copy; with ``same_set`` (queries are the
    references) each unordered pair once, as (lower index, higher index)."""
    qd = np.asarray(query_durations, dtype=np.float64)
    rd = np.asarray(reference_durations, dtype=np.float64)
    if not len(qd) or not len(rd):
        return []
    matches: list[Match] = []
    ref_order = np.argsort(rd, kind="stable")
    rd_sorted = rd[ref_order]
    bins = np.floor(qd / _BIN_S).astype(np.int64)
    for b in np.unique(bins):
        q_idx = np.flatnonzero(bins == b)
        lo = b * _BIN_S - tolerance_s - 1e-9
        hi = (b + 1) * _BIN_S + tolerance_s + 1e-9
        start, stop = np.searchsorted(rd_sorted, [lo, hi])
        r_idx = ref_order[start:stop]
        if not len(r_idx):
            continue
        matches += _match_block(queries, qd, q_idx, references, rd, r_idx, threshold, tolerance_s, same_set)
    return sorted(matches, key=lambda m: (m.query, m.reference))


def _match_block(
    queries: Sequence[Envelope],
    qd: NDArray[np.float64],
    q_idx: NDArray[np.int64],
    references: Sequence[Envelope],
    rd: NDArray[np.float64],
    r_idx: NDArray[np.int64],
    threshold: float,
    tolerance_s: float,
    same_set: bool,
) -> list[Match]:
    shortest = min(min(len(queries[i]) for i in q_idx), min(len(references[j]) for j in r_idx))
    core = shortest - 2 * MAX_SHIFT
    found: list[Match] = []
    if core < 10:  # too short for the matrix shortcut: every duration-matched pair exactly
        pairs = [(int(i), int(j)) for i in q_idx for j in r_idx if abs(qd[i] - rd[j]) <= tolerance_s]
        qi = np.array([p[0] for p in pairs], dtype=np.int64)
        rj = np.array([p[1] for p in pairs], dtype=np.int64)
        return _confirm(queries, references, qi, rj, threshold, same_set)
    shifted = [
        _standardise(np.stack([references[j][MAX_SHIFT + s : MAX_SHIFT + s + core] for j in r_idx]))
        for s in range(-MAX_SHIFT, MAX_SHIFT + 1)
    ]
    for chunk_start in range(0, len(q_idx), _ROWS):
        chunk = q_idx[chunk_start : chunk_start + _ROWS]
        a = _standardise(np.stack([queries[i][MAX_SHIFT : MAX_SHIFT + core] for i in chunk]))
        best = np.max(np.stack([a @ b.T for b in shifted]), axis=0)
        close = np.abs(qd[chunk][:, None] - rd[r_idx][None, :]) <= tolerance_s
        rows, cols = np.nonzero(close & (best >= threshold - _PREFILTER_MARGIN))
        found += _confirm(queries, references, chunk[rows], r_idx[cols], threshold, same_set)
    return found


def _confirm(
    queries: Sequence[Envelope],
    references: Sequence[Envelope],
    qi: NDArray[np.int64],
    rj: NDArray[np.int64],
    threshold: float,
    same_set: bool,
) -> list[Match]:
    """The candidate pairs whose exact correlation reaches the threshold."""
    if same_set:
        keep = qi < rj
        qi, rj = qi[keep], rj[keep]
    corr = exact_correlations(queries, references, qi, rj)
    hit = np.flatnonzero(corr >= threshold)
    return [Match(int(qi[k]), int(rj[k]), float(corr[k])) for k in hit]


def exact_correlations(
    queries: Sequence[Envelope],
    references: Sequence[Envelope],
    qi: NDArray[np.int64],
    rj: NDArray[np.int64],
) -> NDArray[np.float64]:
    """``correlation(queries[qi[k]], references[rj[k]])`` for every k, vectorised over the pairs
    whose two envelope lengths agree (candidates differ by a few frames at most)."""
    out = np.full(len(qi), -1.0)
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (i, j) in enumerate(zip(qi.tolist(), rj.tolist(), strict=True)):
        groups.setdefault((len(queries[i]), len(references[j])), []).append(k)
    for ks_all in groups.values():
        if len(ks_all) < 16:  # numpy's per-call cost beats the loop only for larger groups
            for k in ks_all:
                out[k] = correlation(queries[int(qi[k])], references[int(rj[k])])
            continue
        for start in range(0, len(ks_all), 2048):
            ks = np.array(ks_all[start : start + 2048])
            a = np.stack([queries[i] for i in qi[ks].tolist()])
            b = np.stack([references[j] for j in rj[ks].tolist()])
            out[ks] = _best_over_shifts(a, b)
    return out


def _best_over_shifts(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    best = np.full(len(a), -1.0)
    for shift in range(-MAX_SHIFT, MAX_SHIFT + 1):
        x, y = (a[:, shift:], b) if shift >= 0 else (a, b[:, -shift:])
        n = min(x.shape[1], y.shape[1])
        if n < 10:
            continue
        xc = x[:, :n] - x[:, :n].mean(axis=1, keepdims=True)
        yc = y[:, :n] - y[:, :n].mean(axis=1, keepdims=True)
        sx, sy = np.sqrt((xc * xc).sum(axis=1)), np.sqrt((yc * yc).sum(axis=1))
        valid = (sx > 0) & (sy > 0)
        r = np.divide((xc * yc).sum(axis=1), sx * sy, out=np.full(len(a), -1.0), where=valid)
        best = np.where(valid, np.maximum(best, r), best)
    return best
