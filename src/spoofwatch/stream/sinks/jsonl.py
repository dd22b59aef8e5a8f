"""Write hub events as JSON Lines: one event per line, flushed per line.

The target is a path (appended to, created if missing), ``"-"`` for stdout, or an open
text stream (left open). Drop policy ``drop-scores-keep-alarms``: if writing falls
behind, score events are dropped (``dropped``) but alarm and stream events are kept.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from spoofwatch.errors import ConfigError
from spoofwatch.events import Event, to_json
from spoofwatch.stream.engine.hub import EventHub

logger = logging.getLogger(__name__)


class JsonlSink:
    """Append every event (or one stream's events) to a text target; ``run()`` until cancelled.

    The hub subscription is taken at construction so no event published between
    construction and ``run()`` is missed.
    """

    def __init__(
        self, hub: EventHub, target: str | TextIO, *, stream: str | None = None, queue: int = 1024
    ) -> None:
        self._hub = hub
        self._target = target
        self._sub = hub.subscribe(stream, maxsize=queue, keep_alarms=True, name="jsonl")
        self.written = 0

    @property
    def dropped(self) -> int:
        return self._sub.dropped

    async def run(self) -> None:
        out, owned = self._open()
        logger.info("writing events as JSON lines to %s", self._describe())
        try:
            while True:
                self._write(out, await self._sub.get())
        except BrokenPipeError:
            logger.warning("JSON lines target %s closed its end; no more events written", self._describe())
        finally:
            self._hub.unsubscribe(self._sub)
            try:
                # Events already queued when we were cancelled still belong in the log.
                while not self._sub.queue.empty():
                    self._write(out, self._sub.queue.get_nowait())
            except (BrokenPipeError, ValueError):
                pass
            finally:
                if owned:
                    out.close()

    def _open(self) -> tuple[TextIO, bool]:
        if not isinstance(self._target, str):
            return self._target, False
        if self._target == "-":
            return sys.stdout, False
        try:
            return open(self._target, "a", encoding="utf-8"), True  # closed in run()
        except OSError as exc:
            raise ConfigError(
                f"expected a writable JSON lines file, cannot open {self._target}: {exc.strerror}"
            ) from None

    def _describe(self) -> str:
        if isinstance(self._target, str):
            return "stdout" if self._target == "-" else self._target
        return str(getattr(self._target, "name", type(self._target).__name__))

    def _write(self, out: TextIO, event: Event) -> None:
        out.write(to_json(event) + "\n")
        out.flush()
        self.written += 1
