"""The head kinds a detector card can hold, and which one a card's tensors are."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from spoofwatch.model.head import LinearHead
from spoofwatch.model.mlp_head import MLPHead

Head = LinearHead | MLPHead
HEAD_KINDS = ("linear", "mlp")


def head_from_tensors(tensors: dict[str, NDArray[np.float32]]) -> Head:
    """The head stored in ``tensors``: an MLP where its hidden layer is, else linear."""
    if "head.w1" in tensors:
        return MLPHead.from_tensors(tensors)
    return LinearHead.from_tensors(tensors)
