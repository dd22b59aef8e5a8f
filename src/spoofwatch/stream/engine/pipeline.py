"""Wires sessions, the shared batcher and the event hub together.

Sources open a stream, push mono float32 audio at their own sample rate and close it;
the pipeline resamples to the model rate, cuts windows, queues them for the shared
worker and publishes stream, score, alarm, gap and error events to the hub. A source
that knows audio is missing says so with ``StreamHandle.gap`` rather than sending
filler; runs of digital silence inside the audio are treated as gaps as well
(``stream.silence_gap_s``; docs/protocol.md, "Gaps and pauses").
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.pcm import validate_samples
from spoofwatch.audio.resample import StreamResampler
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import AudioError, LimitExceededError, ProtocolError
from spoofwatch.events import ErrorEvent, Event, GapEvent, StatusEvent, StreamEvent
from spoofwatch.model.card_label import CardLabel, scorer_label
from spoofwatch.model.scorer import WindowScorer, batches_in_flight, scorer_health
from spoofwatch.stream.core.gaps import DigitalSilence, SilenceRun, check_gap_seconds
from spoofwatch.stream.core.quiet import Flatness, QuietFrames, SilenceSplitter, flatness_fits
from spoofwatch.stream.core.session import StreamSession
from spoofwatch.stream.core.windowing import Window
from spoofwatch.stream.engine.batcher import Batcher, WindowJob
from spoofwatch.stream.engine.hub import EventHub
from spoofwatch.stream.net.drain import Drain
from spoofwatch.stream.net.limits import TokenBucket

logger = logging.getLogger(__name__)

MAX_STREAM_ID_LENGTH = 200

# Sees each stream's audio at the model rate as it arrives: (stream id, samples, the
# stream's clock just after them). Must not block or raise; the evidence recorder is one.
AudioTap = Callable[[str, NDArray[np.float32], float], None]


QUIET_FRAME_S = 0.02
QUIET_OFF_DBFS = -120.0  # at or below it, only digital silence makes a gap


def _silence_splitter(config: StreamConfig, sample_rate: int) -> SilenceSplitter:
    min_samples = max(1, round(config.silence_gap_s * sample_rate))
    quiet = None
    frame = max(1, round(QUIET_FRAME_S * sample_rate))
    flat = config.quiet_min_flatness > 0
    # A rate too low for the flatness meter (below about 8 kHz) gets no comfort-noise rule:
    # the level alone would splice natural pauses out.
    if config.quiet_level_dbfs > QUIET_OFF_DBFS and (not flat or flatness_fits(frame, sample_rate)):
        level = 10.0 ** (config.quiet_level_dbfs / 20.0)
        flatness = Flatness(frame, sample_rate, config.quiet_min_flatness) if flat else None
        quiet = QuietFrames(frame, min_samples, level, flatness)
    return SilenceSplitter(DigitalSilence(min_samples), quiet)


class StreamHandle:
    """A source's handle on one live stream."""

    def __init__(
        self, pipeline: Pipeline, stream_id: str, source: str, sample_rate: int, *, trusted: bool = False
    ) -> None:
        self.pipeline = pipeline
        self.stream_id = stream_id
        self.source = source
        self.input_rate = sample_rate
        model_rate = pipeline.scorer.sample_rate
        self.session = StreamSession(stream_id, model_rate, pipeline.stream_config)
        self.resampler = StreamResampler(sample_rate, model_rate) if sample_rate != model_rate else None
        silence_s = pipeline.stream_config.silence_gap_s
        self.silence = _silence_splitter(pipeline.stream_config, sample_rate) if silence_s > 0 else None
        # A scorer that reads a second input beside each window: windows wait in the
        # stream's context until it can be made (model.scorer.StreamContext).
        self.context = pipeline.scorer.stream_context()
        self.pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False  # no more audio accepted
        self.ended = False  # end event published, slot freed
        engine = pipeline.engine_config
        limit_s = 0.0 if trusted else engine.max_stream_s
        self.max_input_samples = round(limit_s * sample_rate) if limit_s > 0 else None
        self.speed: TokenBucket | None = None  # seconds of audio, refilled in real time
        if not trusted and engine.max_speed > 0:
            burst = max(engine.max_speed_burst_s, 1.0)
            self.speed = TokenBucket(engine.max_speed, burst, time.monotonic())
        self.input_samples = 0  # accepted, at the input rate
        self.ignored_samples = 0  # beyond max_stream_s
        self.clipped_samples = 0  # beyond [-1, 1]
        self.limit_error: LimitExceededError | None = None
        self._limit_close_scheduled = False

    def _accept(self, samples: NDArray[np.float32]) -> NDArray[np.float32]:
        """Validate a chunk (all or nothing) and cut it at the stream's duration limit."""
        if self.limit_error is not None:  # ended by its limit: later audio is dropped, counted
            self.ignored_samples += int(np.size(samples))
            return np.zeros(0, dtype=np.float32)
        if self.closed:
            raise ProtocolError(f"stream {self.stream_id!r} is closed; expected no more audio")
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused
            audio = np.asarray(samples, dtype=np.float32)
        if audio.ndim != 1:
            raise AudioError(
                f"stream {self.stream_id!r}: expected 1-D mono samples, found shape {audio.shape}"
            )
        validate_samples(audio, name=f"stream {self.stream_id!r} audio")
        loud = np.abs(audio) > 1.0
        if loud.any():  # as a fixed-point converter would; far louder input breaks the encoder
            self.clipped_samples += int(np.count_nonzero(loud))
            audio = np.clip(audio, -1.0, 1.0)
        if self.speed is not None and not self.speed.take(time.monotonic(), len(audio) / self.input_rate):
            engine = self.pipeline.engine_config
            self.ignored_samples += len(audio)
            self.limit_error = LimitExceededError(
                f"stream {self.stream_id!r}: expected audio at most {engine.max_speed:g}x as fast as "
                f"real time after a {engine.max_speed_burst_s:g} s burst (engine.max_speed), found it "
                "arriving faster; the stream is closed"
            )
            return np.zeros(0, dtype=np.float32)
        limit = self.max_input_samples
        if limit is not None and self.input_samples + len(audio) > limit:
            keep = limit - self.input_samples
            self.ignored_samples += len(audio) - keep
            audio = audio[:keep]
            self.limit_error = LimitExceededError(
                f"stream {self.stream_id!r}: expected at most {limit / self.input_rate:g} s of audio "
                f"per stream (engine.max_stream_s), found more; the stream is closed"
            )
        self.input_samples += len(audio)
        return audio

    def _windows_for(self, samples: NDArray[np.float32]) -> list[WindowJob]:
        audio = self._accept(samples)
        if not len(audio):
            return []
        if self.silence is None:
            return self._sound(audio)
        return self._split(self.silence.feed(audio))

    def _split(self, parts: list[NDArray[np.float32] | SilenceRun]) -> list[WindowJob]:
        jobs: list[WindowJob] = []
        for part in parts:
            if isinstance(part, SilenceRun):
                jobs += self._gap_jobs(part.samples / self.input_rate, part.cause)[0]
            else:
                jobs += self._sound(part)
        return jobs

    def _sound(self, audio: NDArray[np.float32]) -> list[WindowJob]:
        if self.resampler is not None:
            audio = self.resampler.feed(audio)
        jobs = self._jobs(audio, self.session.feed(audio))
        for tap in self.pipeline.audio_taps:
            tap(self.stream_id, audio, self.session.duration_s)
        return jobs

    def _gap_jobs(self, seconds: float, cause: str) -> tuple[list[WindowJob], GapEvent | None]:
        """The audio before the gap through the resampler (its filter tail), then the gap."""
        jobs: list[WindowJob] = []
        if self.resampler is not None:
            tail = self.resampler.flush()
            self.resampler.reset()
            if len(tail):
                jobs = self._jobs(tail, self.session.feed(tail))
        event = self.session.gap(round(seconds * self.session.sample_rate), cause)
        if event is not None:
            self.pipeline.hub.publish(event)
        return jobs, event

    def gap(self, seconds: float, cause: str) -> GapEvent | None:
        """``seconds`` of the call passed with no audio for this stream (``cause`` from
        ``gaps.GAP_CAUSES``). No window is scored over it; the stream's clock moves on.

        The hook for every source with holes: AudioHook discarded/paused audio, a
        microphone overrun, RTP loss or a jitter-buffer under-run. Returns the gap event
        published (None for one too short to report, ``session.REPORTED_GAP_S``)."""
        seconds = check_gap_seconds(seconds, cause)
        if self.limit_error is not None:
            return None
        if self.closed:
            raise ProtocolError(f"stream {self.stream_id!r} is closed; expected no more gaps")
        jobs: list[WindowJob] = []
        if self.silence is not None:  # digital silence held back comes before the gap
            jobs += self._split(self.silence.flush())
        gap_jobs, event = self._gap_jobs(seconds, cause)
        jobs += gap_jobs
        self._track(jobs)
        for job in jobs:
            self.pipeline.batcher.submit_nowait(job)
        return event

    def _jobs(self, audio: NDArray[np.float32], windows: list[Window], last: bool = False) -> list[WindowJob]:
        """Jobs for the windows ``audio`` (model rate) completed; ``last``: the stream ends."""
        ready_at = time.monotonic()
        if self.context is None:
            return [WindowJob(self, w, ready_at) for w in windows]
        pairs = list(self.context.add(audio, windows))
        if last:
            pairs += self.context.finish([])
        return [WindowJob(self, w, ready_at, companion=companion) for w, companion in pairs]

    def _end_if_over_limit(self) -> None:
        if self.limit_error is not None and not self.closed and not self._limit_close_scheduled:
            self._limit_close_scheduled = True
            self.pipeline._close_in_background(self)

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
        self._end_if_over_limit()

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
        self._end_if_over_limit()

    def job_done(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.pending = 0
            self._idle.set()

    async def close(self, reason: str | None = None, *, code: str = "stream_closed") -> None:
        """Flush the last window, wait for pending scores, publish the end of the stream.

        A non-empty ``reason`` is published first as an error event with ``code``; a
        stream that ran past its duration limit always ends with ``limit_exceeded``.
        """
        if self.closed:
            return
        if self.limit_error is not None:
            reason, code = str(self.limit_error), "limit_exceeded"
        early: list[WindowJob] = []
        if self.silence is not None:
            early = self._split(self.silence.flush())
        tail = np.zeros(0, dtype=np.float32)
        if self.resampler is not None:
            tail = self.resampler.flush()
        windows = self.session.feed(tail) if len(tail) else []
        jobs = early + self._jobs(tail, windows + self.session.finish(), last=True)
        self.closed = True
        self._track(jobs)
        for job in jobs:
            self.pipeline.batcher.submit_nowait(job)
        try:
            await self._idle.wait()
        finally:
            # Also when the wait is cut short (a close timeout under overload, cancellation):
            # the stream must still end and free its slot.
            self._end(reason, code)

    def _end(self, reason: str | None, code: str) -> None:
        if self.pending:
            dropped = self.pipeline.batcher.discard(self)
            logger.warning(
                "stream %s ended with %d windows unscored (%d dropped from the queue)",
                self.stream_id,
                self.pending + dropped,
                dropped,
            )
        self.ended = True  # windows still in the worker's hands are no longer reported
        hub = self.pipeline.hub
        for event in self.session.close_alarm(self.session.duration_s, self.pipeline.card):
            hub.publish(event)
        if reason:
            hub.publish(ErrorEvent(stream=self.stream_id, code=code, message=reason))
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
        card: CardLabel | None = None,
    ) -> None:
        self.scorer = scorer
        self.card: CardLabel = card or scorer_label(scorer)  # names the scorer on events
        # Alarm thresholds left unset follow the detector's threshold policy.
        self._given_stream_config = stream_config or StreamConfig()
        self.stream_config = self._given_stream_config.with_alarm_levels(scorer.threshold)
        self.engine_config = engine_config or EngineConfig()
        self.node = node
        self.hub = EventHub(self.engine_config.subscriber_queue)
        self.batcher = Batcher(
            scorer,
            self._on_result,
            max_batch=self.engine_config.max_batch,
            max_wait_ms=self.engine_config.max_wait_ms,
            max_queue=self.engine_config.queue_windows,
            workers=batches_in_flight(scorer, self.engine_config.workers),
            trim_interval_s=self.engine_config.heap_trim_interval_s,
        )
        self.batcher.swap(scorer, self.card)
        self.batcher.on_drop(self._on_drop)
        # Called with each scored window's job and the events it made (feedback capture).
        self.on_scored: list[Callable[[WindowJob, list[Event]], None]] = []
        self.on_stream_end: list[Callable[[StreamHandle], None]] = []
        self.streams: dict[str, StreamHandle] = {}
        self.drain = Drain()  # while draining, network streams are refused (net.drain)
        self.audio_taps: list[AudioTap] = []
        self._closing: set[asyncio.Task[None]] = set()
        # Called with each scored window's stream, the window, its score and speech flag
        # (drift monitoring); quick, on the event loop.
        self.window_observers: list[Callable[[StreamHandle, Window, float, bool], None]] = []
        # Called with the new scorer after a hot reload (use_scorer), e.g. to swap the drift
        # monitor's reference to the new card's.
        self.scorer_observers: list[Callable[[WindowScorer], None]] = []
        self.refused: Counter[str] = Counter()  # streams and calls refused, by reason

    def open_stream(
        self,
        stream_id: str,
        *,
        source: str,
        sample_rate: int,
        trusted: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> StreamHandle:
        """Admit a new stream or raise LimitExceededError / ProtocolError with the reason.

        ``trusted`` (local microphones and files) exempts the stream from
        ``engine.max_stream_s``, a bound meant for network clients. ``metadata`` (the
        party's names and numbers, as a source knows them) goes into the start event.
        """
        if not stream_id or len(stream_id) > MAX_STREAM_ID_LENGTH:
            raise ProtocolError(
                f"stream id must be 1..{MAX_STREAM_ID_LENGTH} characters, found {len(stream_id)}"
            )
        if stream_id in self.streams:
            self.refused["duplicate_stream"] += 1
            raise ProtocolError(f"stream id {stream_id!r} is already live; expected a unique id")
        if not trusted and self.drain.refusal() is not None:
            self.refused["draining"] += 1
            self.drain.check()
        limit = self.engine_config.max_streams
        if len(self.streams) >= limit:
            self.refused["max_streams"] += 1
            raise LimitExceededError(f"server is at its limit of {limit} concurrent streams; try again later")
        health = scorer_health(self.scorer)
        if health is not None and not health.get("accepting", True):  # shed load: pool unreachable
            self.refused["scorer_unavailable"] += 1
            raise LimitExceededError(
                f"this node cannot score new streams now (inference pool unreachable: "
                f"{health.get('last_error')}); try another node"
            )
        handle = StreamHandle(self, stream_id, source, sample_rate, trusted=trusted)
        self.streams[stream_id] = handle
        self.hub.publish(StreamEvent(stream_id, "start", sample_rate, source, metadata=metadata))
        self.hub.publish(self.status())
        logger.info("stream %s started (%s, %d Hz)", stream_id, source, sample_rate)
        return handle

    def use_scorer(self, scorer: WindowScorer, card: CardLabel) -> None:
        """Hot reload (stream.engine.reload): batches that start from now on are scored by
        ``scorer``; streams opened from now on take its threshold (live ones keep the
        alarm levels they started with)."""
        self.scorer, self.card = scorer, card
        self.stream_config = self._given_stream_config.with_alarm_levels(scorer.threshold)
        self.batcher.swap(scorer, card)
        for observe in self.scorer_observers:
            observe(scorer)

    def _close_in_background(self, handle: StreamHandle) -> None:
        """End a stream that hit its duration limit while its source keeps sending."""
        logger.warning("%s", handle.limit_error)
        task = asyncio.get_running_loop().create_task(
            handle.close(), name=f"close-over-limit {handle.stream_id}"
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _forget(self, handle: StreamHandle) -> None:
        for callback in self.on_stream_end:
            callback(handle)
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
            if handle.ended:  # its close gave up waiting: the end event is out already
                return
            if score is None or not math.isfinite(score):
                # A non-finite score would poison the smoother and the alarm for good.
                message = error or f"inference: expected a finite score, found {score}"
                self.hub.publish(
                    ErrorEvent(stream=handle.stream_id, code="inference_failed", message=message)
                )
                return
            lag_ms = (time.monotonic() - job.ready_at) * 1000.0
            speech = handle.session.is_speech(job.window)
            events = handle.session.on_score(job.window, score, speech, lag_ms, job.card)
            for event in events:
                self.hub.publish(event)
            for callback in self.on_scored:
                callback(job, events)
            for observe in self.window_observers:
                observe(handle, job.window, score, speech)
        finally:
            handle.job_done()

    def status(self) -> StatusEvent:
        return StatusEvent(
            node=self.node,
            streams=len(self.streams),
            max_streams=self.engine_config.max_streams,
            queued_windows=self.batcher.queued,
            dropped_windows=self.batcher.counters.dropped,
            detector=self.card.name,
            detector_sha=self.card.short,
        )

    async def run(self) -> None:
        """Run the inference worker until cancelled."""
        await self.batcher.run()

    async def close_all(self, reason: str = "server shutting down") -> None:
        await asyncio.gather(*(h.close(reason) for h in list(self.streams.values())))
