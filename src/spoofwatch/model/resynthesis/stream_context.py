"""The resynthesis detector's per-stream context: a stream's windows paired with the
audio their streamed remake needs, and the remake made from it.

A detector whose front end reads each window's streamed remake (``model.resynthesis.remake``) needs,
for a window, its 1 s blocks with the warm-up before the first and the lookahead after
the last. ``WindowContexts`` holds each window until that audio has arrived (0.1 s after
the window for windows on whole seconds, up to a block more otherwise; at the end of the
stream, at once) and hands it on with a copy of the audio. The vocoding itself happens
in the engine's worker (``RemakeCompanion`` over the stream's ``RemadeBlocks``), off the
event loop. ``RemakeStream`` is what the detector's ``stream_context()`` returns
(``model.scorer.StreamContext``).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import ModelError, SpoofwatchError
from spoofwatch.model.resynthesis.remake import RemadeBlocks, RemakeContext, StreamedRemake
from spoofwatch.stream.core.ring import RingBuffer
from spoofwatch.stream.core.windowing import Window


class WindowContexts:
    """One stream's recent audio and the windows waiting for their remake's context.

    Memory is bounded whatever the chunk sizes: audio goes into a ring one block at a
    time, and windows are handed on as soon as their context is in it.
    """

    def __init__(self, remake: StreamedRemake, window_samples: int) -> None:
        self.remake = remake
        self.window_samples = window_samples
        # The widest context (a window over one block more than its length, with warm-up
        # and lookahead) plus the block being written.
        capacity = window_samples + 3 * remake.block + remake.warm_up + remake.lookahead
        self._ring = RingBuffer(capacity)
        self._held: collections.deque[Window] = collections.deque()

    @property
    def end(self) -> int:
        """Samples of the stream seen so far."""
        return self._ring.end_index

    @property
    def held(self) -> int:
        """Windows waiting for audio."""
        return len(self._held)

    def add(self, audio: NDArray[np.float32], windows: list[Window]) -> list[tuple[Window, RemakeContext]]:
        """Stream audio (model rate) and the windows it completed; the windows whose
        context is now complete come back, in order, with it."""
        self._held.extend(windows)
        ready: list[tuple[Window, RemakeContext]] = []
        for offset in range(0, len(audio), self.remake.block):
            self._ring.write(audio[offset : offset + self.remake.block])
            while self._held and self._span(self._held[0])[1] <= self.end:
                window = self._held.popleft()
                ready.append((window, self._context(window)))
        return ready

    def finish(self, windows: list[Window]) -> list[tuple[Window, RemakeContext]]:
        """End of stream: every held window, and ``windows`` (the last, tiled one), with
        the context the stream has."""
        self._held.extend(windows)
        ready = [(window, self._context(window)) for window in self._held]
        self._held.clear()
        return ready

    def _span(self, window: Window) -> tuple[int, int]:
        if window.tiled:  # the whole (short) stream, or all of it since a gap
            return window.start_sample, window.start_sample + window.covered_samples
        return self.remake.context_span(window.start_sample, len(window.samples))

    def _context(self, window: Window) -> RemakeContext:
        first, last = self._span(window)
        return RemakeContext(first, self._ring.read(first, min(last, self.end)))


@dataclass(frozen=True)
class RemakeCompanion:
    """A window's remake, to be made in the engine's worker from its context audio and the
    stream's remade blocks (``model.scorer.WindowCompanion``)."""

    blocks: RemadeBlocks
    context: RemakeContext
    window: Window

    def make(self) -> NDArray[np.float32]:
        window = self.window
        real = window.covered_samples if window.tiled else None
        try:
            return self.blocks.window(self.context, window.start_sample, len(window.samples), real)
        except SpoofwatchError as exc:  # the vocoder failed on this stream's audio
            raise ModelError(f"remaking the window failed: {exc}") from exc


class RemakeStream:
    """One stream's context for a detector that reads each window's streamed remake
    (``model.scorer.StreamContext``): windows wait for their context audio, and each
    block is vocoded once for all the windows that cover it."""

    def __init__(self, remake: StreamedRemake, window_samples: int) -> None:
        self.contexts = WindowContexts(remake, window_samples)
        self.blocks = RemadeBlocks(remake)

    def add(self, audio: NDArray[np.float32], windows: list[Window]) -> list[tuple[Window, RemakeCompanion]]:
        return self._companions(self.contexts.add(audio, windows))

    def finish(self, windows: list[Window]) -> list[tuple[Window, RemakeCompanion]]:
        return self._companions(self.contexts.finish(windows))

    def _companions(self, pairs: list[tuple[Window, RemakeContext]]) -> list[tuple[Window, RemakeCompanion]]:
        return [(window, RemakeCompanion(self.blocks, context, window)) for window, context in pairs]
