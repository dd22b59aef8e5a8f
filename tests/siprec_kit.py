"""A SIPREC recording server on a real pipeline for the tests: the server, its pipeline's
event subscription, and what the subscription holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.events import Event
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.siprec_server import SiprecServer


@contextlib.asynccontextmanager
async def siprec_recorder(
    scorer: WindowScorer, config: StreamConfig, engine: EngineConfig | None = None, **options: Any
) -> AsyncIterator[tuple[SiprecServer, Any]]:
    """``SiprecServer(**options)`` on 127.0.0.1, an OS-chosen SIP port, and its pipeline's
    worker; both stopped on exit."""
    pipeline = Pipeline(scorer, config, engine or EngineConfig(max_batch=8, max_wait_ms=5))
    sub = pipeline.hub.subscribe(maxsize=100_000)
    worker = asyncio.create_task(pipeline.run())
    server = SiprecServer(pipeline, "127.0.0.1", 0, **options)
    await server.start()
    try:
        yield server, sub
    finally:
        await server.stop()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def drain(sub: Any) -> list[Event]:
    """The events waiting in a subscription."""
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    return events
