"""Progress of long loops: a tqdm bar on a terminal, periodic plain lines elsewhere (logs,
CI), where a bar's carriage returns would make one endless line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
PLAIN_EVERY_S = 30.0


def progress(
    items: Iterable[T],
    *,
    desc: str,
    unit: str = "it",
    total: int | None = None,
    enabled: bool = True,
    out: TextIO | None = None,
    every_s: float = PLAIN_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """``items``, reporting progress on ``out`` (default stderr) while they are consumed."""
    if not enabled:
        yield from items
        return
    stream = out if out is not None else sys.stderr
    if stream.isatty():
        yield from tqdm(items, desc=desc, unit=unit, total=total, file=stream)
        return
    if total is None and isinstance(items, Sized):
        total = len(items)
    of = f"/{total}" if total is not None else ""
    started = last = clock()
    done = 0
    for item in items:
        yield item
        done += 1
        now = clock()
        if now - last >= every_s:
            last = now
            share = f" ({100 * done / total:.0f} %)" if total else ""
            print(f"{desc}: {done}{of} {unit}{share}, {now - started:.0f} s", file=stream, flush=True)
    print(f"{desc}: {done}{of} {unit} done in {clock() - started:.0f} s", file=stream, flush=True)
