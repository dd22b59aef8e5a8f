"""Mean+std pooling against numpy's population statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spoofwatch.errors import ModelError
from spoofwatch.model.pooling import mean_std_pool, pooled_dim


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
