"""Cutting a stream of samples into fixed-length, overlapping windows.

Training and serving both cut windows here (``cut_windows`` is ``Windower`` fed the whole
array), so a head is always trained on exactly the windows it sees live. The windows do
not depend on how the audio was chunked. A stream shorter than one window, but at least
``min_s`` long, yields one window made by repeating (tiling) its audio to the window
length, as the ASVspoof baselines do; audio is never zero-padded.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spoofwatch.errors import AudioError, ConfigError
from spoofwatch.stream.core.ring import RingBuffer

__all__ = ["Window", "WindowConfig", "Windower", "cut_windows"]

logger = logging.getLogger(__name__)

# A duration times a sample rate is "a whole number of samples" within this tolerance,
# so that e.g. 0.1 s at 16 kHz (1600.0000000000002 in floating point) is accepted.
_WHOLE_SAMPLES_TOLERANCE = 1e-6


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: expected a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: expected a finite number of seconds > 0, got {value!r}")
    return float(value)


def _whole_samples(name: str, seconds: float, sample_rate: int) -> int:
    exact = seconds * sample_rate
    rounded = round(exact)
    if abs(exact - rounded) > _WHOLE_SAMPLES_TOLERANCE or rounded < 1:
        raise ConfigError(
            f"{name}: expected a whole number (>= 1) of samples at {sample_rate} Hz, "
            f"got {seconds!r} s = {exact!r} samples"
        )
    return rounded


@dataclass(frozen=True)
class WindowConfig:
    """Window length, hop and shortest usable clip, in seconds at ``sample_rate``."""

    sample_rate: int = 16000
    window_s: float = 4.0
    hop_s: float = 1.0
    min_s: float = 0.5

    def __post_init__(self) -> None:
        sr = self.sample_rate
        if isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0:
            raise ConfigError(f"sample_rate: expected a positive int (Hz), got {sr!r}")
        window_s = _positive_seconds("window_s", self.window_s)
        hop_s = _positive_seconds("hop_s", self.hop_s)
        min_s = _positive_seconds("min_s", self.min_s)
        window = _whole_samples("window_s", window_s, sr)
        hop = _whole_samples("hop_s", hop_s, sr)
        if hop > window:
            raise ConfigError(f"hop_s: expected <= window_s ({window_s} s), got {hop_s} s")
        if min_s > window_s:
            raise ConfigError(f"min_s: expected <= window_s ({window_s} s), got {min_s} s")

    @property
    def window_samples(self) -> int:
        """Samples in one window."""
        return round(self.window_s * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        """Samples between the starts of consecutive windows."""
        return round(self.hop_s * self.sample_rate)

    @property
    def min_samples(self) -> int:
        """Fewest samples a stream needs to yield a (tiled) window."""
        return max(1, math.ceil(self.min_s * self.sample_rate - _WHOLE_SAMPLES_TOLERANCE))


@dataclass(frozen=True, eq=False)
class Window:
    """One window of stream audio, ready for the encoder.

    ``samples`` is read-only. ``real_samples`` is how many samples of stream audio the
    window covers: ``len(samples)`` for an ordinary window (``None`` means that), fewer for
    a ``tiled`` one. ``timeline`` is the window's [start, end) sample span on the stream's
    clock when gaps (audio that never arrived, see ``stream.core.gaps``) moved it off the count
    of samples received; ``None``: no gap came before it. Equality compares every field,
    arrays bit for bit.
    """

    index: int
    start_sample: int
    samples: NDArray[np.float32]
    sample_rate: int
    tiled: bool
    real_samples: int | None = None
    timeline: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.samples.ndim != 1 or self.samples.dtype != np.float32:
            raise AudioError(
                "samples: expected a 1-D float32 array, "
                f"got shape {self.samples.shape} dtype {self.samples.dtype}"
            )

    @property
    def covered_samples(self) -> int:
        """Samples of real stream audio in this window."""
        return len(self.samples) if self.real_samples is None else self.real_samples

    @property
    def t_start(self) -> float:
        """Stream time of the first sample, in seconds."""
        start = self.start_sample if self.timeline is None else self.timeline[0]
        return start / self.sample_rate

    @property
    def t_end(self) -> float:
        """Stream time just past the last real sample, in seconds."""
        if self.timeline is not None:
            return self.timeline[1] / self.sample_rate
        return (self.start_sample + self.covered_samples) / self.sample_rate

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return (
            self.index == other.index
            and self.start_sample == other.start_sample
            and self.sample_rate == other.sample_rate
            and self.tiled == other.tiled
            and self.covered_samples == other.covered_samples
            and self.timeline == other.timeline
            and self.samples.shape == other.samples.shape
            and self.samples.tobytes() == other.samples.tobytes()
        )

    __hash__ = None  # type: ignore[assignment]  # holds an array, so unhashable


def _validated_chunk(chunk: ArrayLike) -> NDArray[np.float32]:
    array = np.asarray(chunk)
    if array.ndim != 1:
        raise AudioError(f"chunk: expected 1-D mono samples, got an array of shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.floating):
        raise AudioError(
            f"chunk: expected float samples in [-1, 1], got dtype {array.dtype} (decode integer PCM first)"
        )
    with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, caught below
        samples = array.astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioError(f"chunk: expected finite samples, got {bad} NaN/inf of {samples.size}")
    return samples


class Windower:
    """Streaming window cutter: ``feed()`` chunks, then ``flush()`` at end of stream.

    Emits the window starting at every multiple of the hop once its last sample has
    arrived. Memory is one window plus one hop, whatever the chunk sizes.
    """

    def __init__(self, config: WindowConfig) -> None:
        self._config = config
        self._window = config.window_samples
        self._hop = config.hop_samples
        self._ring = RingBuffer(self._window + self._hop)
        self._next_start = 0
        self._windows_out = 0
        self._flushed = False

    @property
    def config(self) -> WindowConfig:
        return self._config

    @property
    def samples_in(self) -> int:
        """Samples fed since the stream began (or since ``reset()``)."""
        return self._ring.end_index

    @property
    def next_start(self) -> int:
        """Absolute index (in samples fed) where the next window will start."""
        return self._next_start

    @property
    def windows_out(self) -> int:
        """Windows emitted, the tiled one included."""
        return self._windows_out

    def feed(self, chunk: ArrayLike) -> list[Window]:
        """Add 1-D float samples; return the windows they complete, in order."""
        if self._flushed:
            raise RuntimeError("Windower.feed: expected reset() after flush(), got more audio")
        samples = _validated_chunk(chunk)
        windows: list[Window] = []
        # Writing at most one hop between emissions keeps the next window's first sample
        # inside the ring (capacity window + hop), however large the chunk.
        for offset in range(0, samples.shape[0], self._hop):
            self._ring.write(samples[offset : offset + self._hop])
            self._emit_ready(windows)
        return windows

    def _emit_ready(self, windows: list[Window]) -> None:
        while self._next_start + self._window <= self._ring.end_index:
            start = self._next_start
            windows.append(self._make_window(start, self._ring.read(start, start + self._window)))
            self._next_start += self._hop

    def _make_window(
        self,
        start: int,
        samples: NDArray[np.float32],
        *,
        tiled: bool = False,
        real_samples: int | None = None,
    ) -> Window:
        samples.flags.writeable = False
        window = Window(
            index=self._windows_out,
            start_sample=start,
            samples=samples,
            sample_rate=self._config.sample_rate,
            tiled=tiled,
            real_samples=real_samples,
        )
        self._windows_out += 1
        return window

    def restart(self) -> None:
        """A discontinuity (a gap in the stream): the next window starts with the next
        sample fed; audio held for a window not yet complete is never scored."""
        self._next_start = self._ring.end_index

    def flush(self) -> list[Window]:
        """End the stream: a tiled window if it was too short for any window, else nothing.

        After a ``restart`` only the audio since the restart counts.
        """
        self._flushed = True
        start = self._next_start
        n = self._ring.end_index - start
        if self._windows_out > 0 or n < self._config.min_samples:
            return []
        # No window was emitted, so n < window <= ring capacity: all audio is still held.
        audio = self._ring.read(start, start + n)
        tiled = np.resize(audio, self._window)
        return [self._make_window(start, tiled, tiled=True, real_samples=n)]

    def reset(self) -> None:
        """Start a new stream: forget audio, position and counters."""
        self._ring.reset()
        self._next_start = 0
        self._windows_out = 0
        self._flushed = False


def cut_windows(samples: ArrayLike, config: WindowConfig) -> list[Window]:
    """Cut a whole recording exactly as a live stream of it would be cut."""
    windower = Windower(config)
    return windower.feed(samples) + windower.flush()
