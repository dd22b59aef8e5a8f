"""Progress: a tqdm bar on a terminal, a plain line every few seconds otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_EVERY_S = 15.0


def progress(items: Iterable[T], total: int, desc: str) -> Iterator[T]:
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, unit="file", leave=False)
        return
    last = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= _EVERY_S:
            print(f"{desc}: {i}/{total}", file=sys.stderr, flush=True)
            last = now
