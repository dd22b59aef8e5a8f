"""LinearHead (scikit-learn contract, tensor round trip) and AffineCalibration (recovers LLRs)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from spoofwatch.errors import ModelError
from spoofwatch.model.calibration import AffineCalibration
from spoofwatch.model.head import LinearHead

DIM = 6


def separable(n_per_class: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Bona fide (1) and spoof (0) clouds far apart along a random direction, on an offset."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(99).standard_normal(DIM)
    direction /= np.linalg.norm(direction)
    bona = rng.standard_normal((n_per_class, DIM)) + 4.0 * direction
    spoof = rng.standard_normal((n_per_class, DIM)) - 4.0 * direction
    X = np.concatenate([bona, spoof]) * 3.0 + 10.0  # not standardised on purpose
    y = np.concatenate([np.ones(n_per_class), np.zeros(n_per_class)]).astype(np.int64)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def fitted() -> LinearHead:
    X, y = separable(200, seed=0)
    return LinearHead().fit(X, y)


def test_fit_returns_self_with_sklearn_attributes() -> None:
    X, y = separable(50, seed=1)
    head = LinearHead(C=0.5)
    assert head.fit(X, y) is head
    assert head.coef_ is not None and head.coef_.shape == (DIM,)
    assert head.classes_.tolist() == [0, 1]
    assert head.n_features_in_ == DIM


def test_separates_held_out_data(fitted: LinearHead) -> None:
    X, y = separable(100, seed=2)
    assert (fitted.predict(X) == y).all()
    scores = fitted.decision_function(X)
    assert scores.shape == (200,)
    assert scores[y == 1].min() > 0 > scores[y == 0].max()


def test_predict_proba_columns_follow_classes(fitted: LinearHead) -> None:
    X, y = separable(100, seed=3)
    proba = fitted.predict_proba(X)
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[:, 1], 1.0 / (1.0 + np.exp(-fitted.decision_function(X))))
    assert (proba[y == 1, 1] > 0.5).all()
    assert (proba[y == 0, 0] > 0.5).all()


def test_extreme_inputs_give_finite_probabilities(fitted: LinearHead) -> None:
    X, _ = separable(5, seed=4)
    proba = fitted.predict_proba(X * 1e4)
    assert np.isfinite(proba).all()


def test_constant_feature_is_tolerated() -> None:
    X, y = separable(50, seed=5)
    X[:, 2] = 7.0
    head = LinearHead().fit(X, y)
    assert head.scale_ is not None and head.scale_[2] == 1.0
    assert np.isfinite(head.decision_function(X)).all()


def test_tensor_round_trip_gives_identical_outputs(fitted: LinearHead) -> None:
    tensors = fitted.to_tensors()
    assert set(tensors) == {"head.mean", "head.scale", "head.coef", "head.intercept"}
    assert all(t.dtype == np.float32 for t in tensors.values())
    restored = LinearHead.from_tensors(tensors)
    X, _ = separable(50, seed=6)
    np.testing.assert_array_equal(restored.decision_function(X), fitted.decision_function(X))
    np.testing.assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))
    assert restored.n_features_in_ == DIM


def test_unfitted_head_refuses_to_score() -> None:
    with pytest.raises(ModelError, match="not fitted"):
        LinearHead().decision_function(np.zeros((1, DIM), dtype=np.float32))
    with pytest.raises(ModelError, match="not fitted"):
        LinearHead().to_tensors()


def test_wrong_feature_width_names_both_shapes(fitted: LinearHead) -> None:
    with pytest.raises(ModelError, match=rf"expected features \(n, {DIM}\), found \(3, {DIM + 1}\)"):
        fitted.decision_function(np.zeros((3, DIM + 1), dtype=np.float32))
    with pytest.raises(ModelError, match=rf"found \({DIM},\)"):
        fitted.predict_proba(np.zeros(DIM, dtype=np.float32))


def test_fit_validates_shapes_and_labels() -> None:
    X, y = separable(10, seed=7)
    with pytest.raises(ModelError, match=r"found \(20, 6\) and \(19,\)"):
        LinearHead().fit(X, y[:-1])
    with pytest.raises(ModelError, match="labels 0"):
        LinearHead().fit(X, np.ones_like(y))
    with pytest.raises(ModelError, match="labels 0"):
        LinearHead().fit(X, y + 1)


def test_from_tensors_rejects_inconsistent_tensors(fitted: LinearHead) -> None:
    good = fitted.to_tensors()
    with pytest.raises(ModelError, match=r"'head\.coef'"):
        LinearHead.from_tensors({k: v for k, v in good.items() if k != "head.coef"})
    with pytest.raises(ModelError, match=r"coef \(5,\)"):
        LinearHead.from_tensors({**good, "head.coef": good["head.coef"][:5]})
    with pytest.raises(ModelError, match=r"\(1, 6\)"):
        LinearHead.from_tensors({k: v[None, :] if v.size == DIM else v for k, v in good.items()})
    with pytest.raises(ModelError, match=r"one head intercept, found shape \(2,\)"):
        LinearHead.from_tensors({**good, "head.intercept": np.zeros(2, dtype=np.float32)})


@pytest.mark.parametrize(
    ("bona_mean", "spoof_mean", "n_bona", "n_spoof"),
    [(1.0, -1.0, 20000, 20000), (0.5, -1.5, 8000, 32000)],
)
def test_calibration_recovers_the_true_llr(
    bona_mean: float, spoof_mean: float, n_bona: int, n_spoof: int
) -> None:
    """Unit-variance Gaussians: LLR(x) = (mb - ms) x - (mb² - ms²) / 2, whatever the class counts."""
    rng = np.random.default_rng(11)
    bona = rng.normal(bona_mean, 1.0, n_bona)
    spoof = rng.normal(spoof_mean, 1.0, n_spoof)
    calibration = AffineCalibration.fit(bona, spoof)
    true_scale = bona_mean - spoof_mean
    true_offset = -(bona_mean**2 - spoof_mean**2) / 2
    assert calibration.scale == pytest.approx(true_scale, abs=0.1)
    assert calibration.offset == pytest.approx(true_offset, abs=0.06)
    x = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(calibration.apply(x), true_scale * x + true_offset, atol=0.4)


def test_calibration_apply_and_dict_round_trip() -> None:
    calibration = AffineCalibration(scale=1.5, offset=-0.25)
    np.testing.assert_array_equal(calibration.apply(np.array([0.0, 2.0])), [-0.25, 2.75])
    data = calibration.to_dict()
    assert data == {"kind": "affine", "scale": 1.5, "offset": -0.25}
    assert AffineCalibration.from_dict(data) == calibration


def test_calibration_refuses_bad_input() -> None:
    with pytest.raises(ModelError, match="found 0 bona fide, 3 spoof"):
        AffineCalibration.fit(np.array([]), np.zeros(3))
    with pytest.raises(ModelError, match="found 'isotonic'"):
        AffineCalibration.from_dict({"kind": "isotonic", "scale": 1.0, "offset": 0.0})


def test_column_weights_equal_a_fit_on_reweighted_standardised_features() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 6))
    y = (x[:, 0] + 0.5 * x[:, 5] + 0.3 * rng.standard_normal(400) > 0).astype(np.int64)
    weights = np.array([1.0, 1.0, 1.0, 1.0, 3.0, 3.0])
    head = LinearHead(C=0.05).fit(x, y, column_weights=weights)
    z = (x - x.mean(axis=0)) / x.std(axis=0) * weights
    reference = LogisticRegression(C=0.05, max_iter=3000, class_weight="balanced").fit(z, y)
    np.testing.assert_allclose(
        head.decision_function(x), reference.decision_function(z), rtol=1e-4, atol=1e-4
    )
    # Cheaper to use, the up-weighted informative column carries more of the decision.
    plain = LinearHead(C=0.05).fit(x, y)
    assert abs(head.coef_[5]) * 3 > abs(plain.coef_[5])  # type: ignore[index]


@pytest.mark.parametrize(
    "weights", [np.ones(3), np.array([1.0, 0.0, 1.0, 1.0]), np.array([1.0, np.nan, 1, 1])]
)
def test_column_weights_must_fit_the_features(weights: NDArray[np.float64]) -> None:
    x = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.raises(ModelError, match="column_weights"):
        LinearHead().fit(x, np.arange(20) % 2, column_weights=weights)


def test_sample_weights_pull_the_fit_towards_heavy_rows_and_bad_ones_are_refused() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    odd = np.array([[2.0, 0.0, 0.0]])  # a bona-fide-looking row labelled spoof
    xs, ys = np.concatenate([x, odd]), np.concatenate([y, [0]])
    light = LinearHead(C=1.0).fit(xs, ys)
    heavy = LinearHead(C=1.0).fit(xs, ys, sample_weight=np.concatenate([np.ones(200), [500.0]]))
    assert heavy.decision_function(odd)[0] < light.decision_function(odd)[0] - 1.0
    with pytest.raises(ModelError, match="sample_weight"):
        LinearHead().fit(xs, ys, sample_weight=np.zeros(len(ys)))
