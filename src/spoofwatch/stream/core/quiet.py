"""Runs of near-silence inside received audio: comfort noise, a muted leg's hiss.

A carrier's discontinuous transmission replaces the pauses of a call, and sometimes the
clipped ends of words, with comfort noise (RFC 3389): low-level noise a decoder invents.
Nothing in the audio marks it as invented, and windows holding it next to speech scored
spoof-like through G.711 (research/gap_false_alarms.py, docs/protocol.md "Gaps and
pauses"). ``QuietFrames`` cuts the audio into fixed frames counted from the start of the
stream's sound and hands out a run of frames whose RMS is at or below ``level`` as a
``SilenceRun`` once the run is ``min_samples`` long, so the pipeline treats it as a gap
like a run of digital silence. Frames are aligned to the sound, not to chunks, so the
answer does not depend on how the stream was chunked; at most one frame is held back.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray

from spoofwatch.stream.core.gaps import DigitalSilence, SilenceRun

__all__ = ["QuietFrames", "SilenceSplitter"]

Part = NDArray[np.float32] | SilenceRun


class QuietFrames:
    """Splits sound into sound and runs of quiet frames (``SilenceRun``)."""

    def __init__(self, frame_samples: int, min_samples: int, level: float) -> None:
        if frame_samples < 1:
            raise ValueError(f"frame_samples: expected an int >= 1, got {frame_samples!r}")
        if min_samples < 1:
            raise ValueError(f"min_samples: expected an int >= 1, got {min_samples!r}")
        if not (np.isfinite(level) and level > 0):
            raise ValueError(f"level: expected a positive RMS, got {level!r}")
        self.frame = frame_samples
        self.min_samples = min_samples
        self.level_squared = float(level) ** 2
        self._partial = np.zeros(0, dtype=np.float32)  # less than one frame, not yet judged
        self._held: list[NDArray[np.float32]] = []  # quiet frames of a run still too short
        self._held_n = 0
        self.runs = 0
        self.run_samples = 0

    def feed(self, samples: NDArray[np.float32]) -> list[Part]:
        """Sound in; sound (arrays) and quiet runs out, in order."""
        audio = np.concatenate((self._partial, samples)) if len(self._partial) else samples
        whole = len(audio) - len(audio) % self.frame
        self._partial = audio[whole:].copy()
        out: list[Part] = []
        if whole == 0:
            return out
        frames = audio[:whole].reshape(-1, self.frame).astype(np.float64)
        quiet = np.mean(frames * frames, axis=1) <= self.level_squared
        edges = np.flatnonzero(np.diff(quiet.astype(np.int8))) + 1
        bounds = np.concatenate(([0], edges, [len(quiet)])) * self.frame
        for a, b in itertools.pairwise(bounds.tolist()):
            piece = audio[a:b]
            if quiet[a // self.frame]:
                self._hold(piece)
            else:
                self._release(out)
                out.append(piece)
        return out

    def flush(self) -> list[Part]:
        """End of the sound (a gap or the stream's end): what is held back, in order."""
        out: list[Part] = []
        tail, self._partial = self._partial, np.zeros(0, dtype=np.float32)
        if len(tail) and float(np.mean(tail.astype(np.float64) ** 2)) <= self.level_squared:
            self._hold(tail)
            self._release(out)
        else:
            self._release(out)
            if len(tail):
                out.append(tail)
        return out

    def _hold(self, quiet: NDArray[np.float32]) -> None:
        self._held_n += len(quiet)
        if self._held_n >= self.min_samples:
            self._held.clear()  # a run for sure: only its length matters now
        else:
            self._held.append(quiet)

    def _release(self, out: list[Part]) -> None:
        if not self._held_n:
            return
        if self._held_n >= self.min_samples:
            self.runs += 1
            self.run_samples += self._held_n
            out.append(SilenceRun(self._held_n))
        else:
            out.append(np.concatenate(self._held))
        self._held_n = 0
        self._held.clear()


class SilenceSplitter:
    """Digital silence (sample-exact) first, then quiet frames in what is left."""

    def __init__(self, digital: DigitalSilence, quiet: QuietFrames | None) -> None:
        self.digital = digital
        self.quiet = quiet

    @property
    def runs(self) -> int:
        return self.digital.runs + (self.quiet.runs if self.quiet is not None else 0)

    @property
    def run_samples(self) -> int:
        return self.digital.run_samples + (self.quiet.run_samples if self.quiet is not None else 0)

    def feed(self, samples: NDArray[np.float32]) -> list[Part]:
        return self._through_quiet(self.digital.feed(samples), last=False)

    def flush(self) -> list[Part]:
        return self._through_quiet(self.digital.flush(), last=True)

    def _through_quiet(self, parts: list[Part], *, last: bool) -> list[Part]:
        if self.quiet is None:
            return parts
        out: list[Part] = []
        for part in parts:
            if isinstance(part, SilenceRun):
                out += self.quiet.flush()  # sound held back comes before the silence
                out.append(part)
            else:
                out += self.quiet.feed(part)
        if last:
            out += self.quiet.flush()
        return out
