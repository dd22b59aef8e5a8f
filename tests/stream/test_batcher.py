"""Batcher with several inference workers: both run at once, no stream's windows overtake."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from numpy.typing import NDArray

from spoofwatch.stream.core.windowing import Window
from spoofwatch.stream.engine.batcher import Batcher, WindowJob

SAMPLES = 16


class SlowScorer:
    """Scores a window as its first sample; records which (stream, index) pairs each call
    held and how many calls overlapped."""

    sample_rate = 16000
    window_samples = SAMPLES
    threshold = 0.5

    def __init__(self, delay_s: float = 0.03) -> None:
        self.delay_s = delay_s
        self.calls: list[list[tuple[int, int]]] = []
        self.active = 0
        self.max_active = 0
        self.overlaps = 0  # a stream in two calls at once
        self._busy_streams: set[int] = set()
        self._lock = threading.Lock()

    def score_windows(self, windows: NDArray[np.float32]) -> NDArray[np.float64]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append([(int(w[0]), int(w[1])) for w in windows])
            streams = {int(w[0]) for w in windows}
            self.overlaps += len(streams & self._busy_streams)
            self._busy_streams |= streams
        time.sleep(self.delay_s)
        with self._lock:
            self.active -= 1
            self._busy_streams -= streams
        return windows[:, 0].astype(np.float64)


def job(stream: object, stream_no: int, index: int) -> WindowJob:
    samples = np.zeros(SAMPLES, dtype=np.float32)
    samples[0], samples[1] = stream_no, index
    return WindowJob(stream, Window(index, index * SAMPLES, samples, 16000, tiled=False))


def run_batcher(
    workers: int, jobs_per_stream: int, n_streams: int, max_batch: int
) -> tuple[SlowScorer, dict[int, list[int]]]:
    scorer = SlowScorer()
    results: dict[int, list[int]] = {n: [] for n in range(n_streams)}
    done = asyncio.Event()
    total = jobs_per_stream * n_streams

    async def body() -> None:
        async def on_result(job: WindowJob, score: float | None, error: str | None) -> None:
            assert error is None and score is not None
            results[int(score)].append(job.window.index)
            if sum(len(v) for v in results.values()) == total:
                done.set()

        batcher = Batcher(scorer, on_result, max_batch=max_batch, max_wait_ms=0, workers=workers)
        worker = asyncio.create_task(batcher.run())
        streams = [object() for _ in range(n_streams)]
        for index in range(jobs_per_stream):
            for n, stream in enumerate(streams):
                batcher.submit_nowait(job(stream, n, index))
            await asyncio.sleep(0.005)
        await asyncio.wait_for(done.wait(), 20)
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker

    asyncio.run(body())
    return scorer, results


@pytest.mark.parametrize(("n_streams", "max_batch"), [(6, 2), (1, 1), (3, 4)])
def test_two_workers_score_at_once_and_keep_each_streams_order(n_streams: int, max_batch: int) -> None:
    scorer, results = run_batcher(workers=2, jobs_per_stream=12, n_streams=n_streams, max_batch=max_batch)
    assert scorer.overlaps == 0
    if n_streams > max_batch:  # more streams than one batch holds: the second worker helps
        assert scorer.max_active == 2
    for windows in results.values():
        assert windows == list(range(12))
    # A window is only scored once its stream's earlier window has come back.
    seen: dict[int, int] = {}
    for call in scorer.calls:
        for stream_no, index in call:
            assert seen.get(stream_no, -1) == index - 1
            seen[stream_no] = index


def test_one_worker_batches_several_windows_of_one_stream() -> None:
    scorer, results = run_batcher(workers=1, jobs_per_stream=10, n_streams=1, max_batch=8)
    assert scorer.max_active == 1
    assert results[0] == list(range(10))
    assert max(len(call) for call in scorer.calls) > 1  # offline replay still batches


def test_workers_must_be_positive() -> None:
    async def on_result(job: WindowJob, score: float | None, error: str | None) -> None:
        return None

    with pytest.raises(ValueError, match="at least 1"):
        Batcher(SlowScorer(), on_result, workers=0)
