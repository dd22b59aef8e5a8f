"""What ``spoofwatch serve`` adds for continuous learning (docs/learning.md): the hot
reloader (SIGHUP, ``POST /v1/admin/reload``, ``--watch-detector``) and, with
``--feedback-dir``, the feedback desk (``POST /v1/feedback``, MQTT ``<prefix>/<node>/feedback``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from spoofwatch.config import Settings
from spoofwatch.feedback.capture import FeatureRing
from spoofwatch.feedback.desk import FeedbackDesk
from spoofwatch.feedback.routes import feedback_routes
from spoofwatch.learning.feedback_store import FeedbackStore
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.engine.reload import (
    CardLoader,
    CardReloader,
    ReloadError,
    directory_fingerprint,
    watch_detector,
)
from spoofwatch.stream.net.reload_routes import reload_routes

logger = logging.getLogger(__name__)


@dataclass
class LearningParts:
    reloader: CardReloader | None
    desk: FeedbackDesk | None
    tasks: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    routes: list[web.RouteDef] = field(default_factory=list)  # for SpoofwatchServer(extra_routes=)
    _background: set[asyncio.Task[object]] = field(default_factory=set)

    def reload_in_background(self, why: str) -> None:
        """SIGHUP: reload the current card; a failure is logged and published by the reloader."""
        if self.reloader is None:
            logger.warning("%s: hot reload needs a detector loaded from a card directory; ignored", why)
            return

        async def reload(reloader: CardReloader) -> None:
            with contextlib.suppress(ReloadError):
                await reloader.reload(why=why)

        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(reload(self.reloader))
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def learning_parts(pipeline: Pipeline, settings: Settings, loader: CardLoader | None) -> LearningParts:
    """Builds them (a bad feedback directory fails here, at start-up)."""
    server = settings.server
    reloader = None if loader is None else CardReloader(pipeline, loader, server.detector)
    desk = None
    if server.feedback_dir:
        ring = FeatureRing(
            server.feedback_windows, round(server.feedback_max_mb * (1 << 20)), server.feedback_keep_s
        )
        desk = FeedbackDesk(pipeline, ring, FeedbackStore(server.feedback_dir))
    parts = LearningParts(reloader, desk)
    parts.routes += feedback_routes(desk)
    if reloader is not None:
        parts.routes += reload_routes(reloader)
        if server.watch_detector:
            from spoofwatch.model.artifact import detector_dir

            watched = detector_dir(server.detector)
            interval = server.watch_detector_interval_s
            initial = directory_fingerprint(watched)  # now: a change before the first poll counts
            parts.tasks["watch-detector"] = lambda: watch_detector(reloader, watched, interval, initial)
    elif server.watch_detector:
        logger.warning("--watch-detector: the detector was not loaded from a card directory; not watching")
    if server.mqtt and desk is not None:
        from spoofwatch.feedback.mqtt_feedback import mqtt_feedback_from_config

        parts.tasks["mqtt-feedback"] = mqtt_feedback_from_config(desk, pipeline.hub, server).run
    return parts


def install_sighup(parts: LearningParts) -> bool:
    """SIGHUP reloads the card (where the platform has SIGHUP)."""
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None:
        return False
    try:
        asyncio.get_running_loop().add_signal_handler(sighup, parts.reload_in_background, "SIGHUP")
    except (NotImplementedError, RuntimeError):
        return False
    return True


def remove_sighup() -> None:
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(sighup)
