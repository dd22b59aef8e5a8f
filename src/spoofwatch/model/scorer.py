"""The seam between streaming and the model, kept free of torch so streaming code and
its tests import quickly."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from spoofwatch.model.resynthesis.remake import StreamedRemake


class WindowScorer(Protocol):
    """What the streaming engine needs from a detector."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def window_samples(self) -> int: ...

    @property
    def threshold(self) -> float: ...

    def score_windows(
        self, windows: NDArray[np.float32], remakes: NDArray[np.float32] | None = None
    ) -> NDArray[np.float64]:
        """(batch, window_samples) → calibrated LLR per window (higher = bona fide).
        ``remakes``, of the same shape: each window's streamed remake, given only to a
        scorer with a ``remake`` (``remake_of_scorer``)."""
        ...


def remake_of_scorer(scorer: WindowScorer) -> StreamedRemake | None:
    """The streamed remake ``scorer`` reads beside each window, or None (most scorers,
    test fakes included, have no ``remake`` at all)."""
    remake = getattr(scorer, "remake", None)
    return remake if isinstance(remake, StreamedRemake) else None
