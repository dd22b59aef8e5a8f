"""Call admission, shared by every call-center protocol.

- ``Admission`` admits all the streams of one call together, or none. Beyond
  ``EngineConfig.max_streams`` a call is refused (``admission = "refuse"``) or waits in a
  FIFO queue for up to ``queue_timeout_s`` (``admission = "queue"``). One instance per
  pipeline, shared by every call-center protocol (``Admission.of``). Streams open through
  ``Pipeline.open_stream``, which publishes the stream start and the status (load) events.
- ``CallStreams`` holds audio that arrives while a call waits for admission (bounded;
  the oldest is dropped and counted), then feeds the admitted streams live.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import ConfigError, LimitExceededError, ProtocolError, SpoofwatchError
from spoofwatch.stream.engine.pipeline import Pipeline, StreamHandle
from spoofwatch.stream.net.connection import close_stream

logger = logging.getLogger(__name__)

ADMISSION_MODES: Final = ("refuse", "queue")

ADMISSION_POLL_S: Final = 0.02

ADMISSION_AT_END_S: Final = 1.0  # see settle_admission


@dataclass(frozen=True)
class StreamRequest:
    stream_id: str
    source: str
    sample_rate: int
    metadata: dict[str, str] | None = None


class Admission:
    """Admit a call's streams together, refusing or queueing (FIFO) beyond the limit."""

    _instances: ClassVar[weakref.WeakKeyDictionary[Pipeline, Admission]] = weakref.WeakKeyDictionary()

    def __init__(self, pipeline: Pipeline) -> None:
        engine = pipeline.engine_config
        if engine.admission not in ADMISSION_MODES:
            raise ConfigError(
                f"engine.admission: expected one of {list(ADMISSION_MODES)}, found {engine.admission!r}"
            )
        if not (math.isfinite(engine.queue_timeout_s) and engine.queue_timeout_s >= 0):
            raise ConfigError(
                "engine.queue_timeout_s: expected a non-negative number of seconds, "
                f"found {engine.queue_timeout_s!r}"
            )
        self.pipeline = pipeline
        self.mode = engine.admission
        self.timeout_s = engine.queue_timeout_s
        self._waiting: deque[object] = deque()

    @classmethod
    def of(cls, pipeline: Pipeline) -> Admission:
        """The pipeline's shared instance, so queued calls of every protocol share one FIFO."""
        admission = cls._instances.get(pipeline)
        if admission is None:
            admission = cls._instances[pipeline] = cls(pipeline)
        return admission

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def limit(self) -> int:
        return self.pipeline.engine_config.max_streams

    def _free(self) -> int:
        return self.limit - len(self.pipeline.streams)

    def _full_error(self, needed: int, waited_s: float | None = None) -> LimitExceededError:
        waited = f", after waiting {waited_s:g} s in the admission queue" if waited_s is not None else ""
        return LimitExceededError(
            f"server is at its limit of {self.limit} concurrent streams ({len(self.pipeline.streams)} live, "
            f"this call needs {needed}){waited}; try again later"
        )

    async def open(
        self, requests: Sequence[StreamRequest], *, max_wait_s: float | None = None
    ) -> list[StreamHandle]:
        """Open every requested stream, or raise LimitExceededError / ProtocolError with the reason."""
        needed = len(requests)
        if needed > self.limit:
            raise LimitExceededError(
                f"call needs {needed} streams; expected at most the server's limit of {self.limit}"
            )
        self._check_ids(requests)
        self.pipeline.drain.check()  # a draining node neither admits nor queues
        if self.mode == "refuse" or (not self._waiting and self._free() >= needed):
            return await self._open_now(requests)
        wait_s = self.timeout_s if max_wait_s is None else min(self.timeout_s, max_wait_s)
        ticket = object()
        self._waiting.append(ticket)
        logger.info("call %s queued for admission (%d waiting)", requests[0].stream_id, len(self._waiting))
        try:
            async with asyncio.timeout(wait_s):
                while self._waiting[0] is not ticket or self._free() < needed:
                    await asyncio.sleep(ADMISSION_POLL_S)
        except TimeoutError:
            raise self._full_error(needed, wait_s) from None
        finally:
            self._waiting.remove(ticket)
        return await self._open_now(requests)

    def _check_ids(self, requests: Sequence[StreamRequest]) -> None:
        ids = [r.stream_id for r in requests]
        taken = [i for i in ids if i in self.pipeline.streams]
        if taken or len(set(ids)) != len(ids):
            raise ProtocolError(f"stream id(s) {taken or ids} already live; expected unique ids")

    async def _open_now(self, requests: Sequence[StreamRequest]) -> list[StreamHandle]:
        if self._free() < len(requests):
            raise self._full_error(len(requests))
        self._check_ids(requests)  # again: ids may have gone live while this call waited
        handles: list[StreamHandle] = []
        try:
            for request in requests:
                handles.append(
                    self.pipeline.open_stream(
                        request.stream_id,
                        source=request.source,
                        sample_rate=request.sample_rate,
                        metadata=request.metadata,
                    )
                )
        except SpoofwatchError:
            await asyncio.gather(*(close_stream(h, "call refused") for h in handles))
            raise
        return handles


class CallStreams:
    """One call's pipeline streams; audio waits (bounded, oldest dropped) until admitted."""

    def __init__(
        self, pipeline: Pipeline, requests: Sequence[StreamRequest], *, max_pending_s: float
    ) -> None:
        self.pipeline = pipeline
        self.requests = list(requests)
        self.handles: dict[str, StreamHandle] = {}
        self.max_pending = {r.stream_id: max(1, round(max_pending_s * r.sample_rate)) for r in requests}
        self.pending: dict[str, deque[NDArray[np.float32]]] = {r.stream_id: deque() for r in requests}
        self.pending_samples = dict.fromkeys(self.pending, 0)
        self.dropped_samples = 0
        self.admitted = False
        self.closed = False

    @property
    def stream_ids(self) -> list[str]:
        return [r.stream_id for r in self.requests]

    async def admit(self, max_wait_s: float | None = None) -> None:
        handles = await Admission.of(self.pipeline).open(self.requests, max_wait_s=max_wait_s)
        if self.closed:  # the call ended while it waited
            await asyncio.gather(*(close_stream(h, "call ended before admission") for h in handles))
            return
        self.handles = {h.stream_id: h for h in handles}
        self.admitted = True
        for stream_id, chunks in self.pending.items():
            if chunks:
                self.handles[stream_id].feed(np.concatenate(list(chunks)))
            chunks.clear()
        if self.dropped_samples:
            logger.warning(
                "call %s: %d samples dropped while queued", self.stream_ids[0], self.dropped_samples
            )

    def feed(self, stream_id: str, samples: NDArray[np.float32]) -> None:
        if self.closed:
            return
        handle = self.handles.get(stream_id)
        if handle is not None:
            handle.feed(samples)
            return
        if self.admitted or stream_id not in self.pending:
            raise ProtocolError(f"audio for stream {stream_id!r}: expected one of {self.stream_ids}")
        chunks = self.pending[stream_id]
        chunks.append(samples)
        self.pending_samples[stream_id] += len(samples)
        while self.pending_samples[stream_id] > self.max_pending[stream_id] and len(chunks) > 1:
            dropped = chunks.popleft()
            self.pending_samples[stream_id] -= len(dropped)
            self.dropped_samples += len(dropped)

    def gap(self, seconds: float, cause: str) -> None:
        """Every party's audio is missing for ``seconds`` (``StreamHandle.gap``); a call
        still waiting for admission has no timeline yet, so the gap is only logged."""
        if self.closed:
            return
        if not self.admitted:
            logger.info("call %s: %.3f s gap (%s) before admission", self.stream_ids[0], seconds, cause)
            return
        for handle in self.handles.values():
            handle.gap(seconds, cause)

    async def close(self, reason: str | None, code: str = "stream_closed") -> None:
        self.closed = True
        handles = list(self.handles.values())
        self.handles.clear()
        await asyncio.gather(*(close_stream(h, reason, code) for h in handles))


async def settle_admission(task: asyncio.Task[None] | None) -> None:
    """A call that ended while its admission was under way: let an admission that can
    finish at once do so (its buffered audio is then scored and the stream ends normally;
    the task may not even have started when a short call's last frame arrived), cancel
    one still queued for capacity after ``ADMISSION_AT_END_S``."""
    if task is None or task.done():
        return
    done, _ = await asyncio.wait({task}, timeout=ADMISSION_AT_END_S)
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
