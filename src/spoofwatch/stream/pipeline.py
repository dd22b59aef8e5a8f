"""Wires sessions, the shared batcher and the event hub together.

Sources open a stream, push mono float32 audio at their own sample rate and close it;
the pipeline resamples to the model rate, cuts windows, queues them for the shared
worker and publishes stream, score, alarm and error events to the hub.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from numpy.typing import NDArray

from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import LimitExceededError, ProtocolError
from spoofwatch.events import ErrorEvent, StatusEvent, StreamEvent
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.stream.batcher import Batcher, WindowJob
from spoofwatch.stream.hub import EventHub
from spoofwatch.stream.pcm import StreamResampler
from spoofwatch.stream.session import StreamSession

logger = logging.getLogger(__name__)

MAX_STREAM_ID_LENGTH = 200


class StreamHandle:
    """A source's handle on one live stream."""

    def __init__(self, pipeline: Pipeline, stream_id: str, source: str, sample_rate: int) -> None:
        self.pipeline = pipeline
        self.stream_id = stream_id
        self.source = source
        self.input_rate = sample_rate
        model_rate = pipeline.scorer.sample_rate
        self.session = StreamSession(stream_id, model_rate, pipeline.stream_config)
        self.resampler = StreamResampler(sample_rate, model_rate) if sample_rate != model_rate else None
        self.pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False

    def _windows_for(self, samples: NDArray[np.float32]) -> list[WindowJob]:
        if self.closed:
            raise ProtocolError(f"stream {self.stream_id!r} is closed; expected no more audio")
        audio = np.asarray(samples, dtype=np.float32)
        if self.resampler is not None:
            audio = self.resampler.feed(audio)
        now = time.monotonic()
        return [WindowJob(self, w, now) for w in self.session.feed(audio)]

    def _track(self, jobs: list[WindowJob]) -> None:
        if jobs:
            self.pending += len(jobs)
            self._idle.clear()

    def feed(self, samples: NDArray[np.float32]) -> None:
        """Live audio: never waits; when the engine is saturated the oldest windows drop."""
        jobs = self._windows_for(samples)
        self._track(jobs)
        for job in jobs:
            self.pipeline.batcher.submit_nowait(job)

    async def feed_wait(self, samples: NDArray[np.float32]) -> None:
        """Offline replay: waits for room in the queue instead of dropping."""
        jobs = self._windows_for(samples)
        self._track(jobs)
        for index, job in enumerate(jobs):
            try:
                await self.pipeline.batcher.submit(job)
            except asyncio.CancelledError:
                for _ in jobs[index:]:  # never queued: nobody will report them done
                    self.job_done()
                raise

    def job_done(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.pending = 0
            self._idle.set()

    async def close(self, reason: str | None = None) -> None:
        """Flush the last window, wait for pending scores, publish the end of the stream."""
        if self.closed:
            return
        tail = np.zeros(0, dtype=np.float32)
        if self.resampler is not None:
            tail = self.resampler.flush()
        jobs = [WindowJob(self, w) for w in self.session.feed(tail)] if len(tail) else []
        jobs += [WindowJob(self, w) for w in self.session.finish()]
        self.closed = True
        self._track(jobs)
        for job in jobs:
            self.pipeline.batcher.submit_nowait(job)
        await self._idle.wait()
        hub = self.pipeline.hub
        for event in self.session.close_alarm(self.session.duration_s):
            hub.publish(event)
        if reason:
            hub.publish(ErrorEvent(stream=self.stream_id, code="stream_closed", message=reason))
        hub.publish(StreamEvent(self.stream_id, "end", self.input_rate, self.source))
        self.pipeline._forget(self)
        logger.info(
            "stream %s ended: %.1f s, %d windows scored, %d dropped",
            self.stream_id,
            self.session.duration_s,
            self.session.counters.windows_scored,
            self.session.counters.windows_dropped,
        )


class Pipeline:
    """One detector, many streams."""

    def __init__(
        self,
        scorer: WindowScorer,
        stream_config: StreamConfig | None = None,
        engine_config: EngineConfig | None = None,
        node: str = "node",
    ) -> None:
        self.scorer = scorer
        self.stream_config = stream_config or StreamConfig()
        self.engine_config = engine_config or EngineConfig()
        self.node = node
        self.hub = EventHub(self.engine_config.subscriber_queue)
        self.batcher = Batcher(
            scorer,
            self._on_result,
            max_batch=self.engine_config.max_batch,
            max_wait_ms=self.engine_config.max_wait_ms,
            max_queue=self.engine_config.queue_windows,
        )
        self.batcher.on_drop(self._on_drop)
        self.streams: dict[str, StreamHandle] = {}

    def open_stream(self, stream_id: str, *, source: str, sample_rate: int) -> StreamHandle:
        """Admit a new stream or raise LimitExceededError / ProtocolError with the reason."""
        if not stream_id or len(stream_id) > MAX_STREAM_ID_LENGTH:
            raise ProtocolError(
                f"stream id must be 1..{MAX_STREAM_ID_LENGTH} characters, found {len(stream_id)}"
            )
        if stream_id in self.streams:
            raise ProtocolError(f"stream id {stream_id!r} is already live; expected a unique id")
        limit = self.engine_config.max_streams
        if len(self.streams) >= limit:
            raise LimitExceededError(
                f"server is at its limit of {limit} concurrent streams; try again later"
            )
        handle = StreamHandle(self, stream_id, source, sample_rate)
        self.streams[stream_id] = handle
        self.hub.publish(StreamEvent(stream_id, "start", sample_rate, source))
        self.hub.publish(self.status())
        logger.info("stream %s started (%s, %d Hz)", stream_id, source, sample_rate)
        return handle

    def _forget(self, handle: StreamHandle) -> None:
        if self.streams.get(handle.stream_id) is handle:
            del self.streams[handle.stream_id]
            self.hub.publish(self.status())

    def _on_drop(self, job: WindowJob) -> None:
        handle: StreamHandle = job.stream
        handle.session.counters.windows_dropped += 1
        handle.job_done()

    async def _on_result(self, job: WindowJob, score: float | None, error: str | None) -> None:
        handle: StreamHandle = job.stream
        try:
            if score is None:
                self.hub.publish(
                    ErrorEvent(stream=handle.stream_id, code="inference_failed", message=error or "")
                )
                return
            lag_ms = (time.monotonic() - job.ready_at) * 1000.0
            speech = handle.session.is_speech(job.window)
            for event in handle.session.on_score(job.window, score, speech, lag_ms):
                self.hub.publish(event)
        finally:
            handle.job_done()

    def status(self) -> StatusEvent:
        return StatusEvent(
            node=self.node,
            streams=len(self.streams),
            max_streams=self.engine_config.max_streams,
            queued_windows=self.batcher.queued,
            dropped_windows=self.batcher.counters.dropped,
        )

    async def run(self) -> None:
        """Run the inference worker until cancelled."""
        await self.batcher.run()

    async def close_all(self, reason: str = "server shutting down") -> None:
        await asyncio.gather(*(h.close(reason) for h in list(self.streams.values())))
