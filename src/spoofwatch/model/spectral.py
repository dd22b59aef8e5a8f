"""The spectral front end's block of the head's input, from its pooled hidden states.

Most front ends (``lfcc``, ``lfcc-phase``) have one hidden state whose mean and std are
the block; ``lfcc-phase-resynth`` and ``lfcc-phase-resynth-streamed`` have two (a window
and its vocoder remake) and turn them into the original's statistics plus a residual. The
streamed one reads (window, remake) pairs, the remake coming from the stream
(``model.resynthesis.remake``). Training (``train.extract``) and scoring (``model.detector``) both go
through here, so they build the same block.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.base import Encoder
from spoofwatch.model.resynthesis import streamed_encoder as resynthesis_streamed
from spoofwatch.model.resynthesis.encoder import BLOCK_WIDTH, KIND, resynthesis_block
from spoofwatch.model.resynthesis.remake import StreamedRemake

_RESYNTHESIS_KINDS = (KIND, resynthesis_streamed.KIND)


def spectral_block(front_end: Encoder, pooled: NDArray[np.float32]) -> NDArray[np.float32]:
    """``pooled``: (windows, states * 2 * hidden_size), every hidden state's mean and std in
    order, as ``mean_std_pool`` over all states gives them."""
    if front_end.identity.kind in _RESYNTHESIS_KINDS:
        return resynthesis_block(pooled)
    return pooled


def spectral_width(front_end: Encoder) -> int:
    """Width of ``spectral_block``'s output."""
    if front_end.identity.kind in _RESYNTHESIS_KINDS:
        return BLOCK_WIDTH
    return front_end.identity.num_hidden_states * 2 * front_end.identity.hidden_size


def remake_of(front_end: Encoder | None) -> StreamedRemake | None:
    """The streamed remake a front end reads beside each window, or None."""
    if isinstance(front_end, resynthesis_streamed.StreamedResynthesisEncoder):
        return front_end.remake
    return None


def front_end_states(
    front_end: Encoder, windows: torch.Tensor, remakes: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """The front end's hidden states of ``windows`` (with their ``remakes`` for a front end
    that reads pairs; refused for one that does not)."""
    if isinstance(front_end, resynthesis_streamed.StreamedResynthesisEncoder):
        if remakes is None:
            raise ModelError(
                f"the {resynthesis_streamed.KIND} front end needs each window's streamed remake; "
                "score files with train.clip_scoring.score_file or streams through the engine"
            )
        return front_end.paired_hidden_states(windows, remakes)
    if remakes is not None:
        raise ModelError(f"the {front_end.identity.kind} front end reads windows alone, found remakes too")
    return front_end.hidden_states(windows)
