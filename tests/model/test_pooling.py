"""Mean+std pooling against numpy's population statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spoofwatch.errors import ModelError
from spoofwatch.model.pooling import (
    FLOAT16_MAX,
    mean_std_pool,
    pooled_dim,
    stored_precision,
    stored_precision_torch,
)


def test_pooling_matches_numpy_layer_by_layer_in_the_order_given() -> None:
    rng = np.random.default_rng(0)
    # A large offset with a small spread: a one-pass E[x^2] - E[x]^2 would lose the spread.
    states = [rng.normal(loc, scale, size=(3, 200, 16)) for loc, scale in ((0, 1), (1000, 0.5), (-5, 20))]
    pooled = mean_std_pool([torch.from_numpy(s).float() for s in states], [2, 1]).numpy()
    assert pooled.shape == (3, pooled_dim(2, 16))
    expected = np.concatenate(
        [states[2].mean(1), states[2].std(1), states[1].mean(1), states[1].std(1)], axis=1
    )
    np.testing.assert_allclose(pooled, expected, rtol=2e-4, atol=2e-4)


def test_constant_frames_have_zero_spread() -> None:
    pooled = mean_std_pool([torch.full((2, 50, 4), 3.0)], [0])
    assert torch.equal(pooled, torch.cat([torch.full((2, 4), 3.0), torch.zeros(2, 4)], dim=1))


def test_unknown_layers_are_refused() -> None:
    with pytest.raises(ModelError, match="out of range"):
        mean_std_pool([torch.zeros(1, 2, 3)], [1])
    with pytest.raises(ModelError, match="at least one layer"):
        mean_std_pool([torch.zeros(1, 2, 3)], [])


def test_stored_precision_is_the_caches_float16_grid_clipped_to_its_range() -> None:
    values = np.array([[1.0001, 1e-7, -3.14159, 1e6, -1e6, 65504.0]], dtype=np.float32)
    rounded = stored_precision(values)
    assert rounded.dtype == np.float32
    np.testing.assert_array_equal(rounded[0, :3], values[0, :3].astype(np.float16).astype(np.float32))
    assert rounded[0, 0] != values[0, 0]  # 1.0001 is not on the grid
    # Beyond float16's range: its largest value, never inf (the cache would store inf).
    np.testing.assert_array_equal(rounded[0, 3:], [FLOAT16_MAX, -FLOAT16_MAX, FLOAT16_MAX])
    np.testing.assert_array_equal(stored_precision(rounded), rounded)


def test_the_differentiable_rounding_is_the_same_forward_and_the_identity_backward() -> None:
    values = torch.tensor([[1.0001, -3.14159, 1e6]], requires_grad=True)
    out = stored_precision_torch(values)
    np.testing.assert_array_equal(out.detach().numpy(), stored_precision(values.detach().numpy()))
    (out * torch.tensor([[2.0, 3.0, 4.0]])).sum().backward()
    assert values.grad is not None
    np.testing.assert_array_equal(values.grad.numpy(), [[2.0, 3.0, 4.0]])
