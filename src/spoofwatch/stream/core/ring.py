"""A bounded ring buffer of float32 samples, addressed by absolute sample index.

Index 0 is the first sample written since the stream began (or since ``reset()``). The
buffer keeps the most recent ``capacity`` samples; its drop policy is
``DropPolicy.OVERWRITE_OLDEST``: a write never blocks or fails for lack of room, it
overwrites the oldest samples and counts them in ``dropped_samples``.
"""

from __future__ import annotations

import enum
import logging
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spoofwatch.errors import AudioError, ConfigError, LimitExceededError

__all__ = ["DropPolicy", "RingBuffer"]

logger = logging.getLogger(__name__)


class DropPolicy(enum.Enum):
    """What a bounded buffer does when a write does not fit."""

    OVERWRITE_OLDEST = "overwrite_oldest"
    """The newest samples always go in; the oldest are overwritten and counted as dropped."""


class RingBuffer:
    """Fixed-capacity store of the latest float32 samples of one stream."""

    drop_policy: ClassVar[DropPolicy] = DropPolicy.OVERWRITE_OLDEST

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise ConfigError(f"capacity: expected a positive int, got {capacity!r}")
        self._capacity = capacity
        self._data: NDArray[np.float32] = np.zeros(capacity, dtype=np.float32)
        self._end = 0
        self._dropped = 0

    @property
    def capacity(self) -> int:
        """Most samples held at once."""
        return self._capacity

    @property
    def first_index(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self._end - self._capacity)

    @property
    def end_index(self) -> int:
        """Absolute index one past the newest sample written (= samples written so far)."""
        return self._end

    @property
    def dropped_samples(self) -> int:
        """Samples overwritten (or never stored because a write exceeded the capacity)."""
        return self._dropped

    def __len__(self) -> int:
        return self._end - self.first_index

    def write(self, samples: ArrayLike) -> int:
        """Append 1-D samples; return how many samples this write dropped."""
        chunk = np.asarray(samples, dtype=np.float32)
        if chunk.ndim != 1:
            raise AudioError(f"samples: expected a 1-D array, got shape {chunk.shape}")
        n = int(chunk.shape[0])
        if n == 0:
            return 0
        old_first = self.first_index
        cap = self._capacity
        if n > cap:
            # Only the last `capacity` samples can survive this write.
            chunk = chunk[n - cap :]
        kept = int(chunk.shape[0])
        pos = (self._end + n - kept) % cap
        head = min(kept, cap - pos)
        self._data[pos : pos + head] = chunk[:head]
        self._data[: kept - head] = chunk[head:]
        self._end += n
        dropped = self.first_index - old_first
        self._dropped += dropped
        return dropped

    def read(self, start: int, stop: int) -> NDArray[np.float32]:
        """Return a copy of the samples with absolute indices ``start <= i < stop``.

        Raises ``LimitExceededError`` when part of the range was already overwritten and
        ``ValueError`` when the range is inverted or reaches past what was written.
        """
        if start > stop:
            raise ValueError(f"read range: expected start <= stop, got [{start}, {stop})")
        if stop > self._end:
            raise ValueError(
                f"read range: expected stop <= end_index {self._end} (not yet written), got [{start}, {stop})"
            )
        first = self.first_index
        if start < first:
            raise LimitExceededError(
                f"read range: expected start >= first_index {first} (older samples were "
                f"overwritten, capacity {self._capacity}), got [{start}, {stop})"
            )
        n = stop - start
        cap = self._capacity
        pos = start % cap
        head = min(n, cap - pos)
        out = np.empty(n, dtype=np.float32)
        out[:head] = self._data[pos : pos + head]
        out[head:] = self._data[: n - head]
        return out

    def reset(self) -> None:
        """Forget all samples and counters; the next write is absolute index 0 again."""
        self._end = 0
        self._dropped = 0
