"""Hot reload: a running pipeline swaps to another detector card without losing a window.

The new card is loaded in a thread (never on the event loop), checked against the one
serving, then swapped in between batches (``Pipeline.use_scorer``): windows already
queued are scored by whichever card is current when their batch starts, and every score
event names the card that scored it. A card that fails to load, or that live streams
could not use, leaves the old one serving; the reason is logged and published as an
error event (code ``reload_failed``).

What live streams keep (docs/learning.md, "Hot reload"): their window size and sample
rate (a card with another window length or rate is refused: the streams' windows are
cut already), their alarm levels (a new card's threshold applies to streams opened after
the swap), and a scorer that reads a companion beside each window (resynthesis) keeps
the stream contexts it started with, so a card is refused if it reads companions where
the serving one does not, or the other way round.

Triggers: ``CardReloader.reload`` (SIGHUP and ``POST /v1/admin/reload`` call it) and
``watch_detector``, which polls the card directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from spoofwatch.errors import SpoofwatchError
from spoofwatch.events import ErrorEvent
from spoofwatch.model.card_label import CardLabel
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.stream.engine.pipeline import Pipeline

logger = logging.getLogger(__name__)

# Loads the card in a directory (None: the one configured) and names it; runs in a thread.
CardLoader = Callable[[str | None], tuple[WindowScorer, CardLabel]]


class ReloadError(SpoofwatchError):
    """A card that could not be loaded or that live streams could not use; the old one serves."""


def swap_refusal(serving: WindowScorer, candidate: WindowScorer) -> str | None:
    """Why live streams could not switch from ``serving`` to ``candidate``, or None."""
    if candidate.sample_rate != serving.sample_rate:
        return (
            f"expected a card at the serving sample rate {serving.sample_rate} Hz, found "
            f"{candidate.sample_rate} Hz"
        )
    if candidate.window_samples != serving.window_samples:
        return (
            f"expected a card with the serving window of {serving.window_samples} samples, found "
            f"{candidate.window_samples}; live streams' windows are cut already (restart to change it)"
        )
    serving_reads = serving.stream_context() is not None
    if (candidate.stream_context() is not None) != serving_reads:
        what = "reads" if serving_reads else "does not read"
        return (
            f"the serving card {what} a companion input beside each window (resynthesis) and the "
            "new one does not match; live streams' contexts cannot change (restart to change it)"
        )
    return None


class CardReloader:
    """Swaps the pipeline's card; one reload at a time. ``directory``: the card directory
    a reload without one loads (it follows the last successful reload)."""

    def __init__(self, pipeline: Pipeline, load: CardLoader, directory: str | None = None) -> None:
        self.pipeline = pipeline
        self.load = load
        self.directory = directory
        self.reloads = 0
        self.failures = 0
        self._lock = asyncio.Lock()

    async def reload(self, directory: str | None = None, *, why: str = "request") -> CardLabel:
        """Load ``directory`` (default: the current one) and swap to it; ReloadError says
        why not, after it was logged and published."""
        target = directory if directory is not None else self.directory
        async with self._lock:
            try:
                scorer, card = await asyncio.to_thread(self.load, target)
            except Exception as exc:  # whatever a broken card raises, the old one keeps serving
                raise self._failed(target, f"cannot load it: {exc}", why) from None
            refusal = swap_refusal(self.pipeline.scorer, scorer)
            if refusal is not None:
                raise self._failed(target, refusal, why)
            previous = self.pipeline.card
            self.pipeline.use_scorer(scorer, card)
            self.directory = target
            self.reloads += 1
        logger.info(
            "hot reload (%s): now serving card %s %s (sha256 %s), was %s (sha256 %s)",
            why,
            card.name,
            card.version or "",
            card.short,
            previous.name,
            previous.short,
        )
        self.pipeline.hub.publish(self.pipeline.status())
        return card

    def _failed(self, target: str | None, reason: str, why: str) -> ReloadError:
        self.failures += 1
        serving = self.pipeline.card
        message = (
            f"hot reload ({why}) of card {target or '(configured)'} refused: {reason}; still serving "
            f"{serving.name} (sha256 {serving.short})"
        )
        logger.error("%s", message)
        self.pipeline.hub.publish(ErrorEvent(stream=None, code="reload_failed", message=message))
        return ReloadError(message)


def directory_fingerprint(directory: str | os.PathLike[str]) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime_ns) of every file in the directory: cheap to poll."""
    root = Path(directory)
    found = []
    for path in sorted(root.rglob("*")):
        try:
            if path.is_file():
                stat = path.stat()
                found.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
        except OSError:  # a file replaced while we looked; the next poll sees the new one
            continue
    return tuple(found)


async def watch_detector(
    reloader: CardReloader,
    directory: str | os.PathLike[str],
    interval_s: float = 2.0,
    initial: tuple[tuple[str, int, int], ...] | None = None,
) -> None:
    """Reload when the files of ``directory`` change and then hold still for one poll (a
    card being copied in is not loaded half-written); a failed reload is not retried until
    the files change again. ``initial``: the fingerprint of the card serving (taken when it
    was loaded, so a change before the first poll is not missed). Runs until cancelled."""
    last = initial if initial is not None else await asyncio.to_thread(directory_fingerprint, directory)
    seen = last
    while True:
        await asyncio.sleep(interval_s)
        now = await asyncio.to_thread(directory_fingerprint, directory)
        if now != seen:  # still changing: wait for it to settle
            seen = now
            continue
        if now == last:
            continue
        last = now
        with contextlib.suppress(ReloadError):  # logged and published; the old card serves
            await reloader.reload(str(directory), why="detector directory changed")


def detector_loader(settings: object) -> CardLoader:
    """The loader ``spoofwatch serve`` uses: the configured window/hop and inference options,
    the card named by its directory's content (model.identity)."""
    from spoofwatch.config import Settings, detector_options

    if not isinstance(settings, Settings):
        raise TypeError(f"detector_loader: expected Settings, found {type(settings).__name__}")

    def load(directory: str | None) -> tuple[WindowScorer, CardLabel]:
        from spoofwatch.model.artifact import load_detector
        from spoofwatch.model.identity import card_identity

        chosen = directory if directory is not None else settings.server.detector
        detector = load_detector(
            chosen,
            window_s=settings.stream.window_s,
            hop_s=settings.stream.hop_s,
            **detector_options(settings.engine),
        )
        return detector, card_identity(chosen)

    return load
