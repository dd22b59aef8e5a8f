"""What names a card on events, without importing the model (streaming code stays free of
torch): ``model.identity.CardIdentity`` fits ``CardLabel``; ``scorer_label`` names a
scorer that was built without a card directory (tests, embedders)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

SHORT_SHA = 12  # hex digits on events


class CardLabel(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    @property
    def version(self) -> str | None: ...

    @property
    def short(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ScorerLabel:
    name: str
    sha256: str
    version: str | None = None

    @property
    def short(self) -> str:
        return self.sha256[:SHORT_SHA]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "version": self.version}


def scorer_label(scorer: object) -> ScorerLabel:
    """A scorer's ``card`` dict (name, version, sha256 of its canonical JSON: weaker than a
    directory's ``model.identity.card_identity``, which also hashes the head), else its
    class name."""
    card = getattr(scorer, "card", None)
    if isinstance(card, dict) and card:
        canonical = json.dumps(card, sort_keys=True, separators=(",", ":"), default=str)
        version = card.get("version")
        return ScorerLabel(
            str(card.get("name") or "unnamed"),
            hashlib.sha256(canonical.encode()).hexdigest(),
            None if version is None else str(version),
        )
    return ScorerLabel(type(scorer).__name__, hashlib.sha256(b"").hexdigest())
