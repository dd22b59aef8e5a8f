"""Progress of long loops: a bar on a terminal, plain periodic log lines otherwise.

A bar redrawn with carriage returns fills a log file (a batch job's stderr) with thousands
of partial lines; there a line every ``every_s`` seconds says how far the loop is.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

logger = logging.getLogger(__name__)

T = TypeVar("T")


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress(
    iterable: Iterable[T],
    *,
    total: int | None,
    desc: str,
    unit: str,
    enabled: bool = True,
    every_s: float = 60.0,
) -> Iterator[T]:
    """``iterable`` with a bar (stderr is a terminal) or an INFO line every ``every_s``
    seconds and one at the end (otherwise); nothing when not ``enabled``."""
    if not enabled:
        yield from iterable
        return
    if on_terminal():
        yield from tqdm(iterable, total=total, desc=desc, unit=unit)
        return
    start = last = time.monotonic()
    done = 0
    for value in iterable:
        yield value
        done += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            logger.info("%s: %s", desc, _line(done, total, unit, now - start))
    logger.info("%s: done, %s", desc, _line(done, total, unit, time.monotonic() - start))


def _line(done: int, total: int | None, unit: str, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    text = f"{done}/{total if total is not None else '?'} {unit}s, {elapsed:.0f} s, {rate:.2f} {unit}/s"
    if total is not None and rate > 0 and done < total:
        text += f", about {(total - done) / rate:.0f} s left"
    return text
