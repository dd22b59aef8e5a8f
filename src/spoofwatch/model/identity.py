"""Which detector card scored a window: name, version and a content hash.

A card that records its own ``content_hash`` (``spoofwatch retrain`` writes one) is named
by it; otherwise the hash is a sha256 over the card directory's files, in sorted order
(each file's relative path, a NUL, its size, a NUL, its bytes), so two directories with
the same files have the same identity wherever they live. A card known only as its
``model_card.json`` content (no directory) is hashed as canonical JSON. Pure stdlib.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CARD_FILE = "model_card.json"
SHORT_SHA = 12  # hex digits on events
_SHA_PREFIX = "sha256:"


@dataclass(frozen=True)
class CardIdentity:
    name: str
    version: str | None
    sha256: str

    @property
    def short(self) -> str:
        """The first ``SHORT_SHA`` hex digits of the hash, as events carry it."""
        return self.sha256[:SHORT_SHA]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def directory_sha256(directory: str | os.PathLike[str], *, exclude: tuple[str, ...] = ()) -> str:
    """sha256 over the directory's regular files (recursively) in sorted relative-path order;
    ``exclude``: relative paths left out. Hidden files and ``__pycache__`` are skipped."""
    root = Path(directory)
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(root).parts)
    )
    for path in files:
        relative = path.relative_to(root).as_posix()
        if relative in exclude:
            continue
        data = path.read_bytes()
        digest.update(relative.encode() + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return digest.hexdigest()


def _recorded_hash(card: dict[str, Any]) -> str | None:
    value = card.get("content_hash")
    if isinstance(value, dict):  # {"algorithm": "sha256", "value": "..."} is accepted too
        value = value.get("value") or value.get("sha256")
    if not isinstance(value, str) or not value:
        return None
    return value.removeprefix(_SHA_PREFIX).lower()


def _version(card: dict[str, Any]) -> str | None:
    value = card.get("version")
    return None if value is None else str(value)


def card_identity(card_dir_or_card: str | os.PathLike[str] | dict[str, Any]) -> CardIdentity:
    """The identity of a card directory, or of a card's parsed ``model_card.json``.

    Raises OSError / ValueError when a directory has no readable, valid card."""
    if isinstance(card_dir_or_card, dict):
        card = card_dir_or_card
        sha = (
            _recorded_hash(card)
            or hashlib.sha256(json.dumps(card, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        )
        return CardIdentity(str(card.get("name") or "unnamed"), _version(card), sha)
    root = Path(card_dir_or_card)
    card = json.loads((root / CARD_FILE).read_text())
    if not isinstance(card, dict):
        raise ValueError(f"{root / CARD_FILE}: expected a JSON object, found {type(card).__name__}")
    sha = _recorded_hash(card) or directory_sha256(root)
    return CardIdentity(str(card.get("name") or root.resolve().name), _version(card), sha)


def scorer_identity(scorer: object) -> CardIdentity:
    """Best identity of a scorer loaded without its directory: its ``card`` dict, else its
    class name (a hash of nothing)."""
    card = getattr(scorer, "card", None)
    if isinstance(card, dict) and card:
        return card_identity(card)
    return CardIdentity(type(scorer).__name__, None, hashlib.sha256(b"").hexdigest())
