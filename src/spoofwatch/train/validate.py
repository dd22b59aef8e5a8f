"""Leave-one-source-out validation: the honest estimate of accuracy on unseen sources.

The dev split shares demo pages and recording styles with train, so it flatters. Here
each source (demo page, package, generator batch: the manifest's ``source`` column) is
held out in turn, a head is fitted on all the others, the held-out clips are scored,
and the clip scores of all folds are pooled into one EER.

Sources that are not independent (one voice published twice, the same recordings in two
encodings) must be held out together, or each one's fold trains on the other: ``fold_groups``
takes glob patterns (several joined by ``|``), and the sources one group matches form one fold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import DataError
from spoofwatch.model.head import LinearHead
from spoofwatch.progress import progress as show_progress
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.fit import clip_llrs, column_weights
from spoofwatch.train.metrics import Metrics, compute_eer, evaluate

logger = logging.getLogger(__name__)

# Fits one fold's head: (features, labels, column weights, each window's fold key) -> the
# head's scoring function. The fold keys let a fitter resample by source.
FoldFitter = Callable[
    [NDArray[np.float32], NDArray[np.int64], NDArray[np.float64] | None, NDArray[np.str_]],
    Callable[[NDArray[np.float32]], NDArray[np.float64]],
]


@dataclass(frozen=True)
class LosoResult:
    metrics: Metrics
    clip_scores: NDArray[np.float64]
    items: tuple[LabelledItem, ...]
    per_source_eer: dict[str, float]
    test_channel: str
    # Mean held-out clip score of each source's bona fide clips: a source whose genuine
    # clips score far above the others props up every spoof's comparison.
    per_source_bonafide_mean: dict[str, float]


def _source_key(item: LabelledItem) -> str:
    return item.source.split("@")[0]


def fold_key(item: LabelledItem, fold_groups: Sequence[str] = ()) -> str:
    """The fold an item is held out in: the first of ``fold_groups`` its source matches, else
    its source without the ``@version`` suffix. A group is one glob pattern or several joined
    by ``|`` (source names may contain commas)."""
    source = _source_key(item)
    for group in fold_groups:
        if any(fnmatchcase(source, pattern) for pattern in group.split("|")):
            return group
    return source


def leave_one_source_out(
    train_sets: Sequence[EmbeddingSet],
    test_set: EmbeddingSet,
    layers: Sequence[int],
    *,
    C: float = 0.01,
    spectral_weight: float = 1.0,
    test_channel: str = "clean",
    progress: bool = True,
    extra_sets: Sequence[EmbeddingSet] = (),
    fold_groups: Sequence[str] = (),
    fit: FoldFitter | None = None,
) -> LosoResult:
    """``train_sets`` (one per training channel) and ``test_set`` must cover the same items
    in the same order; windows of the held-out source are never in its fold's training.

    ``extra_sets`` are training-only items (e.g. vocoder copies of bona fide clips): each
    fold trains on those whose source is not held out, and they are never scored.
    ``fold_groups``: glob patterns whose matching sources are held out together (``fold_key``).
    ``fit``: how each fold's head is fitted (default: ``LinearHead`` with ``C``).
    """
    items = test_set.items
    if any(s.items != items for s in train_sets):
        raise DataError("train and test embedding sets must list the same items in the same order")
    sources = np.array([fold_key(it, fold_groups) for it in items])
    names = sorted(set(sources.tolist()))
    unmatched = [group for group in fold_groups if group not in names]
    if unmatched:
        raise DataError(
            f"fold groups {unmatched} match no source; expected glob patterns of manifest sources"
        )
    if len(names) < 2:
        raise DataError(f"leave-one-source-out needs at least 2 sources, found {names}")
    labels = np.array([1 if it.label == "bonafide" else 0 for it in items])
    window_scores = np.full(len(test_set.features), np.nan)
    # Per training set, once: the head's input, and each window's source and label. The
    # corpus's sets and the extra ones are held out alike, by their windows' sources.
    training = [
        (
            s.select_layers(layers),
            np.array([fold_key(it, fold_groups) for it in s.items])[s.item_index],
            s.labels(),
        )
        for s in (*train_sets, *extra_sets)
    ]
    test_features = test_set.select_layers(layers)
    weights = column_weights(train_sets, layers, spectral_weight)
    for name in show_progress(names, desc="leave-one-source-out", unit="source", enabled=progress):
        held = sources == name
        xs, ys, keys = [], [], []
        for features, window_sources, window_labels in training:
            keep = window_sources != name
            xs.append(features[keep])
            ys.append(window_labels[keep])
            keys.append(window_sources[keep])
        y = np.concatenate(ys)
        if len(set(y.tolist())) < 2:
            logger.warning("fold %s: training data lacks a class; skipped", name)
            continue
        x = np.concatenate(xs)
        score: Callable[[NDArray[np.float32]], NDArray[np.float64]]
        if fit is None:
            score = LinearHead(C=C).fit(x, y, weights).decision_function
        else:
            score = fit(x, y, weights, np.concatenate(keys))
        test_windows = held[test_set.item_index]
        window_scores[test_windows] = score(test_features[test_windows])
    clip = clip_llrs(test_set, np.nan_to_num(window_scores, nan=0.0))
    scored = np.zeros(len(items), dtype=bool)
    scored[np.unique(test_set.item_index[~np.isnan(window_scores)])] = True
    keep = scored & ~np.isnan(clip)
    kept = [it for it, k in zip(items, keep, strict=True) if k]
    metrics = evaluate(clip[keep], [it.label for it in kept], [it.system for it in kept])
    per_source: dict[str, float] = {}
    bona_mean: dict[str, float] = {}
    bona_all = clip[keep & (labels == 1)]
    for name in names:
        spoof = clip[keep & (labels == 0) & (sources == name)]
        if len(spoof) and len(bona_all):
            per_source[name] = compute_eer(bona_all, spoof)[0]
        bona = clip[keep & (labels == 1) & (sources == name)]
        if len(bona):
            bona_mean[name] = float(bona.mean())
    return LosoResult(metrics, clip, tuple(items), per_source, test_channel, bona_mean)
