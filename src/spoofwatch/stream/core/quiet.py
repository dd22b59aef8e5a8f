"""Runs of near-silence inside received audio: comfort noise, a muted leg's hiss.

A carrier's discontinuous transmission replaces the pauses of a call, and sometimes the
clipped ends of words, with comfort noise (RFC 3389): low-level noise a decoder invents.
Nothing in the audio marks it as invented, and windows holding it next to speech scored
spoof-like through G.711 (research/gap_false_alarms.py, docs/protocol.md "Gaps and
pauses"). ``QuietFrames`` cuts the audio into fixed frames counted from the start of the
stream's sound and hands out a run of frames whose RMS is at or below ``level`` as a
``SilenceRun`` of cause ``comfort-noise`` once the run is ``min_samples`` long, so the
pipeline treats it as a gap, always spliced (``gaps.SPLICED_CAUSES``): the call went on.
Frames are aligned to the sound, not to chunks, so the answer does not depend on how the
stream was chunked; at most one frame is held back.

With a ``Flatness`` meter a quiet frame must also have a flat spectrum: a decoder's
comfort noise is white when the silence descriptor carries only a level (RFC 3389), and
white comfort noise is what still raised false alarms, while a natural pause's background
is coloured (docs/protocol.md, "Comfort noise as a silence descriptor describes it"), so
natural pauses stay in the windows.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.typing import NDArray

from spoofwatch.stream.core.gaps import DigitalSilence, HeldRun, SilenceRun

__all__ = ["Flatness", "QuietFrames", "SilenceSplitter", "flatness_fits"]

Part = NDArray[np.float32] | SilenceRun


FLAT_BAND_HZ = (100.0, 3800.0)  # inside every source's band: G.711 reaches 4 kHz at most
FLAT_BANDS = 16
FLAT_CONTEXT = 3  # frames whose spectra are averaged: the frame and the two before it


def _band_bins(frame_samples: int, sample_rate: int) -> NDArray[np.intp]:
    freqs = np.fft.rfftfreq(frame_samples, 1.0 / sample_rate)
    bins: NDArray[np.intp] = np.flatnonzero((freqs >= FLAT_BAND_HZ[0]) & (freqs <= FLAT_BAND_HZ[1]))
    return bins


def flatness_fits(frame_samples: int, sample_rate: int) -> bool:
    """Whether a frame at this rate has the spectral bins ``Flatness`` needs (rates below
    about 8 kHz do not reach the band)."""
    return len(_band_bins(frame_samples, sample_rate)) >= FLAT_BANDS


def _row_flatness(context: NDArray[np.float64]) -> float:
    """``_flatness`` of one row, in plain floats: on 16 values numpy's per-call overhead is
    most of the cost, and this takes a quarter of the time."""
    values = np.maximum(context, 1e-30).tolist()
    return math.exp(math.fsum(map(math.log, values)) / len(values)) / (math.fsum(values) / len(values))


def _flatness(context: NDArray[np.float64]) -> NDArray[np.float64]:
    """Geometric over arithmetic mean of each row."""
    safe = np.maximum(context, 1e-30)
    ratio: NDArray[np.float64] = np.exp(np.log(safe).mean(axis=1)) / safe.mean(axis=1)
    return ratio


class Flatness:
    """Spectral flatness (geometric over arithmetic mean of ``FLAT_BANDS`` band powers
    between 100 Hz and 3.8 kHz) of each quiet frame together with the ``FLAT_CONTEXT - 1``
    frames before it, when those are quiet too: near 1 for white noise, about 0.6 for
    pink, 0.1 for brown. A frame whose context holds a loud frame is not measured (speech
    next to it is not flat either). Only quiet frames' spectra are computed, so speech
    costs a test of the level; the last frames are kept across calls and dropped by
    ``reset`` (the sound was interrupted)."""

    def __init__(self, frame_samples: int, sample_rate: int, minimum: float) -> None:
        if not 0.0 < minimum < 1.0:
            raise ValueError(f"minimum: expected a flatness between 0 and 1, got {minimum!r}")
        bins = _band_bins(frame_samples, sample_rate)
        if len(bins) < FLAT_BANDS:
            raise ValueError(
                f"frame_samples: expected a frame with at least {FLAT_BANDS} spectral bins between "
                f"{FLAT_BAND_HZ[0]:g} and {FLAT_BAND_HZ[1]:g} Hz, "
                f"got {frame_samples} samples at {sample_rate} Hz"
            )
        per_band = len(bins) // FLAT_BANDS
        self.frame = frame_samples
        self.bins = bins[: per_band * FLAT_BANDS]
        self.per_band = per_band
        self.window = np.hanning(frame_samples)
        # spectrum -> band means in one product (rows: every rfft bin)
        self._to_bands = np.zeros((frame_samples // 2 + 1, FLAT_BANDS))
        self._to_bands[self.bins, np.repeat(np.arange(FLAT_BANDS), per_band)] = 1.0 / per_band
        self.minimum = minimum
        self._bands = np.zeros((0, FLAT_BANDS))  # band powers of the last quiet frames in a row

    def reset(self) -> None:
        self._bands = np.zeros((0, FLAT_BANDS))

    def measure(
        self, frames: NDArray[np.float64], quiet: NDArray[np.bool_] | None = None
    ) -> NDArray[np.float64]:
        """Each frame's flatness (rows of ``frames`` are consecutive frames); NaN for a frame
        not ``quiet`` or with a loud frame among the ones before it (default: all quiet)."""
        n = len(frames)
        flat = np.full(n, np.nan)
        if quiet is None:
            quiet = np.ones(n, dtype=bool)
        if not quiet.any():
            self._bands = np.zeros((0, FLAT_BANDS))
            return flat
        if n == 1:
            flat[0] = self._measure_one(frames)
            return flat
        rows = np.flatnonzero(quiet)
        bands = np.zeros((n, FLAT_BANDS))
        bands[rows] = self._band_powers(frames[rows])
        held = len(self._bands)
        joined = np.concatenate((self._bands, bands))
        loud = np.concatenate((np.zeros(held, dtype=bool), ~quiet)).astype(np.int64)
        # a frame is measured when it and the FLAT_CONTEXT - 1 frames before it are quiet
        loud_sums = np.cumsum(np.concatenate(([0], loud)))
        band_sums = np.cumsum(np.concatenate((np.zeros((1, FLAT_BANDS)), joined)), axis=0)
        ends = np.arange(held, held + n) + 1
        starts = ends - FLAT_CONTEXT
        whole = (starts >= 0) & (loud_sums[ends] - loud_sums[np.maximum(starts, 0)] == 0)
        if whole.any():
            flat[whole] = _flatness(band_sums[ends[whole]] - band_sums[starts[whole]])
        # the quiet frames at the end, at most FLAT_CONTEXT - 1, are the next call's context
        last_loud = np.flatnonzero(loud)
        tail_from = max(len(joined) - (FLAT_CONTEXT - 1), int(last_loud[-1]) + 1 if len(last_loud) else 0)
        self._bands = joined[tail_from:].copy()
        return flat

    def _measure_one(self, frame: NDArray[np.float64]) -> float:
        """The flatness of one quiet frame (a row) after the quiet frames held: NaN while
        fewer than ``FLAT_CONTEXT - 1`` are held."""
        bands = self._band_powers(frame)
        if len(self._bands) < FLAT_CONTEXT - 1:
            self._bands = np.concatenate((self._bands, bands))
            return float("nan")
        context = self._bands.sum(axis=0) + bands[0]
        self._bands = np.concatenate((self._bands[1:], bands))
        return _row_flatness(context)

    def flat_one(self, frame: NDArray[np.float64]) -> bool:
        """``flat`` of one frame known to be quiet (a row), without the bookkeeping that
        several frames need: one 20 ms message (Twilio, AudioHook) takes this way."""
        return self._measure_one(frame) >= self.minimum

    def _band_powers(self, frames: NDArray[np.float64]) -> NDArray[np.float64]:
        spectra = np.fft.rfft(frames * self.window, axis=1)
        power = spectra.real**2 + spectra.imag**2
        bands: NDArray[np.float64] = power @ self._to_bands
        return bands

    def flat(self, frames: NDArray[np.float64], quiet: NDArray[np.bool_] | None = None) -> NDArray[np.bool_]:
        """Which frames are quiet with a flat spectrum."""
        with np.errstate(invalid="ignore"):
            result: NDArray[np.bool_] = self.measure(frames, quiet) >= self.minimum
        return result


class QuietFrames:
    """Splits sound into sound and runs of quiet frames (``SilenceRun``); with ``flatness``,
    only quiet frames with a flat spectrum count."""

    def __init__(
        self, frame_samples: int, min_samples: int, level: float, flatness: Flatness | None = None
    ) -> None:
        if frame_samples < 1:
            raise ValueError(f"frame_samples: expected an int >= 1, got {frame_samples!r}")
        self._run = HeldRun(min_samples, "comfort-noise")  # quiet frames, maybe too few yet
        if not (np.isfinite(level) and level > 0):
            raise ValueError(f"level: expected a positive RMS, got {level!r}")
        self.frame = frame_samples
        self.level_squared = float(level) ** 2
        self.flatness = flatness
        self._partial = np.zeros(0, dtype=np.float32)  # less than one frame, not yet judged

    @property
    def runs(self) -> int:
        return self._run.runs

    @property
    def run_samples(self) -> int:
        return self._run.run_samples

    def feed(self, samples: NDArray[np.float32]) -> list[Part]:
        """Sound in; sound (arrays) and quiet runs out, in order."""
        if len(samples) == self.frame and not len(self._partial):
            return self._one_frame(samples)
        audio = np.concatenate((self._partial, samples)) if len(self._partial) else samples
        whole = len(audio) - len(audio) % self.frame
        self._partial = audio[whole:].copy()
        out: list[Part] = []
        if whole == 0:
            return out
        frames = audio[:whole].reshape(-1, self.frame).astype(np.float64)
        quiet = np.mean(frames * frames, axis=1) <= self.level_squared
        if self.flatness is not None:
            quiet &= self.flatness.flat(frames, quiet)
        edges = np.flatnonzero(np.diff(quiet.astype(np.int8))) + 1
        bounds = np.concatenate(([0], edges, [len(quiet)])) * self.frame
        for a, b in itertools.pairwise(bounds.tolist()):
            piece = audio[a:b]
            if quiet[a // self.frame]:
                self._run.hold(piece)
            else:
                self._run.release(out)
                out.append(piece)
        return out

    def _one_frame(self, samples: NDArray[np.float32]) -> list[Part]:
        """``feed`` of exactly one frame with nothing pending: one 20 ms message, what
        telephony sources send. The same answer as the general path without its per-call
        numpy bookkeeping, at well under half its cost on 20 ms messages (docs/benchmarks.md)."""
        frame = samples.astype(np.float64)
        quiet = float(np.dot(frame, frame)) / len(frame) <= self.level_squared  # one call, not two
        if self.flatness is not None:
            if quiet:
                quiet = self.flatness.flat_one(frame[np.newaxis, :])
            else:
                self.flatness.reset()  # a loud frame ends the quiet context
        out: list[Part] = []
        if quiet:
            self._run.hold(samples)
        else:
            self._run.release(out)
            out.append(samples)
        return out

    def flush(self) -> list[Part]:
        """End of the sound (a gap or the stream's end): what is held back, in order."""
        out: list[Part] = []
        tail, self._partial = self._partial, np.zeros(0, dtype=np.float32)
        in_run = self.flatness is None or self._run.held > 0  # too short to judge its spectrum
        if self.flatness is not None:
            self.flatness.reset()
        if len(tail) and in_run and float(np.mean(tail.astype(np.float64) ** 2)) <= self.level_squared:
            self._run.hold(tail)
            self._run.release(out)
        else:
            self._run.release(out)
            if len(tail):
                out.append(tail)
        return out


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
