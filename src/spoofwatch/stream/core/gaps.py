"""Gaps in a stream: stretches of the call's timeline that carry no audio.

A source that knows audio is missing (AudioHook ``discarded`` / ``paused`` and position
jumps, a microphone overrun, RTP loss) calls ``StreamHandle.gap`` instead of inventing
samples: windows are cut from received audio only, and ``Timeline`` maps the count of
samples received to the stream's clock (received plus the gaps before them), so score,
alarm and gap events keep the call's times. ``DigitalSilence`` finds runs of exact
digital silence inside received audio (a muted leg, a carrier's silence suppression,
zeros a gateway filled in) so they can be treated as gaps too. The policy (which gaps
restart windowing, which are spliced, the cap) is applied by ``session.StreamSession``
and documented in docs/protocol.md, "Gaps and pauses".
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["GAP_CAUSES", "SPLICED_CAUSES", "DigitalSilence", "HeldRun", "Timeline", "check_gap_seconds"]

logger = logging.getLogger(__name__)

# What a source may name as the cause of a gap (free text is refused so subscribers can
# rely on the vocabulary): audio the client dropped, a recording pause, a position that
# ran ahead of the audio, digital silence found in the audio, a device overrun, network
# loss (RTP), a jitter-buffer under-run, a client-declared gap (ingest), comfort noise
# found in the audio (``stream.quiet_level_dbfs``).
GAP_CAUSES: Final = (
    "discarded",
    "paused",
    "position",
    "silence",
    "overrun",
    "loss",
    "underrun",
    "client",
    "comfort-noise",
)
# Gaps inside one continuous take: audio dropped because the host fell behind, and comfort
# noise standing in for the pauses of a call that went on. The audio either side belongs
# together, so they are always spliced (never restart windowing, never stop a window from
# being scored); the clock still moves on and the gap is reported. (Comfort noise
# restarting windowing after every pause over 1 s cost 3 of 30 spoofs with DTX:
# docs/protocol.md, "White comfort noise is a gap, always spliced".)
SPLICED_CAUSES: Final = ("overrun", "comfort-noise")


def check_gap_seconds(seconds: float, cause: str) -> float:
    """Validate a gap's duration and cause; return the duration as a float."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise ValueError(f"gap duration: expected a finite number of seconds >= 0, got {seconds!r}")
    if seconds < 0:
        raise ValueError(f"gap duration: expected a finite number of seconds >= 0, got {seconds!r}")
    if cause not in GAP_CAUSES:
        raise ValueError(f"gap cause: expected one of {list(GAP_CAUSES)}, got {cause!r}")
    return float(seconds)


class Timeline:
    """Samples received -> samples on the stream's clock.

    ``add_gap(n)`` says ``n`` samples of the clock passed with no audio before the next
    sample received. Marks older than the next window's start are forgotten
    (``forget_before``), so memory stays bounded however many gaps a call has.
    """

    def __init__(self) -> None:
        self.received = 0
        self.gap_samples = 0
        self.counted_samples = 0  # the part of gap_samples that counts as spliced out
        self._indices: list[int] = []  # received index where a gap ends (sorted)
        self._offsets: list[int] = []  # gap samples before that index, cumulative
        self._counted: list[int] = []  # the same, counting only gaps that limit a window

    @property
    def now(self) -> int:
        """The clock's current position: samples received plus gap samples."""
        return self.received + self.gap_samples

    @property
    def has_gaps(self) -> bool:
        return self.gap_samples > 0

    def add_audio(self, n: int) -> None:
        self.received += n

    def add_gap(self, n: int, *, counted: bool = True) -> None:
        """``counted``: the gap counts towards what a window may have spliced out."""
        if n <= 0:
            return
        self.gap_samples += n
        self.counted_samples += n if counted else 0
        if self._indices and self._indices[-1] == self.received:
            self._offsets[-1] = self.gap_samples
            self._counted[-1] = self.counted_samples
        else:
            self._indices.append(self.received)
            self._offsets.append(self.gap_samples)
            self._counted.append(self.counted_samples)

    def offset(self, index: int) -> int:
        """Gap samples on the clock before received sample ``index``."""
        k = bisect.bisect_right(self._indices, index)
        return self._offsets[k - 1] if k else 0

    def _counted_offset(self, index: int) -> int:
        k = bisect.bisect_right(self._indices, index)
        return self._counted[k - 1] if k else 0

    def span(self, start: int, end: int) -> tuple[int, int, int]:
        """Received samples [start, end) -> (clock start, clock end, counted gap samples
        spliced out inside)."""
        first, last = self.offset(start), self.offset(end - 1)
        spliced = self._counted_offset(end - 1) - self._counted_offset(start)
        return start + first, end + last, spliced

    def forget_before(self, index: int) -> None:
        """Drop marks no window starting at or after ``index`` needs."""
        k = bisect.bisect_right(self._indices, index)
        if k > 1:
            del self._indices[: k - 1]
            del self._offsets[: k - 1]
            del self._counted[: k - 1]


@dataclass
class SilenceRun:
    """A run of digital silence (or, with ``cause`` ``comfort-noise``, of quiet frames)
    found in received audio."""

    samples: int
    cause: str = "silence"


class HeldRun:
    """Quiet audio held back until it is known whether it makes a run of at least
    ``min_samples`` (handed out as a ``SilenceRun``) or is sound (handed out as audio)."""

    def __init__(self, min_samples: int, cause: str = "silence") -> None:
        if min_samples < 1:
            raise ValueError(f"min_samples: expected an int >= 1, got {min_samples!r}")
        self.min_samples = min_samples
        self.cause = cause
        self.held = 0  # quiet samples held back
        self._audio: list[NDArray[np.float32]] = []  # kept while too short to be a run
        self.runs = 0
        self.run_samples = 0

    def hold(self, quiet: NDArray[np.float32]) -> None:
        self.held += len(quiet)
        if self.held >= self.min_samples:
            self._audio.clear()  # a run for sure: only its length matters now
        else:
            self._audio.append(quiet)

    def release(self, out: list[NDArray[np.float32] | SilenceRun]) -> None:
        if not self.held:
            return
        if self.held >= self.min_samples:
            self.runs += 1
            self.run_samples += self.held
            out.append(SilenceRun(self.held, self.cause))
        else:
            out.append(np.concatenate(self._audio))
        self.held = 0
        self._audio.clear()


class DigitalSilence:
    """Splits a stream's audio into received sound and runs of exact digital silence.

    A run is at least ``min_samples`` consecutive samples with ``|x| <= level`` (default:
    one 16-bit step, so G.711 and 16-bit PCM zeros count, any real microphone's noise
    floor does not). Runs shorter than that are sound. A run that reaches the end of a
    chunk is held back until the next chunk (or ``flush``) tells how long it is, so the
    answer does not depend on how the stream was chunked.
    """

    def __init__(self, min_samples: int, level: float = 1.0 / 32768.0) -> None:
        self._run = HeldRun(min_samples)  # silent samples at the end of what was fed
        self.min_samples = min_samples
        self.level = level

    @property
    def runs(self) -> int:
        return self._run.runs

    @property
    def run_samples(self) -> int:
        return self._run.run_samples

    def feed(self, samples: NDArray[np.float32]) -> list[NDArray[np.float32] | SilenceRun]:
        """Audio in; sound (arrays) and silence runs (``SilenceRun``) out, in order."""
        out: list[NDArray[np.float32] | SilenceRun] = []
        n = len(samples)
        if n == 0:
            return out
        quiet = np.abs(samples) <= self.level
        edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))  # where quiet runs start or end
        bounds = np.concatenate(([0], edges + 1, [n]))
        for a, b in itertools.pairwise(bounds.tolist()):
            start, stop = a, b
            if not quiet[start]:
                self._run.release(out)
                out.append(samples[start:stop])
                continue
            self._run.hold(samples[start:stop])
            if stop < n:  # the run ends inside this chunk
                self._run.release(out)
        return _merged(out)

    def flush(self) -> list[NDArray[np.float32] | SilenceRun]:
        """End of stream: what is still held back."""
        out: list[NDArray[np.float32] | SilenceRun] = []
        self._run.release(out)
        return out


def _merged(parts: list[NDArray[np.float32] | SilenceRun]) -> list[NDArray[np.float32] | SilenceRun]:
    """Adjacent arrays joined, so a stream with short pauses is fed in one piece."""
    merged: list[NDArray[np.float32] | SilenceRun] = []
    pending: list[NDArray[np.float32]] = []
    for part in parts:
        if isinstance(part, SilenceRun):
            if pending:
                merged.append(np.concatenate(pending) if len(pending) > 1 else pending[0])
                pending = []
            merged.append(part)
        else:
            pending.append(part)
    if pending:
        merged.append(np.concatenate(pending) if len(pending) > 1 else pending[0])
    return merged
