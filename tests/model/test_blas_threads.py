"""Small streaming products run on one BLAS thread, and the thread count comes back."""

from __future__ import annotations

import threading

from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

from spoofwatch.model.blas_threads import single_blas_thread


def blas_threads() -> list[int]:
    """Thread counts of numpy's BLAS (the heads' products), as the library reports them."""
    return [
        int(info["num_threads"])
        for info in threadpool_info()
        if info["user_api"] == "blas" and "numpy" in info["filepath"]
    ]


def test_the_block_runs_on_one_blas_thread_and_the_count_is_restored() -> None:
    before = blas_threads()
    assert before, "numpy should load a BLAS library"
    with single_blas_thread():
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before


def test_two_workers_at_once_leave_the_count_as_it_was() -> None:
    """Inference workers call it at once; the lock keeps one from restoring the count while
    the other is inside, so the count afterwards is the one before."""
    before = blas_threads()
    inside = 0

    def worker() -> None:
        nonlocal inside
        for _ in range(200):
            with single_blas_thread():
                inside += 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside == 800 and blas_threads() == before
