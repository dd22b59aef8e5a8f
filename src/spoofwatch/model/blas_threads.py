"""Run small matrix products on one BLAS thread.

A streaming head multiplies a few windows' features by its weights (16 × 5,280 by 5,280 ×
256 for the MLP head): about 0.3 ms of work, after which OpenBLAS's other threads spin,
waiting for more, for some 20 ms of CPU per call (measured with `spoofwatch bench`: the MLP
card used twice the CPU of the logistic one until this). One thread does such a product as
fast and leaves nothing spinning. The thread count is process-wide, so a lock keeps two
inference workers from restoring it under each other; big products (training, evaluation)
keep every thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LOCK = threading.Lock()
_controllers: list[Any] | None = None


def _blas_controllers() -> list[Any]:
    # Looked up once: a lookup scans every loaded library (about 3 ms beside torch), and
    # numpy's BLAS, the one the heads' products use, is loaded with numpy.
    global _controllers
    if _controllers is None:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

        _controllers = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _controllers


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """The block's BLAS calls on one thread; the previous thread counts restored after it."""
    with _LOCK:
        libraries = _blas_controllers()
        before = [lib.get_num_threads() for lib in libraries]
        for lib in libraries:
            lib.set_num_threads(1)
        try:
            yield
        finally:
            for lib, count in zip(libraries, before, strict=True):
                lib.set_num_threads(count)
