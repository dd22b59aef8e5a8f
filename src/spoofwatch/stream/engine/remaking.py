"""Pairing a stream's windows with the audio their streamed remake needs.

A detector whose front end reads each window's streamed remake (``model.resynthesis.remake``) needs,
for a window, its 1 s blocks with the warm-up before the first and the lookahead after
the last. ``WindowContexts`` holds each window until that audio has arrived (0.1 s after
the window for windows on whole seconds, up to a block more otherwise; at the end of the
stream, at once) and hands it on with a copy of the audio. The vocoding itself happens
in the engine's worker (``RemadeBlocks``), off the event loop.
"""

from __future__ import annotations

import collections

import numpy as np
from numpy.typing import NDArray

from spoofwatch.model.resynthesis.remake import RemakeContext, StreamedRemake
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
