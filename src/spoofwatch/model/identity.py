"""A detector card's identity: its name and a sha256 over the files that decide its scores.

The hash covers ``model_card.json`` and ``head.safetensors`` (name, length and bytes of
each, in that order), so two directories holding the same card have the same identity
wherever they live, and files kept beside a card (a canary record, a recipe) do not
change it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spoofwatch.errors import ModelError
from spoofwatch.model.artifact import CARD_FILE, TENSORS_FILE, detector_dir

# The files of a card that its identity hashes, in hashing order.
IDENTITY_FILES = (CARD_FILE, TENSORS_FILE)


@dataclass(frozen=True)
class CardIdentity:
    """``name`` from the card (its directory's name when the card has none), ``sha256`` of
    its files, ``version`` from the card's ``version`` field (None when absent)."""

    name: str
    sha256: str
    version: str | None = None

    @property
    def short(self) -> str:
        """The first 12 hex digits, for file names and log lines."""
        return self.sha256[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "version": self.version}


def card_sha256(directory: str | os.PathLike[str]) -> str:
    """sha256 over the card's identity files (``IDENTITY_FILES``)."""
    root = Path(directory)
    digest = hashlib.sha256()
    for name in IDENTITY_FILES:
        path = root / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{root}: expected a detector directory with {name} ({exc.strerror})") from None
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def card_identity(directory: str | os.PathLike[str] | None = None) -> CardIdentity:
    """The identity of the card in ``directory`` (a folder or a packaged detector's name,
    as ``load_detector`` takes it; None = ``$SPOOFWATCH_DETECTOR`` or ``default``)."""
    root = detector_dir(directory)
    sha = card_sha256(root)
    try:
        card = json.loads((root / CARD_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{root / CARD_FILE}: expected a JSON model card ({exc})") from None
    if not isinstance(card, dict):
        raise ModelError(f"{root / CARD_FILE}: expected a JSON object, found {type(card).__name__}")
    version = card.get("version")
    return CardIdentity(
        name=str(card.get("name") or root.resolve().name),
        sha256=sha,
        version=None if version is None else str(version),
    )


def feature_space(card: dict[str, Any]) -> str:
    """sha256 of what decides a card's head input (the features a window gives): encoder
    identity and spec, window, layers, spectral front end, level normalisation and the
    runtime (quantisation and backend shift the encoder's states). Two cards with the same
    feature space can score each other's features; a head fitted on one fits the other's."""
    inference = card.get("inference") or {}
    encoder = card.get("encoder") or {}
    window = card.get("window") or {}
    spectral = card.get("spectral") or {}
    key = {
        "encoder": encoder.get("identity"),
        "encoder_spec": encoder.get("spec"),
        "window_s": window.get("window_s"),
        "sample_rate": window.get("sample_rate"),
        "layers": card.get("layers"),
        "spectral": spectral.get("identity"),
        "level_dbfs": (card.get("level") or {}).get("target_dbfs"),
        "quantization": inference.get("quantization", "none"),
        "backend": inference.get("backend", "torch"),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
