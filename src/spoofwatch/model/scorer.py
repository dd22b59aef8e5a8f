"""The seam between streaming and the model, kept free of torch so streaming code and
its tests import quickly."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray


class WindowScorer(Protocol):
    """What the streaming engine needs from a detector."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def window_samples(self) -> int: ...

    @property
    def threshold(self) -> float: ...

    def score_windows(self, windows: NDArray[np.float32]) -> NDArray[np.float64]:
        """(batch, window_samples) → calibrated LLR per window (higher = bona fide)."""
        ...
