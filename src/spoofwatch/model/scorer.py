"""The seam between streaming and the model, kept free of torch so streaming code and
its tests import quickly.

A scorer may read, beside each window, a second input made from the stream's audio around
it (the resynthesis detector reads the window's streamed remake). The streaming engine
knows only the shape of that: each stream gets the scorer's ``stream_context()``, the
windows wait in it until their input can be made, and an inference worker makes each
window's ``WindowCompanion`` (each stream's in order) and hands it to ``score_windows``.
A scorer that reads windows alone returns None and costs the engine nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from spoofwatch.stream.core.windowing import Window


class WindowCompanion(Protocol):
    """What a window's second input is made from; made in an inference worker, each
    stream's in stream order, never two of one stream at once."""

    def make(self) -> NDArray[np.float32]:
        """The input, shaped like the window; raises SpoofwatchError saying what failed
        (only this window then goes unscored)."""
        ...


class StreamContext(Protocol):
    """One stream's state for a scorer that reads a second input beside each window."""

    def add(
        self, audio: NDArray[np.float32], windows: list[Window]
    ) -> Sequence[tuple[Window, WindowCompanion]]:
        """Stream audio (model rate) and the windows it completed; the windows whose
        input can now be made come back, in order, each with its companion."""
        ...

    def finish(self, windows: list[Window]) -> Sequence[tuple[Window, WindowCompanion]]:
        """End of stream: every window still held, and ``windows``, with their companions."""
        ...


class WindowScorer(Protocol):
    """What the streaming engine needs from a detector."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def window_samples(self) -> int: ...

    @property
    def threshold(self) -> float: ...

    def stream_context(self) -> StreamContext | None:
        """A new stream's context, or None for a scorer that reads windows alone."""
        ...

    def score_windows(
        self, windows: NDArray[np.float32], companions: NDArray[np.float32] | None = None, /
    ) -> NDArray[np.float64]:
        """(batch, window_samples) → calibrated LLR per window (higher = bona fide).
        ``companions``, of the same shape: each window's companion made, given only to a
        scorer whose ``stream_context`` is not None."""
        ...


def scorer_health(scorer: object) -> dict[str, Any] | None:
    """A remote scorer's ``health()`` (the pool's state: ``pool``, ``accepting``, ...), or
    None for one that scores in this process. ``accepting`` False: new calls are refused."""
    health = getattr(scorer, "health", None)
    if not callable(health):
        return None
    report = health()
    return report if isinstance(report, dict) else None


@runtime_checkable
class FeatureScorer(Protocol):
    """A scorer that can hand back, with the scores, the pooled features its head read
    (kept for analyst feedback, docs/learning.md); computing them costs nothing extra."""

    def score_windows_with_features(
        self, windows: NDArray[np.float32], companions: NDArray[np.float32] | None = None, /
    ) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        """Like ``WindowScorer.score_windows``, plus the (batch, features) the head read."""
        ...


def batches_in_flight(scorer: object, workers: int) -> int:
    """How many batches the engine keeps in flight to ``scorer``: a remote scorer's own
    ``batches_in_flight`` (its calls mostly wait on the network, so it keeps more than the
    cores could score here), else ``workers``."""
    wanted = getattr(scorer, "batches_in_flight", None)
    return wanted if isinstance(wanted, int) and wanted >= 1 else workers
