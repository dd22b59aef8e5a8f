"""The streamed FARGAN remake: a stream's audio remade block by block, once.

Overlapping windows (4 s every 1 s) share audio, so remaking every window on its own
(``lfcc-phase-resynth``) vocodes each second four times. Here the remake is a property of
the stream, not of the window: the stream is cut into 1 s blocks from its first sample;
each block is vocoded once, with 0.2 s of the audio before it (the vocoder's warm-up) and
0.1 s after it (so the block's end is not the vocoder's), and only the block's own part is
kept. A window's remake is the remade stream over the window's span, so one block serves
every window that covers it. A block's remake depends on the input audio alone, never on
when it was computed: a stream scored live, a file scored whole and a training clip all
get the same remake (``StreamedRemake.clip`` for whole clips; ``RemadeBlocks`` with
``RemakeContext`` for live streams).

The remake is rounded to 16-bit PCM as libsndfile writes and reads it, so remakes cached
as FLAC for training are exactly what scoring computes.

Torch-free: the streaming engine imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import DataError
from spoofwatch.model.resynthesis.vocoder import FARGAN_RECIPE, SAMPLE_RATE, vocode

BLOCK_S = 1.0
WARM_UP_S = 0.2
LOOKAHEAD_S = 0.1
_SHORTEST_INPUT = SAMPLE_RATE // 10  # what vocode accepts


def as_pcm16(samples: NDArray[np.floating]) -> NDArray[np.float32]:
    """``samples`` written as 16-bit PCM and read back as libsndfile does (scaled by 32768,
    rounded and clipped on write, divided by 32768 on read)."""
    scaled = np.clip(np.rint(np.asarray(samples, dtype=np.float64) * 32768.0), -32768.0, 32767.0)
    return (scaled / 32768.0).astype(np.float32)


@dataclass(frozen=True)
class RemakeContext:
    """Input audio of one stream around a window: ``audio`` holds stream samples
    ``offset`` to ``offset + len(audio)``; it reaches the lookahead of the window's last
    block, or the end of the stream."""

    offset: int
    audio: NDArray[np.float32]

    @property
    def end(self) -> int:
        return self.offset + len(self.audio)


@dataclass(frozen=True)
class StreamedRemake:
    """The block geometry and the vocoder program; ``recipe`` names both for the identity
    of the features computed from them."""

    vocoder: Path
    sample_rate: int = SAMPLE_RATE
    block: int = round(BLOCK_S * SAMPLE_RATE)
    warm_up: int = round(WARM_UP_S * SAMPLE_RATE)
    lookahead: int = round(LOOKAHEAD_S * SAMPLE_RATE)

    def __post_init__(self) -> None:
        if self.sample_rate != SAMPLE_RATE:
            raise DataError(f"streamed remake: expected {SAMPLE_RATE} Hz audio, found {self.sample_rate} Hz")

    @property
    def recipe(self) -> str:
        return f"streamed-b{self.block}-w{self.warm_up}-l{self.lookahead}-pcm16-{FARGAN_RECIPE}"

    def blocks_of(self, start: int, length: int) -> range:
        """Indices of the blocks covering stream samples ``start`` to ``start + length``."""
        return range(start // self.block, math.ceil((start + length) / self.block))

    def context_span(self, start: int, length: int) -> tuple[int, int]:
        """Stream samples whose remake a window of ``length`` at ``start`` needs: its blocks
        with their warm-up and lookahead (the end may lie past the stream's)."""
        blocks = self.blocks_of(start, length)
        return max(0, blocks.start * self.block - self.warm_up), blocks.stop * self.block + self.lookahead

    def remake_block(self, context: RemakeContext, index: int) -> NDArray[np.float32]:
        """Block ``index``'s remake: ``block`` samples, fewer for a stream's last block
        (``context`` must reach the block's lookahead or the end of the stream)."""
        start = index * self.block
        first = max(0, start - self.warm_up)
        if first < context.offset or start >= context.end:
            raise DataError(
                f"streamed remake: block {index} needs stream samples from {first}, "
                f"found {context.offset} to {context.end}"
            )
        segment = context.audio[first - context.offset : start + self.block + self.lookahead - context.offset]
        if len(segment) < _SHORTEST_INPUT:
            segment = np.pad(segment, (0, _SHORTEST_INPUT - len(segment)))
        length = min(self.block, context.end - start)
        remade = vocode(segment, self.vocoder)[start - first : start - first + length]
        out = np.zeros(length, dtype=np.float32)  # the vocoder ends a few frames short
        out[: len(remade)] = remade
        return as_pcm16(out)

    def clip(self, samples: NDArray[np.float32]) -> NDArray[np.float32]:
        """A whole clip's remake, as long as the clip."""
        context = RemakeContext(0, np.asarray(samples, dtype=np.float32))
        blocks = [self.remake_block(context, b) for b in self.blocks_of(0, len(samples))]
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


@dataclass
class RemadeBlocks:
    """One live stream's remade blocks, each vocoded once and kept while windows still need
    it. Windows must come in stream order; one thread at a time (the streaming engine never
    scores two windows of a stream at once)."""

    remake: StreamedRemake
    _blocks: dict[int, NDArray[np.float32]] = field(default_factory=dict)
    vocoded: int = 0

    def window(
        self, context: RemakeContext, start: int, length: int, real_samples: int | None = None
    ) -> NDArray[np.float32]:
        """The remake of the window of ``length`` samples at ``start``; for a tiled window
        (``real_samples`` of audio repeated to ``length``) the remake repeated the same way."""
        if real_samples is not None:
            whole = self.remake.clip(context.audio[:real_samples])
            self.vocoded += len(self.remake.blocks_of(0, real_samples))
            return np.resize(whole, length)
        blocks = self.remake.blocks_of(start, length)
        for old in [b for b in self._blocks if b < blocks.start]:
            del self._blocks[old]
        parts = []
        for b in blocks:
            if b not in self._blocks:
                self._blocks[b] = self.remake.remake_block(context, b)
                self.vocoded += 1
            parts.append(self._blocks[b])
        joined = np.concatenate(parts)
        first = start - blocks.start * self.remake.block
        remade = joined[first : first + length]
        if len(remade) != length:
            raise DataError(
                f"streamed remake: expected {length} remade samples from {start}, found {len(remade)}"
            )
        return remade
