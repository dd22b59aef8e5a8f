"""A detector card's identity and version: what every pool result carries, so an ingest
node knows which detector scored its windows (and refuses to mix two)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def card_identity(card: dict[str, Any], encoder: str) -> dict[str, str]:
    """``name``, ``version`` (a digest of the whole card: a retrained or recalibrated
    detector gets a new one) and ``encoder``."""
    digest = hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode()).hexdigest()
    return {"name": str(card.get("name", encoder)), "version": digest[:16], "encoder": encoder}


def describe_identity(identity: dict[str, str]) -> str:
    return f"{identity.get('name')} (version {identity.get('version')})"
