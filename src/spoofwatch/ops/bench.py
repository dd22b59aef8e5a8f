"""``spoofwatch bench``: throughput and latency of the real streaming pipeline.

Three measurements:

* **RTF**: encoder + head compute seconds per second of one stream's audio, i.e. the
  median time of ``score_windows`` on one window divided by the hop (one window per hop).
  For a detector that reads each window's streamed remake, the window's new blocks are
  vocoded in the timed call too, as a lone stream's worker does, and CPU time includes
  the vocoder's processes.
* **Real-time streams**: N synthetic streams fed through the real pipeline (sessions,
  shared batcher, detector, a null subscriber) in 20-100 ms chunks on a monotonic
  schedule, staggered across one hop. A run is *sustained* when no window is dropped or
  fails, the p99 of the score events' ``lag_ms`` is within the bound (1 s) and the
  feeders themselves kept to their schedule. The largest sustained N is searched by
  growing N from an estimate until a run fails, then bisecting.
* **Encoder only** (``--encoder-only``): encoder forward passes alone by batch size, so
  the gain from batching windows across streams is visible.

Timings are medians, and process CPU time per window is reported beside wall time,
because this kind of machine is often shared with other jobs (CPU time is inflated much
less by them, except by OpenMP spin-waiting with 2+ threads); the 1-minute load average
at the start is part of the report.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter

from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import ScoreEvent
from spoofwatch.model.scorer import StreamContext, WindowCompanion, WindowScorer
from spoofwatch.stream.core.windowing import Window
from spoofwatch.stream.engine.hub import Subscription
from spoofwatch.stream.engine.pipeline import Pipeline, StreamHandle

logger = logging.getLogger(__name__)

ENCODER_BATCHES = (1, 2, 4, 8, 16, 32)
GPU_ENCODER_BATCHES = (1, 8, 32, 64, 128, 256)  # a GPU is fed far larger batches than a core
CHUNK_MS = (20, 40, 60, 80, 100)
SINK_QUEUE = 8192
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What to run. ``streams`` None = search for the largest real-time N from an estimate;
    a number = run that N first (its latency is the headline) and search from there
    unless ``search`` is False. ``seconds`` is the length of every run."""

    streams: int | None = None
    seconds: float = 20.0
    search: bool = True
    max_probes: int = 6
    max_streams: int = 1024
    max_lag_ms: float = 1000.0
    input_rate: int = 16000
    chunk_ms: tuple[int, ...] = CHUNK_MS
    rtf_windows: int = 8
    encoder_min_seconds: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.streams is not None and self.streams < 1:
            raise ConfigError(f"streams: expected >= 1, found {self.streams}")
        if not math.isfinite(self.seconds) or self.seconds <= 0:
            raise ConfigError(f"seconds: expected a finite number > 0, found {self.seconds}")
        if self.max_probes < 1 or self.max_streams < 1:
            raise ConfigError(
                f"max_probes and max_streams: expected >= 1, found {self.max_probes}, {self.max_streams}"
            )
        if not self.chunk_ms or min(self.chunk_ms) <= 0:
            raise ConfigError(f"chunk_ms: expected positive chunk lengths, found {self.chunk_ms}")
        if self.rtf_windows < 1:
            raise ConfigError(f"rtf_windows: expected >= 1, found {self.rtf_windows}")


@dataclass(frozen=True)
class StreamRun:
    """One run of N concurrent real-time streams."""

    streams: int
    seconds: float
    windows_scored: int
    windows_dropped: int
    windows_failed: int
    windows_per_s: float
    p50_latency_ms: float
    p99_latency_ms: float
    max_latency_ms: float
    p99_feed_late_ms: float
    mean_batch: float
    engine_busy: float
    cpu_ms_per_window: float
    sustained: bool


@dataclass(frozen=True)
class EncoderTiming:
    """Wall-clock medians, plus median process CPU time per window (all threads)."""

    batch: int
    ms_per_batch: float
    ms_per_window: float
    windows_per_s: float
    speedup_vs_batch_1: float
    cpu_ms_per_window: float


@dataclass
class BenchReport:
    """Everything ``spoofwatch bench --json`` prints; latency fields describe the headline
    run (the ``--streams`` run, else the largest sustained one)."""

    rtf: float
    cpu_rtf: float
    ms_per_window: float
    max_realtime_streams: int | None
    p50_latency_ms: float | None
    p99_latency_ms: float | None
    windows_per_s: float | None
    dropped_windows: int | None
    streams: int | None
    peak_rss_mb: float
    setup: dict[str, Any]
    runs: list[StreamRun] = field(default_factory=list)
    encoder_only: list[EncoderTiming] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.encoder_only:
            del data["encoder_only"]
        return {k: v for k, v in data.items() if v is not None}


# --- synthetic audio -------------------------------------------------------------------


def speech_like(seconds: float, sample_rate: int, seed: int = 0) -> NDArray[np.float32]:
    """Voiced harmonics with a wandering pitch, syllable-rate envelope with pauses,
    noise bursts and a quiet noise floor: cheap audio that passes the speech gate. The floor
    is low-passed as a room's is: white it would be comfort noise to the stream's
    ``quiet_min_flatness`` rule, and its pauses would be spliced out."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = 140.0 + 40.0 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.3))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12) if k * 260 < sample_rate / 2)
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.3)), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.25 * t) > -0.6).astype(np.float64)
    bursts = rng.standard_normal(n) * (np.sin(2 * np.pi * 3.0 * t) > 0.8)
    floor = lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))
    floor *= 0.002 / (np.std(floor) + 1e-12)
    audio = 0.08 * voiced * syllables * pauses + 0.03 * bursts * pauses + floor
    return np.asarray(audio, dtype=np.float32)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# --- compute-only measurements ---------------------------------------------------------


def _windows(scorer: WindowScorer, count: int, seed: int) -> NDArray[np.float32]:
    n = scorer.window_samples
    audio = speech_like(count * n / scorer.sample_rate + 0.1, scorer.sample_rate, seed)
    return np.stack([audio[i * n : (i + 1) * n] for i in range(count)])


def cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the vocoder program)."""
    times = os.times()
    return time.process_time() + times.children_user + times.children_system


def _median_call_s(call: Callable[[], object], min_reps: int, min_seconds: float) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) of one call."""
    call()  # warm-up: first calls allocate and pick kernels
    wall: list[float] = []
    cpu: list[float] = []
    started = time.perf_counter()
    while len(wall) < min_reps or time.perf_counter() - started < min_seconds:
        t0, c0 = time.perf_counter(), cpu_s()
        call()
        wall.append(time.perf_counter() - t0)
        cpu.append(cpu_s() - c0)
    return float(np.median(wall)), float(np.median(cpu))


@dataclass(frozen=True)
class OneStream:
    """One stream's cost: median wall and process CPU time of scoring one window."""

    ms_per_window: float
    cpu_ms_per_window: float
    hop_s: float

    @property
    def rtf(self) -> float:
        return self.ms_per_window / 1000.0 / self.hop_s

    @property
    def cpu_rtf(self) -> float:
        return self.cpu_ms_per_window / 1000.0 / self.hop_s


def measure_one_stream(scorer: WindowScorer, hop_s: float, windows: int = 8, seed: int = 0) -> OneStream:
    """Score ``windows`` windows one per call, as a lone stream sends them (one per hop;
    with its companion made in the call, for a scorer that reads one: the streamed remake's
    new blocks vocoded)."""
    context = scorer.stream_context()
    calls: list[Callable[[], NDArray[np.float64]]]
    if context is None:
        batch = _windows(scorer, windows, seed)
        scorer.score_windows(batch[:1])
        calls = [functools.partial(scorer.score_windows, w[None, :]) for w in batch]
    else:
        calls = _companion_calls(scorer, context, hop_s, windows, seed)
        calls.pop(0)()  # warm-up
    wall: list[float] = []
    cpu: list[float] = []
    for call in calls:
        t0, c0 = time.perf_counter(), cpu_s()
        call()
        wall.append(time.perf_counter() - t0)
        cpu.append(cpu_s() - c0)
    return OneStream(float(np.median(wall)) * 1000.0, float(np.median(cpu)) * 1000.0, hop_s)


def _companion_calls(
    scorer: WindowScorer, context: StreamContext, hop_s: float, windows: int, seed: int
) -> list[Callable[[], NDArray[np.float64]]]:
    """One call per window of a lone stream, in order: make the window's companion (for the
    streamed remake, vocoding the blocks no earlier window covered) and score it."""
    n, rate = scorer.window_samples, scorer.sample_rate
    hop = round(hop_s * rate)
    audio = speech_like((n + windows * hop) / rate + 0.2, rate, seed)
    cut = [Window(i, i * hop, audio[i * hop : i * hop + n], rate, tiled=False) for i in range(windows + 1)]
    pairs = [*context.add(audio, cut), *context.finish([])]

    def score(window: Window, companion: WindowCompanion) -> NDArray[np.float64]:
        return scorer.score_windows(window.samples[None, :], companion.make()[None, :])

    return [functools.partial(score, window, companion) for window, companion in pairs]


def estimate_capacity(
    scorer: WindowScorer, batch: int, hop_s: float, one: OneStream | None = None, seed: int = 0
) -> int:
    """Streams the scorer could serve at ``batch`` windows per call (or one at a time, if
    that measured faster), ignoring all overhead: where the search starts."""
    windows = _windows(scorer, batch, seed)
    call = functools.partial(scorer.score_windows, windows)
    if scorer.stream_context() is not None:
        # The windows as their own companions; the time to make them (the vocoder's) is
        # left out of this estimate (the search measures it).
        call = functools.partial(scorer.score_windows, windows, windows)
    seconds, _ = _median_call_s(call, min_reps=3, min_seconds=0.0)
    per_window = seconds / batch
    if one is not None:
        per_window = min(per_window, one.ms_per_window / 1000.0)
    return max(1, int(hop_s / max(per_window, 1e-9)))


def time_encoder(
    encoder: Any,
    batches: Sequence[int] = ENCODER_BATCHES,
    *,
    num_threads: int = 0,
    min_seconds: float = 1.0,
    min_reps: int = 3,
    seed: int = 0,
) -> list[EncoderTiming]:
    """Median forward time of ``encoder.hidden_states`` (mel + transformer) per batch size."""
    import torch

    if num_threads:
        torch.set_num_threads(num_threads)
    largest = max(batches)
    rate = encoder.identity.sample_rate
    size = encoder.window_samples
    audio = speech_like(largest * size / rate + 0.1, rate, seed)
    windows = torch.from_numpy(np.stack([audio[i * size : (i + 1) * size] for i in range(largest)]))
    timings: list[EncoderTiming] = []
    with torch.inference_mode():
        for batch in batches:
            chunk = windows[:batch]

            def forward(c: Any = chunk) -> object:
                states = encoder.hidden_states(c)
                if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
                    torch.cuda.synchronize()  # CUDA returns before the GPU is done
                return states

            seconds, cpu = _median_call_s(forward, min_reps, min_seconds)
            per_window = seconds / batch
            base = timings[0].ms_per_window / 1000.0 if timings else per_window
            timings.append(
                EncoderTiming(
                    batch=batch,
                    ms_per_batch=seconds * 1000.0,
                    ms_per_window=per_window * 1000.0,
                    windows_per_s=1.0 / per_window,
                    speedup_vs_batch_1=base / per_window,
                    cpu_ms_per_window=cpu / batch * 1000.0,
                )
            )
    return timings


# --- real-time streams through the pipeline --------------------------------------------


@dataclass
class _RunTrace:
    lags_ms: list[float] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)
    first_score_at: float = 0.0
    last_score_at: float = 0.0

    def windows_per_s(self) -> float:
        """Score events per second between the first and the last (steady state)."""
        span = self.last_score_at - self.first_score_at
        return (len(self.lags_ms) - 1) / span if span > 0 else 0.0


async def _drain(sub: Subscription, trace: _RunTrace) -> None:
    """The null sink: consume every event, keep only the score lags."""
    while True:
        event = await sub.get()
        if isinstance(event, ScoreEvent):
            trace.last_score_at = time.monotonic()
            if not trace.lags_ms:
                trace.first_score_at = trace.last_score_at
            trace.lags_ms.append(event.lag_ms)


async def _feed(
    handle: StreamHandle,
    audio: NDArray[np.float32],
    offset: int,
    chunk: int,
    start_at: float,
    stop_at: float,
    trace: _RunTrace,
) -> None:
    """Feed ``chunk`` samples every ``chunk / rate`` seconds from ``start_at`` until ``stop_at``."""
    period = chunk / handle.input_rate
    k = 0
    while (due := start_at + k * period) < stop_at:
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        trace.late_ms.append(max(0.0, time.monotonic() - due) * 1000.0)
        begin = (offset + k * chunk) % (len(audio) - chunk)
        handle.feed(audio[begin : begin + chunk])
        k += 1
    await handle.close()


async def run_streams(
    scorer: WindowScorer,
    n_streams: int,
    seconds: float,
    stream_config: StreamConfig,
    engine_config: EngineConfig,
    options: BenchOptions,
) -> StreamRun:
    """Feed ``n_streams`` real-time synthetic streams for ``seconds`` and measure lag."""
    if seconds <= stream_config.window_s:
        raise ConfigError(
            f"seconds: expected more than one window ({stream_config.window_s} s) per run, found {seconds}"
        )
    engine = replace(engine_config, max_streams=max(engine_config.max_streams, n_streams))
    pipeline = Pipeline(scorer, stream_config, engine, node="bench")
    trace = _RunTrace()
    sub = pipeline.hub.subscribe(name="bench-null-sink", maxsize=SINK_QUEUE)
    rate = options.input_rate
    audio = speech_like(12.0, rate, options.seed)
    rng = np.random.default_rng(options.seed)
    worker = asyncio.create_task(pipeline.run(), name="bench-worker")
    sink = asyncio.create_task(_drain(sub, trace), name="bench-null-sink")
    start_at = time.monotonic() + 0.05
    stop_at = start_at + seconds
    cpu_started = time.process_time()
    try:
        async with asyncio.TaskGroup() as group:
            for i in range(n_streams):
                handle = pipeline.open_stream(f"bench-{i}", source="bench", sample_rate=rate)
                chunk = round(options.chunk_ms[i % len(options.chunk_ms)] * rate / 1000)
                stagger = i / n_streams * stream_config.hop_s
                offset = int(rng.integers(0, len(audio) - chunk))
                group.create_task(
                    _feed(handle, audio, offset, chunk, start_at + stagger, stop_at + stagger, trace),
                    name=f"bench-feed-{i}",
                )
        while not sub.queue.empty():
            await asyncio.sleep(0.001)
    finally:
        for task in (worker, sink):
            task.cancel()
        await asyncio.gather(worker, sink, return_exceptions=True)
    elapsed = max(time.monotonic() - start_at, 1e-9)
    cpu_s = time.process_time() - cpu_started
    counters = pipeline.batcher.counters
    p99_lag = percentile(trace.lags_ms, 99)
    p99_late = percentile(trace.late_ms, 99)
    sustained = (
        counters.dropped == 0
        and counters.failed == 0
        and counters.scored > 0
        and not sub.overflowed
        and p99_lag <= options.max_lag_ms
        and p99_late <= options.max_lag_ms
    )
    return StreamRun(
        streams=n_streams,
        seconds=seconds,
        windows_scored=counters.scored,
        windows_dropped=counters.dropped,
        windows_failed=counters.failed,
        windows_per_s=trace.windows_per_s(),
        p50_latency_ms=percentile(trace.lags_ms, 50),
        p99_latency_ms=p99_lag,
        max_latency_ms=max(trace.lags_ms, default=0.0),
        p99_feed_late_ms=p99_late,
        mean_batch=counters.scored / counters.batches if counters.batches else 0.0,
        engine_busy=counters.busy_s / elapsed,
        cpu_ms_per_window=cpu_s / counters.scored * 1000.0 if counters.scored else 0.0,
        sustained=sustained,
    )


def next_probe(tried: dict[int, bool], max_streams: int) -> int | None:
    """The next N to try given the runs so far, or None when the search has converged.

    Grows by 1.5x past the largest sustained N until a run fails, then bisects until
    the gap is within an eighth of the sustained N (or 1)."""
    ok = [n for n, sustained in tried.items() if sustained]
    bad = [n for n, sustained in tried.items() if not sustained]
    lo = max(ok, default=0)
    hi = min((n for n in bad if n > lo), default=None)
    if hi is None:
        if lo >= max_streams:
            return None
        return min(max_streams, max(lo + 1, math.ceil(lo * 1.5)))
    if hi - lo <= max(1, lo // 8):
        return None
    return (lo + hi) // 2


def search_realtime(
    scorer: WindowScorer,
    stream_config: StreamConfig,
    engine_config: EngineConfig,
    options: BenchOptions,
    first: int,
    progress: Progress | None = None,
) -> list[StreamRun]:
    """Run ``first`` streams, then (if ``options.search``) search for the largest real-time N."""
    runs: list[StreamRun] = []
    tried: dict[int, bool] = {}
    n: int | None = min(first, options.max_streams)
    while n is not None and len(runs) < options.max_probes:
        run = asyncio.run(run_streams(scorer, n, options.seconds, stream_config, engine_config, options))
        runs.append(run)
        tried[n] = run.sustained
        if progress:
            progress(
                f"{n:4d} streams: p50 {run.p50_latency_ms:7.1f} ms  p99 {run.p99_latency_ms:7.1f} ms  "
                f"{run.windows_per_s:6.1f} windows/s  batch {run.mean_batch:4.1f}  "
                f"CPU {run.cpu_ms_per_window:6.1f} ms/window  "
                f"dropped {run.windows_dropped}  {'real time' if run.sustained else 'NOT real time'}"
            )
        if not options.search:
            break
        n = next_probe(tried, options.max_streams)
    return runs


def _setup(scorer: WindowScorer, stream: StreamConfig, engine: EngineConfig) -> dict[str, Any]:
    settings = getattr(scorer, "settings", None)
    encoder = getattr(scorer, "encoder", None)
    torch = sys.modules.get("torch")  # only report it if the scorer uses torch at all
    threads = torch.get_num_threads() if torch is not None else None
    device = str(getattr(settings, "device", "cpu"))
    return {
        "window_s": stream.window_s,
        "hop_s": stream.hop_s,
        "max_batch": engine.max_batch,
        "max_wait_ms": engine.max_wait_ms,
        "queue_windows": engine.queue_windows,
        "workers": engine.workers,
        "torch_threads": getattr(settings, "num_threads", 0) or threads,
        "quantization": getattr(settings, "quantization", "none"),
        "backend": getattr(settings, "backend", "torch"),
        "device": device,
        "gpu": _gpu_name(device),
        "encoder": encoder.identity.name if encoder is not None else type(scorer).__name__,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }


def _gpu_name(device: str) -> str | None:
    """The GPU's name when the encoder runs on one (so a report says which card it timed)."""
    if not device.startswith("cuda"):
        return None
    import torch

    return str(torch.cuda.get_device_name(torch.device(device)))


def run_bench(
    scorer: WindowScorer,
    stream_config: StreamConfig,
    engine_config: EngineConfig,
    options: BenchOptions,
    progress: Progress | None = None,
) -> BenchReport:
    """RTF, then real-time streams (one run at ``options.streams`` or a search)."""
    setup = _setup(scorer, stream_config, engine_config)
    setup["input_rate"] = options.input_rate
    setup["chunk_ms"] = list(options.chunk_ms)  # how the streams were fed: part of what is measured
    one = measure_one_stream(scorer, stream_config.hop_s, options.rtf_windows, options.seed)
    if progress:
        progress(
            f"one stream: {one.ms_per_window:.1f} ms per window, RTF {one.rtf:.4f} "
            f"(CPU {one.cpu_ms_per_window:.1f} ms, {one.cpu_rtf:.4f})"
        )
    first = options.streams
    if first is None:
        estimate = estimate_capacity(scorer, engine_config.max_batch, stream_config.hop_s, one, options.seed)
        first = max(1, int(estimate * 0.75))
        if progress:
            progress(f"compute-only estimate: {estimate} streams; starting the search at {first}")
    runs = search_realtime(scorer, stream_config, engine_config, options, first, progress)
    sustained = [r for r in runs if r.sustained]
    best = max(sustained, key=lambda r: r.streams, default=None)
    headline = runs[0] if options.streams is not None else (best or min(runs, key=lambda r: r.streams))
    return BenchReport(
        rtf=one.rtf,
        cpu_rtf=one.cpu_rtf,
        ms_per_window=one.ms_per_window,
        max_realtime_streams=best.streams if best else 0,
        p50_latency_ms=headline.p50_latency_ms,
        p99_latency_ms=headline.p99_latency_ms,
        windows_per_s=headline.windows_per_s,
        dropped_windows=headline.windows_dropped,
        streams=headline.streams,
        peak_rss_mb=peak_rss_mb(),
        setup=setup,
        runs=runs,
    )


def run_encoder_only(
    detector: Any,
    stream_config: StreamConfig,
    engine_config: EngineConfig,
    options: BenchOptions,
    batches: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> BenchReport:
    """Encoder forward time by batch size (``ENCODER_BATCHES``, on a GPU
    ``GPU_ENCODER_BATCHES``), plus the one-stream RTF of the whole detector."""
    setup = _setup(detector, stream_config, engine_config)
    if batches is None:
        batches = GPU_ENCODER_BATCHES if str(setup["device"]).startswith("cuda") else ENCODER_BATCHES
    threads = int(getattr(detector.settings, "num_threads", 0))
    timings = time_encoder(
        detector.encoder,
        batches,
        num_threads=threads,
        min_seconds=options.encoder_min_seconds,
        seed=options.seed,
    )
    for timing in timings:
        if progress:
            progress(
                f"batch {timing.batch:3d}: {timing.ms_per_batch:8.1f} ms per batch  "
                f"{timing.ms_per_window:6.1f} ms per window  {timing.windows_per_s:6.1f} windows/s  "
                f"x{timing.speedup_vs_batch_1:.2f}  CPU {timing.cpu_ms_per_window:6.1f} ms per window"
            )
    one = measure_one_stream(detector, stream_config.hop_s, options.rtf_windows, options.seed)
    best_rate = max(t.windows_per_s for t in timings)
    return BenchReport(
        rtf=one.rtf,
        cpu_rtf=one.cpu_rtf,
        ms_per_window=one.ms_per_window,
        max_realtime_streams=None,
        p50_latency_ms=None,
        p99_latency_ms=None,
        windows_per_s=None,
        dropped_windows=None,
        streams=None,
        peak_rss_mb=peak_rss_mb(),
        setup={**setup, "compute_only_streams": int(best_rate * stream_config.hop_s)},
        encoder_only=timings,
    )
