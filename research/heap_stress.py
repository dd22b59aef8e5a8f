"""Resident memory of the shipped detector scored flat out from two threads, three ways.

usage: PYTHONPATH=src python research/heap_stress.py plain|mallopt|trim [SECONDS]

Two inference threads (one torch thread each, as the server's default engine) score random
batches of 1-16 windows at random levels for SECONDS (default 420). Every 15 s both threads
are drained and the idle resident memory is printed with the windows scored so far.
- plain: glibc as it comes;
- mallopt: mmap threshold fixed at 1 MB and at most 2 arenas (every large tensor mmapped);
- trim: malloc_trim(0) at each sample (spoofwatch.stream.engine.heap.release_free_heap), as the
  server's batcher does every engine.heap_trim_interval_s.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="plain", choices=("plain", "mallopt", "trim"))
    parser.add_argument("seconds", nargs="?", type=float, default=420.0)
    args = parser.parse_args()
    mode, seconds = args.mode, args.seconds
    if mode == "mallopt":
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        m_mmap_threshold, m_arena_max = -3, -8
        libc.mallopt(m_mmap_threshold, 1 << 20)
        libc.mallopt(m_arena_max, 2)
    # Imported only now: the allocator settings above must come before torch allocates.
    from spoofwatch.model.artifact import load_detector
    from spoofwatch.stream.engine.heap import release_free_heap

    detector = load_detector(num_threads=1, max_batch=16)

    def score_random_batch(seed: int) -> int:
        rng = np.random.default_rng(seed)
        size = int(rng.integers(1, 17))
        windows = rng.standard_normal((size, detector.window_samples)) * rng.uniform(0.001, 0.3)
        detector.score_windows(windows.astype(np.float32))
        return size

    started = last = time.monotonic()
    scored = seed = 0
    print(f"{mode}: {0:5.0f} s  idle RSS {rss_mb():7.1f} MB", flush=True)
    with ThreadPoolExecutor(2) as pool:
        pending: list[Future[int]] = []
        while time.monotonic() - started < seconds:
            while len(pending) < 4:
                pending.append(pool.submit(score_random_batch, seed))
                seed += 1
            scored += pending.pop(0).result()
            if time.monotonic() - last >= 15:
                scored += sum(f.result() for f in pending)
                pending = []
                trim_ms = ""
                if mode == "trim":
                    t = time.perf_counter()
                    release_free_heap()
                    trim_ms = f"  trim {1e3 * (time.perf_counter() - t):.0f} ms"
                last = time.monotonic()
                elapsed = last - started
                print(
                    f"{mode}: {elapsed:5.0f} s  idle RSS {rss_mb():7.1f} MB  windows {scored}"
                    f"  ({scored / elapsed:.1f}/s){trim_ms}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
