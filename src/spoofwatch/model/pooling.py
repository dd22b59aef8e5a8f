"""Per-layer statistics pooling: mean and standard deviation over frames."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from spoofwatch.errors import ModelError


def mean_std_pool(hidden_states: Sequence[torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
    """Concatenate ``[mean, std]`` over frames of each selected hidden state.

    ``hidden_states[i]`` is (batch, frames, dim); the result is
    (batch, len(layers) * 2 * dim), layer by layer in the order given.
    """
    if not layers:
        raise ModelError("expected at least one layer to pool, found none")
    n = len(hidden_states)
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad:
        raise ModelError(f"layers {bad} out of range: the encoder has hidden states 0..{n - 1}")
    pooled = []
    for layer in layers:
        states = hidden_states[layer].float()
        mean = states.mean(dim=1, keepdim=True)
        # Two passes by hand: torch's std over the frame axis (not the innermost one) took
        # about 1 ms per 4 s Whisper state on one core, 13 times this; results agree to 1e-6.
        std = (states - mean).square().mean(dim=1).sqrt()
        pooled.append(mean.squeeze(1))
        pooled.append(std)
    return torch.cat(pooled, dim=1)


def pooled_dim(num_layers: int, hidden_size: int) -> int:
    """Width of ``mean_std_pool``'s output."""
    return num_layers * 2 * hidden_size


FLOAT16_MAX = float(np.finfo(np.float16).max)


def stored_precision(pooled: NDArray[np.floating]) -> NDArray[np.float32]:
    """``pooled`` rounded to float16 and back to float32, clipped to float16's range.

    The training cache stores pooled statistics as float16 (``train.extract``), so every head
    is fitted on values of that grid, and the detector scores the same grid. At float32 a
    few columns of tiny spread over the training windows (Whisper's state 0 carries the
    positional embedding, the same in every window) land between the grid's points, tens of
    standard deviations from anything the head saw: an MLP head's window scores moved by up
    to 9 nats, the logistic card's dev clip scores by up to 1.5 (docs/decisions.md,
    2026-12-07 (night)).
    """
    clipped = np.clip(np.asarray(pooled, dtype=np.float32), -FLOAT16_MAX, FLOAT16_MAX)
    return clipped.astype(np.float16).astype(np.float32)


def stored_precision_torch(pooled: torch.Tensor) -> torch.Tensor:
    """``stored_precision`` with gradients: the rounded values forward, the identity
    backward (a straight-through estimate, for the differentiable path)."""
    rounded = pooled.clamp(-FLOAT16_MAX, FLOAT16_MAX).to(torch.float16).to(pooled.dtype)
    return pooled + (rounded - pooled).detach()
