"""A standardised linear head following scikit-learn's estimator contract.

Fitting uses scikit-learn's LogisticRegression; inference is plain numpy on stored
tensors so a detector artifact needs no pickle. Class 1 is bona fide, so the decision
function is higher for bona fide, like every score in spoofwatch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression

from spoofwatch.errors import ModelError

if TYPE_CHECKING:
    import torch

FloatArray = NDArray[np.float32]
_CHUNK_ROWS = 4096


@runtime_checkable
class RowChunks(Protocol):
    """A (rows, columns) matrix read as consecutive blocks of rows, e.g. from disk."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def chunks(self) -> Iterator[NDArray[np.floating[Any]]]: ...


class _WholeRows:
    def __init__(self, matrix: NDArray[np.floating[Any]]) -> None:
        if matrix.ndim != 2:
            raise ModelError(f"expected X (n, d), found shape {matrix.shape}")
        self.matrix = matrix

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.matrix.shape[0]), int(self.matrix.shape[1])

    def chunks(self) -> Iterator[NDArray[np.floating[Any]]]:
        for start in range(0, len(self.matrix), _CHUNK_ROWS):
            yield self.matrix[start : start + _CHUNK_ROWS]


def _sum_after(total: NDArray[np.float64], rows: NDArray[np.float64]) -> NDArray[np.float64]:
    """``total`` plus each row in turn: numpy sums a matrix along axis 0 row after row, so
    carrying the running total as the first row gives the whole matrix's sum bit for bit."""
    summed: NDArray[np.float64] = np.add.reduce(np.concatenate([total[None, :], rows]), axis=0)
    return summed


def standardised(
    rows: RowChunks, column_weights: NDArray[np.floating] | None, dtype: type[np.floating[Any]]
) -> tuple[NDArray[np.floating[Any]], NDArray[np.float64], NDArray[np.float64]]:
    """The rows centred and divided by ``scale`` (a matrix of ``dtype``), with the column
    means and ``scale``: each column's deviation divided by its ``column_weights``.

    ``rows`` is read chunk by chunk; only the standardised matrix is held whole. The means
    and deviations are summed row after row as numpy sums a float64 matrix along its rows,
    so the result is the same whether the rows come whole or in chunks."""
    n, d = rows.shape
    total = np.zeros(d)
    for chunk in rows.chunks():
        total = _sum_after(total, np.asarray(chunk, dtype=np.float64))
    mean = total / n
    centred = np.empty((n, d), dtype=dtype)
    squares = np.zeros(d)
    row = 0
    for chunk in rows.chunks():
        diff = np.asarray(chunk, dtype=np.float64) - mean
        centred[row : row + len(diff)] = diff
        squares = _sum_after(squares, diff * diff)
        row += len(diff)
    scale = np.sqrt(squares / n)
    scale[scale < 1e-8] = 1.0
    if column_weights is not None:
        weights = np.asarray(column_weights, dtype=np.float64)
        if weights.shape != (d,) or not (np.isfinite(weights).all() and (weights > 0).all()):
            raise ModelError(f"column_weights: expected {d} positive finite values")
        scale = scale / weights
    for start in range(0, n, _CHUNK_ROWS):
        centred[start : start + _CHUNK_ROWS] /= scale
    return centred, mean, scale


def as_rows(X: NDArray[np.floating] | RowChunks) -> RowChunks:
    """``X`` as ``RowChunks`` (a matrix is read in blocks of its rows)."""
    return X if isinstance(X, RowChunks) else _WholeRows(np.asarray(X))


def checked_fit_input(
    rows: RowChunks, y: NDArray[np.integer], sample_weight: NDArray[np.floating] | None
) -> tuple[NDArray[np.integer], NDArray[np.float64] | None]:
    """``y`` and ``sample_weight`` checked against ``rows``: labels 0 (spoof) and 1 (bona
    fide), one positive finite weight per row."""
    y = np.asarray(y)
    n = rows.shape[0]
    if len(rows.shape) != 2 or n != len(y):
        raise ModelError(f"expected X (n, d) and y (n,), found {rows.shape} and {y.shape}")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ModelError(f"expected labels 0 (spoof) and 1 (bona fide), found {np.unique(y)}")
    if sample_weight is None:
        return y, None
    weight = np.asarray(sample_weight, dtype=np.float64)
    if weight.shape != (n,) or not (np.isfinite(weight).all() and (weight > 0).all()):
        raise ModelError(f"sample_weight: expected {n} positive finite values")
    return y, weight


class LogitHead:
    """scikit-learn's classifier methods over a head's ``decision_function`` (its logit)."""

    def decision_function(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        raise NotImplementedError

    def predict_proba(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """Columns: P(spoof), P(bona fide) (uncalibrated)."""
        logit = self.decision_function(X)
        p_bona = 1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500)))
        return np.stack([1.0 - p_bona, p_bona], axis=1)

    def predict(self, X: NDArray[np.floating]) -> NDArray[np.int64]:
        return (self.decision_function(X) >= 0).astype(np.int64)


class LinearHead(LogitHead):
    """Standardise features, then logistic regression (bona fide = 1, spoof = 0)."""

    def __init__(
        self,
        C: float = 1.0,
        max_iter: int = 3000,
        class_weight: str | None = "balanced",
        fit_dtype: type[np.floating[Any]] = np.float64,
    ) -> None:
        """``fit_dtype``: precision of the standardised matrix the solver reads; float32
        halves the memory of a large fit (its coefficients differ slightly)."""
        self.C = C
        self.fit_dtype = fit_dtype
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.mean_: FloatArray | None = None
        self.scale_: FloatArray | None = None
        self.coef_: FloatArray | None = None
        self.intercept_: float = 0.0
        self.classes_ = np.array([0, 1])

    def fit(
        self,
        X: NDArray[np.floating] | RowChunks,
        y: NDArray[np.integer],
        column_weights: NDArray[np.floating] | None = None,
        sample_weight: NDArray[np.floating] | None = None,
    ) -> Self:
        """``column_weights`` multiply the standardised features before the fit, so a block
        weighted w pays 1/w^2 of the L2 penalty per unit of effect; they fold into the
        stored scale, so scoring is unchanged.

        ``X`` is a matrix or ``RowChunks`` (e.g. rows read from memory-mapped packs): it is
        read chunk by chunk, and only the standardised matrix the solver needs is held in
        memory, at ``fit_dtype`` (scikit-learn's solver needs it whole). The column means and
        deviations are summed row after row as numpy sums a float64 matrix along its rows, so
        the fit is the same whether X comes whole or in chunks.

        ``sample_weight`` (one positive weight per row) multiplies each row's loss, on top of
        the balanced class weights (retraining weights analysts' feedback so)."""
        rows = as_rows(X)
        y, sample_weight = checked_fit_input(rows, y, sample_weight)
        centred, mean, scale = standardised(rows, column_weights, self.fit_dtype)
        model = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight)
        model.fit(centred, y, sample_weight=sample_weight)
        self.mean_ = mean.astype(np.float32)
        self.scale_ = scale.astype(np.float32)
        self.coef_ = model.coef_[0].astype(np.float32)
        # Rounded to float32 like every stored tensor, so a saved head scores identically.
        self.intercept_ = float(np.float32(model.intercept_[0]))
        return self

    def _check_fitted(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        if self.mean_ is None or self.scale_ is None or self.coef_ is None:
            raise ModelError("the head is not fitted; call fit() or load an artifact first")
        return self.mean_, self.scale_, self.coef_

    @property
    def n_features_in_(self) -> int:
        return int(self._check_fitted()[2].shape[0])

    def decision_function(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """Raw logit, higher = more bona fide."""
        mean, scale, coef = self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != coef.shape[0]:
            raise ModelError(f"expected features (n, {coef.shape[0]}), found {X.shape}")
        return (((X - mean) / scale) @ coef).astype(np.float64) + self.intercept_

    def differentiable(self, pooled: torch.Tensor) -> torch.Tensor:
        """The logit of pooled features, in torch with gradients (the robustness attack)."""
        import torch

        mean, scale, coef = (torch.from_numpy(a) for a in self._check_fitted())
        return ((pooled - mean) / scale) @ coef + self.intercept_

    def to_tensors(self) -> dict[str, NDArray[np.float32]]:
        mean, scale, coef = self._check_fitted()
        return {
            "head.mean": mean,
            "head.scale": scale,
            "head.coef": coef,
            "head.intercept": np.array([self.intercept_], dtype=np.float32),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, NDArray[np.float32]]) -> LinearHead:
        head = cls()
        try:
            head.mean_ = np.asarray(tensors["head.mean"], dtype=np.float32)
            head.scale_ = np.asarray(tensors["head.scale"], dtype=np.float32)
            head.coef_ = np.asarray(tensors["head.coef"], dtype=np.float32)
            intercept = np.asarray(tensors["head.intercept"], dtype=np.float32)
        except KeyError as exc:
            raise ModelError(f"head tensors lack {exc.args[0]!r}") from None
        if head.coef_.ndim != 1 or not head.mean_.shape == head.scale_.shape == head.coef_.shape:
            raise ModelError(
                f"expected head mean, scale and coef of one shape (d,), found mean "
                f"{head.mean_.shape}, scale {head.scale_.shape}, coef {head.coef_.shape}"
            )
        if intercept.size != 1:
            raise ModelError(f"expected one head intercept, found shape {intercept.shape}")
        head.intercept_ = float(intercept.reshape(-1)[0])
        return head
