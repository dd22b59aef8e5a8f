"""The MLP head: it learns what a linear head cannot, scores in numpy exactly as its torch
network does, survives a safetensors round trip, and refuses malformed input by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from spoofwatch.errors import ModelError
from spoofwatch.model.head import LinearHead
from spoofwatch.model.heads import head_from_tensors
from spoofwatch.model.mlp_head import MLPHead, MLPOptions, gelu_tanh

FAST = MLPOptions(hidden=32, epochs=30, dropout=0.0, input_dropout=0.0, learning_rate=1e-2, batch=64)


def _xor(n: int = 800, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bona fide where two features share a sign: no line separates the classes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = ((x[:, 0] > 0) == (x[:, 1] > 0)).astype(np.int64)
    return x, y


def test_it_learns_a_class_boundary_no_linear_head_can_draw() -> None:
    x, y = _xor()
    test_x, test_y = _xor(seed=1)
    mlp = MLPHead(FAST).fit(x, y)
    linear = LinearHead(C=1.0).fit(x, y)
    assert np.mean(mlp.predict(test_x) == test_y) > 0.9
    assert np.mean(linear.predict(test_x) == test_y) < 0.7
    assert mlp.predict_proba(test_x).shape == (len(test_x), 2)
    assert mlp.n_features_in_ == 6


def test_numpy_scores_equal_the_torch_network_and_survive_a_round_trip(tmp_path: Path) -> None:
    x, y = _xor()
    head = MLPHead(FAST).fit(x, y, column_weights=np.array([2.0, 1, 1, 1, 1, 1]))
    with torch.no_grad():
        through_torch = head.differentiable(torch.from_numpy(x)).numpy()
    assert np.allclose(head.decision_function(x), through_torch, atol=1e-4)
    save_file(head.to_tensors(), str(tmp_path / "head.safetensors"))
    loaded = head_from_tensors(load_file(str(tmp_path / "head.safetensors")))
    assert isinstance(loaded, MLPHead)
    assert np.array_equal(loaded.decision_function(x), head.decision_function(x))
    linear = head_from_tensors(LinearHead(C=1.0).fit(x, y).to_tensors())
    assert isinstance(linear, LinearHead)


def test_the_same_seed_gives_the_same_head_and_another_seed_another() -> None:
    x, y = _xor()
    options = MLPOptions(hidden=16, epochs=3, batch=128)
    first, again = (MLPHead(options).fit(x, y).to_tensors() for _ in range(2))
    other = MLPHead(MLPOptions(hidden=16, epochs=3, batch=128, seed=1)).fit(x, y).to_tensors()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["head.w1"], other["head.w1"])


def test_gelu_tanh_is_torchs_tanh_gelu() -> None:
    x = np.linspace(-6, 6, 101, dtype=np.float32)
    expected = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    assert np.allclose(gelu_tanh(x), expected, atol=1e-6)


def test_sample_weights_and_class_weighting_change_the_fit() -> None:
    x, y = _xor()
    plain = MLPHead(FAST).fit(x, y).decision_function(x)
    weight = np.where(x[:, 2] > 0, 5.0, 1.0)
    weighted = MLPHead(FAST).fit(x, y, sample_weight=weight).decision_function(x)
    unbalanced = MLPHead(FAST, class_weight=None).fit(x, y).decision_function(x)
    assert not np.allclose(plain, weighted) and not np.allclose(plain, unbalanced)


def test_malformed_input_and_tensors_are_refused_by_name() -> None:
    x, y = _xor(100)
    with pytest.raises(ModelError, match="not fitted"):
        MLPHead().decision_function(x)
    with pytest.raises(ModelError, match="expected labels 0"):
        MLPHead(FAST).fit(x, np.full(len(y), 2))
    with pytest.raises(ModelError, match="sample_weight: expected 100 positive"):
        MLPHead(FAST).fit(x, y, sample_weight=np.zeros(100))
    with pytest.raises(ModelError, match="column_weights: expected 6"):
        MLPHead(FAST).fit(x, y, column_weights=np.ones(3))
    with pytest.raises(ModelError, match="class_weight: expected 'balanced' or None"):
        MLPHead(FAST, class_weight="even")
    head = MLPHead(MLPOptions(hidden=4, epochs=1)).fit(x, y)
    with pytest.raises(ModelError, match=r"expected features \(n, 6\), found \(2, 5\)"):
        head.decision_function(np.zeros((2, 5)))
    tensors = head.to_tensors()
    with pytest.raises(ModelError, match=r"lack 'head\.b2'"):
        MLPHead.from_tensors({k: v for k, v in tensors.items() if k != "head.b2"})
    with pytest.raises(ModelError, match=r"found mean \(6,\), scale \(6,\), w1 \(5, 4\)"):
        MLPHead.from_tensors({**tensors, "head.w1": np.zeros((5, 4), np.float32)})
    for bad, message in (
        ({"hidden": 0}, "hidden, epochs and batch of at least 1"),
        ({"dropout": 1.0}, r"dropouts in \[0, 1\)"),
        ({"learning_rate": 0.0}, "learning rate > 0"),
    ):
        with pytest.raises(ModelError, match=message):
            MLPOptions(**bad)  # type: ignore[arg-type]
