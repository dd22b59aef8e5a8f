"""Audio file source: replay a file into the pipeline as one stream.

``realtime=True`` delivers each chunk when its last sample would have arrived from a
live source (deadlines come from the sample count and one monotonic start time, so
sleeping late never accumulates drift) and feeds it the live way (windows may drop when
the engine is saturated). ``realtime=False`` replays as fast as the engine scores,
waiting for queue room instead of dropping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.errors import ConfigError
from spoofwatch.stream.engine.pipeline import Pipeline, StreamHandle

logger = logging.getLogger(__name__)

# An interrupted source still waits this long for its last windows to be scored.
CLOSE_TIMEOUT_S: Final = 5.0


async def run_file_source(
    pipeline: Pipeline,
    path: str | os.PathLike[str],
    *,
    stream_id: str | None = None,
    realtime: bool = True,
    chunk_s: float = 0.02,
    loop: bool = False,
) -> None:
    """Feed ``path`` (any format ``load_audio`` reads) as stream ``stream_id`` (default:
    the file name without extension), then close the stream. With ``loop`` the file
    repeats as one continuous stream until the task is cancelled."""
    if not (math.isfinite(chunk_s) and chunk_s > 0):
        raise ConfigError(f"chunk_s: expected a positive number of seconds, found {chunk_s!r}")
    sample_rate = pipeline.scorer.sample_rate
    clip = await asyncio.to_thread(load_audio, path, sample_rate)
    chunk = max(1, round(chunk_s * sample_rate))
    handle = pipeline.open_stream(
        stream_id or Path(path).stem,
        source=f"file:{os.fspath(path)}",
        sample_rate=sample_rate,
        trusted=True,  # a local file, looped or not, is not bound by max_stream_s
    )
    clock = asyncio.get_running_loop()
    started = clock.time()
    sent = 0
    try:
        while True:
            for start in range(0, len(clip.samples), chunk):
                block = clip.samples[start : start + chunk]
                sent += len(block)
                if realtime:
                    await asyncio.sleep(max(0.0, started + sent / sample_rate - clock.time()))
                    handle.feed(block)
                else:
                    await _feed_wait_uninterrupted(handle, block)
                    await asyncio.sleep(0)  # feed_wait returns at once while the queue has room
            if not loop:
                break
    except BaseException as exc:
        await close_interrupted(handle, exc)
        raise
    await handle.close()


async def _feed_wait_uninterrupted(handle: StreamHandle, block: NDArray[np.float32]) -> None:
    """``feed_wait`` that finishes queueing its windows even when the task is cancelled.

    A ``feed_wait`` cut short leaves windows counted as pending that never reach the queue,
    and ``close()`` would then wait for them until it times out.
    """
    feeding = asyncio.ensure_future(handle.feed_wait(block))
    try:
        await asyncio.shield(feeding)
    except asyncio.CancelledError:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.shield(feeding)
        raise


async def close_interrupted(handle: StreamHandle, exc: BaseException) -> None:
    """Close a stream whose source stopped early, without hanging if the engine is gone.

    Cancellation is a normal stop; any other exception is reported on the stream.
    """
    reason = None if isinstance(exc, asyncio.CancelledError) else f"source failed: {exc}"
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await handle.close(reason)
    except TimeoutError:
        logger.warning(
            "stream %s: %d windows still unscored after %.0f s; closing without them",
            handle.stream_id,
            handle.pending,
            CLOSE_TIMEOUT_S,
        )
