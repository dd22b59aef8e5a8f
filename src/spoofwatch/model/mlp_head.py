"""A standardised one-hidden-layer MLP head, the non-linear alternative to ``LinearHead``.

Trained with torch (AdamW, one-cycle learning rate, dropout on the input and the hidden
layer, classes weighted to balance, a fixed number of epochs); inference is plain numpy
on stored tensors, like ``LinearHead``, so a detector artifact needs no pickle and the
streaming path no torch module. The activation is GELU's tanh form, which numpy computes
exactly as torch does. Class 1 is bona fide: the logit is higher for bona fide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import ModelError
from spoofwatch.model.blas_threads import single_blas_thread
from spoofwatch.model.head import FloatArray, LogitHead, RowChunks, as_rows, checked_fit_input, standardised

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_SCORE_ROWS = 8192
# Streaming batches (a few windows) score on one BLAS thread (model/blas_threads.py).
_ONE_THREAD_ROWS = 256
_TENSORS = ("head.mean", "head.scale", "head.w1", "head.b1", "head.w2", "head.b2")


@dataclass(frozen=True)
class MLPOptions:
    """How an ``MLPHead`` is trained. The defaults are those leave-one-family-out chose
    (docs/accuracy-lofo.md, "A non-linear head")."""

    hidden: int = 256
    epochs: int = 4
    dropout: float = 0.5
    input_dropout: float = 0.2
    weight_decay: float = 1e-3
    learning_rate: float = 1e-3
    batch: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.epochs < 1 or self.batch < 1:
            raise ModelError(
                f"MLP head: expected hidden, epochs and batch of at least 1, found {self.hidden}, "
                f"{self.epochs}, {self.batch}"
            )
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.input_dropout < 1.0):
            raise ModelError(
                f"MLP head: expected dropouts in [0, 1), found {self.dropout} and {self.input_dropout}"
            )
        if self.weight_decay < 0 or self.learning_rate <= 0:
            raise ModelError(
                f"MLP head: expected weight decay >= 0 and learning rate > 0, found "
                f"{self.weight_decay} and {self.learning_rate}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gelu_tanh(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """GELU, tanh approximation (torch's ``GELU(approximate="tanh")``)."""
    inner = np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * x * x * x)
    return np.asarray(np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner)), dtype=np.float32)


class MLPHead(LogitHead):
    """Standardise features, then Linear -> GELU -> Linear to one logit (bona fide = 1)."""

    def __init__(self, options: MLPOptions | None = None, class_weight: str | None = "balanced") -> None:
        """``class_weight``: "balanced" weighs the classes equally in the loss; None counts
        rows as they come (as ``LinearHead``'s)."""
        if class_weight not in ("balanced", None):
            raise ModelError(f"class_weight: expected 'balanced' or None, found {class_weight!r}")
        self.options = options or MLPOptions()
        self.class_weight = class_weight
        self.mean_: FloatArray | None = None
        self.scale_: FloatArray | None = None
        self.w1_: FloatArray | None = None
        self.b1_: FloatArray | None = None
        self.w2_: FloatArray | None = None
        self.b2_: float = 0.0
        self.classes_ = np.array([0, 1])

    def fit(
        self,
        X: NDArray[np.floating] | RowChunks,
        y: NDArray[np.integer],
        column_weights: NDArray[np.floating] | None = None,
        sample_weight: NDArray[np.floating] | None = None,
    ) -> Self:
        """As ``LinearHead.fit``: ``column_weights`` scale the standardised blocks (here they
        set a block's share of the input, as dropout and weight decay act on every input
        alike), ``sample_weight`` multiplies each row's loss, on top of balanced class
        weights unless the head's ``class_weight`` is None. The standardised matrix is held whole at
        float32."""
        rows = as_rows(X)
        y, sample_weight = checked_fit_input(rows, y, sample_weight)
        matrix, mean, scale = standardised(rows, column_weights, np.float32)
        weight = row_weights(y, sample_weight, self.class_weight)
        return self.take_network(train_network(matrix, y, weight, self.options), mean, scale)

    def take_network(self, net: Any, mean: NDArray[np.floating], scale: NDArray[np.floating]) -> Self:
        """Keep a trained ``train_network`` network, with the standardisation it was trained
        on, as this head's tensors."""
        first, last = net[1], net[4]
        self.mean_ = mean.astype(np.float32)
        self.scale_ = scale.astype(np.float32)
        self.w1_ = first.weight.detach().numpy().astype(np.float32).T.copy()
        self.b1_ = first.bias.detach().numpy().astype(np.float32).copy()
        self.w2_ = last.weight.detach().numpy().astype(np.float32)[0].copy()
        self.b2_ = float(np.float32(last.bias.detach().numpy()[0]))
        return self

    def _check_fitted(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        mean, scale, w1, b1, w2 = self.mean_, self.scale_, self.w1_, self.b1_, self.w2_
        if mean is None or scale is None or w1 is None or b1 is None or w2 is None:
            raise ModelError("the head is not fitted; call fit() or load an artifact first")
        return mean, scale, w1, b1, w2

    @property
    def n_features_in_(self) -> int:
        return int(self._check_fitted()[0].shape[0])

    def decision_function(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """Raw logit, higher = more bona fide."""
        mean, scale, w1, b1, w2 = self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != mean.shape[0]:
            raise ModelError(f"expected features (n, {mean.shape[0]}), found {X.shape}")
        out = np.empty(len(X))
        with single_blas_thread() if len(X) <= _ONE_THREAD_ROWS else nullcontext():
            for i in range(0, len(X), _SCORE_ROWS):
                rows = (X[i : i + _SCORE_ROWS] - mean) / scale
                hidden = gelu_tanh(np.asarray(rows @ w1 + b1, np.float32))
                out[i : i + _SCORE_ROWS] = (hidden @ w2).astype(np.float64) + self.b2_
        return out

    def differentiable(self, pooled: torch.Tensor) -> torch.Tensor:
        """The logit of pooled features, in torch with gradients (the robustness attack)."""
        import torch

        mean, scale, w1, b1, w2 = (torch.from_numpy(a) for a in self._check_fitted())
        hidden = torch.nn.functional.gelu(((pooled - mean) / scale) @ w1 + b1, approximate="tanh")
        return hidden @ w2 + self.b2_

    def to_tensors(self) -> dict[str, NDArray[np.float32]]:
        mean, scale, w1, b1, w2 = self._check_fitted()
        return {
            "head.mean": mean,
            "head.scale": scale,
            "head.w1": w1,
            "head.b1": b1,
            "head.w2": w2,
            "head.b2": np.array([self.b2_], dtype=np.float32),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, NDArray[np.float32]]) -> MLPHead:
        missing = [name for name in _TENSORS if name not in tensors]
        if missing:
            raise ModelError(f"MLP head tensors lack {', '.join(repr(m) for m in missing)}")
        head = cls()
        head.mean_, head.scale_, head.w1_, head.b1_, head.w2_ = (
            np.asarray(tensors[name], dtype=np.float32) for name in _TENSORS[:5]
        )
        b2 = np.asarray(tensors["head.b2"], dtype=np.float32)
        d = head.mean_.shape
        if (
            len(d) != 1
            or head.scale_.shape != d
            or head.w1_.ndim != 2
            or head.w1_.shape[0] != d[0]
            or head.b1_.shape != (head.w1_.shape[1],)
            or head.w2_.shape != (head.w1_.shape[1],)
            or b2.size != 1
        ):
            raise ModelError(
                "expected MLP head tensors mean (d,), scale (d,), w1 (d, h), b1 (h,), w2 (h,), b2 (1,); "
                f"found mean {head.mean_.shape}, scale {head.scale_.shape}, w1 {head.w1_.shape}, "
                f"b1 {head.b1_.shape}, w2 {head.w2_.shape}, b2 {b2.shape}"
            )
        head.b2_ = float(b2.reshape(-1)[0])
        return head


def row_weights(
    y: NDArray[np.integer], sample_weight: NDArray[np.floating] | None, class_weight: str | None
) -> NDArray[np.float64]:
    """Each row's weight in the loss: ``sample_weight`` (else 1), times balanced class
    weights when ``class_weight`` is "balanced", scaled to average 1."""
    weight = np.ones(len(y)) if sample_weight is None else np.array(sample_weight, dtype=np.float64)
    if class_weight == "balanced":
        for label in (0, 1):
            weight[y == label] *= len(y) / (2.0 * np.count_nonzero(y == label))
    weight *= len(y) / weight.sum()
    return weight


# What a training step may do between the loss's backward pass and the optimiser's step,
# given the batch's loss as a function (to evaluate again) and the network: e.g. the ascent
# of sharpness-aware minimisation (research/mlp_training_lofo.py).
BeforeStep = Callable[[Callable[[], "torch.Tensor"], Any], None]


def train_network(
    matrix: NDArray[np.float32],
    y: NDArray[np.integer],
    weight: NDArray[np.floating],
    o: MLPOptions,
    before_step: BeforeStep | None = None,
) -> Any:
    """An ``MLPHead``'s network trained on the standardised ``matrix`` (AdamW, one-cycle
    learning rate, ``o``'s epochs, batches and seed), each row's loss weighted by ``weight``."""
    import torch

    torch.manual_seed(o.seed)
    generator = torch.Generator().manual_seed(o.seed)
    net = _network(matrix.shape[1], o, torch)
    features = torch.from_numpy(matrix)
    target = torch.from_numpy(y.astype(np.float32))
    row_weight = torch.from_numpy(weight.astype(np.float32))
    optimiser = torch.optim.AdamW(net.parameters(), lr=o.learning_rate, weight_decay=o.weight_decay)
    steps = o.epochs * -(-len(y) // o.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=o.learning_rate, total_steps=steps)
    start = time.monotonic()
    net.train()
    for epoch in range(o.epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for i in range(0, len(y), o.batch):
            idx = order[i : i + o.batch]

            def batch_loss(idx: torch.Tensor = idx) -> torch.Tensor:
                logits = net(features[idx]).squeeze(1)
                return torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, target[idx], weight=row_weight[idx]
                )

            loss = batch_loss()
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            if before_step is not None:
                before_step(batch_loss, net)
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        logger.info(
            "MLP head epoch %d/%d: loss %.4f (%.0f s)",
            epoch + 1,
            o.epochs,
            total / len(y),
            time.monotonic() - start,
        )
    return net


def _network(inputs: int, o: MLPOptions, torch: Any) -> Any:
    return torch.nn.Sequential(
        torch.nn.Dropout(o.input_dropout),
        torch.nn.Linear(inputs, o.hidden),
        torch.nn.GELU(approximate="tanh"),
        torch.nn.Dropout(o.dropout),
        torch.nn.Linear(o.hidden, 1),
    )
