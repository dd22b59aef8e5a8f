"""The spectral front end's block of the head's input, from its pooled hidden states.

Most front ends (``lfcc``, ``lfcc-phase``) have one hidden state whose mean and std are
the block; ``lfcc-phase-resynth`` has two (a window and its vocoder remake) and turns them
into the original's statistics plus a residual. Training (``train.extract``) and scoring
(``model.detector``) both go through here, so they build the same block.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from spoofwatch.model.encoders.base import Encoder
from spoofwatch.model.encoders.resynthesis import BLOCK_WIDTH, KIND, resynthesis_block


def spectral_block(front_end: Encoder, pooled: NDArray[np.float32]) -> NDArray[np.float32]:
    """``pooled``: (windows, states * 2 * hidden_size), every hidden state's mean and std in
    order, as ``mean_std_pool`` over all states gives them."""
    if front_end.identity.kind == KIND:
        return resynthesis_block(pooled)
    return pooled


def spectral_width(front_end: Encoder) -> int:
    """Width of ``spectral_block``'s output."""
    if front_end.identity.kind == KIND:
        return BLOCK_WIDTH
    return front_end.identity.num_hidden_states * 2 * front_end.identity.hidden_size
