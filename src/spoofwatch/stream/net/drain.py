"""Graceful drain of an ingest node (SIGTERM; docs/deploy.md, "Draining a node").

States: ``serving`` → ``draining`` → ``drained``. While draining, ``/healthz`` answers
503 ``{"status": "draining"}`` (so HAProxy's health check takes the node out of rotation),
``Pipeline.open_stream`` refuses every new network stream with a ``LimitExceededError`` —
which each protocol already turns into its own "try elsewhere" (WebSocket close 1013,
AudioHook ``disconnect`` with reason ``error``, AudioSocket error + hangup frames) — and
the calls in progress run to their end. Calls still live after ``drain_timeout_s`` are
closed with an error event (code ``drain_timeout``). Then the node stops: its MQTT sink publishes
availability ``offline`` as it always does on a clean shutdown, and the process exits 0.

The state is pure; ``run`` needs only what ``DrainablePipeline`` names, so this module
imports nothing of the pipeline it drains.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Final, Literal, Protocol

from spoofwatch.errors import ConfigError, LimitExceededError

logger = logging.getLogger(__name__)

DrainPhase = Literal["serving", "draining", "drained"]

DRAIN_POLL_S: Final = 0.05

DRAIN_TIMEOUT_CODE: Final = "drain_timeout"  # the error event of a call cut by the timeout


class ClosableStream(Protocol):
    async def close(self, reason: str | None = ..., *, code: str = ...) -> None: ...


class DrainablePipeline(Protocol):
    @property
    def streams(self) -> Mapping[str, ClosableStream]: ...


class Drain:
    """One node's drain state; ``begin`` (from SIGTERM) starts it, ``run`` carries it out."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        if not (math.isfinite(timeout_s) and timeout_s >= 0):
            raise ConfigError(
                f"server.drain_timeout_s: expected a non-negative number of seconds, found {timeout_s!r}"
            )
        self.timeout_s = timeout_s
        self.phase: DrainPhase = "serving"
        self.started_at: float | None = None
        self.closed_at_timeout = 0  # streams the timeout cut short
        self._begun = asyncio.Event()

    @property
    def draining(self) -> bool:
        return self.phase != "serving"

    def begin(self) -> bool:
        """Start draining; False when already draining (the caller may then stop at once)."""
        if self.draining:
            return False
        self.phase = "draining"
        self.started_at = time.monotonic()
        self._begun.set()
        logger.info("draining: refusing new calls, waiting up to %g s for live calls", self.timeout_s)
        return True

    def refusal(self) -> LimitExceededError | None:
        """The error a new stream gets while draining, or None while serving."""
        if not self.draining:
            return None
        return LimitExceededError("node is draining (shutting down): it takes no new calls; try another node")

    def check(self) -> None:
        error = self.refusal()
        if error is not None:
            raise error

    async def run(self, pipeline: DrainablePipeline, stop: Callable[[], None]) -> None:
        """Wait for ``begin``; then wait for the live streams to end (or the timeout), close
        what is left with the reason, mark the node drained and call ``stop``."""
        await self._begun.wait()
        try:
            async with asyncio.timeout(self.timeout_s):
                while pipeline.streams:
                    await asyncio.sleep(DRAIN_POLL_S)
        except TimeoutError:
            self.closed_at_timeout = len(pipeline.streams)
            logger.warning(
                "drain timeout: closing %d call(s) still live after %g s",
                self.closed_at_timeout,
                self.timeout_s,
            )
            reason = (
                f"node drained: the call was still live when the drain timeout ({self.timeout_s:g} s) ran out"
            )
            live = list(pipeline.streams.values())
            await asyncio.gather(*(h.close(reason, code=DRAIN_TIMEOUT_CODE) for h in live))
        self.phase = "drained"
        logger.info("drained: no live calls left; stopping")
        stop()
