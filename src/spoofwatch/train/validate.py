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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import DataError
from spoofwatch.model.mlp_head import MLPOptions
from spoofwatch.progress import progress as show_progress
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.fit import StackedRows, clip_llrs, column_weights, fit_weighted, fit_weights
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
    # Per fold (``fold_report``): its clips, mean score, EER against the other class's
    # held-out clips and its share of errors at the pooled EER threshold.
    folds: dict[str, dict[str, Any]] = field(default_factory=dict)


# Item fields a fold column can name besides the manifest's own extra columns.
ITEM_COLUMNS = ("source", "system", "speaker", "split", "utt_id")


def _source_key(item: LabelledItem) -> str:
    return item.source.split("@")[0]


def _grouped(value: str, fold_groups: Sequence[str]) -> str:
    for group in fold_groups:
        if any(fnmatchcase(value, pattern) for pattern in group.split("|")):
            return group
    return value


def fold_key(item: LabelledItem, fold_groups: Sequence[str] = ()) -> str:
    """The fold an item is held out in: the first of ``fold_groups`` its source matches, else
    its source without the ``@version`` suffix. A group is one glob pattern or several joined
    by ``|`` (source names may contain commas)."""
    return _grouped(_source_key(item), fold_groups)


def columns_of(items: Sequence[LabelledItem]) -> list[str]:
    """The columns a fold can be keyed by: the item fields and every extra manifest column."""
    extra = sorted({name for it in items for name in it.extra})
    return [*ITEM_COLUMNS, *(name for name in extra if name not in ITEM_COLUMNS)]


def column_value(item: LabelledItem, column: str) -> str:
    """``item``'s cell in ``column`` (``source`` without its ``@version`` suffix)."""
    if column == "source":
        return _source_key(item)
    if column in ITEM_COLUMNS:
        return str(getattr(item, column))
    return item.extra.get(column, "")


@dataclass(frozen=True)
class FoldScheme:
    """How items are held out. With one column for both classes (``source``: leave-one-
    source-out) an item's fold is its cell in that column, both classes together. With two,
    spoofs and bona fide clips are held out separately: fold ``spoof:V`` holds out the spoofs
    whose ``spoof_by`` cell is V, fold ``bonafide:W`` the bona fide clips whose ``bonafide_by``
    cell is W (leave-one-family-out: ``spoof_by="generator"``). ``fold_groups`` (globs, see
    ``fold_key``) join cells into one fold."""

    spoof_by: str = "source"
    bonafide_by: str = "source"
    fold_groups: tuple[str, ...] = ()
    # 0: one fold per cell. K > 0: the cells are dealt into K folds (``partition_folds``),
    # each cell still held out from the head that scores it, K fits instead of hundreds.
    partitions: int = 0
    # With partitions: 0 deals the largest cells first (one fixed deal); n > 0 deals them
    # in an order drawn from seed n, so a figure can be read over several deals.
    deal: int = 0

    @property
    def separate(self) -> bool:
        return self.spoof_by != self.bonafide_by

    def check(self, items: Sequence[LabelledItem]) -> None:
        """Refuse a column the items lack, a scored item with an empty cell in it, or a
        partition count that deals nothing."""
        if self.partitions < 0 or self.partitions == 1:
            raise DataError(
                f"fold partitions: expected 0 (one fold per cell) or at least 2, found {self.partitions}"
            )
        if self.deal < 0 or (self.deal and not self.partitions):
            raise DataError(
                f"fold deal: expected 0, or a seed >= 1 together with fold partitions, found deal "
                f"{self.deal} with {self.partitions} partitions"
            )
        available = columns_of(items)
        for column in dict.fromkeys((self.spoof_by, self.bonafide_by)):
            if column not in available:
                raise DataError(f"fold column {column!r}: expected one of the manifest's columns {available}")
        for label, column in (("spoof", self.spoof_by), ("bonafide", self.bonafide_by)):
            empty = [it.utt_id for it in items if it.label == label and not column_value(it, column)]
            if empty:
                raise DataError(
                    f"fold column {column!r}: expected a value for every {label} item, found "
                    f"{len(empty)} empty (first {empty[:3]})"
                )

    def key(self, item: LabelledItem) -> str:
        """The fold ``item`` is held out (and scored) in."""
        if not self.separate:
            return _grouped(column_value(item, self.spoof_by), self.fold_groups)
        column = self.spoof_by if item.label == "spoof" else self.bonafide_by
        value = column_value(item, column) or item.system  # extra items may lack the column
        return f"{item.label}:{_grouped(value, self.fold_groups)}"

    def training_keys(self, item: LabelledItem) -> tuple[str, str]:
        """The folds a training-only item stays out of: its own, and (held out separately)
        the bona fide fold of its source, since a vocoder copy of a held-out genuine clip
        repeats that clip."""
        own = self.key(item)
        if not self.separate:
            return own, own
        return own, f"bonafide:{_grouped(column_value(item, self.bonafide_by), self.fold_groups)}"


def partition_folds(keys: Sequence[str], partitions: int, deal: int = 0) -> dict[str, str]:
    """Each fold key mapped to one of ``partitions`` folds (``part-01``...), dealt greedily
    into the fold with the fewest clips so far (ties by number), so the folds are about the
    same size; ``spoof:`` and ``bonafide:`` keys are dealt separately, so each fold holds
    out some of both. ``deal`` 0 takes the keys largest first (ties by name); ``deal`` n > 0
    in an order drawn from seed n, which holds other cells out together (the spread of a
    figure over deals is how much it owes to the deal). Deterministic for the same keys."""
    if partitions < 2:
        raise DataError(f"fold partitions: expected at least 2, found {partitions}")
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    kind_of = {k: k.split(":", 1)[0] if ":" in k else "" for k in counts}
    mapping: dict[str, str] = {}
    for kind in sorted(set(kind_of.values())):
        mine = [k for k in counts if kind_of[k] == kind]
        if len(mine) < partitions:
            raise DataError(
                f"fold partitions: expected at least {partitions} {kind or 'fold'} values to deal, "
                f"found {len(mine)}"
            )
        sizes = [0] * partitions
        order = sorted(mine, key=lambda k: (-counts[k], k))
        if deal:
            order = [order[i] for i in np.random.default_rng(deal).permutation(len(order))]
        for key in order:
            target = min(range(partitions), key=lambda i: (sizes[i], i))
            sizes[target] += counts[key]
            mapping[key] = f"part-{target + 1:02d}"
    return mapping


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
    """Leave-one-source-out (``leave_one_fold_out`` by ``source``) scored on one channel."""
    results = leave_one_fold_out(
        train_sets,
        {test_channel: test_set},
        layers,
        scheme=FoldScheme(fold_groups=tuple(fold_groups)),
        C=C,
        spectral_weight=spectral_weight,
        progress=progress,
        extra_sets=extra_sets,
        fit=fit,
    )
    return results[test_channel]


class FoldLayout(NamedTuple):
    """Who is held out with whom: ``held_as`` maps each cell to its fold, ``hold_keys`` is
    each test item's fold, and ``training`` lists each training set with each window's fold
    and the second fold a training-only item stays out of (the same for the corpus's own
    items)."""

    held_as: dict[str, str]
    hold_keys: NDArray[np.str_]
    training: list[tuple[EmbeddingSet, NDArray[np.str_], NDArray[np.str_]]]

    @property
    def folds(self) -> list[str]:
        return sorted(set(self.held_as.values()))


def fold_layout(
    scheme: FoldScheme,
    keys: NDArray[np.str_],
    names: Sequence[str],
    train_sets: Sequence[EmbeddingSet],
    extra_sets: Sequence[EmbeddingSet] = (),
) -> FoldLayout:
    """``leave_one_fold_out``'s folds for test items whose cells are ``keys`` (``names``:
    the distinct cells): each cell alone, or with ``scheme.partitions`` its fold of cells."""
    held_as: dict[str, str] = (
        partition_folds(keys.tolist(), scheme.partitions, scheme.deal)
        if scheme.partitions
        else {n: n for n in names}
    )

    def hold(cells: NDArray[np.str_]) -> NDArray[np.str_]:
        return np.array([held_as.get(c, c) for c in cells.tolist()], dtype=str)

    training: list[tuple[EmbeddingSet, NDArray[np.str_], NDArray[np.str_]]] = []
    for s in train_sets:
        window_keys = hold(np.array([scheme.key(it) for it in s.items]))[s.item_index]
        training.append((s, window_keys, window_keys))
    for s in extra_sets:
        pairs = [scheme.training_keys(it) for it in s.items]
        training.append(
            (
                s,
                hold(np.array([p[0] for p in pairs]))[s.item_index],
                hold(np.array([p[1] for p in pairs]))[s.item_index],
            )
        )
    return FoldLayout(held_as, hold(keys), training)


def leave_one_fold_out(
    train_sets: Sequence[EmbeddingSet],
    test_sets: Mapping[str, EmbeddingSet],
    layers: Sequence[int],
    *,
    scheme: FoldScheme = FoldScheme(),
    C: float = 0.01,
    spectral_weight: float = 1.0,
    progress: bool = True,
    extra_sets: Sequence[EmbeddingSet] = (),
    fit: FoldFitter | None = None,
    fit_dtype: type[np.floating[Any]] = np.float64,
    source_cap: int | None = None,
    balance_by: Sequence[str] = (),
    window_s: float = 4.0,
    mlp: MLPOptions | None = None,
) -> dict[str, LosoResult]:
    """Each fold of ``scheme`` held out in turn; its clips scored on every test channel
    (``test_sets``: channel -> set) by the head fitted without it, and the scores of all
    folds pooled per channel. ``train_sets`` (one per training channel) and the test sets
    must cover the same items in the same order.

    ``extra_sets`` are training-only items (e.g. vocoder copies of bona fide clips): each
    fold trains on those not held out with it (``FoldScheme.training_keys``), and they are
    never scored. ``fit``: how each fold's head is fitted (default: ``LinearHead`` with ``C``,
    reading the training windows in chunks, or ``MLPHead`` with ``mlp``; a custom fitter gets
    them as one matrix).
    """
    if not test_sets:
        raise DataError("expected at least one test channel")
    items = next(iter(test_sets.values())).items
    if any(s.items != items for s in (*train_sets, *test_sets.values())):
        raise DataError("train and test embedding sets must list the same items in the same order")
    scheme.check(items)
    keys = np.array([scheme.key(it) for it in items])
    names = sorted(set(keys.tolist()))
    values = {n.split(":", 1)[1] if scheme.separate else n for n in names}
    unmatched = [group for group in scheme.fold_groups if group not in values]
    if unmatched:
        where = scheme.spoof_by if not scheme.separate else f"{scheme.spoof_by} or {scheme.bonafide_by}"
        raise DataError(f"fold groups {unmatched} match no {where}; expected glob patterns of its cells")
    if len(names) < 2:
        raise DataError(f"leave-one-out needs at least 2 sources or families to hold out, found {names}")
    layout = fold_layout(scheme, keys, names, train_sets, extra_sets)
    hold_keys, training = layout.hold_keys, layout.training
    weights = column_weights(train_sets, layers, spectral_weight)
    # Weights over every training window at once, not per fold: a fold's head sees its
    # share of them (the classes stay near balanced; exactly so with one fold).
    weighting = fit_weights([s for s, _, _ in training], source_cap, balance_by, window_s)
    window_scores = {ch: np.full(len(t.features), np.nan) for ch, t in test_sets.items()}
    folds = layout.folds
    for name in show_progress(folds, total=len(folds), desc="leave-one-out", unit="fold", enabled=progress):
        masks = [(own != name) & (other != name) for _, own, other in training]
        rows = StackedRows([s for s, _, _ in training], layers, masks)
        y = rows.labels()
        if len(set(y.tolist())) < 2:
            logger.warning("fold %s: training data lacks a class; skipped", name)
            continue
        score: Callable[[NDArray[np.float32]], NDArray[np.float64]]
        if fit is None:
            head = fit_weighted(rows, y, weights, C=C, fit_dtype=fit_dtype, weighting=weighting, mlp=mlp)
            score = head.decision_function
        else:
            fold_keys = np.concatenate([own[m] for (_, own, _), m in zip(training, masks, strict=True)])
            score = fit(rows.whole(), y, weights, fold_keys)
        held = hold_keys == name
        for channel, test_set in test_sets.items():
            test_windows = held[test_set.item_index]
            window_scores[channel][test_windows] = score(test_set.select_layers(layers, test_windows))
    return {
        channel: _pooled(test_set, window_scores[channel], keys, names, channel)
        for channel, test_set in test_sets.items()
    }


def _pooled(
    test_set: EmbeddingSet,
    window_scores: NDArray[np.float64],
    keys: NDArray[np.str_],
    names: Sequence[str],
    channel: str,
) -> LosoResult:
    items = test_set.items
    labels = np.array([1 if it.label == "bonafide" else 0 for it in items])
    clip = clip_llrs(test_set, np.nan_to_num(window_scores, nan=0.0))
    scored = np.zeros(len(items), dtype=bool)
    scored[np.unique(test_set.item_index[~np.isnan(window_scores)])] = True
    keep = scored & ~np.isnan(clip)
    kept = [it for it, k in zip(items, keep, strict=True) if k]
    metrics = evaluate(clip[keep], [it.label for it in kept], [it.system for it in kept])
    per_source: dict[str, float] = {}
    bona_mean: dict[str, float] = {}
    bona_all = clip[keep & (labels == 1)]
    spoof_all = clip[keep & (labels == 0)]
    for name in names:
        spoof = clip[keep & (labels == 0) & (keys == name)]
        if len(spoof) and len(bona_all):
            per_source[name] = compute_eer(bona_all, spoof)[0]
        bona = clip[keep & (labels == 1) & (keys == name)]
        if len(bona):
            bona_mean[name] = float(bona.mean())
    threshold = compute_eer(bona_all, spoof_all)[1] if len(bona_all) and len(spoof_all) else 0.0
    folds = {
        name: fold_report(
            clip[keep & (keys == name) & (labels == 1)],
            clip[keep & (keys == name) & (labels == 0)],
            bona_all,
            spoof_all,
            threshold,
        )
        for name in names
    }
    return LosoResult(metrics, clip, tuple(items), per_source, channel, bona_mean, folds)


def fold_report(
    bona: NDArray[np.float64],
    spoof: NDArray[np.float64],
    bona_all: NDArray[np.float64],
    spoof_all: NDArray[np.float64],
    threshold: float,
) -> dict[str, Any]:
    """One fold's held-out clips (higher score = more bona fide). ``spoof_eer``: its spoofs
    against every held-out bona fide clip; ``bonafide_eer``: its bona fide clips against
    every held-out spoof; at the pooled EER ``threshold`` a clip scoring at or below it is
    flagged: ``missed`` is the share of its spoofs not flagged, ``false_alarms`` the share of
    its bona fide clips flagged."""
    report: dict[str, Any] = {"bonafide_clips": len(bona), "spoof_clips": len(spoof)}
    if len(spoof):
        report["spoof_mean_score"] = float(spoof.mean())
        report["missed"] = float(np.mean(spoof > threshold))
        if len(bona_all):
            report["spoof_eer"] = compute_eer(bona_all, spoof)[0]
    if len(bona):
        report["bonafide_mean_score"] = float(bona.mean())
        report["false_alarms"] = float(np.mean(bona <= threshold))
        if len(spoof_all):
            report["bonafide_eer"] = compute_eer(bona, spoof_all)[0]
    return report
