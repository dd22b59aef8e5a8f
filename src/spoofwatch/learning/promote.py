"""``spoofwatch promote``: install a card into a detector directory; rollback.

Layout of a detector directory::

    DIR/cards/<first 16 hex of the card's sha256>/   every card ever promoted, kept
    DIR/current -> cards/<hash>                      the serving card (a relative symlink)
    DIR/history.jsonl                                one JSON line per promote / rollback

``serve --detector DIR/current`` serves the current card. The symlink is replaced in one
rename, so a reader sees the old card or the new one, never neither. Rollback makes the
card that was current before the current one was promoted current again (repeat it to go
further back).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from spoofwatch.errors import DataError
from spoofwatch.learning.canary import read_record
from spoofwatch.model.artifact import read_card
from spoofwatch.model.identity import card_identity, card_sha256

CARDS: Final = "cards"
CURRENT: Final = "current"
HISTORY: Final = "history.jsonl"
HASH_CHARS: Final = 16
DEFAULT_DETECTORS_ENV: Final = "SPOOFWATCH_DETECTORS"


def detectors_dir(directory: str | os.PathLike[str] | None) -> Path:
    """``directory``, else ``$SPOOFWATCH_DETECTORS``, else ``./detectors``."""
    return Path(directory or os.environ.get(DEFAULT_DETECTORS_ENV) or "detectors")


@dataclass(frozen=True)
class Promotion:
    action: str  # "promote" or "rollback"
    sha256: str
    name: str
    version: str | None
    path: Path
    previous: str | None
    forced: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "action": self.action,
            "sha256": self.sha256,
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "previous": self.previous,
            "forced": self.forced,
        }


def current_sha256(directory: Path) -> str | None:
    """The sha256 of the card ``DIR/current`` points to, or None where there is none."""
    link = directory / CURRENT
    return card_sha256(link) if link.exists() else None


def history(directory: Path) -> list[dict[str, Any]]:
    path = directory / HISTORY
    if not path.is_file():
        return []
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise DataError(f"{path}:{number}: expected one JSON object per line") from None
    return out


def gate(candidate: Path, current: str | None) -> None:
    """Refuse a candidate without a passing canary record for exactly this card, made
    against the card now current."""
    record = read_record(candidate)
    if record is None:
        raise DataError(
            f"{candidate}: no canary record; run `spoofwatch canary {candidate} --against CURRENT "
            "--manifest CSV` first (or promote --force)"
        )
    sha = card_sha256(candidate)
    if (record.get("candidate") or {}).get("sha256") != sha:
        raise DataError(
            f"{candidate}: the canary record is for another card (the card changed since); "
            "run the canary again"
        )
    if not record.get("passed"):
        failed = [f"{c['on']} {c['metric']}" for c in record.get("checks", []) if not c.get("passed")]
        raise DataError(
            f"{candidate}: the canary failed ({', '.join(failed)}); not promoting (promote --force overrides)"
        )
    against = (record.get("against") or {}).get("sha256")
    if current is not None and against != current:
        raise DataError(
            f"{candidate}: the canary compared it against {str(against)[:12]}, "
            f"but {current[:12]} is current; "
            "run the canary against the current card"
        )


def install(candidate: Path, directory: Path) -> Path:
    """Copy the candidate's files into ``cards/<hash>`` (kept if already there); returns it."""
    sha = card_sha256(candidate)
    cards = directory / CARDS
    cards.mkdir(parents=True, exist_ok=True)
    target = cards / sha[:HASH_CHARS]
    if target.exists():
        if card_sha256(target) != sha:
            raise DataError(
                f"{target}: holds another card with the same hash prefix; refusing to overwrite it"
            )
        for extra in candidate.iterdir():  # a newer canary record travels with the card
            if extra.is_file() and not (target / extra.name).exists():
                shutil.copy2(extra, target / extra.name)
        return target
    staging = cards / f".{sha[:HASH_CHARS]}.{os.getpid()}.tmp"
    shutil.copytree(candidate, staging, symlinks=False)
    os.replace(staging, target)
    return target


def point_current(directory: Path, target: Path) -> None:
    link = directory / CURRENT
    staging = directory / f".{CURRENT}.{os.getpid()}.tmp"
    if staging.is_symlink() or staging.exists():
        staging.unlink()
    staging.symlink_to(Path(CARDS) / target.name, target_is_directory=True)
    os.replace(staging, link)


def _log(directory: Path, promotion: Promotion) -> None:
    with open(directory / HISTORY, "a") as handle:
        handle.write(json.dumps(promotion.to_dict()) + "\n")


def promote(
    candidate: str | os.PathLike[str], directory: str | os.PathLike[str] | None = None, *, force: bool = False
) -> Promotion:
    """Install ``candidate`` and make it current; refuses one without a passing canary
    record (see ``gate``) unless ``force``."""
    source = Path(candidate)
    read_card(source)  # a clear error for a directory that is not a card
    root = detectors_dir(directory)
    root.mkdir(parents=True, exist_ok=True)
    current = current_sha256(root)
    if not force:
        gate(source, current)
    identity = card_identity(source)
    if identity.sha256 == current:
        raise DataError(f"{source}: this card ({identity.short}) is already current")
    target = install(source, root)
    point_current(root, target)
    promotion = Promotion("promote", identity.sha256, identity.name, identity.version, target, current, force)
    _log(root, promotion)
    return promotion


def rollback(directory: str | os.PathLike[str] | None = None) -> Promotion:
    """Make the card that was current before the current one's promotion current again."""
    root = detectors_dir(directory)
    current = current_sha256(root)
    if current is None:
        raise DataError(f"{root}: no current card to roll back from")
    promotions = [h for h in history(root) if h.get("action") == "promote" and h.get("sha256") == current]
    previous = promotions[-1].get("previous") if promotions else None
    if not previous:
        raise DataError(f"{root}: the current card {current[:12]} has no previous card to roll back to")
    target = root / CARDS / str(previous)[:HASH_CHARS]
    if not target.is_dir() or card_sha256(target) != previous:
        raise DataError(
            f"{target}: expected the previous card {previous[:12]} there, found it missing or changed"
        )
    identity = card_identity(target)
    point_current(root, target)
    promotion = Promotion("rollback", previous, identity.name, identity.version, target, current, False)
    _log(root, promotion)
    return promotion
