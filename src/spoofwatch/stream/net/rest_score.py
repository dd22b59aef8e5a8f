"""``POST /v1/score``: score one audio file sent as the request body.

The answer is the object ``spoofwatch score --json`` prints for one file, made by the same
code (``audio.files.load_audio`` and ``train.clip_scoring.score_samples``, windows cut as
the detector's card says); ``path`` is the ``?name=`` query parameter (default
``upload``). Bad input gets the same object with ``error`` set and a 4xx status: 400
undecodable (or too short to score), 413 over the size or duration limit, 415 not WAV,
FLAC, OGG or MP3 (told by the first bytes; Content-Type is not needed). 503 when
``max_pending`` requests are already waiting.

Scoring runs in its own one-thread executor, off the event loop, with the pipeline's
detector (its encoder is read-only: the streaming workers already share it between
threads). Live streams keep their own inference workers and their queue; a REST score
competes with them for CPU only, one request at a time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import soundfile as sf
from aiohttp import web

from spoofwatch.audio.files import load_audio
from spoofwatch.audio.sniff import ACCEPTED_DESCRIPTION, describe_head, sniff_audio_format
from spoofwatch.config import ServerConfig
from spoofwatch.errors import ConfigError, SpoofwatchError
from spoofwatch.stream.core.windowing import WindowConfig

if TYPE_CHECKING:  # torch: imported by the detector's owner, not by importing this module
    from spoofwatch.model.detector import Detector

logger = logging.getLogger(__name__)

SCORE_PATH: Final = "/v1/score"
DEFAULT_NAME: Final = "upload"
MAX_NAME_CHARS: Final = 200
READ_CHUNK_BYTES: Final = 1 << 16
MIN_CLIP_S: Final = 0.5  # as ``spoofwatch score``


@dataclass(frozen=True)
class ScoreLimits:
    """What one request may send: body bytes, seconds of audio, requests waiting at once."""

    max_bytes: int = ServerConfig.score_max_bytes
    max_duration_s: float = ServerConfig.score_max_duration_s
    max_pending: int = 4

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pending < 1:
            raise ConfigError(
                f"score limits: expected max_bytes >= 1 and max_pending >= 1, "
                f"found {self.max_bytes} and {self.max_pending}"
            )
        if not (math.isfinite(self.max_duration_s) and self.max_duration_s > 0):
            raise ConfigError(f"score_max_duration_s: expected seconds > 0, found {self.max_duration_s!r}")

    @classmethod
    def from_config(cls, config: ServerConfig) -> ScoreLimits:
        return cls(max_bytes=config.score_max_bytes, max_duration_s=config.score_max_duration_s)


def card_window_config(detector: Detector) -> WindowConfig:
    """Windows as ``spoofwatch score`` cuts them: the card's hop, not a server's override."""
    settings = detector.settings
    hop_s = settings.hop_s
    window = detector.card.get("window") if isinstance(detector.card, dict) else None
    if isinstance(window, dict) and isinstance(window.get("hop_s"), int | float):
        hop_s = float(window["hop_s"])
    return WindowConfig(detector.sample_rate, settings.window_s, hop_s, MIN_CLIP_S)


def _answer(status: int, result: dict[str, Any]) -> web.Response:
    return web.json_response(result, status=status, headers={"Cache-Control": "no-store"})


def error_object(name: str, message: str) -> dict[str, Any]:
    """``spoofwatch score --json``'s object for a file it cannot score (``ClipScore.to_dict``)."""
    return {"path": name, "error": message}


def _refusal(status: int, name: str, message: str) -> web.Response:
    return _answer(status, error_object(name, f"{name}: {message}"))


class RestScorer:
    """Scores request bodies with ``detector`` (see the module docstring)."""

    def __init__(
        self,
        detector: Detector,
        limits: ScoreLimits | None = None,
        *,
        current: Callable[[], object] | None = None,
    ) -> None:
        """``current``: the detector to use now (the pipeline's, which a hot reload swaps);
        ``detector`` while it gives anything but a ``Detector``."""
        self.detector = detector
        self.limits = limits or ScoreLimits()
        self.window = card_window_config(detector)
        self._current = current
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spoofwatch-rest-score")
        self._pending = 0

    def close(self) -> None:
        """Stop the executor (a score in progress finishes in the background)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(SCORE_PATH, self.handle)]

    def _follow_reload(self) -> None:
        if self._current is None:
            return
        from spoofwatch.model.detector import Detector

        now = self._current()
        if isinstance(now, Detector) and now is not self.detector:
            self.detector, self.window = now, card_window_config(now)

    def score_bytes(self, body: bytes, name: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, result object) for one file's bytes; blocking (the executor's)."""
        from spoofwatch.train.clip_scoring import score_samples

        with tempfile.TemporaryDirectory(prefix="spoofwatch-score-") as folder:
            path = os.path.join(folder, "body")
            with open(path, "wb") as fh:
                fh.write(body)
            too_long = self._over_duration(path)
            if too_long is not None:
                return 413, error_object(name, f"{name}: {too_long}")
            try:
                clip = load_audio(path, self.detector.sample_rate, max_duration_s=self.limits.max_duration_s)
            except SpoofwatchError as exc:
                return 400, error_object(name, str(exc).replace(path, name))
        scored = score_samples(
            self.detector, clip.samples, self.detector.sample_rate, window=self.window, name=name
        )
        return (200 if scored.error is None else 400), scored.to_dict()

    def _over_duration(self, path: str) -> str | None:
        """Why the header's length is over the limit, or None (also when unreadable:
        ``load_audio`` then says what is wrong)."""
        try:
            info = sf.info(path)
        except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError):
            return None
        if info.samplerate <= 0:
            return None
        seconds = info.frames / info.samplerate
        limit = self.limits.max_duration_s
        return f"expected at most {limit:g} s of audio, found {seconds:.2f} s" if seconds > limit else None

    async def handle(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "")[:MAX_NAME_CHARS] or DEFAULT_NAME
        limit = self.limits.max_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            found = f"found a {declared}-byte body"
            return _refusal(413, name, f"expected at most {limit} bytes of audio, {found}")
        body = bytearray()
        while chunk := await request.content.read(READ_CHUNK_BYTES):
            body += chunk
            if len(body) > limit:
                return _refusal(413, name, f"expected at most {limit} bytes of audio, found more")
        if not body:
            return _refusal(400, name, f"expected {ACCEPTED_DESCRIPTION} audio, found an empty body")
        head = bytes(body[:16])
        if sniff_audio_format(head) is None:
            return _refusal(415, name, f"expected {ACCEPTED_DESCRIPTION} audio, found {describe_head(head)}")
        if self._pending >= self.limits.max_pending:
            response = _refusal(
                503, name, f"expected at most {self.limits.max_pending} scores waiting, found the server busy"
            )
            response.headers["Retry-After"] = "1"
            return response
        self._follow_reload()
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            status, result = await loop.run_in_executor(self._executor, self.score_bytes, bytes(body), name)
        except Exception:
            logger.exception("scoring %s failed", name)
            return _refusal(500, name, "scoring failed on the server; see its log")
        finally:
            self._pending -= 1
        return _answer(status, result)


def score_routes(scorer: RestScorer) -> list[web.RouteDef]:
    """The routes to mount (``SpoofwatchServer(extra_routes=...)``)."""
    return scorer.routes()
