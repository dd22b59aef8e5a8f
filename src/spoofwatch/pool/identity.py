"""A detector card's identity and version: what every pool result carries, so an ingest
node knows which detector scored its windows (and refuses to mix two)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

RUNTIME_SECTIONS: Final = ("inference",)  # set at load time (threads, batch), not trained


def card_identity(card: dict[str, Any], encoder: str) -> dict[str, str]:
    """``name``, ``version`` (a digest of the card: a retrained or recalibrated detector
    gets a new one; how it runs, the ``inference`` section, is left out) and ``encoder``."""
    trained = {k: v for k, v in card.items() if k not in RUNTIME_SECTIONS}
    digest = hashlib.sha256(json.dumps(trained, sort_keys=True, default=str).encode()).hexdigest()
    return {"name": str(card.get("name", encoder)), "version": digest[:16], "encoder": encoder}


def describe_identity(identity: dict[str, str]) -> str:
    return f"{identity.get('name')} (version {identity.get('version')})"
