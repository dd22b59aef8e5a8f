"""The shared inference engine: one bounded queue, worker threads, batches across streams.

The model never runs on the event loop. Windows from all live streams wait in one
bounded queue; a worker takes up to ``max_batch`` of them (waiting at most
``max_wait_ms`` for a batch to fill), scores them in a thread and hands each result
back in submission order. With several workers (``workers``; on two cores, two workers
of one torch thread each keep both cores busy through the single-threaded parts of a
forward pass), a stream never has two windows in flight at once, so each stream's
results still arrive in order. When the queue is full, live sources drop the oldest
queued window (policy ``DROP_OLDEST``, counted); offline replay waits instead.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import SpoofwatchError
from spoofwatch.model.scorer import FeatureScorer, WindowCompanion, WindowScorer
from spoofwatch.stream.core.windowing import Window
from spoofwatch.stream.engine.heap import can_release_free_heap, release_free_heap

logger = logging.getLogger(__name__)

DROP_OLDEST = "drop-oldest"


@dataclass(eq=False)
class WindowJob:
    """A window waiting to be scored; ``ready_at`` is when its last sample (or the last
    sample its companion needs) arrived. ``companion``: for a scorer that reads a second
    input beside each window (``model.scorer.StreamContext``), what it is made from."""

    stream: Any
    window: Window
    ready_at: float = field(default_factory=time.monotonic)
    companion: WindowCompanion | None = None
    # Set when scored: the card that scored it (the batcher's ``card`` when its batch
    # started) and, with ``keep_features``, its pooled features (model.scorer.FeatureScorer)
    # (a float32 copy of its row).
    card: Any = None
    features: NDArray[np.float32] | None = None


def companions_of(
    batch: list[WindowJob], pool: ThreadPoolExecutor
) -> tuple[NDArray[np.float32], dict[int, str]]:
    """Each job's companion input, and the reason for each job (by index) whose companion
    failed: one stream's failure must not fail the other streams' windows in the batch.
    Runs in a worker: each stream's jobs in order (they may share its state), the
    streams side by side on ``pool``."""
    by_stream: dict[int, list[int]] = collections.defaultdict(list)
    for i, job in enumerate(batch):
        by_stream[id(job.stream)].append(i)
    out = np.empty((len(batch), len(batch[0].window.samples)), dtype=np.float32)
    failed: dict[int, str] = {}

    def one_stream(indices: list[int]) -> None:
        for i in indices:
            companion = batch[i].companion
            if companion is None:
                raise ValueError("a batch that needs companions holds a window without one")
            try:
                out[i] = companion.make()
            except SpoofwatchError as exc:
                failed[i] = str(exc)

    groups = list(by_stream.values())
    if len(groups) == 1:
        one_stream(groups[0])
    else:
        list(pool.map(one_stream, groups))
    return out, failed


ResultCallback = Callable[[WindowJob, float | None, str | None], Awaitable[None]]


@dataclass
class BatcherCounters:
    submitted: int = 0
    scored: int = 0
    dropped: int = 0
    batches: int = 0
    failed: int = 0
    busy_s: float = 0.0
    heap_trims: int = 0


class Batcher:
    """Bounded window queue plus ``workers`` inference workers."""

    def __init__(
        self,
        scorer: WindowScorer,
        on_result: ResultCallback,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 20.0,
        max_queue: int = 512,
        workers: int = 1,
        trim_interval_s: float = 0.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers: expected at least 1, found {workers}")
        if not trim_interval_s >= 0:
            raise ValueError(f"trim_interval_s: expected seconds >= 0 (0 = never), found {trim_interval_s}")
        self.scorer = scorer
        self.card: Any = None  # what names ``scorer`` on results (WindowJob.card)
        self.keep_features = False  # hand back pooled features with scores when the scorer can
        self.on_result = on_result
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.counters = BatcherCounters()
        self._queue: collections.deque[WindowJob] = collections.deque()
        self._has_work = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.workers = workers
        self._in_flight: set[int] = set()  # id() of streams with a batch being scored
        self._freed = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spoofwatch-infer")
        # Streams' companions side by side (companions_of; the resynthesis detector's
        # vocoder runs in its own processes); its threads start only when used.
        self._companion_pool = ThreadPoolExecutor(
            max_workers=2 * (os.cpu_count() or 1), thread_name_prefix="spoofwatch-companion"
        )
        self._on_drop: list[Callable[[WindowJob], None]] = []
        # Free heap pages go back to the OS at most every trim_interval_s, after batches
        # were scored since the last trim, or once the queue has been idle that long
        # (see spoofwatch.stream.engine.heap).
        self.trim_interval_s = trim_interval_s if can_release_free_heap() else 0.0
        self._last_trim = time.monotonic()
        self._scored_since_trim = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def on_drop(self, callback: Callable[[WindowJob], None]) -> None:
        self._on_drop.append(callback)

    def submit_nowait(self, job: WindowJob) -> None:
        """Live sources: never wait; drop the oldest queued window when full."""
        self.counters.submitted += 1
        if len(self._queue) >= self.max_queue:
            dropped = self._queue.popleft()
            self.counters.dropped += 1
            for callback in self._on_drop:
                callback(dropped)
        self._queue.append(job)
        self._has_work.set()
        if len(self._queue) >= self.max_queue:
            self._space.clear()

    def discard(self, stream: Any) -> int:
        """Drop the queued windows of ``stream`` (it ended without waiting for them);
        counted as dropped, with the drop callbacks run. Returns how many."""
        dropped = [job for job in self._queue if job.stream is stream]
        if not dropped:
            return 0
        self._queue = collections.deque(job for job in self._queue if job.stream is not stream)
        self.counters.dropped += len(dropped)
        for job in dropped:
            for callback in self._on_drop:
                callback(job)
        if len(self._queue) < self.max_queue:
            self._space.set()
        return len(dropped)

    async def submit(self, job: WindowJob) -> None:
        """Offline replay: wait for room instead of dropping."""
        while len(self._queue) >= self.max_queue:
            self._space.clear()
            await self._space.wait()
        self.submit_nowait(job)

    async def run(self) -> None:
        """The workers; runs until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                for n in range(self.workers):
                    group.create_task(self._work(), name=f"spoofwatch-infer-{n}")
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._companion_pool.shutdown(wait=False, cancel_futures=True)

    def _take_batch(self) -> list[WindowJob]:
        """Up to max_batch queued jobs in queue order, passing over streams that another
        worker is scoring, so no stream's windows overtake each other."""
        if not self._in_flight:
            return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        batch: list[WindowJob] = []
        left: collections.deque[WindowJob] = collections.deque()
        for job in self._queue:
            if len(batch) < self.max_batch and id(job.stream) not in self._in_flight:
                batch.append(job)
            else:
                left.append(job)
        self._queue = left
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.trim_interval_s > 0 and not self._has_work.is_set():
                try:  # asyncio.timeout, not wait_for: no extra task per idle wait
                    async with asyncio.timeout(self.trim_interval_s):
                        await self._has_work.wait()
                except TimeoutError:
                    await self._trim_heap(loop)
                    continue
            await self._has_work.wait()
            if len(self._queue) < self.max_batch and self.max_wait_s > 0:
                deadline = self._queue[0].ready_at + self.max_wait_s if self._queue else 0.0
                delay = deadline - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            batch = self._take_batch()
            if not self._queue:
                self._has_work.clear()
            self._space.set()
            if not batch:
                if self._queue:  # everything queued belongs to streams in flight
                    self._freed.clear()
                    await self._freed.wait()
                continue
            streams = {id(job.stream) for job in batch}
            self._in_flight |= streams
            try:
                await self._score(loop, batch)
            finally:
                self._in_flight -= streams
                self._freed.set()
            await self._trim_heap(loop)

    async def _trim_heap(self, loop: asyncio.AbstractEventLoop) -> None:
        """Release free heap pages if batches were scored and trim_interval_s has passed.
        The check and the claim run on the event loop, so two workers never both trim."""
        if not (self.trim_interval_s > 0 and self._scored_since_trim):
            return
        if time.monotonic() - self._last_trim < self.trim_interval_s:
            return
        self._scored_since_trim = False
        self._last_trim = time.monotonic()
        if await loop.run_in_executor(self._executor, release_free_heap):
            self.counters.heap_trims += 1

    def swap(self, scorer: WindowScorer, card: Any) -> None:
        """Score the batches that start from now on with ``scorer`` (batches being scored
        finish with the one they started with); call on the event loop."""
        self.scorer, self.card = scorer, card

    def _score_batch(
        self, batch: list[WindowJob], scorer: WindowScorer
    ) -> tuple[NDArray[np.float64], dict[int, str]]:
        """Scores of the jobs that could be scored, in order, and why the others could not."""
        windows = np.stack([job.window.samples for job in batch])
        companions: NDArray[np.float32] | None = None
        failed: dict[int, str] = {}
        ok = list(range(len(batch)))
        if batch[0].companion is not None:
            companions, failed = companions_of(batch, self._companion_pool)
            ok = [i for i in range(len(batch)) if i not in failed]
            if not ok:
                return np.zeros(0, dtype=np.float64), failed
            windows, companions = windows[ok], companions[ok]
        if self.keep_features and isinstance(scorer, FeatureScorer):
            scores, features = scorer.score_windows_with_features(windows, companions)
            # A copy per row (in the worker, off the event loop), so a kept row does not
            # hold its whole batch's matrix.
            for i, row in zip(ok, np.asarray(features, dtype=np.float32), strict=True):
                batch[i].features = row.copy()
            return scores, failed
        if companions is None:
            return scorer.score_windows(windows), failed
        return scorer.score_windows(windows, companions), failed

    async def _score(self, loop: asyncio.AbstractEventLoop, batch: list[WindowJob]) -> None:
        started = time.perf_counter()
        scorer, card = self.scorer, self.card  # the card current when the batch starts
        for job in batch:
            job.card = card
        try:
            scores, failed = await loop.run_in_executor(self._executor, self._score_batch, batch, scorer)
        except Exception as exc:  # a model failure must not kill the server; report per window
            logger.exception("inference failed for a batch of %d windows", len(batch))
            self.counters.failed += len(batch)
            for job in batch:
                await self.on_result(job, None, f"inference failed: {exc}")
            return
        self.counters.busy_s += time.perf_counter() - started
        self.counters.batches += 1
        self.counters.scored += len(batch) - len(failed)
        self.counters.failed += len(failed)
        self._scored_since_trim = True
        if failed:
            first = next(iter(failed.values()))
            logger.warning("%d of %d windows could not be scored: %s", len(failed), len(batch), first)
        scored = iter(scores)
        for i, job in enumerate(batch):
            if i in failed:
                await self.on_result(job, None, failed[i])
            else:
                await self.on_result(job, float(next(scored)), None)
