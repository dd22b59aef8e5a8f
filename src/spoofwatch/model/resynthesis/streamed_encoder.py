"""``lfcc-phase-resynth-streamed``: ``lfcc-phase-resynth`` with the stream remade once.

The head's block is ``lfcc-phase-resynth``'s (the original's ``lfcc-phase`` statistics and
the phase-coherence residual against the remake), but the remake of a window is the
window's span of the streamed remake (``model.resynthesis.remake``): each 1 s block of the stream
vocoded once, shared by the four windows that cover it, instead of every window vocoded
on its own. Its windows therefore come in pairs, (window, remake): training remakes whole
clips (``StreamedRemake.clip``), the streaming engine keeps each stream's remade blocks
(``RemadeBlocks``). Leave-one-source-out validation found it at least as good as the
per-window remake at about half the vocoder work (README, Accuracy;
research/resynthesis_residual.py).
"""

from __future__ import annotations

import os

import torch

from spoofwatch.errors import ConfigError, ModelError
from spoofwatch.model.encoders.base import TorchEncoder, check_windows
from spoofwatch.model.encoders.phase import LfccPhaseEncoder
from spoofwatch.model.resynthesis.encoder import remake_pair_identity
from spoofwatch.model.resynthesis.remake import StreamedRemake
from spoofwatch.model.resynthesis.vocoder import find_vocoder

KIND = "lfcc-phase-resynth-streamed"
VERSION = 1


class StreamedResynthesisEncoder(TorchEncoder):
    """Two hidden states of width 80 per frame: the ``lfcc-phase`` frames of each window and
    of its streamed remake. ``vocoder``: the FARGAN program (default: ``find_vocoder``)."""

    def __init__(self, window_s: float = 4.0, vocoder: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.inner = LfccPhaseEncoder(window_s)  # also checks window_s
        try:
            self.remake = StreamedRemake(find_vocoder(vocoder))
        except ConfigError as exc:
            raise ModelError(f"the {KIND} front end remakes every stream with FARGAN: {exc}") from None
        self._window_samples = self.inner.window_samples
        self._identity = remake_pair_identity(KIND, self.inner, f"{KIND}-v{VERSION}-{self.remake.recipe}")

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise ModelError(
            f"the {KIND} spectral front end reads each window with its streamed remake; "
            "expected (window, remake) pairs (paired_hidden_states), found windows alone"
        )

    def paired_hidden_states(self, windows: torch.Tensor, remakes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``windows`` and their remakes, both (batch, window_samples), each levelled on its own."""
        check_windows(windows, self._window_samples)
        check_windows(remakes, self._window_samples)
        if len(remakes) != len(windows):
            raise ModelError(f"expected one remake per window, found {len(remakes)} for {len(windows)}")
        (original,) = self.inner.hidden_states(windows)
        (resynthesis,) = self.inner.hidden_states(remakes)
        return (original, resynthesis)
