"""Spoofing-countermeasure metrics, computed as the ASVspoof evaluation packages do.

Scores follow the ASVspoof convention: higher means more bona fide. Functions that take
log-likelihood ratios (``act_dcf``, ``cllr``, ``accuracy_f1``) expect natural-log LLRs,
ln p(x|bona fide) - ln p(x|spoof).

- EER and the DET curve reproduce ASVspoof 2019's ``compute_det_curve``/``compute_eer``
  (stable sort, no interpolation).
- minDCF, actDCF and Cllr reproduce the ASVspoof 5 evaluation package (defaults
  Pspoof = 0.05, Cmiss = 1, Cfa = 10; costs normalised by min(Cmiss(1-Pspoof), Cfa Pspoof)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.errors import ConfigError, DataError

FloatArray = npt.NDArray[np.float64]
ScoresLike = Sequence[float] | npt.NDArray[Any]

BONAFIDE = "bonafide"
SPOOF = "spoof"


def _as_scores(values: ScoresLike, name: str) -> FloatArray:
    """Return ``values`` as a non-empty 1-D float64 array without NaN, or raise DataError."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise DataError(f"{name}: expected at least one score, found none")
    n_nan = int(np.isnan(array).sum())
    if n_nan:
        raise DataError(f"{name}: expected finite or infinite scores, found {n_nan} NaN value(s)")
    return array


def compute_det_curve(bonafide: ScoresLike, spoof: ScoresLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Miss (bona fide rejected) and false-alarm (spoof accepted) rates at every threshold.

    Returns ``(frr, far, thresholds)``, each of length N + 1 for N scores in total. Entry k
    rejects the k lowest scores of the stably sorted bona fide-then-spoof concatenation;
    ``thresholds[k]`` is the k-th sorted score (the lowest score minus 0.001 for k = 0).
    """
    target = _as_scores(bonafide, "bonafide scores")
    nontarget = _as_scores(spoof, "spoof scores")
    n_scores = target.size + nontarget.size
    all_scores = np.concatenate((target, nontarget))
    labels = np.concatenate((np.ones(target.size), np.zeros(nontarget.size)))

    order = np.argsort(all_scores, kind="mergesort")
    labels = labels[order]
    target_sums = np.cumsum(labels)
    nontarget_sums = nontarget.size - (np.arange(1, n_scores + 1) - target_sums)

    frr = np.concatenate((np.atleast_1d(0.0), target_sums / target.size))
    far = np.concatenate((np.atleast_1d(1.0), nontarget_sums / nontarget.size))
    sorted_scores = all_scores[order]
    thresholds = np.concatenate((np.atleast_1d(sorted_scores[0] - 0.001), sorted_scores))
    return frr, far, thresholds


def compute_eer(bonafide: ScoresLike, spoof: ScoresLike) -> tuple[float, float]:
    """Equal error rate (fraction) and its threshold, as ASVspoof 2019's ``compute_eer``."""
    frr, far, thresholds = compute_det_curve(bonafide, spoof)
    min_index = int(np.argmin(np.abs(frr - far)))
    eer = float(np.mean((frr[min_index], far[min_index])))
    return eer, float(thresholds[min_index])


def _dcf_normaliser(p_spoof: float, c_miss: float, c_fa: float) -> float:
    if not 0.0 < p_spoof < 1.0:
        raise ConfigError(f"p_spoof: expected a prior strictly between 0 and 1, found {p_spoof}")
    if c_miss <= 0.0 or c_fa <= 0.0:
        raise ConfigError(f"costs: expected c_miss > 0 and c_fa > 0, found {c_miss} and {c_fa}")
    return min(c_miss * (1.0 - p_spoof), c_fa * p_spoof)


def min_dcf(
    bonafide: ScoresLike,
    spoof: ScoresLike,
    p_spoof: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
) -> tuple[float, float]:
    """Minimum normalised detection cost over all DET thresholds, and that threshold."""
    normaliser = _dcf_normaliser(p_spoof, c_miss, c_fa)
    frr, far, thresholds = compute_det_curve(bonafide, spoof)
    costs = c_miss * (1.0 - p_spoof) * frr + c_fa * p_spoof * far
    # argmin keeps the first minimum, as the reference loop with a strict "<" does.
    best = int(np.argmin(costs))
    return float(costs[best] / normaliser), float(thresholds[best])


def act_dcf(
    bonafide_llr: ScoresLike,
    spoof_llr: ScoresLike,
    p_spoof: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
) -> float:
    """Normalised detection cost at the Bayes threshold for LLR scores.

    The threshold is ``-ln(Cmiss (1 - Pspoof) / (Cfa Pspoof))``; a bona fide score below it
    is a miss, a spoof score at or above it is a false alarm.
    """
    normaliser = _dcf_normaliser(p_spoof, c_miss, c_fa)
    target = _as_scores(bonafide_llr, "bonafide scores")
    nontarget = _as_scores(spoof_llr, "spoof scores")
    threshold = -math.log(c_miss * (1.0 - p_spoof) / (c_fa * p_spoof))
    rate_miss = float(np.mean(target < threshold))
    rate_fa = float(np.mean(nontarget >= threshold))
    cost = c_miss * (1.0 - p_spoof) * rate_miss + c_fa * p_spoof * rate_fa
    return cost / normaliser


def cllr(bonafide_llr: ScoresLike, spoof_llr: ScoresLike) -> float:
    """Log-likelihood-ratio cost in bits (0 is perfect, 1 is an uninformative system)."""
    target = _as_scores(bonafide_llr, "bonafide scores")
    nontarget = _as_scores(spoof_llr, "spoof scores")
    # log(1 + e^-x) written with logaddexp so that large |x| neither overflows nor underflows.
    target_cost = float(np.mean(np.logaddexp(0.0, -target)))
    nontarget_cost = float(np.mean(np.logaddexp(0.0, nontarget)))
    return 0.5 * (target_cost + nontarget_cost) / math.log(2.0)


def auc(bonafide: ScoresLike, spoof: ScoresLike) -> float:
    """Probability that a random bona fide score exceeds a random spoof score (ties count 0.5).

    Computed from average ranks (the Mann-Whitney U statistic), equal to the area under
    the ROC curve with bona fide as the positive class.
    """
    target = _as_scores(bonafide, "bonafide scores")
    nontarget = _as_scores(spoof, "spoof scores")
    all_scores = np.concatenate((target, nontarget))
    _, inverse, counts = np.unique(all_scores, return_inverse=True, return_counts=True)
    average_ranks = np.cumsum(counts) - (counts - 1) / 2.0
    target_rank_sum = float(average_ranks[inverse.reshape(-1)[: target.size]].sum())
    u_statistic = target_rank_sum - target.size * (target.size + 1) / 2.0
    return u_statistic / (target.size * nontarget.size)


def accuracy_f1(
    bonafide_llr: ScoresLike, spoof_llr: ScoresLike, threshold_llr: float = 0.0
) -> tuple[float, float]:
    """Accuracy and F1 of hard decisions, with **spoof as the positive class** for F1.

    A trial is called spoof when its LLR is at or below ``threshold_llr``, matching the
    detector's rule (spoof when p_spoof >= its threshold). F1 is 2TP / (2TP + FP + FN), so
    it is 0 when no spoof trial is called spoof.
    """
    target = _as_scores(bonafide_llr, "bonafide scores")
    nontarget = _as_scores(spoof_llr, "spoof scores")
    true_pos = int(np.sum(nontarget <= threshold_llr))
    false_neg = nontarget.size - true_pos
    false_pos = int(np.sum(target <= threshold_llr))
    true_neg = target.size - false_pos
    accuracy = (true_pos + true_neg) / (target.size + nontarget.size)
    f1 = 2.0 * true_pos / (2.0 * true_pos + false_pos + false_neg)
    return accuracy, f1


@dataclass(frozen=True)
class Metrics:
    """Every headline metric of one evaluation; EER and error rates are fractions."""

    n_bonafide: int
    n_spoof: int
    eer: float
    eer_threshold: float
    min_dcf: float
    act_dcf: float
    cllr: float
    auc: float
    accuracy: float
    f1: float
    per_system: dict[str, float]
    # At the decision threshold: bona fide trials called spoof, spoof trials called bona fide.
    false_alarm_rate: float = float("nan")
    miss_rate: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary with the field names as keys."""
        return {
            "n_bonafide": self.n_bonafide,
            "n_spoof": self.n_spoof,
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "min_dcf": self.min_dcf,
            "act_dcf": self.act_dcf,
            "cllr": self.cllr,
            "auc": self.auc,
            "accuracy": self.accuracy,
            "f1": self.f1,
            "false_alarm_rate": self.false_alarm_rate,
            "miss_rate": self.miss_rate,
            "per_system": dict(self.per_system),
        }


def evaluate(
    scores: ScoresLike,
    labels: Sequence[str],
    systems: Sequence[str] | None = None,
    threshold_llr: float = 0.0,
) -> Metrics:
    """All metrics for LLR ``scores`` with ``"bonafide"``/``"spoof"`` ``labels``.

    With ``systems``, ``per_system`` holds the EER of each spoof system's trials against all
    bona fide trials (bona fide trials' system names are ignored); otherwise it is empty.
    """
    score_array = np.asarray(scores, dtype=np.float64).reshape(-1)
    label_array = np.asarray(list(labels), dtype=object)
    if score_array.size != label_array.size:
        raise DataError(
            f"expected one label per score, found {score_array.size} scores and {label_array.size} labels"
        )
    unknown = sorted({str(lab) for lab in label_array} - {BONAFIDE, SPOOF})
    if unknown:
        raise DataError(f"labels: expected 'bonafide' or 'spoof', found {unknown[:5]}")
    is_bonafide = label_array == BONAFIDE
    bonafide = _as_scores(score_array[is_bonafide], "bonafide scores")
    spoof = _as_scores(score_array[~is_bonafide], "spoof scores")

    eer, eer_threshold = compute_eer(bonafide, spoof)
    accuracy, f1 = accuracy_f1(bonafide, spoof, threshold_llr)
    return Metrics(
        n_bonafide=int(bonafide.size),
        n_spoof=int(spoof.size),
        eer=eer,
        eer_threshold=eer_threshold,
        min_dcf=min_dcf(bonafide, spoof)[0],
        act_dcf=act_dcf(bonafide, spoof),
        cllr=cllr(bonafide, spoof),
        auc=auc(bonafide, spoof),
        accuracy=accuracy,
        f1=f1,
        per_system=_per_system_eer(score_array, is_bonafide, bonafide, systems),
        false_alarm_rate=float(np.mean(bonafide <= threshold_llr)),
        miss_rate=float(np.mean(spoof > threshold_llr)),
    )


def _per_system_eer(
    scores: FloatArray,
    is_bonafide: npt.NDArray[np.bool_],
    bonafide: FloatArray,
    systems: Sequence[str] | None,
) -> dict[str, float]:
    if systems is None:
        return {}
    system_array = np.asarray([str(s) for s in systems], dtype=object)
    if system_array.size != scores.size:
        raise DataError(
            f"expected one system per score, found {scores.size} scores and {system_array.size} systems"
        )
    spoof_systems = system_array[~is_bonafide]
    spoof_scores = scores[~is_bonafide]
    return {
        str(name): compute_eer(bonafide, spoof_scores[spoof_systems == name])[0]
        for name in sorted(set(spoof_systems.tolist()))
    }
