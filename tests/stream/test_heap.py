"""Giving free heap pages back to the OS, and the batcher's periodic trim."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from numpy.typing import NDArray

import spoofwatch.stream.engine.batcher as batcher_module
from spoofwatch.config import ConfigError, EngineConfig
from spoofwatch.stream.core.windowing import Window
from spoofwatch.stream.engine.batcher import Batcher, WindowJob
from spoofwatch.stream.engine.heap import can_release_free_heap


class SlowScorer:
    sample_rate = 16000
    window_samples = 4
    threshold = 0.5

    def __init__(self, delay_s: float = 0.01) -> None:
        self.delay_s = delay_s

    def score_windows(self, windows: NDArray[np.float32]) -> NDArray[np.float64]:
        time.sleep(self.delay_s)
        return windows[:, 0].astype(np.float64)


def job(stream: object, stream_no: int, index: int) -> WindowJob:
    samples = np.full(4, stream_no, dtype=np.float32)
    return WindowJob(stream, Window(index, index * 4, samples, 16000, tiled=False))


glibc = pytest.mark.skipif(not can_release_free_heap(), reason="needs glibc's malloc_trim")

# Fills 200 MB of heap with 64 kB blocks (below glibc's mmap threshold), frees all but the
# last (which pins the top of the heap, so free() alone cannot shrink it) and prints the
# resident MB before and after release_free_heap().
_FRAGMENTED_HEAP = textwrap.dedent(
    """
    import ctypes, ctypes.util, os
    from spoofwatch.stream.engine.heap import release_free_heap
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    blocks = [libc.malloc(65536) for _ in range(3200)]
    for b in blocks:
        ctypes.memset(b, 1, 65536)
    for b in blocks[:-1]:
        libc.free(b)
    before = rss()
    print(before, rss() if not release_free_heap() else rss())
    """
)


@glibc
def test_release_free_heap_returns_freed_pages_to_the_os() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True, check=True
    ).stdout
    before, after = (float(x) for x in out.split())
    assert before - after > 150, f"resident MB before/after the trim: {before:.0f} / {after:.0f}"


class CountingTrim:
    def __init__(self) -> None:
        self.calls = 0
        self.threads: set[str] = set()

    def __call__(self) -> bool:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        return True


def run(
    trim_interval_s: float, monkeypatch: pytest.MonkeyPatch, idle_s: float, rounds: int = 3
) -> tuple[Batcher, CountingTrim]:
    trim = CountingTrim()
    monkeypatch.setattr(batcher_module, "release_free_heap", trim)
    monkeypatch.setattr(batcher_module, "can_release_free_heap", lambda: True)
    scored: list[float] = []

    async def body() -> Batcher:
        async def on_result(job: WindowJob, score: float | None, error: str | None) -> None:
            assert error is None and score is not None
            scored.append(score)

        batcher = Batcher(
            SlowScorer(0.01),
            on_result,
            max_batch=4,
            max_wait_ms=0,
            workers=2,
            trim_interval_s=trim_interval_s,
        )
        worker = asyncio.create_task(batcher.run())
        streams = [object() for _ in range(4)]
        for index in range(rounds):
            for n, stream in enumerate(streams):
                batcher.submit_nowait(job(stream, n, index))
            await asyncio.sleep(0.05)
        await asyncio.sleep(idle_s)
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
        return batcher

    batcher = asyncio.run(body())
    assert len(scored) == 4 * rounds
    return batcher, trim


def test_batcher_trims_once_idle_after_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    batcher, trim = run(0.3, monkeypatch, idle_s=1.0)
    # Scoring took ~0.15 s (< interval), then the queue sat idle: one trim, no more
    # while nothing new was scored.
    assert trim.calls == 1
    assert batcher.counters.heap_trims == 1
    assert all(name.startswith("spoofwatch-infer") for name in trim.threads)


def test_batcher_trims_at_most_once_per_interval_while_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    batcher, trim = run(0.1, monkeypatch, idle_s=0.0, rounds=12)  # ~0.6 s of scoring
    assert 2 <= trim.calls <= 7
    assert batcher.counters.heap_trims == trim.calls


def test_batcher_never_trims_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    batcher, trim = run(0.0, monkeypatch, idle_s=0.3)
    assert trim.calls == 0 and batcher.counters.heap_trims == 0


def test_batcher_refuses_a_negative_trim_interval() -> None:
    async def on_result(job: WindowJob, score: float | None, error: str | None) -> None: ...

    with pytest.raises(ValueError, match="trim_interval_s"):
        Batcher(SlowScorer(), on_result, trim_interval_s=-1.0)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_engine_config_refuses_a_bad_heap_trim_interval(value: float) -> None:
    with pytest.raises(ConfigError, match="heap_trim_interval_s"):
        EngineConfig(heap_trim_interval_s=value)


def test_engine_default_trims_every_minute() -> None:
    assert EngineConfig().heap_trim_interval_s == 60.0
