"""``spoofwatch soak``: many real-time streams for a long time; memory, drops and lag.

Each of ``streams`` slots runs calls back to back, each of a random length within
``call_s``, paced in real time (``chunk_ms`` chunks on a monotonic schedule), so streams
open and close all the time as on a call-center node. With ``transport="websocket"``
(the default) every call is a ``/v1/ingest`` client of a real ``SpoofwatchServer`` on a
loopback port, and one ``/v1/scores`` subscriber watches everything: the server's
connection, stream and fan-out code is soaked too. ``transport="pipeline"`` feeds the
pipeline directly.

Before the clock starts the scorer scores two full batches (``EngineConfig.max_batch``),
so that the allocator's high-water mark does not first rise mid-run. Every
``sample_every_s`` the process's resident memory (``/proc/self/statm``) is sampled with
the counters. Memory growth is the least-squares slope of RSS over time after the
warm-up (the first ``warmup_fraction`` of the run: allocator pools, model caches and
lazily built tables fill then), in MB and percent per hour; the run counts as flat when
that is below ``flat_pct_per_hour``. Dropped windows, failed windows, lag percentiles
(the score events' ``lag_ms``), calls completed, streams still live and asyncio tasks
left over at the end are reported too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from spoofwatch.config import EngineConfig, ServerConfig, StreamConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import ErrorEvent, Event, ScoreEvent, StreamEvent, parse_event
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.ops.bench import percentile, speech_like
from spoofwatch.stream.engine.pipeline import Pipeline

logger = logging.getLogger(__name__)

TRANSPORTS: Final = ("websocket", "pipeline")
SUBSCRIBER_QUEUE: Final = 8192
CLOSE_TIMEOUT_S: Final = 30.0
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SoakOptions:
    """What to run; see the module docstring."""

    minutes: float = 30.0
    streams: int = 8
    sample_every_s: float = 10.0
    call_s: tuple[float, float] = (30.0, 120.0)
    chunk_ms: float = 20.0
    input_rate: int = 8000  # telephone audio, resampled by the pipeline like a real call
    transport: str = "websocket"
    warmup_fraction: float = 0.1
    flat_pct_per_hour: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ConfigError(f"minutes: expected a finite number > 0, found {self.minutes!r}")
        if self.streams < 1:
            raise ConfigError(f"streams: expected >= 1, found {self.streams}")
        if not (math.isfinite(self.sample_every_s) and self.sample_every_s > 0):
            raise ConfigError(f"sample_every_s: expected a number > 0, found {self.sample_every_s!r}")
        low, high = self.call_s
        if not (0 < low <= high and math.isfinite(high)):
            raise ConfigError(f"call_s: expected 0 < min <= max seconds, found {self.call_s!r}")
        if not (0 < self.chunk_ms <= 1000):
            raise ConfigError(f"chunk_ms: expected 0 < chunk_ms <= 1000, found {self.chunk_ms!r}")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport: expected one of {list(TRANSPORTS)}, found {self.transport!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction: expected 0 <= f < 1, found {self.warmup_fraction!r}")


@dataclass(frozen=True)
class MemorySample:
    t_s: float
    rss_mb: float
    live_streams: int
    calls_completed: int
    windows_scored: int
    windows_dropped: int


@dataclass
class SoakReport:
    minutes: float
    streams: int
    transport: str
    calls_started: int
    calls_completed: int
    windows_scored: int
    windows_dropped: int
    windows_failed: int
    error_events: dict[str, int]
    p50_lag_ms: float
    p99_lag_ms: float
    max_lag_ms: float
    rss_start_mb: float
    rss_end_mb: float
    rss_peak_mb: float
    growth_mb: float  # end minus the end of the warm-up
    growth_mb_per_hour: float
    growth_pct_per_hour: float
    memory_flat: bool
    live_streams_at_end: int
    tasks_left_over: int
    samples: list[MemorySample] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- measurements ----------------------------------------------------------------------


def current_rss_mb() -> float:
    """Resident set size now (Linux ``/proc``); the peak where ``/proc`` is missing."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        scale = 1.0 if sys.platform == "darwin" else 1024.0
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def memory_growth(samples: list[MemorySample], warmup_fraction: float) -> tuple[float, float, float]:
    """(MB over the measured part, MB/hour slope, %/hour of the RSS after warm-up)."""
    if not samples:
        return 0.0, 0.0, 0.0
    cutoff = samples[-1].t_s * warmup_fraction
    measured = [s for s in samples if s.t_s >= cutoff]
    if len(measured) < 2:
        return 0.0, 0.0, 0.0
    t = np.array([s.t_s for s in measured])
    rss = np.array([s.rss_mb for s in measured])
    slope_per_s = float(np.polyfit(t, rss, 1)[0]) if np.ptp(t) > 0 else 0.0
    per_hour = slope_per_s * 3600.0
    base = float(rss[0])
    return float(rss[-1] - rss[0]), per_hour, 100.0 * per_hour / base if base > 0 else 0.0


# --- the run ---------------------------------------------------------------------------


@dataclass
class _Trace:
    lags_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    calls_started: int = 0
    calls_completed: int = 0

    def record(self, event: Event) -> None:
        if isinstance(event, ScoreEvent):
            self.lags_ms.append(event.lag_ms)
        elif isinstance(event, ErrorEvent):
            self.errors[event.code] += 1


class _Soak:
    def __init__(
        self, scorer: WindowScorer, stream: StreamConfig, engine: EngineConfig, options: SoakOptions
    ) -> None:
        self.options = options
        self.pipeline = Pipeline(
            scorer,
            stream,
            replace(engine, max_streams=max(engine.max_streams, options.streams)),
            node="soak",
        )
        self.trace = _Trace()
        self.rng = np.random.default_rng(options.seed)
        self.audio = speech_like(20.0, options.input_rate, options.seed)
        self.chunk = max(1, round(options.chunk_ms * options.input_rate / 1000))
        self.samples: list[MemorySample] = []
        self.port = 0

    def _call_plan(self, slot: int, number: int) -> tuple[str, NDArray[np.float32]]:
        low, high = self.options.call_s
        seconds = float(self.rng.uniform(low, high))
        n = round(seconds * self.options.input_rate)
        offset = int(self.rng.integers(0, len(self.audio)))
        audio = np.resize(np.roll(self.audio, -offset), n)  # loops the 20 s of speech
        return f"soak-{slot}-{number}", audio

    async def _paced(
        self, audio: NDArray[np.float32], stop_at: float, send: Callable[[NDArray[np.float32]], Any]
    ) -> None:
        period = self.chunk / self.options.input_rate
        started = time.monotonic()
        for k, begin in enumerate(range(0, len(audio), self.chunk)):
            due = started + k * period
            if due >= stop_at:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            result = send(audio[begin : begin + self.chunk])
            if asyncio.iscoroutine(result):
                await result

    async def _slot_pipeline(self, slot: int, stop_at: float) -> None:
        number = 0
        while time.monotonic() < stop_at:
            stream_id, audio = self._call_plan(slot, number)
            number += 1
            handle = self.pipeline.open_stream(stream_id, source="soak", sample_rate=self.options.input_rate)
            self.trace.calls_started += 1
            try:
                await self._paced(audio, stop_at, handle.feed)
            finally:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await handle.close()
            self.trace.calls_completed += 1

    async def _slot_websocket(self, slot: int, stop_at: float) -> None:
        number = 0
        while time.monotonic() < stop_at:
            stream_id, audio = self._call_plan(slot, number)
            number += 1
            await self._websocket_call(stream_id, audio, stop_at)
            self.trace.calls_completed += 1

    async def _websocket_call(self, stream_id: str, audio: NDArray[np.float32], stop_at: float) -> None:
        """One ``/v1/ingest`` client: start, paced audio, stop, then wait for the end event."""
        async with connect(f"ws://127.0.0.1:{self.port}/v1/ingest", compression=None) as ws:
            rate = self.options.input_rate
            start = {"type": "start", "stream": stream_id, "encoding": "pcm_s16le", "sample_rate": rate}
            await ws.send(json.dumps(start))
            self.trace.calls_started += 1
            reader = asyncio.create_task(_read_until_end(ws, stream_id), name=f"soak-read {stream_id}")

            async def send(chunk: NDArray[np.float32]) -> None:
                await ws.send(np.clip(np.rint(chunk * 32767.0), -32768, 32767).astype("<i2").tobytes())

            try:
                await self._paced(audio, stop_at, send)
                await ws.send('{"type":"stop"}')
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await reader
            finally:
                reader.cancel()

    async def _watch_scores(self, ready: asyncio.Event) -> None:
        async with connect(f"ws://127.0.0.1:{self.port}/v1/scores", max_queue=None) as ws:
            ready.set()
            try:
                async for message in ws:
                    self.trace.record(parse_event(message))
            except ConnectionClosed as exc:  # dropped as too slow: counted, the soak goes on
                logger.warning("soak: the /v1/scores watcher was disconnected: %s", exc)
                self.trace.errors["watcher_disconnected"] += 1

    async def _watch_hub(self) -> None:
        sub = self.pipeline.hub.subscribe(name="soak-watch", maxsize=SUBSCRIBER_QUEUE)
        try:
            while True:
                self.trace.record(await sub.get())
        finally:
            self.pipeline.hub.unsubscribe(sub)

    def _sample(self, started: float) -> MemorySample:
        counters = self.pipeline.batcher.counters
        sample = MemorySample(
            t_s=round(time.monotonic() - started, 3),
            rss_mb=round(current_rss_mb(), 2),
            live_streams=len(self.pipeline.streams),
            calls_completed=self.trace.calls_completed,
            windows_scored=counters.scored,
            windows_dropped=counters.dropped,
        )
        self.samples.append(sample)
        return sample

    async def _sampler(self, started: float, progress: Progress | None) -> None:
        every = self.options.sample_every_s
        k = 1
        while True:
            await asyncio.sleep(max(0.0, started + k * every - time.monotonic()))
            k += 1
            sample = self._sample(started)
            if progress is not None:
                progress(
                    f"{sample.t_s:8.1f} s  RSS {sample.rss_mb:8.1f} MB  live {sample.live_streams:3d}  "
                    f"calls {sample.calls_completed:5d}  scored {sample.windows_scored:7d}  "
                    f"dropped {sample.windows_dropped:5d}  "
                    f"p99 lag {percentile(self.trace.lags_ms[-2000:], 99):7.1f} ms"
                )

    async def run(self, progress: Progress | None) -> SoakReport:
        from spoofwatch.stream.net.server import SpoofwatchServer

        options = self.options
        await asyncio.to_thread(self._prewarm)
        tasks_before = {t for t in asyncio.all_tasks() if not t.done()}
        worker = asyncio.create_task(self.pipeline.run(), name="soak-worker")
        server: SpoofwatchServer | None = None
        background: list[asyncio.Task[None]] = []
        started = time.monotonic()
        self._sample(started)
        try:
            if options.transport == "websocket":
                server = SpoofwatchServer(self.pipeline, ServerConfig(host="127.0.0.1", port=0))
                await server.start()
                self.port = server.port
                ready = asyncio.Event()
                background.append(asyncio.create_task(self._watch_scores(ready), name="soak-scores"))
                await ready.wait()
            else:
                background.append(asyncio.create_task(self._watch_hub(), name="soak-hub"))
            background.append(asyncio.create_task(self._sampler(started, progress), name="soak-sampler"))
            stop_at = started + options.minutes * 60.0
            slot = self._slot_websocket if options.transport == "websocket" else self._slot_pipeline
            async with asyncio.TaskGroup() as group:
                for i in range(options.streams):
                    group.create_task(self._staggered(slot, i, stop_at), name=f"soak-slot {i}")
            await asyncio.sleep(0.2)  # the watcher reads the last end events
            self._sample(started)
        finally:
            if server is not None:
                await server.stop()
            for task in [*background, worker]:
                task.cancel()
            await asyncio.gather(*background, worker, return_exceptions=True)
        await asyncio.sleep(0)
        left_over = {t for t in asyncio.all_tasks() if not t.done()} - tasks_before - {asyncio.current_task()}
        return self._report(len(left_over))

    def _prewarm(self) -> None:
        """Score full batches before measuring: the allocator's high-water mark for the
        largest batch the engine can form is reached now, not when a load spike first
        fills a batch mid-run (a one-off step in RSS that is no leak)."""
        scorer = self.pipeline.scorer
        batch = self.pipeline.engine_config.max_batch
        one = np.resize(speech_like(2.0, scorer.sample_rate, self.options.seed), scorer.window_samples)
        windows = np.stack([one] * batch).astype(np.float32)
        for _ in range(2):
            if scorer.stream_context() is None:
                scorer.score_windows(windows)
            else:  # the windows as their own companions: the same allocations
                scorer.score_windows(windows, windows)

    async def _staggered(self, slot: Callable[[int, float], Any], index: int, stop_at: float) -> None:
        # Spread call starts over one hop so windows do not all fall due together.
        await asyncio.sleep(index / self.options.streams * self.pipeline.stream_config.hop_s)
        await slot(index, stop_at)

    def _report(self, tasks_left_over: int) -> SoakReport:
        options = self.options
        counters = self.pipeline.batcher.counters
        grown, per_hour, pct_per_hour = memory_growth(self.samples, options.warmup_fraction)
        rss = [s.rss_mb for s in self.samples]
        lags = self.trace.lags_ms
        return SoakReport(
            minutes=options.minutes,
            streams=options.streams,
            transport=options.transport,
            calls_started=self.trace.calls_started,
            calls_completed=self.trace.calls_completed,
            windows_scored=counters.scored,
            windows_dropped=counters.dropped,
            windows_failed=counters.failed,
            error_events=dict(self.trace.errors),
            p50_lag_ms=round(percentile(lags, 50), 2),
            p99_lag_ms=round(percentile(lags, 99), 2),
            max_lag_ms=round(max(lags, default=0.0), 2),
            rss_start_mb=rss[0],
            rss_end_mb=rss[-1],
            rss_peak_mb=max(rss),
            growth_mb=round(grown, 2),
            growth_mb_per_hour=round(per_hour, 2),
            growth_pct_per_hour=round(pct_per_hour, 3),
            memory_flat=abs(pct_per_hour) < options.flat_pct_per_hour,
            live_streams_at_end=len(self.pipeline.streams),
            tasks_left_over=tasks_left_over,
            samples=self.samples,
            setup=_setup(self.pipeline, options),
        )


async def _read_until_end(ws: ClientConnection, stream_id: str) -> None:
    async for message in ws:
        event = parse_event(message)
        if isinstance(event, StreamEvent) and event.stream == stream_id and event.state == "end":
            return


def _setup(pipeline: Pipeline, options: SoakOptions) -> dict[str, Any]:
    scorer = pipeline.scorer
    encoder = getattr(scorer, "encoder", None)
    torch = sys.modules.get("torch")
    return {
        "scorer": encoder.identity.name if encoder is not None else type(scorer).__name__,
        "window_s": pipeline.stream_config.window_s,
        "hop_s": pipeline.stream_config.hop_s,
        "max_batch": pipeline.engine_config.max_batch,
        "input_rate": options.input_rate,
        "chunk_ms": options.chunk_ms,
        "call_s": list(options.call_s),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }


async def run_soak(
    scorer: WindowScorer,
    *,
    minutes: float,
    streams: int,
    stream_config: StreamConfig | None = None,
    engine_config: EngineConfig | None = None,
    options: SoakOptions | None = None,
    progress: Progress | None = None,
) -> SoakReport:
    """Run ``streams`` paced call slots for ``minutes`` and report memory, drops and lag."""
    chosen = replace(options or SoakOptions(), minutes=minutes, streams=streams)
    soak = _Soak(scorer, stream_config or StreamConfig(), engine_config or EngineConfig(), chosen)
    return await soak.run(progress)
