"""Tests of spoofwatch.train.metrics against the shared ASVspoof metric test vectors."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import numpy.typing as npt
import pytest

from spoofwatch.errors import ConfigError, DataError
from spoofwatch.train.metrics import (
    Metrics,
    accuracy_f1,
    act_dcf,
    auc,
    cllr,
    compute_det_curve,
    compute_eer,
    evaluate,
    min_dcf,
)

Scores = npt.NDArray[np.float64]
# The Bayes threshold for Pspoof 0.05, Cmiss 1, Cfa 10.
ACT_THRESHOLD = -math.log(0.95 / 0.5)


def gauss_scores() -> tuple[Scores, Scores]:
    rng = np.random.default_rng(0)
    bonafide = rng.normal(2.0, 1.0, 1000)
    spoof = rng.normal(-1.0, 1.5, 9000)
    return bonafide, spoof


# Rows of /work/shared/docs/metric-vectors.md:
# (case, bona fide, spoof, EER, EER threshold, minDCF, actDCF, Cllr in bits).
VECTOR_ROWS = [
    ("separable", [2, 3, 4], [-1, 0, 1], 0.0, 1.0, 0.0, 0.666667, 0.604330),
    (
        "overlap",
        [0.1, 0.4, 0.35, 0.8],
        [0.05, 0.2, 0.5, 0.3, 0.45],
        0.45,
        0.35,
        0.8,
        1.0,
        0.990504,
    ),
    ("ties", [1, 1, 2, 0], [1, 0, -1, 1], 0.50, 1.0, 0.75, 0.75, 0.916027),
    ("gauss", *gauss_scores(), 0.11583333, 0.813930, 0.263722, 0.427189, 0.509354),
]
TOL = 1e-6


@pytest.mark.parametrize(
    ("bonafide", "spoof", "eer", "eer_threshold", "min_dcf_value", "act_dcf_value", "cllr_bits"),
    [row[1:] for row in VECTOR_ROWS],
    ids=[row[0] for row in VECTOR_ROWS],
)
def test_metric_vectors(
    bonafide: Scores,
    spoof: Scores,
    eer: float,
    eer_threshold: float,
    min_dcf_value: float,
    act_dcf_value: float,
    cllr_bits: float,
) -> None:
    got_eer, got_threshold = compute_eer(bonafide, spoof)
    assert got_eer == pytest.approx(eer, abs=TOL)
    assert got_threshold == pytest.approx(eer_threshold, abs=TOL)
    assert min_dcf(bonafide, spoof)[0] == pytest.approx(min_dcf_value, abs=TOL)
    assert act_dcf(bonafide, spoof) == pytest.approx(act_dcf_value, abs=TOL)
    assert cllr(bonafide, spoof) == pytest.approx(cllr_bits, abs=TOL)


def test_det_curve_endpoints_and_monotonicity() -> None:
    bonafide, spoof = gauss_scores()
    frr, far, thresholds = compute_det_curve(bonafide, spoof)
    n = bonafide.size + spoof.size
    assert frr.shape == far.shape == thresholds.shape == (n + 1,)
    assert (frr[0], far[0], frr[-1], far[-1]) == (0.0, 1.0, 1.0, 0.0)
    assert thresholds[0] == pytest.approx(min(bonafide.min(), spoof.min()) - 0.001)
    assert np.all(np.diff(frr) >= 0) and np.all(np.diff(far) <= 0)
    assert np.all(np.diff(thresholds) >= 0)


def test_det_curve_rates_count_scores_at_or_below_threshold() -> None:
    bonafide = np.array([0.3, 0.9, 0.1, 0.7])
    spoof = np.array([0.2, 0.8, 0.4])
    frr, far, thresholds = compute_det_curve(bonafide, spoof)
    for k in range(1, thresholds.size):
        assert frr[k] == pytest.approx(np.mean(bonafide <= thresholds[k]))
        assert far[k] == pytest.approx(np.mean(spoof > thresholds[k]))


def test_min_dcf_threshold_attains_the_minimum_cost() -> None:
    bonafide, spoof = gauss_scores()
    value, threshold = min_dcf(bonafide, spoof)
    p_miss = np.mean(bonafide <= threshold)
    p_fa = np.mean(spoof > threshold)
    assert (0.95 * p_miss + 0.5 * p_fa) / 0.5 == pytest.approx(value)
    # No shifted threshold does better.
    for shifted in np.linspace(threshold - 1, threshold + 1, 41):
        cost = (0.95 * np.mean(bonafide <= shifted) + 0.5 * np.mean(spoof > shifted)) / 0.5
        assert cost >= value - 1e-12


def test_min_dcf_uses_the_given_costs() -> None:
    bonafide, spoof = gauss_scores()
    value, threshold = min_dcf(bonafide, spoof, p_spoof=0.5, c_miss=1, c_fa=1)
    p_miss = np.mean(bonafide <= threshold)
    p_fa = np.mean(spoof > threshold)
    assert value == pytest.approx((0.5 * p_miss + 0.5 * p_fa) / 0.5)


def test_act_dcf_threshold_boundaries() -> None:
    # A bona fide score at the threshold is accepted; a spoof score at it is a false alarm.
    assert act_dcf([ACT_THRESHOLD], [ACT_THRESHOLD]) == pytest.approx(0.5 / 0.5)
    below = np.nextafter(ACT_THRESHOLD, -np.inf)
    assert act_dcf([below], [below]) == pytest.approx(0.95 / 0.5)


@pytest.mark.parametrize("p_spoof", [0.0, 1.0, -0.1])
def test_dcf_rejects_prior_outside_open_interval(p_spoof: float) -> None:
    with pytest.raises(ConfigError, match="p_spoof"):
        min_dcf([1.0], [0.0], p_spoof=p_spoof)
    with pytest.raises(ConfigError, match="p_spoof"):
        act_dcf([1.0], [0.0], p_spoof=p_spoof)


def test_cllr_is_one_bit_for_zero_llrs_and_stable_for_extreme_llrs() -> None:
    assert cllr([0.0, 0.0], [0.0]) == pytest.approx(1.0)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert cllr([1e4], [-1e4]) == pytest.approx(0.0, abs=1e-12)
        wrong = cllr([-1e4], [1e4])
    assert wrong == pytest.approx(1e4 / math.log(2.0), rel=1e-9)


def test_auc_matches_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(3)
    bonafide = np.round(rng.normal(1.0, 1.0, 60), 1)
    spoof = np.round(rng.normal(0.0, 1.0, 45), 1)
    pairs = [1.0 if b > s else 0.5 if b == s else 0.0 for b, s in itertools.product(bonafide, spoof)]
    assert auc(bonafide, spoof) == pytest.approx(float(np.mean(pairs)))


def test_accuracy_f1_counts_spoof_as_positive() -> None:
    bonafide = [1.0, -1.0, 2.0]
    spoof = [-2.0, 0.5, 0.0]
    # At threshold 0: spoof -2 and 0 are caught (TP 2), spoof 0.5 is missed (FN 1),
    # bona fide -1 is called spoof (FP 1), bona fide 1 and 2 are right (TN 2).
    accuracy, f1 = accuracy_f1(bonafide, spoof, 0.0)
    assert accuracy == pytest.approx(4 / 6)
    assert f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # At 1.5 every spoof is caught (TP 3) but bona fide -1 and 1 are called spoof (FP 2).
    accuracy, f1 = accuracy_f1(bonafide, spoof, 1.5)
    assert accuracy == pytest.approx(4 / 6)
    assert f1 == pytest.approx(2 * 3 / (2 * 3 + 2 + 0))


def test_accuracy_f1_is_zero_f1_when_nothing_is_called_spoof() -> None:
    accuracy, f1 = accuracy_f1([1.0, 2.0], [3.0], threshold_llr=-5.0)
    assert accuracy == pytest.approx(2 / 3)
    assert f1 == 0.0


def test_evaluate_agrees_with_the_individual_functions() -> None:
    bonafide, spoof = gauss_scores()
    scores = np.r_[spoof[:4000], bonafide, spoof[4000:]]
    labels = ["spoof"] * 4000 + ["bonafide"] * bonafide.size + ["spoof"] * 5000
    systems = ["A01"] * 4000 + ["-"] * bonafide.size + ["A02"] * 5000

    metrics = evaluate(scores, labels, systems, threshold_llr=0.25)

    assert (metrics.n_bonafide, metrics.n_spoof) == (1000, 9000)
    assert (metrics.eer, metrics.eer_threshold) == compute_eer(bonafide, spoof)
    assert metrics.min_dcf == min_dcf(bonafide, spoof)[0]
    assert metrics.act_dcf == act_dcf(bonafide, spoof)
    assert metrics.cllr == cllr(bonafide, spoof)
    assert metrics.auc == auc(bonafide, spoof)
    assert (metrics.accuracy, metrics.f1) == accuracy_f1(bonafide, spoof, 0.25)
    assert metrics.per_system == {
        "A01": compute_eer(bonafide, spoof[:4000])[0],
        "A02": compute_eer(bonafide, spoof[4000:])[0],
    }


def test_metrics_to_dict_is_json_ready_with_contract_keys() -> None:
    bonafide, spoof = gauss_scores()
    labels = ["bonafide"] * bonafide.size + ["spoof"] * spoof.size
    metrics = evaluate(np.r_[bonafide, spoof], labels)
    as_dict = metrics.to_dict()
    assert set(as_dict) == {field.name for field in dataclasses.fields(Metrics)}
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["per_system"] == {}
    assert as_dict["eer"] == metrics.eer
    with pytest.raises(dataclasses.FrozenInstanceError):
        metrics.eer = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], ["bonafide", "bonafide"], "spoof scores"),
        ([0.1, 0.2], ["spoof", "spoof"], "bonafide scores"),
        ([0.1, float("nan")], ["bonafide", "spoof"], "NaN"),
        ([0.1, 0.2], ["bonafide", "fake"], "fake"),
        ([0.1, 0.2, 0.3], ["bonafide", "spoof"], "3 scores and 2 labels"),
    ],
)
def test_evaluate_rejects_bad_input(scores: list[float], labels: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        evaluate(scores, labels)


def test_evaluate_rejects_systems_of_the_wrong_length() -> None:
    with pytest.raises(DataError, match="one system per score"):
        evaluate([0.1, 0.2], ["bonafide", "spoof"], systems=["-"])


def test_functions_reject_empty_classes() -> None:
    for function in (compute_eer, min_dcf, act_dcf, cllr, auc, accuracy_f1):
        with pytest.raises(DataError, match="bonafide scores: expected at least one score"):
            function([], [1.0])
