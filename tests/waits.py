"""Waiting in tests: one timeout scale for slow machines, and conditions rather than naps.

``SPOOFWATCH_TEST_TIMEOUT_SCALE`` (default 1) multiplies every readiness wait and deadline
the test helpers use (``scaled``), and pytest-timeout's per-test limit (conftest.py).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import IO

ENV = "SPOOFWATCH_TEST_TIMEOUT_SCALE"


def timeout_scale() -> float:
    text = os.environ.get(ENV, "1")
    try:
        scale = float(text)
    except ValueError:
        raise ValueError(f"{ENV}: expected a positive number, found {text!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{ENV}: expected a positive number, found {text!r}")
    return scale


def scaled(seconds: float) -> float:
    """``seconds`` times the machine's timeout scale."""
    return seconds * timeout_scale()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after the (scaled) timeout."""
    deadline = time.monotonic() + scaled(timeout_s)
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {scaled(timeout_s):g} s for {what}")
        time.sleep(poll_s)


class LineReader:
    """Reads a subprocess's text stream on a thread, so a test can wait for a line."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line)

    def has(self, needle: str) -> bool:
        with self._lock:
            return any(needle in line for line in self.lines)

    def text(self, join_timeout_s: float = 10.0) -> str:
        """Everything read; waits for the stream's end (the process has exited or is exiting)."""
        self._thread.join(scaled(join_timeout_s))
        with self._lock:
            return "".join(self.lines)
