"""The evidence folder: one ``<id>.wav`` (16-bit mono PCM) and ``<id>.json`` (score
timeline) per alarm, kept ``retention_days`` days.

Ids are ``<UTC yyyymmddThhmmssZ>-<stream, made file-safe>-<6 hex>``; anything else is
refused before a path is built, so no id can name a file outside the folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import ConfigError

logger = logging.getLogger(__name__)

ID_PATTERN: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9_.-]{1,64}-[0-9a-f]{6}")
ID_EXAMPLE: Final = "20260101T120000Z-call-1-0a1b2c"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]")
Kind = Literal["wav", "json"]


class BadEvidenceId(ValueError):
    """Not an evidence id at all (a client error, 400)."""


class EvidenceNotFound(LookupError):
    """A well-formed id with no evidence (404): never written, or pruned."""


def new_id(stream: str, when: datetime | None = None) -> str:
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    safe = _UNSAFE.sub("_", stream)[:64] or "_"
    return f"{stamp}-{safe}-{secrets.token_hex(3)}"


def check_id(text: str) -> str:
    if not ID_PATTERN.fullmatch(text):
        raise BadEvidenceId(f"expected an evidence id like {ID_EXAMPLE}, found {text[:80]!r}")
    return text


class EvidenceStore:
    def __init__(self, folder: str | os.PathLike[str], retention_days: float) -> None:
        if not retention_days > 0:
            raise ConfigError(f"evidence retention: expected days > 0, found {retention_days!r}")
        self.folder = Path(folder)
        self.retention_s = retention_days * 86400.0
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"evidence_dir: cannot create {self.folder}: {exc.strerror}") from None
        if not os.access(self.folder, os.W_OK):
            raise ConfigError(f"evidence_dir: expected a writable folder, {self.folder} is not")

    def path(self, evidence_id: str, kind: Kind) -> Path:
        """The file of an existing piece of evidence; BadEvidenceId or EvidenceNotFound."""
        path = self.folder / f"{check_id(evidence_id)}.{kind}"
        if not path.is_file():
            raise EvidenceNotFound(
                f"no evidence {evidence_id!r} (never recorded, or older than the retention)"
            )
        return path

    def write(
        self, evidence_id: str, pcm: NDArray[np.int16], sample_rate: int, timeline: dict[str, Any]
    ) -> None:
        """Audio first, then the JSON: a listed id always has both (blocking; run in a thread)."""
        check_id(evidence_id)
        wav = self.folder / f"{evidence_id}.wav"
        self._atomic(wav, lambda tmp: _write_wav(tmp, pcm, sample_rate))
        text = json.dumps(timeline, separators=(",", ":"), allow_nan=False)
        self._atomic(self.folder / f"{evidence_id}.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _atomic(self, path: Path, write: Any) -> None:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # recorded calls: owner only
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)

    def entries(self, *, stream: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Summaries, newest first: id, stream, created, alarm (t, p_spoof), clip span."""
        found: list[dict[str, Any]] = []
        for path in sorted(self.folder.glob("*.json"), reverse=True):
            if not ID_PATTERN.fullmatch(path.stem):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # pruned meanwhile, or not ours
            if stream is not None and data.get("stream") != stream:
                continue
            alarm = data.get("alarm") or {}
            found.append(
                {
                    "id": path.stem,
                    "stream": data.get("stream"),
                    "created": data.get("created"),
                    "alarm_t": alarm.get("t"),
                    "p_spoof": alarm.get("p_spoof"),
                    "clip": data.get("clip"),
                }
            )
            if len(found) >= limit:
                break
        return found

    def prune(self, now: float | None = None) -> int:
        """Delete evidence files older than the retention; the number deleted."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        deleted = 0
        for path in self.folder.iterdir():
            stem, _, ext = path.name.partition(".")
            if ext not in ("wav", "json", "wav.tmp", "json.tmp") or not ID_PATTERN.fullmatch(stem):
                continue  # only ever delete our own files
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    deleted += 1
            except FileNotFoundError:
                pass
        if deleted:
            logger.info("evidence: deleted %d file(s) older than the retention", deleted)
        return deleted


def _write_wav(path: Path, pcm: NDArray[np.int16], sample_rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.astype("<i2").tobytes())
