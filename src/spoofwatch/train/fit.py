"""Fit a detector head from cached embeddings: layer choice, head, calibration, metrics.

Windows are the training unit (the head sees exactly what streaming sends it); clip
scores for evaluation are the mean window LLR, as ``spoofwatch score`` reports them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import DataError
from spoofwatch.model.calibration import AffineCalibration
from spoofwatch.model.head import LinearHead
from spoofwatch.model.heads import Head
from spoofwatch.model.mlp_head import MLPHead, MLPOptions
from spoofwatch.train.corpus import LabelledItem, item_duration_s
from spoofwatch.train.extract import CHUNK_ROWS, EmbeddingSet
from spoofwatch.train.metrics import Metrics, compute_eer, evaluate
from spoofwatch.train.store import drop_resident

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FittedHead:
    head: Head
    calibration: AffineCalibration
    layers: tuple[int, ...]
    layer_search: dict[str, float]


def column_weights(
    sets: Sequence[EmbeddingSet], layers: Sequence[int], spectral_weight: float
) -> NDArray[np.float64] | None:
    """Per-feature weights for LinearHead.fit: 1 for the encoder's layers, ``spectral_weight``
    for an attached spectral block (a few LFCC statistics next to thousands of encoder
    features would otherwise get little of the shared L2 budget)."""
    spectral = sets[0].spectral
    if spectral is None or spectral_weight == 1.0:
        return None
    n_main = len(layers) * sets[0].features.shape[2]
    return np.concatenate([np.ones(n_main), np.full(spectral.shape[1], spectral_weight)])


def stack(
    sets: Sequence[EmbeddingSet], layers: Sequence[int]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Features of the chosen layers and window labels (1 = bona fide) of several sets."""
    x = np.concatenate([s.select_layers(layers) for s in sets])
    y = np.concatenate([s.labels() for s in sets])
    return x, y


class StackedRows:
    """The head's input of several sets, one after the other (of each set only the windows
    its mask keeps, when given), read in chunks as ``LinearHead.fit`` asks for them: a
    training matrix that is never whole in memory at float32 beside the fit's own copy."""

    def __init__(
        self,
        sets: Sequence[EmbeddingSet],
        layers: Sequence[int],
        masks: Sequence[NDArray[np.bool_] | None] | None = None,
    ) -> None:
        self.sets = tuple(sets)
        self.layers = tuple(layers)
        self.masks = tuple(masks) if masks is not None else (None,) * len(self.sets)
        if len(self.masks) != len(self.sets):
            raise DataError(f"expected one mask per set ({len(self.sets)}), found {len(self.masks)}")
        rows = sum(
            len(s.features) if m is None else int(np.count_nonzero(m))
            for s, m in zip(self.sets, self.masks, strict=True)
        )
        self.shape = (rows, self.sets[0].width(self.layers) if self.sets else 0)

    def labels(self) -> NDArray[np.int64]:
        return np.concatenate(
            [s.labels() if m is None else s.labels()[m] for s, m in zip(self.sets, self.masks, strict=True)]
        )

    def chunks(self) -> Iterator[NDArray[np.float32]]:
        for s, mask in zip(self.sets, self.masks, strict=True):
            for start in range(0, len(s.features), CHUNK_ROWS):
                stop = min(start + CHUNK_ROWS, len(s.features))
                if mask is not None and not mask[start:stop].any():
                    continue
                block = s.layer_rows(self.layers, start, stop)
                drop_resident(s.features)
                yield block if mask is None else block[mask[start:stop]]

    def weights(self, per_set: Sequence[NDArray[np.float64]]) -> NDArray[np.float64]:
        """One weight per row, from one weight per window of each set (``source_weights``)."""
        return np.concatenate([w if m is None else w[m] for w, m in zip(per_set, self.masks, strict=True)])

    def whole(self) -> NDArray[np.float32]:
        """All rows in one matrix (for a fitter that needs it so)."""
        return np.concatenate(list(self.chunks())) if self.shape[0] else np.zeros(self.shape, np.float32)


def source_weights(sets: Sequence[EmbeddingSet], cap: int | None) -> list[NDArray[np.float64]]:
    """Per window of each set, its item's weight in the fit: 1, or with ``cap`` the share
    ``cap / n`` for an item of a source with n > cap items in the set, so no source weighs
    more than ``cap`` clips. A few large sources (1 s command words, one emotional-speech
    set) can otherwise be most of a class and teach the head their recording style as the
    class (docs/decisions.md, 2026-12-06)."""
    out = []
    for s in sets:
        if cap is None:
            out.append(np.ones(len(s.item_index)))
            continue
        sources = [it.source for it in s.items]
        counts = Counter(sources)
        per_item = np.array([min(1.0, cap / counts[name]) for name in sources], dtype=np.float64)
        out.append(per_item[s.item_index] if len(per_item) else np.ones(0))
    return out


# The derived balance key: is the clip shorter than a window (so its one window repeats it)?
LENGTH_KEY = "length"


def stratum_of(item: LabelledItem, keys: Sequence[str], window_s: float) -> tuple[str, ...]:
    """The item's values of ``keys``: manifest columns, or ``length`` ("tiled" for a clip
    shorter than one window, else "whole")."""
    values = []
    for key in keys:
        if key == LENGTH_KEY:
            values.append("tiled" if item_duration_s(item) < window_s else "whole")
        elif key == "source":
            values.append(item.source)
        elif key == "speaker":
            values.append(item.speaker)
        else:
            values.append(item.extra.get(key, "") or "-")
    return tuple(values)


def balance_weights(
    sets: Sequence[EmbeddingSet],
    keys: Sequence[str],
    window_s: float,
    base: Sequence[NDArray[np.float64]] | None = None,
) -> list[NDArray[np.float64]]:
    """Per window of each set, its weight in the fit so that within each stratum (the
    values of ``keys`` of the window's clip) bona fide and spoof weigh the same, and the two
    classes weigh the same overall. The windows of all sets count together; ``base`` (e.g.
    ``source_weights``) multiplies each window's count.

    Without it a stratum that is mostly one class teaches the head the stratum as the class:
    most bona fide clips of the built corpus are command words shorter than a window, most
    clips of clean read English are spoofs (docs/accuracy-lofo.md). A stratum holding one
    class only keeps its windows' weight; only the overall rescaling touches it. The head is
    then fitted without balanced class weights (it would count windows, not weights)."""
    if not keys:
        raise DataError("balance keys: expected at least one key (a manifest column or 'length')")
    columns = {column for s in sets for it in s.items for column in it.extra}
    for key in keys:
        if key not in (LENGTH_KEY, "source", "speaker") and key not in columns:
            raise DataError(
                f"balance key {key!r}: no manifest has that column; expected 'length' or one of "
                f"{sorted(columns | {'source', 'speaker'})}"
            )
    base_weights = base if base is not None else [np.ones(len(s.item_index)) for s in sets]
    strata: list[NDArray[np.int64]] = []
    names: dict[tuple[str, ...], int] = {}
    # The channels' sets list the same items: each item's stratum (maybe a file's
    # duration read from disk) is found once.
    of_item: dict[LabelledItem, int] = {}
    for s in sets:
        for it in s.items:
            if it not in of_item:
                of_item[it] = names.setdefault(stratum_of(it, keys, window_s), len(names))
        per_item = [of_item[it] for it in s.items]
        strata.append(np.asarray(per_item, dtype=np.int64)[s.item_index])
    labels = [s.labels() for s in sets]
    totals = np.zeros((len(names), 2))
    for stratum, label, weight in zip(strata, labels, base_weights, strict=True):
        np.add.at(totals, (stratum, label), weight)
    both = (totals > 0).all(axis=1)
    # Within a two-class stratum each class gets half of the stratum's weight.
    factor = np.ones_like(totals)
    factor[both] = totals[both].sum(axis=1, keepdims=True) / (2.0 * totals[both])
    balanced = [w * factor[st, lab] for st, lab, w in zip(strata, labels, base_weights, strict=True)]
    class_total = np.zeros(2)
    for label, weight in zip(labels, balanced, strict=True):
        np.add.at(class_total, label, weight)
    if (class_total == 0).any():
        raise DataError("balancing needs training windows of both classes")
    overall = class_total.sum() / (2.0 * class_total)
    return [w * overall[lab] for lab, w in zip(labels, balanced, strict=True)]


# Per-window weights of each training set (None: every window weighs 1), and the head's
# class weighting ("balanced" or None).
Weighting = tuple[list[NDArray[np.float64]] | None, str | None]


def fit_weights(
    sets: Sequence[EmbeddingSet],
    source_cap: int | None,
    balance_by: Sequence[str],
    window_s: float,
) -> Weighting:
    """The fit's per-window weights (None: every window weighs 1) and the head's class
    weighting: ``balanced`` unless ``balance_by`` already balances the classes."""
    base = None if source_cap is None else source_weights(sets, source_cap)
    if not balance_by:
        return base, "balanced"
    return balance_weights(sets, balance_by, window_s, base), None


def new_head(
    C: float, fit_dtype: type[np.floating[Any]], mlp: MLPOptions | None, class_weight: str | None = "balanced"
) -> Head:
    """An unfitted head: an ``MLPHead`` with ``mlp``'s options, else a ``LinearHead`` with ``C``."""
    if mlp is not None:
        return MLPHead(mlp, class_weight=class_weight)
    return LinearHead(C=C, class_weight=class_weight, fit_dtype=fit_dtype)


def fit_weighted(
    rows: StackedRows,
    y: NDArray[np.int64],
    columns: NDArray[np.float64] | None,
    *,
    C: float,
    fit_dtype: type[np.floating[Any]],
    weighting: Weighting,
    mlp: MLPOptions | None = None,
) -> Head:
    """A head (``new_head``) fitted on ``rows`` with ``fit_weights``'s per-window weights and
    class weighting."""
    per_set, class_weight = weighting
    sample_weight = None if per_set is None else rows.weights(per_set)
    return new_head(C, fit_dtype, mlp, class_weight).fit(rows, y, columns, sample_weight=sample_weight)


def clip_llrs(embeddings: EmbeddingSet, window_llrs: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean window LLR per item (NaN for items with no windows)."""
    n = len(embeddings.items)
    sums = np.bincount(embeddings.item_index, weights=window_llrs, minlength=n)
    counts = np.bincount(embeddings.item_index, minlength=n)
    out = np.full(n, np.nan)
    has = counts > 0
    out[has] = sums[has] / counts[has]
    return out


def window_eer(scores: NDArray[np.float64], labels: NDArray[np.int64]) -> float:
    return compute_eer(scores[labels == 1], scores[labels == 0])[0]


def candidate_layer_sets(num_hidden_states: int) -> list[tuple[int, ...]]:
    """Each single hidden state, lower/middle/upper halves, and all of them."""
    n = num_hidden_states
    sets: list[tuple[int, ...]] = [(i,) for i in range(n)]
    sets += [tuple(range(0, (n + 1) // 2)), tuple(range(n // 2, n)), tuple(range(n))]
    return list(dict.fromkeys(sets))


def fit_head(
    train: Sequence[EmbeddingSet],
    dev: Sequence[EmbeddingSet],
    *,
    layers: Sequence[int] | None = None,
    C: float = 0.05,
    spectral_weight: float = 1.0,
    fit_dtype: type[np.floating[Any]] = np.float64,
    source_cap: int | None = None,
    balance_by: Sequence[str] = (),
    window_s: float = 4.0,
    mlp: MLPOptions | None = None,
) -> FittedHead:
    """Choose layers on dev (unless given), fit on train, calibrate on dev windows.
    ``fit_dtype``: precision of the standardised training matrix (``LinearHead``);
    ``source_cap``: no source weighs more than that many clips (``source_weights``);
    ``balance_by``: classes balanced within each stratum of these keys (``balance_weights``;
    ``window_s`` decides which clips are tiled); ``mlp``: fit an ``MLPHead`` so, not a
    ``LinearHead``."""
    weighting = fit_weights(train, source_cap, balance_by, window_s)
    n_states = train[0].features.shape[1]
    search: dict[str, float] = {}
    if layers is None:
        best: tuple[float, tuple[int, ...]] = (np.inf, tuple(range(n_states)))
        for candidate in candidate_layer_sets(n_states):
            rows = StackedRows(train, candidate)
            columns = column_weights(train, candidate, spectral_weight)
            head = fit_weighted(
                rows, rows.labels(), columns, C=C, fit_dtype=fit_dtype, weighting=weighting, mlp=mlp
            )
            dx, dy = stack(dev, candidate)
            eer = window_eer(head.decision_function(dx), dy)
            search[",".join(map(str, candidate))] = eer
            logger.info("layers %s: dev window EER %.4f", candidate, eer)
            if eer <= best[0]:  # on ties prefer the later, broader layer set
                best = (eer, candidate)
        chosen = best[1]
    else:
        chosen = tuple(layers)
    rows = StackedRows(train, chosen)
    columns = column_weights(train, chosen, spectral_weight)
    head = fit_weighted(rows, rows.labels(), columns, C=C, fit_dtype=fit_dtype, weighting=weighting, mlp=mlp)
    dx, dy = stack(dev, chosen)
    raw = head.decision_function(dx)
    calibration = AffineCalibration.fit(raw[dy == 1], raw[dy == 0])
    return FittedHead(head, calibration, chosen, search)


def _clip_llrs_of(fitted: FittedHead, embeddings: EmbeddingSet) -> NDArray[np.float64]:
    llr = fitted.calibration.apply(fitted.head.decision_function(embeddings.select_layers(fitted.layers)))
    return clip_llrs(embeddings, llr)


def clip_scores(
    fitted: FittedHead, embeddings: EmbeddingSet
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Calibrated clip LLRs (mean window LLR) of the bona fide and of the spoof clips."""
    clip = _clip_llrs_of(fitted, embeddings)
    is_bona = np.array([it.label == "bonafide" for it in embeddings.items], dtype=bool)
    keep = ~np.isnan(clip)
    return clip[keep & is_bona], clip[keep & ~is_bona]


def evaluate_set(fitted: FittedHead, embeddings: EmbeddingSet, threshold_llr: float = 0.0) -> Metrics:
    """Clip-level metrics (mean window LLR per clip) on one embedding set."""
    clip = _clip_llrs_of(fitted, embeddings)
    keep = ~np.isnan(clip)
    labels = [it.label for it, k in zip(embeddings.items, keep, strict=True) if k]
    systems = [it.system for it, k in zip(embeddings.items, keep, strict=True) if k]
    return evaluate(clip[keep], labels, systems, threshold_llr=threshold_llr)


def accumulated_evidence_eer(
    embeddings: EmbeddingSet, window_llrs: NDArray[np.float64], max_windows: int = 8
) -> dict[int, float]:
    """EER of clip scores made from the first k windows (k = 1..max_windows), as a
    stream accumulates evidence; clips with fewer windows use all they have."""
    labels = np.array([1 if it.label == "bonafide" else 0 for it in embeddings.items])
    order = np.lexsort((embeddings.t_start, embeddings.item_index))
    index = embeddings.item_index[order]
    llrs = window_llrs[order]
    first = np.searchsorted(index, np.arange(len(embeddings.items)))
    position = np.arange(len(index)) - first[index]
    out: dict[int, float] = {}
    for k in range(1, max_windows + 1):
        take = position < k
        sums = np.bincount(index[take], weights=llrs[take], minlength=len(labels))
        counts = np.bincount(index[take], minlength=len(labels))
        has = counts > 0
        clip = sums[has] / counts[has]
        out[k] = compute_eer(clip[labels[has] == 1], clip[labels[has] == 0])[0]
    return out
